/*
 * What a power cut can leave of the reply log, and what start-up makes of it
 * (core/reply_log_tail.h).
 *
 * kill -9 keeps the page cache; a power cut keeps only what was synced, and of an unsynced
 * write any subset of its pages: the disk may hold a later page and not an earlier one, so
 * intact records can follow damaged bytes. Start-up refused such a log ("corrupt ... with a
 * valid record after it"), though nothing damaged had been synced and no reply of it had
 * left (a power-loss review: 13 of ~4,760 crash states under FSYNC_ALWAYS, a quarter to half
 * of them under FSYNC_BATCH); the way out forgot every reply and the application's state.
 * Each write that follows a sync now begins with a SYNCED record saying how far the segment
 * was on disk, and start-up cuts damage no later SYNCED record says was synced.
 *
 * The crash states are made from the log's own file, written by its writer with groups of
 * several records (the done callback of a group's first record holds the writer until the
 * rest are appended, so they go out in one write): for every write, every page of it lost
 * (zeros where it was, the file's size kept) with the writes before it whole, which the log
 * must open, keeping exactly the records before the damage; and the same damage in a write
 * a later one followed (synced, then), which it must refuse.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/le.h"
#include "core/reply_log.h"
#include "core/reply_log_format.h"
#include "support/test_file.h"
#include "support/test_util.h"

#define PAGE 4096

/* ---- records ---- */

struct rec {
    struct arpc_log_record r;
    bool hold; /* its done callback waits until the test has appended the rest of its group */
    uint8_t reply[];
};

static sem_t held, release, done;
static atomic_int done_not_ok; /* records back with an error, or a hold that timed out */

/* On the writer thread: no cmocka assertion here, only counts the test checks. */
static void on_done(void *ctx, struct arpc_log_record *r)
{
    (void)ctx;
    struct rec *rec = (struct rec *)r;
    if (r->lr_status != ARPC_OK)
        atomic_fetch_add(&done_not_ok, 1);
    if (rec->hold) {
        sem_post(&held);
        if (!sem_wait_secs(&release, TEST_WAIT_S))
            atomic_fetch_add(&done_not_ok, 1);
    }
    sem_post(&done);
}

/* A reply for client 1, seq `seq`, of len bytes, none of them zero (so that zeros where any
 * of its bytes were always damage it). */
static struct rec *rec_new(uint64_t seq, size_t len)
{
    struct rec *rec = calloc(1, sizeof(*rec) + len);
    assert_non_null(rec);
    for (size_t i = 0; i < len; i++)
        rec->reply[i] = (uint8_t)(0x80 | ((seq * 31 + i) & 0x7f));
    rec->r.lr_type = ARPC_LOG_REPLY;
    rec->r.lr_client_id = 1;
    rec->r.lr_seq = seq;
    rec->r.lr_reply = rec->reply;
    rec->r.lr_reply_len = len;
    return rec;
}

/* ---- the directory ---- */

struct tdir {
    char root[64];
    char log[96];
    char seg[160]; /* the first segment's path */
};

static int dir_setup(void **state)
{
    struct tdir *t = calloc(1, sizeof(*t));
    strcpy(t->root, "/tmp/arpc-power-cut-XXXXXX");
    assert_non_null(mkdtemp(t->root));
    snprintf(t->log, sizeof(t->log), "%s/log", t->root);
    snprintf(t->seg, sizeof(t->seg), "%s/0000000000000001.arpclog", t->log);
    assert_int_equal(0, sem_init(&held, 0, 0));
    assert_int_equal(0, sem_init(&release, 0, 0));
    assert_int_equal(0, sem_init(&done, 0, 0));
    atomic_store(&done_not_ok, 0);
    *state = t;
    return 0;
}

static void empty_dir(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
        if (e->d_name[0] != '.')
            unlink(p);
    }
    closedir(d);
}

