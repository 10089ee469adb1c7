/*
 * The reply log under a real server: a call whose record reached the log survives kill -9
 * whether or not its reply left (the retry is answered from the log, the handler does not run
 * again), and a log damaged in the middle stops arpc_server_create with a message naming the
 * file and offset, instead of a server that would forget calls. A client's goodbye is
 * logged: after a restart its replies are gone too, and its floor still refuses a late copy
 * of its calls (after kill -9, and after compactions); one the log had no memory for is
 * counted.
 */
#define _GNU_SOURCE /* memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "base/alloc.h"
#include "core/frame.h"
#include "support/raw_client.h"
#include "support/server_proc.h"
#include "support/test_util.h"

/* Bytes in the log's segments (what a new record grows). */
static off_t log_bytes(const char *dir)
{
    off_t total = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[512];
    struct stat st;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strstr(e->d_name, ".arpclog") == NULL || strstr(e->d_name, ".tmp") != NULL)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st) == 0)
            total += st.st_size;
    }
    if (d != NULL)
        closedir(d);
    return total;
}

/* kill -9 once the call's record is in the log, not waiting for the reply: the reply may or
 * may not have left. Either way the retry gets the logged reply and nothing runs twice. */
static void test_kill_after_append(void **state)
{
    (void)state;
    char dir[256];
    server_proc_mkdir(dir, sizeof(dir));
    for (int round = 0; round < 5; round++) {
        struct server_proc sp;
        assert_true(server_proc_start(&sp, "tcp://127.0.0.1:0", dir, SERVER_PROC_POOL));
        struct raw_client r;
        assert_true(raw_connect(&r, sp.sp_addr, 55));
        off_t before = log_bytes(dir);
        uint64_t token = 100 + (uint64_t)round, seq = 1 + (uint64_t)round;
        assert_true(raw_request(&r, 1, seq, seq - 1, 0, "t.apply", &token, sizeof(token)));
        /* A state that stays once reached: the record is written. Then kill at once. */
        int64_t until = now_ms() + 10000;
        while (log_bytes(dir) == before && now_ms() < until)
            sched_yield();
        assert_true(log_bytes(dir) > before);
        char addr[256];
        snprintf(addr, sizeof(addr), "%s", sp.sp_addr);
        server_proc_kill(&sp);
        raw_close(&r);
        assert_true(server_proc_start(&sp, addr, dir, SERVER_PROC_POOL));
        assert_true(raw_connect(&r, sp.sp_addr, 55));
        assert_true(raw_request(&r, 2, seq, seq - 1, 0, "t.apply", &token, sizeof(token)));
        struct raw_frame f;
        assert_true(raw_read(&r, &f, false));
        assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
        uint64_t result;
        assert_int_equal(sizeof(result), f.body_len);
        memcpy(&result, f.body, sizeof(result));
        assert_int_equal(1, result); /* applied once, when it was new */
        raw_close(&r);
        uint64_t applied, dups;
        assert_true(server_proc_stats(sp.sp_addr, &applied, &dups));
        assert_int_equal(round + 1, applied);
        assert_int_equal(0, dups);
        server_proc_stop(&sp);
    }
    server_proc_rmdir(dir);
}

static void h_durable(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const void *p = arpc_request_data(req, &len);
    arpc_reply_durable(req, p, len, p, len);
}

static void count_effects(void *ctx, enum arpc_recover_kind kind, const void *data, size_t len)
{
    (void)data;
    (void)len;
    if (kind == ARPC_RECOVER_EFFECT)
        (*(int *)ctx)++;
}

