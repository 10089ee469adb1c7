/*
 * A method registered read_only (arpc_method_options) runs a numbered (at-most-once) call as
 * an unnumbered one: nothing of it is kept in the reply cache or written to the reply log,
 * and a copy of the call runs again; the acknowledgements such calls carry still free the
 * client's other replies. read_only with numbered_only is refused.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/raw_client.h"
#include "support/server_proc.h"
#include "support/test_util.h"

static atomic_int get_runs, put_runs;

static void h_get(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&get_runs, 1);
    arpc_reply(req, "value", 5);
}

static void h_put(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&put_runs, 1);
    arpc_reply(req, "ok", 2);
}

/* A server with a reply log in dir: t.get read-only, t.put not. */
static arpc_server *make_server(const char *dir, char *addr, size_t addrlen)
{
    atomic_store(&get_runs, 0);
    atomic_store(&put_runs, 0);
    arpc_server *s;
    arpc_server_options so = {.workers = 1, .log_dir = dir};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.get", h_get, NULL, &(arpc_method_options){.read_only = true}));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.put", h_put, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, addrlen));
    return s;
}

static arpc_server_stats stats_of(const arpc_server *s)
{
    arpc_server_stats st;
    assert_int_equal(ARPC_OK, arpc_server_stats(s, &st));
    return st;
}

static void call_ok(arpc_client *c, const char *method)
{
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_OK, arpc_call(c, method, "k", 1, &reply, &len, 10000));
    arpc_free(reply);
}

/* The client's calls are at-most-once (the default): its reads write no log record and leave
 * nothing in the cache, its writes do both; a read after the writes carries their ack. */
static void test_reads_skip_the_cache_and_the_log(void **state)
{
    (void)state;
    char dir[256], addr[256];
    server_proc_mkdir(dir, sizeof(dir));
    arpc_server *s = make_server(dir, addr, sizeof(addr));
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    uint64_t records = stats_of(s).log_records;
    for (int i = 0; i < 100; i++)
        call_ok(c, "t.get");
    arpc_server_stats st = stats_of(s);
    assert_int_equal(records, st.log_records);
    assert_int_equal(0, st.reply_cache_calls);
    assert_int_equal(100, atomic_load(&get_runs));
    for (int i = 0; i < 10; i++)
        call_ok(c, "t.put");
    st = stats_of(s);
    assert_true(st.log_records >= records + 10); /* each write's reply is a record */
    assert_true(st.reply_cache_calls >= 1);      /* the last write's at least, not acknowledged */
    records = st.log_records;
    call_ok(c, "t.get"); /* it carries the ack of every write */
    st = stats_of(s);
    assert_int_equal(0, st.reply_cache_calls);
    assert_int_equal(records, st.log_records); /* and writes no record of its own */
    assert_int_equal(10, atomic_load(&put_runs));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    server_proc_rmdir(dir);
}

static void expect_reply(struct raw_client *r, uint64_t xid)
{
    struct raw_frame f;
    assert_true(raw_read(r, &f, false));
    assert_int_equal(xid, f.f.f_xid);
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
}

/* The price of read_only: a copy of a numbered read (the same seq under a new xid, as a retry
 * after a lost connection sends it) runs again, where a copy of a write gets the first
 * run's reply. */
static void test_a_copy_of_a_read_runs_again(void **state)
{
    (void)state;
    char dir[256], addr[256];
    server_proc_mkdir(dir, sizeof(dir));
    arpc_server *s = make_server(dir, addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0x7ead));
    assert_true(raw_request(&r, 1, 1, 0, 0, "t.get", "k", 1));
    expect_reply(&r, 1);
    assert_true(raw_request(&r, 2, 1, 0, 0, "t.get", "k", 1));
    expect_reply(&r, 2);
    assert_int_equal(2, atomic_load(&get_runs));
    assert_true(raw_request(&r, 3, 2, 0, 0, "t.put", "k", 1));
    expect_reply(&r, 3);
    assert_true(raw_request(&r, 4, 2, 0, 0, "t.put", "k", 1));
    expect_reply(&r, 4);
    assert_int_equal(1, atomic_load(&put_runs));
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    server_proc_rmdir(dir);
}

/* A read-only method's calls run unnumbered; numbered_only refuses those: both is a mistake. */
static void test_read_only_with_numbered_only_refused(void **state)
{
    (void)state;
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_EINVAL, arpc_server_register(s, "t.both", h_get, NULL,
                                                       &(arpc_method_options){.read_only = true, .numbered_only = true}));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_skip_the_cache_and_the_log),
        cmocka_unit_test(test_a_copy_of_a_read_runs_again),
        cmocka_unit_test(test_read_only_with_numbered_only_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