static int dir_teardown(void **state)
{
    struct tdir *t = *state;
    empty_dir(t->log);
    rmdir(t->log);
    assert_int_equal(0, rmdir(t->root));
    sem_destroy(&held);
    sem_destroy(&release);
    sem_destroy(&done);
    free(t);
    return 0;
}

/* ---- the log ---- */

static struct arpc_reply_log *open_log(const struct tdir *t, enum arpc_log_fsync policy)
{
    struct arpc_reply_log_options o = {
        .dir = t->log, .fsync = policy, .batch_ms = 60000, .batch_records = 1u << 30};
    struct arpc_reply_log *log = NULL;
    char why[512] = "";
    int rc = arpc_reply_log_open(&log, &o, NULL, NULL, on_done, NULL, why, sizeof(why));
    if (rc != ARPC_OK)
        print_message("open: %s\n", why);
    assert_int_equal(ARPC_OK, rc);
    return log;
}

/* Appends the group's records so that the writer writes them in one go: a gate record
 * first (seq 1000 and up), held in its done callback while they are appended. Returns once
 * all are done. */
static void append_group(struct arpc_reply_log *log, struct rec **group, size_t n)
{
    static uint64_t gate_seq = 1000;
    struct rec *gate = NULL;
    if (n > 1) {
        gate = rec_new(gate_seq++, 10);
        gate->hold = true;
        arpc_reply_log_append(log, &gate->r);
        assert_true(sem_wait_secs(&held, TEST_WAIT_S));
    }
    for (size_t i = 0; i < n; i++)
        arpc_reply_log_append(log, &group[i]->r);
    if (gate != NULL)
        sem_post(&release);
    for (size_t i = 0; i < n + (gate != NULL); i++)
        assert_true(sem_wait_secs(&done, TEST_WAIT_S));
    assert_int_equal(0, atomic_load(&done_not_ok));
    free(gate);
}

/* ---- the file's records ---- */

struct item {
    size_t at, end;
    uint8_t type;
    uint64_t seq;      /* REPLY */
    uint64_t synced;   /* SYNCED */
};

/* Every record after the header, in order; the file must decode whole. */
static size_t parse(const uint8_t *b, size_t len, struct item *out, size_t max)
{
    size_t n = 0;
    for (size_t off = ARPC_LOG_HEADER_SIZE; off < len; n++) {
        struct arpc_log_view v;
        const char *what;
        assert_int_equal(ARPC_LOG_DECODE_OK, arpc_log_decode(b + off, len - off, &v, &what));
        assert_true(n < max);
        out[n] = (struct item){off, off + v.v_size, v.v_type, v.v_seq, v.v_synced};
        off += v.v_size;
    }
    return n;
}

/* The writes: [start, end) of each, from the SYNCED record each begins with (the first is
 * the segment's own, with the header: never a write of records). */
static size_t writes_of(const struct item *it, size_t n, size_t len, size_t *start, size_t *end, size_t max)
{
    size_t w = 0;
    for (size_t i = 1; i < n; i++) /* item 0: the introducing SYNCED record */
        if (it[i].type == ARPC_LOG_SYNCED) {
            assert_true(w < max);
            if (w > 0)
                end[w - 1] = it[i].at;
            start[w++] = it[i].at;
        }
    if (w > 0)
        end[w - 1] = len;
    return w;
}

/* ---- opening a crash state ---- */

struct replayed {
    uint64_t seqs[64];
    size_t n;
};

static void on_reply(void *ctx, uint64_t client, uint64_t seq, const void *reply, size_t len)
{
    (void)client, (void)reply, (void)len;
    struct replayed *r = ctx;
    if (r->n < 64)
        r->seqs[r->n++] = seq;
}

static int open_state(const struct tdir *t, const uint8_t *b, size_t len, struct replayed *r, char *why,
                      size_t whylen)
{
    empty_dir(t->log);
    test_file_write(t->seg, b, len);
    struct arpc_reply_log_options o = {.dir = t->log, .fsync = ARPC_LOG_FSYNC_ALWAYS};
    struct arpc_log_replay_ops ops = {.on_reply = on_reply};
    struct arpc_reply_log *log = NULL;
    *r = (struct replayed){0};
    int rc = arpc_reply_log_open(&log, &o, &ops, r, on_done, NULL, why, whylen);
    arpc_reply_log_close(log);
    return rc;
}

