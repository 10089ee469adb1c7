/*
 * arpc-call's "a failure is one line on stderr" with the library's log lines in play
 * (tools/call_log.c, tools/call_fail.c): a line that adds to the failure is folded into it, one
 * that says the same is dropped, lines after the failure line are dropped, control bytes and
 * many long lines still make one line, and after a success the lines are written as the
 * library would have. End to end: arpc-call --json against a server that answers garbage,
 * where the library logs twice before the call fails and the call's words say why.
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
#include <unistd.h>

#include "arpc/arpc.h"
#include "base/log.h"
#include "call_fail.h"
#include "call_log.h"
#include "support/call_run.h"
#include "support/test_util.h"

#ifndef ARPC_CALL_BIN
#error "tests/CMakeLists.txt defines ARPC_CALL_BIN, the arpc-call program's path"
#endif

/* ---- what call_fail and call_log_end write on stderr ---- */

struct captured {
    int saved, fd;
    char text[16384];
};

static void capture_begin(struct captured *c)
{
    char path[] = "/tmp/arpc-call-oneline-XXXXXX";
    c->fd = mkstemp(path);
    assert_true(c->fd >= 0);
    unlink(path);
    fflush(stderr);
    c->saved = dup(2);
    assert_true(c->saved >= 0);
    assert_int_equal(2, dup2(c->fd, 2));
}

static const char *capture_end(struct captured *c)
{
    fflush(stderr);
    assert_int_equal(2, dup2(c->saved, 2));
    close(c->saved);
    lseek(c->fd, 0, SEEK_SET);
    ssize_t n = read(c->fd, c->text, sizeof(c->text) - 1);
    assert_true(n >= 0);
    c->text[n] = '\0';
    close(c->fd);
    return c->text;
}

/* ---- the fold ---- */

static void test_line_that_adds_is_folded(void **state)
{
    (void)state;
    call_log_start();
    arpc_log(ARPC_LOG_WARN, "JSON-RPC server tcp://127.0.0.1:1: sent something that is not a JSON object");
    struct captured c;
    capture_begin(&c);
    assert_int_equal(10 + ARPC_ECONNLOST, call_fail("KV.Get", ARPC_ECONNLOST, NULL, 0));
    /* after the failure line: dropped, not a second line */
    arpc_log(ARPC_LOG_WARN, "JSON-RPC connection to tcp://127.0.0.1:1 closed: late");
    call_log_end(true);
    char want[512];
    snprintf(want, sizeof(want),
             "arpc-call: KV.Get: ARPC_ECONNLOST: %s (arpc: JSON-RPC server tcp://127.0.0.1:1: sent something that "
             "is not a JSON object)\n",
             arpc_strerror(ARPC_ECONNLOST));
    assert_string_equal(want, capture_end(&c));
}

static void test_line_that_says_the_same_is_dropped(void **state)
{
    (void)state;
    static const char why[] = "tls://127.0.0.1:1: TLS handshake failed: certificate verify failed: hostname mismatch";
    call_log_start();
    arpc_log(ARPC_LOG_WARN,
             "closing the connection with tls://127.0.0.1:1: TLS handshake failed: certificate verify failed: "
             "hostname mismatch");
    struct captured c;
    capture_begin(&c);
    call_fail("tls://127.0.0.1:1", ARPC_ETLS, why, strlen(why));
    call_log_end(false);
    assert_string_equal("arpc-call: tls://127.0.0.1:1: ARPC_ETLS: tls://127.0.0.1:1: TLS handshake failed: "
                        "certificate verify failed: hostname mismatch\n",
                        capture_end(&c));
}

/* WHAT (METHOD or ADDR, from the command line) holding a line feed or a terminal's escape is
 * escaped as a server's message is: still one line. (Before, it was written raw: two lines,
 * and the escape reached the terminal.) A backslash stays one: a server's message has its
 * peer's bytes escaped already, and escaping them again wrote "a\x5cx5cb" for the "a\x5cb" the
 * server said (an operator's trial). */
static void test_what_escaped(void **state)
{
    (void)state;
    call_log_start();
    struct captured c;
    capture_begin(&c);
    assert_int_equal(10 + ARPC_ENOMETHOD, call_fail("a\nb\x1b[31m\\", ARPC_ENOMETHOD, "m", 1));
    call_log_end(false);
    assert_string_equal("arpc-call: a\\x0ab\\x1b[31m\\: ARPC_ENOMETHOD: m\n", capture_end(&c));
    call_log_start();
    capture_begin(&c);
    static const char said[] = "no such method: a\\x5cb";
    call_fail("a\\b", ARPC_ENOMETHOD, said, strlen(said));
    call_log_end(false);
    assert_string_equal("arpc-call: a\\b: ARPC_ENOMETHOD: no such method: a\\x5cb\n", capture_end(&c));
}