/* Flips one bit in the middle of the log: the next create refuses, saying where. */
static void test_corrupt_middle_refuses_to_start(void **state)
{
    (void)state;
    char dir[256];
    server_proc_mkdir(dir, sizeof(dir));
    int effects = 0;
    arpc_server_options so = {.log_dir = dir, .recover = count_effects, .recover_ctx = &effects};
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.durable", h_durable, NULL, NULL));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    for (int i = 0; i < 20; i++)
        assert_int_equal(ARPC_OK, arpc_call(c, "t.durable", &i, sizeof(i), NULL, NULL, 10000));
    arpc_client_close(c);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    /* A clean restart hands back every effect. */
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(20, effects);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    /* One flipped bit in the middle of the newest segment. */
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[512] = "";
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".arpclog") != NULL && strcmp(path + strlen(dir) + 1, e->d_name) < 0)
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
    closedir(d);
    struct stat st;
    assert_int_equal(0, stat(path, &st));
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    off_t mid = st.st_size / 2;
    assert_int_equal(1, pread(fd, &b, 1, mid));
    b ^= 0x10;
    assert_int_equal(1, pwrite(fd, &b, 1, mid));
    close(fd);
    char why[512] = "";
    so.errbuf = why;
    so.errbuf_len = sizeof(why);
    assert_int_equal(ARPC_EPROTO, arpc_server_create(&s, &so));
    assert_non_null(strstr(why, "corrupt at offset"));
    assert_non_null(strstr(why, dir));
    server_proc_rmdir(dir);
}

/* An empty log_dir is refused with a line that names it (not the log's internals). */
static void test_empty_log_dir_refused(void **state)
{
    (void)state;
    char why[512] = "";
    arpc_server_options so = {.log_dir = "", .errbuf = why, .errbuf_len = sizeof(why)};
    arpc_server *s = NULL;
    assert_int_equal(ARPC_EINVAL, arpc_server_create(&s, &so));
    assert_non_null(strstr(why, "log_dir is empty"));
}

static atomic_int counted_runs;

static void h_count(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&counted_runs, 1);
    arpc_reply(req, "ran", 3);
}

/* Allocation fails on the server's loop thread while fail_on_loop is set. */
static atomic_bool fail_on_loop;
static _Atomic pthread_t loop_thread;

static void *loop_failing_malloc(size_t size, void *ctx)
{
    (void)ctx;
    if (atomic_load(&fail_on_loop) && pthread_equal(pthread_self(), atomic_load(&loop_thread)))
        return NULL;
    return malloc(size);
}

static void *loop_failing_realloc(void *ptr, size_t size, void *ctx)
{
    (void)ctx;
    if (atomic_load(&fail_on_loop) && pthread_equal(pthread_self(), atomic_load(&loop_thread)))
        return NULL;
    return realloc(ptr, size);
}

static void plain_free(void *ptr, void *ctx)
{
    (void)ctx;
    free(ptr);
}

/* Inline: runs on the loop thread, which it names. */
static void h_mark_loop(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_store(&loop_thread, pthread_self());
    arpc_reply(req, "", 0);
}

/* Counted as t.count, and held until the test posts held_gate. */
static sem_t held_gate;

static void h_held(arpc_request *req, void *ctx)
{
    atomic_fetch_add(&counted_runs, 1);
    latch_add();
    (void)ctx;
    CHECK(sem_wait_secs(&held_gate, TEST_WAIT_MS / 1000));
    arpc_reply(req, "ran", 3);
}

static arpc_server *start_logged_expiring(const char *dir, char *addr, size_t addr_len, uint32_t expiry_s)
{
    arpc_server_options so = {.log_dir = dir, .client_expiry_s = expiry_s, .workers = 2}; /* t.held beside another */
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.count", h_count, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.held", h_held, NULL, NULL));
    arpc_method_options inline_opts = {.inline_on_loop = true};
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.mark", h_mark_loop, NULL, &inline_opts));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, addr_len));
    return s;
}

static arpc_server *start_logged(const char *dir, char *addr, size_t addr_len)
{
    return start_logged_expiring(dir, addr, addr_len, 0);
}

/* The next frame for xid is a REPLY. */
static void expect_ran_reply(struct raw_client *r, uint64_t xid)
{
    struct raw_frame f;
    assert_true(raw_read(r, &f, false));
    assert_int_equal(xid, f.f.f_xid);
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
}