static bool replayed_has(const struct replayed *r, uint64_t seq)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->seqs[i] == seq)
            return true;
    return false;
}

/* The state: b[0..len) with [lo, hi) zeroed (a lost page of an unsynced write). */
static uint8_t *with_lost(const uint8_t *b, size_t len, size_t lo, size_t hi)
{
    uint8_t *s = malloc(len);
    memcpy(s, b, len);
    memset(s + lo, 0, hi - lo);
    return s;
}

/* ---- tests ---- */

/* What a test's writes left: the file's bytes, its records, and its writes' extents. */
struct written {
    uint8_t *b;
    size_t len;
    struct item it[32];
    size_t n;
    size_t start[16], end[16];
    size_t w;
};

/* Writes of one, four and three records, then one, from a log opened afresh; *wr gets what
 * the disk would hold after kill -9 then: the page cache, without close's record. */
static void write_groups(const struct tdir *t, enum arpc_log_fsync policy, struct written *wr)
{
    static const size_t sizes[] = {300, 2500, 3000, 1800, 2200, 5000, 700, 2600, 900};
    static const size_t groups[] = {1, 4, 3, 1};
    struct rec *recs[9];
    for (size_t i = 0; i < 9; i++)
        recs[i] = rec_new(i + 1, sizes[i]);
    struct arpc_reply_log *log = open_log(t, policy);
    size_t next = 0;
    for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++) {
        append_group(log, recs + next, groups[g]);
        next += groups[g];
    }
    wr->b = test_file_read(t->seg, &wr->len);
    arpc_reply_log_close(log);
    for (size_t i = 0; i < 9; i++)
        free(recs[i]);
    wr->n = parse(wr->b, wr->len, wr->it, 32);
    wr->w = writes_of(wr->it, wr->n, wr->len, wr->start, wr->end, 16);
}

/* The part of page `page` a power cut may lose of the write [start, end): the page's bytes
 * before start were synced before the write began. */
static void lost_part(size_t page, size_t start, size_t end, size_t *lo, size_t *hi)
{
    *lo = page > start ? page : start;
    *hi = page + PAGE < end ? page + PAGE : end;
}

/* Under FSYNC_ALWAYS each write's SYNCED record gives exactly where it begins (the write
 * before it was synced before it began), and close adds one giving the whole file. */
static void test_always_claims_what_was_synced(void **state)
{
    struct tdir *t = *state;
    struct written wr;
    write_groups(t, ARPC_LOG_FSYNC_ALWAYS, &wr);
    uint8_t *b = wr.b;
    size_t len = wr.len, n = wr.n;
    struct item *it = wr.it;
    assert_int_equal(6, wr.w); /* with the gates before the groups of several */
    assert_int_equal(ARPC_LOG_SYNCED, it[0].type); /* the segment's first record introduces */
    assert_int_equal(0, it[0].synced);
    for (size_t i = 1; i < n; i++)
        if (it[i].type == ARPC_LOG_SYNCED)
            assert_int_equal(it[i].at, it[i].synced);
    assert_int_equal(it[0].end, it[1].synced); /* the first write: the new segment, synced */
    size_t final_len;
    uint8_t *final = test_file_read(t->seg, &final_len);
    assert_int_equal(len + ARPC_LOG_SYNCED_SIZE, final_len);
    assert_memory_equal(b, final, len);
    struct item after[32];
    assert_int_equal(n + 1, parse(final, final_len, after, 32));
    assert_int_equal(ARPC_LOG_SYNCED, after[n].type);
    assert_int_equal(len, after[n].synced);
    free(final);
    free(b);
}

