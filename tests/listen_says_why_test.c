/*
 * arpc_server_listen has no errbuf: its log line is where a user learns why a listen failed.
 * Every failure says so, the address without a scheme ("127.0.0.1:7000", an easy slip) and
 * an unknown scheme included, naming the schemes there are, as a client's connect does; a
 * failed listen does not stop a later good one. And the bound address is whole in 256 bytes;
 * a bound too small for it fails the listen.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/log_capture.h"
#include "support/test_util.h"

static void test_no_scheme_is_said(void **state)
{
    (void)state;
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    log_capture_clear();
    char bound[256] = "untouched";
    assert_int_equal(ARPC_EADDR, arpc_server_listen(s, "127.0.0.1:0", bound, sizeof(bound)));
    assert_string_equal("untouched", bound);
    assert_int_equal(1, LOG_LINES_WITH("cannot listen", "unknown scheme in \"127.0.0.1:0\"", "tcp://"));
    assert_int_equal(ARPC_EADDR, arpc_server_listen(s, "http://127.0.0.1:0", NULL, 0));
    assert_int_equal(1, LOG_LINES_WITH("cannot listen", "unknown scheme in \"http://127.0.0.1:0\""));
    /* The server is none the worse: a good address still listens. */
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", bound, sizeof(bound)));
    assert_non_null(strstr(bound, "tcp://127.0.0.1:"));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    log_capture_clear();
}

static void test_too_long_is_said(void **state)
{
    (void)state;
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    log_capture_clear();
    char addr[400] = "inproc://";
    memset(addr + 9, 'n', 300);
    addr[309] = '\0';
    assert_int_equal(ARPC_EADDR, arpc_server_listen(s, addr, NULL, 0));
    assert_int_equal(1, LOG_LINES_WITH("cannot listen", "address too long (at most 255 bytes)"));
    /* The longest address there may be fits a 256-byte bound whole. */
    memset(addr + 9, 'n', 246);
    addr[255] = '\0';
    char bound[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, addr, bound, sizeof(bound)));
    assert_string_equal(addr, bound);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    log_capture_clear();
}

/* A bound too small for the address fails the listen, said, nothing left listening (the
 * same address listens again); a cut "tcp://127.0.0.1:4" would name another port. One byte
 * more than the address is enough. */
static void test_small_bound_is_refused(void **state)
{
    (void)state;
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    log_capture_clear();
    static const char addr[] = "inproc://listen-small-bound";
    char bound[sizeof(addr)] = "untouched";
    assert_int_equal(ARPC_ETOOLARGE, arpc_server_listen(s, addr, bound, sizeof(addr) - 1));
    assert_string_equal("untouched", bound);
    assert_int_equal(1, LOG_LINES_WITH("cannot listen", "is bound as 27 bytes, 28 with its NUL, and bound has room for 27"));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, addr, bound, sizeof(bound)));
    assert_string_equal(addr, bound);
    char port[8];
    assert_int_equal(ARPC_ETOOLARGE, arpc_server_listen(s, "tcp://127.0.0.1:0", port, sizeof(port)));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    log_capture_clear();
}

/* A server on an application's loop that stopped: the listen is refused ARPC_ESHUTDOWN, said,
 * bound untouched, and nothing listens. Before, it answered ARPC_OK with the address, and
 * the socket took connections (the kernel's backlog) that nobody would ever accept (helper
 * 232's review). */
static void test_listen_on_a_stopped_loop_is_refused(void **state)
{
    (void)state;
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    arpc_server_options so = {.loop = loop};
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    arpc_loop_stop(loop);
    log_capture_clear();
    char addr[96], bound[128] = "untouched"; /* (a path that fits sun_path) */
    snprintf(addr, sizeof(addr), "unix:///tmp/arpc-listen-stopped-%d.sock", (int)getpid());
    assert_int_equal(ARPC_ESHUTDOWN, arpc_server_listen(s, addr, bound, sizeof(bound)));
    assert_string_equal("untouched", bound);
    assert_int_equal(1, LOG_LINES_WITH("cannot listen", addr, "its loop stopped"));
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", addr + strlen("unix://"));
    assert_int_not_equal(0, connect(fd, (struct sockaddr *)&sa, sizeof(sa))); /* nobody there */
    close(fd);
    /* It does not listen, so it does not say it does: a method may still be registered
     * (before, "the server already listens"), and a listen is refused again. */
    log_capture_clear();
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(0, LOG_LINES_WITH("already listens"));
    assert_int_equal(ARPC_ESHUTDOWN, arpc_server_listen(s, addr, NULL, 0));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_loop_destroy(loop);
    log_capture_clear();
}

int main(void)
{
    log_capture_start(ARPC_LOG_DEBUG); /* before other arpc calls */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_scheme_is_said),
        cmocka_unit_test(test_too_long_is_said),
        cmocka_unit_test(test_small_bound_is_refused),
        cmocka_unit_test(test_listen_on_a_stopped_loop_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