/* A client's goodbye forgets its replies, and the log says so: after a restart the same
 * client id and seq (which a client that said goodbye never sends again; the test does, to
 * see) runs anew instead of being answered from the replayed log. */
static void test_goodbye_survives_restart(void **state)
{
    (void)state;
    char dir[256], addr[256];
    server_proc_mkdir(dir, sizeof(dir));
    atomic_store(&counted_runs, 0);
    arpc_server *s = start_logged(dir, addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0xb1e));
    assert_true(raw_request(&r, 1, 1, 0, 0, "t.count", "", 0));
    expect_ran_reply(&r, 1);
    assert_true(raw_goodbye(&r));
    /* Frames of one connection are taken in order: its reply means the goodbye was heard. */
    assert_true(raw_request(&r, 2, 0, 0, 0, "t.count", "", 0));
    expect_ran_reply(&r, 2);
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s)); /* closes the log after what it was handed */
    s = start_logged(dir, addr, sizeof(addr));
    assert_true(raw_connect(&r, addr, 0xb1e));
    assert_true(raw_request(&r, 3, 1, 0, 0, "t.count", "", 0));
    expect_ran_reply(&r, 3);
    assert_int_equal(3, atomic_load(&counted_runs)); /* ran again: forgotten across the restart */
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    server_proc_rmdir(dir);
}

#define COMEBACK_INCARNATION 0xc0e

/* Connects as client_id (with an incarnation: its goodbye keeps a floor) and sends seq as xid
 * seq to t.count. */
static void comeback_call(struct raw_client *r, const char *addr, uint64_t client_id, uint64_t seq)
{
    assert_true(raw_connect_with(r, addr, client_id, NULL, COMEBACK_INCARNATION));
    assert_true(raw_request(r, seq, seq, 0, 0, "t.count", "", 0));
}

/* Copies of seqs 1..top of client_id are refused ARPC_EREJECTED (not run). */
static void comeback_copies_refused(const char *addr, uint64_t client_id, uint64_t top)
{
    for (uint64_t seq = 1; seq <= top; seq++) {
        struct raw_client r;
        comeback_call(&r, addr, client_id, seq);
        struct raw_frame f;
        assert_true(raw_read(&r, &f, false));
        assert_int_equal(ARPC_FRAME_ERROR, f.f.f_kind);
        assert_int_equal(ARPC_EREJECTED, f.f.f_code);
        raw_close(&r);
    }
}

/* A client that said goodbye and then came back (a late call above its floor, which runs: a
 * half-open connection's, say) keeps its goodbye's floor through its idle expiry, on the
 * server where it came back (client A) and on one restarted on the log before its expiry
 * (client B, restored with the floor), and through the restart after: the late copies its
 * goodbye refused are refused after the expiry too. Before, the expiry forgot the client whole
 * (an EXPIRE record) and the copies ran again (a review's probe). */
static void test_comeback_floor_survives_expiry(void **state)
{
    (void)state;
    enum { A = 0xa11, B = 0xb22, EXPIRY_S = 1 };
    char dir[256], addr[256];
    server_proc_mkdir(dir, sizeof(dir));
    atomic_store(&counted_runs, 0);
    arpc_server *s = start_logged_expiring(dir, addr, sizeof(addr), EXPIRY_S);
    for (uint64_t id = A; id <= B; id += B - A) {
        struct raw_client r;
        comeback_call(&r, addr, id, 1);
        expect_ran_reply(&r, 1);
        assert_true(raw_request(&r, 2, 2, 0, 0, "t.count", "", 0));
        expect_ran_reply(&r, 2);
        assert_true(raw_goodbye(&r)); /* floor 2 */
        raw_close(&r);
        comeback_call(&r, addr, id, 3); /* above the floor: it runs, and the client is back */
        expect_ran_reply(&r, 3);
        raw_close(&r);
        if (id == A) {
            assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, reply_cache_clients), 0, TEST_WAIT_MS));
            comeback_copies_refused(addr, A, 3);
        }
    }
    assert_int_equal(ARPC_OK, arpc_server_destroy(s)); /* B is still known, back after its goodbye */
    s = start_logged_expiring(dir, addr, sizeof(addr), EXPIRY_S);
    comeback_copies_refused(addr, A, 3);
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, reply_cache_clients), 0, TEST_WAIT_MS));
    comeback_copies_refused(addr, B, 3);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    s = start_logged(dir, addr, sizeof(addr));
    comeback_copies_refused(addr, A, 3);
    comeback_copies_refused(addr, B, 3);
    assert_int_equal(6, atomic_load(&counted_runs)); /* 1, 2, 3 of each, once */
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    server_proc_rmdir(dir);
}