/* Every page of every write lost, each alone, the writes before it whole: it opens, with
 * exactly the records before the damage. Before SYNCED records, a lost page with an intact
 * record after it (the four-record write) refused to start. */
static void test_lost_page_of_the_last_write_is_cut(void **state)
{
    struct tdir *t = *state;
    struct written wr;
    write_groups(t, ARPC_LOG_FSYNC_ALWAYS, &wr);
    const struct item *it = wr.it;
    const size_t *start = wr.start, *end = wr.end;
    int states = 0, intact_after = 0;
    for (size_t k = 0; k < wr.w; k++) {
        for (size_t page = start[k] / PAGE * PAGE; page < end[k]; page += PAGE) {
            size_t lo, hi;
            lost_part(page, start[k], end[k], &lo, &hi);
            uint8_t *s = with_lost(wr.b, end[k], lo, hi);
            struct replayed r;
            char why[512] = "";
            int rc = open_state(t, s, end[k], &r, why, sizeof(why));
            if (rc != ARPC_OK)
                print_message("write %zu, lost [%zu, %zu): %s\n", k, lo, hi, why);
            assert_int_equal(ARPC_OK, rc);
            size_t cut_at = 0;
            for (size_t i = 0; i < wr.n && it[i].end <= end[k]; i++) {
                bool whole = it[i].end <= lo;
                if (!whole && cut_at == 0)
                    cut_at = it[i].at;
                if (it[i].type == ARPC_LOG_REPLY)
                    assert_int_equal(whole, replayed_has(&r, it[i].seq));
                if (!whole && it[i].at >= hi && it[i].type == ARPC_LOG_REPLY)
                    intact_after++; /* an intact record after the damage, cut with it */
            }
            struct stat st;
            assert_int_equal(0, stat(t->seg, &st));
            assert_int_equal(cut_at, st.st_size);
            free(s);
            states++;
        }
    }
    assert_true(states >= 8);
    assert_true(intact_after >= 2); /* the case that refused before */
    free(wr.b);
}

/* The same damage in a write another one followed: that one's SYNCED record says the damaged
 * bytes were synced, so it is corruption, refused, the file left as it was. */
static void test_lost_page_of_a_synced_write_refuses(void **state)
{
    struct tdir *t = *state;
    struct written wr;
    write_groups(t, ARPC_LOG_FSYNC_ALWAYS, &wr);
    const struct item *it = wr.it;
    const size_t *start = wr.start, *end = wr.end;
    size_t len = wr.len;
    int states = 0;
    for (size_t k = 0; k + 1 < wr.w; k++) {
        for (size_t page = start[k] / PAGE * PAGE; page < end[k]; page += PAGE) {
            size_t lo, hi;
            lost_part(page, start[k], end[k], &lo, &hi);
            uint8_t *s = with_lost(wr.b, len, lo, hi);
            size_t damaged_at = 0;
            for (size_t i = 0; i < wr.n && damaged_at == 0; i++)
                if (it[i].end > lo)
                    damaged_at = it[i].at;
            struct replayed r;
            char why[512] = "", want[128];
            assert_int_equal(ARPC_EPROTO, open_state(t, s, len, &r, why, sizeof(why)));
            snprintf(want, sizeof(want), "is corrupt at offset %zu: ", damaged_at);
            if (strstr(why, want) == NULL || strstr(why, "says were synced") == NULL)
                print_message("want \"%s\" and \"says were synced\" in \"%s\"\n", want, why);
            assert_non_null(strstr(why, want));
            assert_non_null(strstr(why, "says were synced"));
            size_t after_len;
            uint8_t *after = test_file_read(t->seg, &after_len);
            assert_int_equal(len, after_len);
            assert_memory_equal(s, after, len);
            free(after);
            free(s);
            states++;
        }
    }
    assert_true(states >= 6);
    free(wr.b);
}

/* FSYNC_BATCH before any sync: every write after the one open made is unsynced, so damage in
 * any of them is cut (with every write after it), never refused. */
