/*
 * At most once across a restart that raises the idle expiry. A numbered call runs, its reply
 * is lost on the way, and its client, idle, is forgotten by a server whose client_expiry_s is
 * 1 s (the log records it). The server is restarted on the same log with an expiry of 600 s.
 * The client, reconnecting, must not send the call again: the restarted server replays the
 * forgetting and would run it a second time. Before, the client judged the call's age by the
 * new server's 600 s, sent it, and its handler ran twice, the caller told ARPC_OK (helper
 * 242's trial). Now it keeps the shortest expiry its server's epoch said, and the call ends
 * ARPC_ECONNLOST ("may have run"), run once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "arpc/arpc.h"
#include "arpc/stats.h"
#include "support/cut_proxy.h"
#include "support/server_proc.h"
#include "support/test_util.h"

static atomic_int runs;

static void h_count(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&runs, 1);
    latch_add();
    arpc_reply(req, "ran", 3);
}

static arpc_server *server_on(const char *dir, const char *listen, uint32_t expiry_s, char *addr, size_t addrlen)
{
    arpc_server *s;
    arpc_server_options o = {.log_dir = dir, .client_expiry_s = expiry_s, .workers = 1};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &o));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.count", h_count, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, listen, addr, addrlen));
    return s;
}

static void test_call_not_sent_again_after_expiry_raised(void **state)
{
    (void)state;
    atomic_store(&runs, 0);
    latch_reset();
    char dir[256], addr[256], via[256];
    server_proc_mkdir(dir, sizeof(dir));
    arpc_server *s = server_on(dir, "tcp://127.0.0.1:0", 1, addr, sizeof(addr));
    struct cut_proxy *p = cut_proxy_start(addr, via, sizeof(via));
    assert_non_null(p);
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, via, NULL));

    cut_proxy_swallow_replies(p, true);
    arpc_future *f = arpc_call_async(c, "t.count", "x", 1, 120000);
    assert_non_null(f);
    assert_true(latch_wait(1, 10000)); /* it ran; its reply is dropped on the way */
    /* Idle, the client is forgotten (1 s, swept every 0.1 s), and the log says so. */
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, reply_cache_clients), 0, 30000));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));

    /* The same log and address, a longer expiry. */
    char again[256];
    s = server_on(dir, addr, 600, again, sizeof(again));
    cut_proxy_swallow_replies(p, false);
    (void)cut_proxy_cut(p); /* the client reconnects, to the restarted server */
    assert_int_equal(ARPC_ECONNLOST, arpc_future_wait(f));
    assert_int_equal(1, atomic_load(&runs));
    arpc_future_release(f);

    /* The client goes on: a new call runs. */
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_OK, arpc_call(c, "t.count", "y", 1, &reply, &len, 10000));
    arpc_free(reply);
    assert_int_equal(2, atomic_load(&runs));
    arpc_client_close(c);
    cut_proxy_stop(p);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    server_proc_rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_call_not_sent_again_after_expiry_raised),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