/* The same for a goodbye said while a call of the client ran (so it waited for that call) and
 * taken back by a call after it: the log hears the goodbye then, and a server restarted before
 * the client's expiry keeps its floor at the expiry. Before, the log heard nothing of the
 * goodbye and the restarted server forgot the client whole (a review found it). */
static void test_deferred_goodbye_comeback_survives_restart(void **state)
{
    (void)state;
    enum { C = 0xc33, OTHER = 0xd44, EXPIRY_S = 1 };
    char dir[256], addr[256];
    server_proc_mkdir(dir, sizeof(dir));
    atomic_store(&counted_runs, 0);
    latch_reset();
    assert_int_equal(0, sem_init(&held_gate, 0, 0));
    arpc_server *s = start_logged_expiring(dir, addr, sizeof(addr), EXPIRY_S);
    struct raw_client r;
    comeback_call(&r, addr, C, 1);
    expect_ran_reply(&r, 1);
    assert_true(raw_request(&r, 2, 2, 0, 0, "t.held", "", 0));
    assert_true(latch_wait(1, TEST_WAIT_MS)); /* seq 2 runs */
    assert_true(raw_goodbye(&r));             /* waits for seq 2 */
    assert_true(raw_request(&r, 3, 3, 0, 0, "t.count", "", 0)); /* takes the goodbye back */
    expect_ran_reply(&r, 3);
    sem_post(&held_gate);
    expect_ran_reply(&r, 2);
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    s = start_logged_expiring(dir, addr, sizeof(addr), EXPIRY_S);
    comeback_call(&r, addr, OTHER, 1);
    expect_ran_reply(&r, 1);
    assert_true(raw_goodbye(&r));
    raw_close(&r);
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, reply_cache_clients), 0, TEST_WAIT_MS));
    comeback_copies_refused(addr, C, 3);
    assert_int_equal(4, atomic_load(&counted_runs)); /* C's three and OTHER's one, once each */
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    sem_destroy(&held_gate);
    server_proc_rmdir(dir);
}

/* Clients the reply log brings back are expired by a restarted server that no client
 * connects to: the expiry sweep starts with the listener. Before, it started at the first
 * connection, and a restarted server nobody called kept its restored clients (their replies'
 * memory) for ever. */
static void test_restored_clients_expire_without_a_connection(void **state)
{
    (void)state;
    enum { EXPIRY_S = 1 };
    char dir[256], addr[256];
    server_proc_mkdir(dir, sizeof(dir));
    atomic_store(&counted_runs, 0);
    arpc_server *s = start_logged_expiring(dir, addr, sizeof(addr), EXPIRY_S);
    struct raw_client r;
    comeback_call(&r, addr, 0xe1e, 1);
    expect_ran_reply(&r, 1);
    raw_close(&r); /* no goodbye: it stands for a process that died */
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    s = start_logged_expiring(dir, addr, sizeof(addr), EXPIRY_S);
    /* Restored, then expired (on a loaded machine maybe before a first look could see it). */
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, reply_cache_clients), 0, TEST_WAIT_MS));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    s = start_logged(dir, addr, sizeof(addr)); /* no expiry for 600 s: the log says it expired */
    arpc_server_stats st;
    assert_int_equal(ARPC_OK, arpc_server_stats(s, &st));
    assert_int_equal(0, st.reply_cache_clients);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    server_proc_rmdir(dir);
}