static void test_batch_unsynced_writes_are_cut(void **state)
{
    struct tdir *t = *state;
    struct written wr;
    write_groups(t, ARPC_LOG_FSYNC_BATCH, &wr);
    const struct item *it = wr.it;
    size_t len = wr.len;
    assert_int_equal(1, wr.w); /* no sync came, so one SYNCED record: open's */
    for (size_t page = wr.start[0] / PAGE * PAGE; page < len; page += PAGE) {
        size_t lo, hi;
        lost_part(page, wr.start[0], len, &lo, &hi);
        uint8_t *s = with_lost(wr.b, len, lo, hi);
        struct replayed r;
        char why[512] = "";
        int rc = open_state(t, s, len, &r, why, sizeof(why));
        if (rc != ARPC_OK)
            print_message("lost [%zu, %zu): %s\n", lo, hi, why);
        assert_int_equal(ARPC_OK, rc);
        for (size_t i = 0; i < wr.n; i++)
            if (it[i].type == ARPC_LOG_REPLY)
                assert_int_equal(it[i].end <= lo, replayed_has(&r, it[i].seq));
        free(s);
    }
    free(wr.b);
}

/* A SYNCED record that a client's bytes spell out, inside a reply after the damage: without
 * the segment's nonce it claims nothing, and the damage is cut as unsynced. With the nonce
 * (which only the disk holds) it is believed. */
static void test_forged_claim_is_not_believed(void **state)
{
    struct tdir *t = *state;
    struct arpc_reply_log *log = open_log(t, ARPC_LOG_FSYNC_ALWAYS);
    struct rec *first = rec_new(1, 100);
    append_group(log, &first, 1);
    size_t len; /* where the next write begins */
    uint8_t *b = test_file_read(t->seg, &len);
    uint64_t nonce = le_ld64(b + ARPC_LOG_HEADER_SIZE + ARPC_LOG_RECORD_HEAD + 8); /* the segment's */
    /* Seq 2, then seq 3 whose reply holds a SYNCED record claiming past seq 2's start, but
     * with a nonce a client could guess (the segment's own, plus one). Where seq 2 will be:
     * after this write's SYNCED record, a gate and the next write's SYNCED record. */
    size_t seq2_at = len + 2 * ARPC_LOG_SYNCED_SIZE + ARPC_LOG_RECORD_HEAD + ARPC_LOG_REPLY_FIXED + 10;
    size_t fake_at = seq2_at + (ARPC_LOG_RECORD_HEAD + ARPC_LOG_REPLY_FIXED + 100) + ARPC_LOG_RECORD_HEAD +
                     ARPC_LOG_REPLY_FIXED + 50;
    struct arpc_log_view fake = {.v_type = ARPC_LOG_SYNCED, .v_synced = seq2_at + 1, .v_nonce = nonce + 1};
    struct rec *group[] = {rec_new(2, 100), rec_new(3, 200)};
    arpc_log_encode(group[1]->reply + 50, &fake);
    append_group(log, group, 2);
    size_t len2;
    uint8_t *b2 = test_file_read(t->seg, &len2);
    arpc_reply_log_close(log);
    struct item it[16];
    size_t n = parse(b2, len2, it, 16);
    assert_int_equal(8, n); /* introduction; SYNCED, 1; SYNCED, gate; SYNCED, 2, 3 */
    assert_int_equal(2, it[6].seq);
    assert_int_equal(seq2_at, it[6].at);
    assert_int_equal(ARPC_LOG_SYNCED, b2[fake_at + 8]);

    uint8_t *s = with_lost(b2, len2, seq2_at, seq2_at + 20); /* seq 2's head lost */
    struct replayed r;
    char why[512] = "";
    assert_int_equal(ARPC_OK, open_state(t, s, len2, &r, why, sizeof(why)));
    assert_true(replayed_has(&r, 1));
    assert_false(replayed_has(&r, 2));
    assert_false(replayed_has(&r, 3)); /* intact, after the damage: cut with it */

    /* The same bytes with the segment's nonce (what only the server writes): believed. */
    fake.v_nonce = nonce;
    arpc_log_encode(s + fake_at, &fake);
    assert_int_equal(ARPC_EPROTO, open_state(t, s, len2, &r, why, sizeof(why)));
    assert_non_null(strstr(why, "says were synced"));
    free(s);
    free(b2);
    free(b);
    free(first);
    free(group[0]);
    free(group[1]);
}