static void test_many_long_lines_stay_one(void **state)
{
    (void)state;
    char big[1100];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    call_log_start();
    arpc_log(ARPC_LOG_WARN, "peer: a line\nwith a line feed and \x1b[31m an escape");
    for (int i = 0; i < 7; i++)
        arpc_log(ARPC_LOG_ERROR, "line %d: %s", i, big);
    struct captured c;
    capture_begin(&c);
    call_fail("m", ARPC_ECONNLOST, NULL, 0);
    const char *out = capture_end(&c);
    assert_int_equal(1, call_run_lines(out));
    assert_true(strlen(out) < 8192);
    assert_non_null(strstr(out, "(arpc: peer: a line\\x0awith a line feed and \\x1b[31m an escape)"));
    assert_non_null(strstr(out, "(and 4 more arpc log lines)"));
}

static void test_success_writes_the_lines(void **state)
{
    (void)state;
    call_log_start();
    arpc_log(ARPC_LOG_INFO, "reconnected to tcp://127.0.0.1:1");
    arpc_log(ARPC_LOG_DEBUG, "below the level: never kept");
    struct captured c;
    capture_begin(&c);
    call_log_end(true);
    assert_string_equal("arpc: reconnected to tcp://127.0.0.1:1\n", capture_end(&c));
    /* a failure that printed its own line (a local one): the kept lines are dropped */
    call_log_start();
    arpc_log(ARPC_LOG_WARN, "something");
    capture_begin(&c);
    call_log_end(false);
    assert_string_equal("", capture_end(&c));
}

/* ---- end to end: a JSON-RPC server that answers garbage ---- */

#ifdef ARPC_WITH_JSONRPC

struct garbage_server {
    int lfd;
    char addr[64];
    pthread_t thread;
};

/* Takes one connection, reads its request line, answers something that is not JSON, and
 * waits for the client's close. A failed accept (the test shut the listener) ends it. */
static void *garbage_serve(void *arg)
{
    struct garbage_server *g = arg;
    int fd = accept(g->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0 && memchr(buf, '\n', (size_t)n) == NULL) {
    }
    static const char garbage[] = "garbage\n";
    if (write(fd, garbage, sizeof(garbage) - 1) < 0) {
    }
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
    close(fd);
    return NULL;
}

static void test_json_garbage_one_line(void **state)
{
    (void)state;
    struct garbage_server g;
    uint16_t port;
    g.lfd = fd_listen_loopback(0, 4, 0, &port); /* ready: connects queue from here on */
    assert_true(g.lfd >= 0);
    snprintf(g.addr, sizeof(g.addr), "tcp://127.0.0.1:%u", port);
    assert_int_equal(0, pthread_create(&g.thread, NULL, garbage_serve, &g));

    struct call_run r;
    call_run(&r, ARPC_CALL_BIN, NULL, 0, (const char *const[]){"--json", g.addr, "KV.Get", "{}", NULL});
    shutdown(g.lfd, SHUT_RDWR); /* wakes an accept still waiting, should the call not have come */
    assert_int_equal(0, pthread_join(g.thread, NULL));
    close(g.lfd);

    assert_int_equal(10 + ARPC_ECONNLOST, r.status);
    assert_int_equal(0, r.out_len);
    assert_int_equal(1, call_run_lines(r.err));
    static const char head[] = "arpc-call: KV.Get: ARPC_ECONNLOST: ";
    assert_memory_equal(head, r.err, sizeof(head) - 1);
    /* The call's own words say how the connection was lost; the library's log line, which
     * says the same, is dropped. */
    assert_non_null(strstr(r.err, "sent, then the connection was lost: it may or may not have run (connection to "));
    assert_non_null(strstr(r.err, "lost: sent something that is not a JSON object)"));
    assert_null(strstr(r.err, "(arpc: "));
}

#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_that_adds_is_folded),
        cmocka_unit_test(test_line_that_says_the_same_is_dropped),
        cmocka_unit_test(test_what_escaped),
        cmocka_unit_test(test_many_long_lines_stay_one),
        cmocka_unit_test(test_success_writes_the_lines),
#ifdef ARPC_WITH_JSONRPC
        cmocka_unit_test(test_json_garbage_one_line),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