/* A client id chosen by the application may be chosen again by its next process, whose calls
 * are numbered from 1 again. The new client is not the old one: its calls run, and are not
 * answered with the replies the old one left in the (replayed) log. (Before, the new process
 * got the old one's cached replies for its first calls, with ARPC_OK.) The old client never
 * said goodbye: it stands for a process that died. */
static void test_chosen_id_reused_by_a_new_client(void **state)
{
    (void)state;
    char dir[256], addr[256];
    server_proc_mkdir(dir, sizeof(dir));
    atomic_store(&counted_runs, 0);
    arpc_server *s = start_logged(dir, addr, sizeof(addr));
    arpc_client_options co = {.client_id = 0x77, .reconnect_give_up_ms = 1};
    arpc_client *old = NULL, *fresh = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&old, addr, &co));
    for (int i = 0; i < 3; i++)
        assert_int_equal(ARPC_OK, arpc_call(old, "t.count", "", 0, NULL, NULL, 10000));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    s = start_logged(dir, addr, sizeof(addr));
    assert_int_equal(ARPC_OK, arpc_client_connect(&fresh, addr, &co));
    for (int i = 0; i < 3; i++)
        assert_int_equal(ARPC_OK, arpc_call(fresh, "t.count", "", 0, NULL, NULL, 10000));
    assert_int_equal(6, atomic_load(&counted_runs)); /* each of the new client's calls ran */
    arpc_client_close(fresh);
    arpc_client_close(old);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    server_proc_rmdir(dir);
}

/* A reply log that cannot write (a full disk; here a file size limit) stops the server's
 * at-most-once service, and no call waits for ever: the call whose record failed ends
 * ARPC_EABANDONED (it ran; its effect is not durable), the next one is refused ARPC_ESYSTEM.
 * The calls have no deadline: before, the failed record's caller waited for ever. */
static void test_log_write_failure_hangs_nothing(void **state)
{
    (void)state;
    char dir[256];
    server_proc_mkdir(dir, sizeof(dir));
    struct server_proc sp;
    assert_true(server_proc_start(&sp, "tcp://127.0.0.1:0", dir, SERVER_PROC_SMALL_DISK));
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, sp.sp_addr, NULL));
    unsigned ok = 0, abandoned = 0, refused = 0;
    for (uint64_t token = 1; token <= 100000 && refused == 0; token++) {
        arpc_future *f = arpc_call_async(c, "t.apply", &token, sizeof(token), ARPC_FOREVER);
        assert_non_null(f);
        int st = arpc_future_wait_for(f, 30000);
        size_t len = 0;
        const char *text = st == ARPC_EABANDONED ? arpc_future_data(f, &len) : NULL;
        /* The words name the disk, not memory (the answer it got before) */
        if (st == ARPC_EABANDONED && (text == NULL || memmem(text, len, "reply log failed", 16) == NULL))
            fail_msg("call %llu ended ARPC_EABANDONED saying: %.*s", (unsigned long long)token, (int)len, text);
        arpc_future_release(f);
        if (st != ARPC_OK && st != ARPC_EABANDONED && st != ARPC_ESYSTEM)
            fail_msg("call %llu ended %s", (unsigned long long)token, arpc_errname(st));
        ok += st == ARPC_OK;
        abandoned += st == ARPC_EABANDONED;
        refused += st == ARPC_ESYSTEM;
    }
    fprintf(stderr, "log full after %u calls: %u abandoned, then refused\n", ok, abandoned);
    assert_true(ok > 0);
    assert_true(abandoned >= 1);
    assert_int_equal(1, refused);
    /* Monitoring sees it: arpc.stats says the log failed, and counts the records it took. */
    void *json = NULL;
    size_t json_len = 0;
    assert_int_equal(ARPC_OK, arpc_call(c, "arpc.stats", NULL, 0, &json, &json_len, 10000));
    char *text = strndup(json, json_len);
    arpc_free(json);
    const char *records = strstr(text, "\"log_records\": ");
    if (strstr(text, "\"log_failed\": 1") == NULL || records == NULL || strtoull(records + 15, NULL, 10) < ok)
        fail_msg("arpc.stats after the log failed (%u calls ok): %s", ok, text);
    free(text);
    arpc_client_close(c);
    server_proc_kill(&sp);
    server_proc_rmdir(dir);
}