/* A segment written before SYNCED records (the same records, without them), which a newer
 * server opens and goes on with under FSYNC_BATCH: none of what it then writes is synced, so
 * a power cut may lose the page its first write began on and keep later ones. That is
 * unsynced data: it must be cut, not refused (the upgrade's first write is not exempt). */
static void test_upgraded_segment_unsynced_first_write_is_cut(void **state)
{
    struct tdir *t = *state;
    struct rec *old_recs[] = {rec_new(1, 300), rec_new(2, 2500)};
    struct arpc_reply_log *log = open_log(t, ARPC_LOG_FSYNC_ALWAYS);
    append_group(log, old_recs, 1);
    append_group(log, old_recs + 1, 1);
    arpc_reply_log_close(log);
    size_t len;
    uint8_t *b = test_file_read(t->seg, &len);
    struct item it[32];
    size_t n = parse(b, len, it, 32);
    uint8_t *old = malloc(len);
    memcpy(old, b, ARPC_LOG_HEADER_SIZE);
    size_t old_len = ARPC_LOG_HEADER_SIZE;
    for (size_t i = 0; i < n; i++)
        if (it[i].type != ARPC_LOG_SYNCED) {
            memcpy(old + old_len, b + it[i].at, it[i].end - it[i].at);
            old_len += it[i].end - it[i].at;
        }
    empty_dir(t->log);
    test_file_write(t->seg, old, old_len); /* what a server before SYNCED records left */

    struct rec *recs[] = {rec_new(3, 2500), rec_new(4, 3000), rec_new(5, 1800), rec_new(6, 2200)};
    log = open_log(t, ARPC_LOG_FSYNC_BATCH);
    append_group(log, recs, 4);
    size_t len2;
    uint8_t *b2 = test_file_read(t->seg, &len2); /* unsynced past old_len (BATCH, no sync yet) */
    arpc_reply_log_close(log);
    assert_memory_equal(old, b2, old_len);
    /* What a power cut may lose: past the last extent a SYNCED record gives (the writer's own
     * word for what a completed fdatasync covered; open synced old_len). */
    size_t synced = old_len;
    n = parse(b2, len2, it, 32);
    for (size_t i = 0; i < n; i++)
        if (it[i].type == ARPC_LOG_SYNCED && it[i].synced > synced)
            synced = it[i].synced;
    size_t lost_end = (synced / PAGE + 1) * PAGE; /* the rest of that page lost, later ones kept */
    assert_true(lost_end + PAGE < len2);
    uint8_t *s = with_lost(b2, len2, synced, lost_end);
    struct replayed r;
    char why[512] = "";
    int rc = open_state(t, s, len2, &r, why, sizeof(why));
    if (rc != ARPC_OK)
        print_message("lost [%zu, %zu): %s\n", synced, lost_end, why);
    assert_int_equal(ARPC_OK, rc);
    assert_true(replayed_has(&r, 1));
    assert_true(replayed_has(&r, 2));
    for (uint64_t seq = 3; seq <= 6; seq++)
        assert_false(replayed_has(&r, seq));
    free(s);
    free(b2);
    free(old);
    free(b);
    for (size_t i = 0; i < 2; i++)
        free(old_recs[i]);
    for (size_t i = 0; i < 4; i++)
        free(recs[i]);
}