/* A goodbye the log cannot record (no memory for the record) is counted, not dropped in
 * silence, and a restart then answers the client's call from the replayed log, as
 * docs/SEMANTICS.md says: its replies are alive again until it expires. */
static void test_unlogged_goodbye_is_counted(void **state)
{
    (void)state;
    static const arpc_allocator loop_failing = {loop_failing_malloc, loop_failing_realloc, plain_free, NULL};
    arpc_alloc_replace(&loop_failing);
    char dir[256], addr[256];
    server_proc_mkdir(dir, sizeof(dir));
    atomic_store(&counted_runs, 0);
    arpc_server *s = start_logged(dir, addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0xb1f));
    assert_true(raw_request(&r, 1, 1, 0, 0, "t.count", "", 0));
    expect_ran_reply(&r, 1);
    assert_true(raw_request(&r, 2, 0, 0, 0, "t.mark", "", 0));
    expect_ran_reply(&r, 2);
    atomic_store(&fail_on_loop, true);
    assert_true(raw_goodbye(&r));
    bool counted = server_stat_reaches(s, offsetof(arpc_server_stats, log_expiries_lost), 1, RAW_WAIT_MS);
    atomic_store(&fail_on_loop, false);
    assert_true(counted);
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    s = start_logged(dir, addr, sizeof(addr));
    assert_true(raw_connect(&r, addr, 0xb1f));
    assert_true(raw_request(&r, 3, 1, 0, 0, "t.count", "", 0));
    expect_ran_reply(&r, 3);
    assert_int_equal(1, atomic_load(&counted_runs)); /* answered from the log, not run again */
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    server_proc_rmdir(dir);
    arpc_alloc_replace(NULL);
}

/* ---- a goodbye's floor across kill -9 ---- */

#define FLOOR_CLIENT 0xf1002
#define FLOOR_INCARNATION 0x1ca7e

/* Waits (bounded) until dir's segments grew past before: a record was written. */
static bool log_grows_past(const char *dir, off_t before)
{
    int64_t until = now_ms() + RAW_WAIT_MS;
    while (log_bytes(dir) == before && now_ms() < until)
        sched_yield();
    return log_bytes(dir) > before;
}

/* Whether dir holds segment 1, the one a fresh log starts with: gone once compaction ran. */
static bool first_segment_gone(const char *dir)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/0000000000000001.arpclog", dir);
    return access(path, F_OK) != 0;
}

/* The next frame answers xid with the t.apply result want (1: new, 2: applied before). */
static void expect_applied(struct raw_client *r, uint64_t xid, uint64_t want)
{
    struct raw_frame f;
    assert_true(raw_read(r, &f, false));
    assert_int_equal(xid, f.f.f_xid);
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    uint64_t result;
    assert_int_equal(sizeof(result), f.body_len);
    memcpy(&result, f.body, sizeof(result));
    assert_int_equal(want, result);
}

/* Numbered calls of another client, acked as they go (dead records), until the log compacts. */
static void compact_the_log(const char *addr, const char *dir)
{
    struct raw_client other;
    assert_true(raw_connect_with(&other, addr, 0x07e1, NULL, 0x07e2));
    uint64_t seq = 0;
    while (!first_segment_gone(dir) && seq < 20000) {
        seq++;
        assert_true(raw_request(&other, seq, seq, seq - 1, 0, "t.stats", "", 0));
        struct raw_frame f;
        assert_true(raw_read(&other, &f, false));
        assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    }
    assert_true(first_segment_gone(dir));
    raw_close(&other);
}