/* The newest segment's path (compaction moves on to higher numbers). */
static void newest_segment(const struct tdir *t, char *path, size_t len)
{
    DIR *d = opendir(t->log);
    assert_non_null(d);
    char best[64] = "";
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n == 24 && strcmp(e->d_name + 16, ".arpclog") == 0 && strcmp(e->d_name, best) > 0)
            memcpy(best, e->d_name, n + 1);
    }
    closedir(d);
    assert_true(best[0] != '\0');
    snprintf(path, len, "%s/%s", t->log, best);
}

/* Every SYNCED record of b gives 0 or the end of a record before it (a sync covers whole
 * writes); returns how many distinct non-zero extents they give. */
static int check_claims(const uint8_t *b, size_t len)
{
    struct item it[512];
    size_t n = parse(b, len, it, 512);
    uint64_t last = 0;
    int distinct = 0;
    for (size_t i = 0; i < n; i++) {
        if (it[i].type != ARPC_LOG_SYNCED || it[i].synced == 0)
            continue;
        bool boundary = it[i].synced == ARPC_LOG_HEADER_SIZE;
        for (size_t k = 0; k < i && !boundary; k++)
            boundary = it[k].end == it[i].synced;
        if (!boundary || it[i].synced > it[i].at)
            print_message("SYNCED at %zu gives %" PRIu64 "\n", it[i].at, it[i].synced);
        assert_true(boundary);
        assert_true(it[i].synced <= it[i].at);
        assert_true(it[i].synced >= last); /* never less than the one before */
        distinct += it[i].synced > last;
        last = it[i].synced;
    }
    return distinct;
}

/* FSYNC_BATCH with a sync asked for after every write, and compaction every few KiB: the
 * SYNCED records give what the syncer's completed syncs covered, in the segment they were
 * of (a sync of the segment before a compaction must not count in the next one), and the
 * log opens after it. Each append waits for the syncer's next completed sync (its count in
 * the stats), so the next write has one to claim however slow the disk's fdatasync is; runs
 * until a segment shows claims of three syncs and two compactions happened. */
static void test_batch_claims_follow_completed_syncs(void **state)
{
    struct tdir *t = *state;
    struct arpc_reply_log_options o = {
        .dir = t->log, .fsync = ARPC_LOG_FSYNC_BATCH, .batch_ms = 1, .batch_records = 1, .compact_bytes = 8192};
    struct arpc_reply_log *log = NULL;
    char why[512] = "";
    assert_int_equal(ARPC_OK, arpc_reply_log_open(&log, &o, NULL, NULL, on_done, NULL, why, sizeof(why)));
    int best = 0;
    uint64_t compactions = 0;
    struct arpc_reply_log_stats st;
    for (uint64_t seq = 1; seq <= 2000 && (best < 3 || compactions < 2); seq++) {
        struct rec *r = rec_new(seq, 150);
        r->r.lr_ack = seq - 1; /* the client has every earlier reply: compaction keeps one */
        arpc_reply_log_stats(log, &st);
        uint64_t fsyncs = st.fsyncs;
        append_group(log, &r, 1);
        free(r);
        assert_true(WAIT_UNTIL((arpc_reply_log_stats(log, &st), st.fsyncs > fsyncs)));
        char path[256];
        newest_segment(t, path, sizeof(path));
        size_t len;
        uint8_t *b = test_file_read(path, &len);
        int distinct = check_claims(b, len);
        best = distinct > best ? distinct : best;
        free(b);
        arpc_reply_log_stats(log, &st);
        compactions = st.compactions;
    }
    arpc_reply_log_close(log);
    assert_true(best >= 3);
    assert_true(compactions >= 2);
    assert_int_equal(ARPC_OK, arpc_reply_log_open(&log, &o, NULL, NULL, on_done, NULL, why, sizeof(why)));
    arpc_reply_log_close(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_always_claims_what_was_synced, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_lost_page_of_the_last_write_is_cut, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_lost_page_of_a_synced_write_refuses, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_batch_unsynced_writes_are_cut, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_forged_claim_is_not_believed, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_upgraded_segment_unsynced_first_write_is_cut, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_batch_claims_follow_completed_syncs, dir_setup, dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