/*
 * A client with an incarnation makes a call and says goodbye; the server is killed (-9) and
 * restarted on its log (compact: after compactions folded the goodbye into a snapshot); a late
 * copy of that call (a half-open connection, a proxy replaying) is refused ARPC_EREJECTED and
 * does not run again. The handler's runs are counted by the server's applied set, rebuilt from
 * the logged effects at start: a second run shows as a duplicate. Before, the floor was in
 * memory only: after the restart the copy ran again (result 2, one duplicate).
 */
static void goodbye_floor_survives_kill(bool compact)
{
    char dir[256], addr[256];
    server_proc_mkdir(dir, sizeof(dir));
    int mode = SERVER_PROC_POOL | (compact ? SERVER_PROC_COMPACT : 0);
    struct server_proc sp;
    assert_true(server_proc_start(&sp, "tcp://127.0.0.1:0", dir, mode));
    snprintf(addr, sizeof(addr), "%s", sp.sp_addr);
    struct raw_client r;
    assert_true(raw_connect_with(&r, addr, FLOOR_CLIENT, NULL, FLOOR_INCARNATION));
    uint64_t token = 0xf100;
    assert_true(raw_request(&r, 1, 1, 0, 0, "t.apply", &token, sizeof(token)));
    expect_applied(&r, 1, 1); /* its record is written: the reply waits for it */
    off_t before = log_bytes(dir);
    assert_true(raw_goodbye(&r));
    assert_true(log_grows_past(dir, before)); /* the goodbye's record */
    raw_close(&r);
    if (compact)
        compact_the_log(addr, dir);
    server_proc_kill(&sp);
    assert_true(server_proc_start(&sp, addr, dir, mode));
    assert_true(raw_connect_with(&r, addr, FLOOR_CLIENT, NULL, FLOOR_INCARNATION));
    assert_true(raw_request(&r, 2, 1, 0, 0, "t.apply", &token, sizeof(token))); /* the late copy */
    struct raw_frame f;
    assert_true(raw_read(&r, &f, false));
    assert_int_equal(ARPC_FRAME_ERROR, f.f.f_kind);
    assert_int_equal(2, f.f.f_xid);
    assert_int_equal(ARPC_EREJECTED, f.f.f_code);
    /* The client acknowledged nothing (ack 0): its goodbye's floor refused it, and says so. */
    static const char said[] =
        "call 1 is at or below the highest seq this client had numbered when it said goodbye: not run again";
    assert_int_equal(sizeof(said) - 1, f.f.f_msg_len);
    assert_memory_equal(said, f.f.f_msg, sizeof(said) - 1);
    raw_close(&r);
    uint64_t applied, dups;
    assert_true(server_proc_stats(addr, &applied, &dups));
    assert_int_equal(1, applied);
    assert_int_equal(0, dups); /* the handler did not run again */
    server_proc_kill(&sp);
    server_proc_rmdir(dir);
}

static void test_goodbye_floor_survives_kill(void **state)
{
    (void)state;
    goodbye_floor_survives_kill(false);
}

static void test_goodbye_floor_survives_compaction(void **state)
{
    (void)state;
    goodbye_floor_survives_kill(true);
}

int main(int argc, char **argv)
{
    server_proc_main(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_kill_after_append, server_proc_teardown),
        cmocka_unit_test(test_corrupt_middle_refuses_to_start),
        cmocka_unit_test(test_empty_log_dir_refused),
        cmocka_unit_test(test_goodbye_survives_restart),
        cmocka_unit_test(test_chosen_id_reused_by_a_new_client),
        cmocka_unit_test(test_comeback_floor_survives_expiry),
        cmocka_unit_test(test_deferred_goodbye_comeback_survives_restart),
        cmocka_unit_test(test_restored_clients_expire_without_a_connection),
        cmocka_unit_test_teardown(test_log_write_failure_hangs_nothing, server_proc_teardown),
        cmocka_unit_test(test_unlogged_goodbye_is_counted),
        cmocka_unit_test_teardown(test_goodbye_floor_survives_kill, server_proc_teardown),
        cmocka_unit_test_teardown(test_goodbye_floor_survives_compaction, server_proc_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
