/*
 * arpc-call (tools/arpc_call.c), run as a program against a server in this process: the
 * reply on stdout, --hex, --file (a path and stdin), --list, an unknown method and a handler
 * error (exit status and the stderr line), a deadline expiry, --repeat, and usage errors; and
 * --json (JSON-RPC) against examples/kv_server in a child process, or, built without
 * JSON-RPC, its refusal.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/call_run.h"
#include "support/test_util.h"
#include "transport/transport.h"

#ifndef ARPC_CALL_BIN
#error "tests/CMakeLists.txt defines ARPC_CALL_BIN, the arpc-call program's path"
#endif

extern char **environ;

struct fixture {
    char addr[ARPC_ADDR_MAX];
    arpc_server *server;
    pthread_mutex_t mu;
    arpc_request *held; /* t.hold's request, answered by the teardown */
    pid_t kv_pid;       /* a kv_server child still running (a failed test): killed by the teardown */
};

static void h_fail(arpc_request *req, void *ctx)
{
    (void)ctx;
    arpc_reply_error(req, "it went\nwrong");
}

/* Never answers in time: the caller's deadline passes. */
static void h_hold(arpc_request *req, void *ctx)
{
    struct fixture *fx = ctx;
    pthread_mutex_lock(&fx->mu);
    fx->held = req;
    pthread_mutex_unlock(&fx->mu);
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    pthread_mutex_init(&fx->mu, NULL);
    arpc_server_options so = {.workers = 2};
    assert_int_equal(ARPC_OK, arpc_server_create(&fx->server, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->server, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->server, "t.fail", h_fail, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->server, "t.hold", h_hold, fx, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(fx->server, "tcp://127.0.0.1:0", fx->addr, sizeof(fx->addr)));
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    pthread_mutex_lock(&fx->mu);
    if (fx->held != NULL)
        arpc_reply(fx->held, NULL, 0); /* late: dropped, but the request is let go */
    pthread_mutex_unlock(&fx->mu);
    if (fx->kv_pid > 0) {
        kill(fx->kv_pid, SIGKILL);
        waitpid(fx->kv_pid, NULL, 0);
    }
    arpc_server_destroy(fx->server);
    pthread_mutex_destroy(&fx->mu);
    free(fx);
    return 0;
}

/* ---- running the program ---- */

#define RUN(r, ...) call_run((r), ARPC_CALL_BIN, NULL, 0, (const char *const[]){__VA_ARGS__, NULL})
#define RUN_IN(r, in, len, ...) call_run((r), ARPC_CALL_BIN, (in), (len), (const char *const[]){__VA_ARGS__, NULL})

/* ---- the cases ---- */

static void test_call(void **state)
{
    struct fixture *fx = *state;
    struct call_run r;
    RUN(&r, fx->addr, "t.echo", "hello, server");
    assert_int_equal(0, r.status);
    assert_string_equal("hello, server", r.out);
    assert_int_equal(0, r.err_len);
    /* no DATA: an empty request, an empty reply */
    RUN(&r, fx->addr, "t.echo");
    assert_int_equal(0, r.status);
    assert_int_equal(0, r.out_len);
}

static void test_hex(void **state)
{
    struct fixture *fx = *state;
    struct call_run r;
    RUN(&r, "--hex", fx->addr, "t.echo", "68 65 6C 6c 6f 00ff");
    assert_int_equal(0, r.status);
    assert_string_equal("68656c6c6f00ff\n", r.out);
    RUN(&r, "--hex", fx->addr, "t.echo", "6g");
    assert_int_equal(2, r.status);
    RUN(&r, "--hex", fx->addr, "t.echo", "abc");
    assert_int_equal(2, r.status);
}

static void test_file(void **state)
{
    struct fixture *fx = *state;
    uint8_t body[3000];
    fill_pattern(body, 0, sizeof(body)); /* binary, NUL bytes included */
    char path[] = "/tmp/arpc-call-body-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal((ssize_t)sizeof(body), write(fd, body, sizeof(body)));
    close(fd);
    struct call_run r;
    RUN(&r, "--file", path, fx->addr, "t.echo");
    assert_int_equal(0, r.status);
    assert_int_equal(sizeof(body), r.out_len);
    assert_memory_equal(body, r.out, sizeof(body));
    /* --file=PATH, and --hex over a file of hex text */
    char hexpath[] = "/tmp/arpc-call-hex-XXXXXX";
    fd = mkstemp(hexpath);
    assert_true(fd >= 0);
    assert_int_equal(9, write(fd, "0001 02\n\n", 9));
    close(fd);
    char opt[64];
    snprintf(opt, sizeof(opt), "--file=%s", hexpath);
    RUN(&r, opt, "--hex", fx->addr, "t.echo");
    assert_int_equal(0, r.status);
    assert_string_equal("000102\n", r.out);
    unlink(hexpath);
    unlink(path);
    /* standard input */
    RUN_IN(&r, "from stdin", 10, "--file", "-", fx->addr, "t.echo");
    assert_int_equal(0, r.status);
    assert_string_equal("from stdin", r.out);
    /* a file that is not there: a local failure */
    RUN(&r, "--file", "/nonexistent/arpc-call-body", fx->addr, "t.echo");
    assert_int_equal(1, r.status);
    assert_non_null(strstr(r.err, "arpc-call: /nonexistent/arpc-call-body: cannot read"));
    /* DATA and --file together */
    RUN(&r, "--file", "-", fx->addr, "t.echo", "data");
    assert_int_equal(2, r.status);
}

static void test_list(void **state)
{
    struct fixture *fx = *state;
    struct call_run r;
    RUN(&r, "--list", fx->addr);
    assert_int_equal(0, r.status);
    assert_string_equal("arpc.methods\narpc.stats\nt.echo\nt.fail\nt.hold\n", r.out);
}

static void test_errors(void **state)
{
    struct fixture *fx = *state;
    struct call_run r;
    RUN(&r, fx->addr, "t.nope", "x");
    assert_int_equal(10 + ARPC_ENOMETHOD, r.status);
    assert_int_equal(0, r.out_len);
    assert_string_equal("arpc-call: t.nope: ARPC_ENOMETHOD: no such method: t.nope\n", r.err);
    /* the handler's message, its line feed escaped */
    RUN(&r, fx->addr, "t.fail");
    assert_int_equal(10 + ARPC_EHANDLER, r.status);
    assert_string_equal("arpc-call: t.fail: ARPC_EHANDLER: it went\\x0awrong\n", r.err);
    /* no server there */
    char path[128];
    snprintf(path, sizeof(path), "unix:///tmp/arpc-call-test-none-%d.sock", getpid());
    RUN(&r, path, "t.echo");
    assert_int_equal(10 + ARPC_ECONNREFUSED, r.status);
    char want[256];
    snprintf(want, sizeof(want), "arpc-call: %s: ARPC_ECONNREFUSED: ", path);
    assert_memory_equal(want, r.err, strlen(want));
}

static void test_deadline(void **state)
{
    struct fixture *fx = *state;
    struct call_run r;
    RUN(&r, "--deadline-ms", "200", fx->addr, "t.hold");
    /* ARPC_EEXPIRED: a worker later than the deadline to take the call (a loaded machine); the
     * server's refusal then may reach the client before its own timer. */
    bool expired = r.status == 10 + ARPC_EEXPIRED;
    assert_int_equal(10 + (expired ? ARPC_EEXPIRED : ARPC_ETIMEDOUT), r.status);
    assert_int_equal(0, r.out_len);
    const char *want = expired ? "arpc-call: t.hold: ARPC_EEXPIRED: " : "arpc-call: t.hold: ARPC_ETIMEDOUT: ";
    assert_memory_equal(want, r.err, strlen(want));
    RUN(&r, "--deadline-ms", "0", fx->addr, "t.echo");
    assert_int_equal(2, r.status);
}

/* --deadline-ms bounds connecting too: a server that accepts and never says HELLO (a listening
 * socket nobody accepts from) fails the command at the deadline, not at the 5 s connect timeout,
 * as ARPC_EUNREACHABLE: nothing was sent (ARPC_ETIMEDOUT's status says "may have run"). */
static void test_deadline_bounds_connecting(void **state)
{
    (void)state;
    uint16_t port;
    int lfd = fd_listen_loopback(0, 16, 0, &port);
    assert_true(lfd >= 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%u", port);
    struct call_run r;
    RUN(&r, "--deadline-ms", "200", addr, "t.echo");
    close(lfd);
    assert_int_equal(10 + ARPC_EUNREACHABLE, r.status);
    assert_non_null(strstr(r.err, "timed out after 200 ms"));
}

static void test_repeat(void **state)
{
    struct fixture *fx = *state;
    struct call_run r;
    RUN(&r, "--repeat", "500", fx->addr, "t.echo", "abc");
    assert_int_equal(0, r.status);
    assert_memory_equal("calls 500 ok 500 failed 0 p50_us ", r.out, 33);
    assert_non_null(strstr(r.out, " p99_us "));
    /* The last replies may reach arpc-call before the server's loop books them. */
    arpc_method_stats ms;
    assert_true(server_stats_caught_up(fx->server, "t.echo", ARPC_OK, 500, &ms));
    assert_int_equal(500, ms.calls.by_outcome[ARPC_OK]);
    /* every call failing: the summary, then the first failure's line and status */
    RUN(&r, "--repeat=20", fx->addr, "t.fail");
    assert_int_equal(10 + ARPC_EHANDLER, r.status);
    assert_memory_equal("calls 20 ok 0 failed 20 ", r.out, 24);
    assert_string_equal("arpc-call: t.fail: ARPC_EHANDLER: it went\\x0awrong\n", r.err);
}

/* Output that cannot be written is a local failure (exit 1, said on stderr), as the help text
 * promises, for every output: the reply, --repeat's summary, --help. (Before, the summary and
 * the help were lost with exit 0.) */
static void test_output_unwritable(void **state)
{
    struct fixture *fx = *state;
    struct call_run r;
    call_run_stdout(&r, ARPC_CALL_BIN, "/dev/full", (const char *const[]){fx->addr, "t.echo", "abc", NULL});
    assert_int_equal(1, r.status);
    assert_string_equal("arpc-call: writing the reply: No space left on device\n", r.err);
    call_run_stdout(&r, ARPC_CALL_BIN, "/dev/full", (const char *const[]){"--repeat", "5", fx->addr, "t.echo", NULL});
    assert_int_equal(1, r.status);
    assert_string_equal("arpc-call: writing the summary: No space left on device\n", r.err);
    call_run_stdout(&r, ARPC_CALL_BIN, "/dev/full", (const char *const[]){"--help", NULL});
    assert_int_equal(1, r.status);
    assert_string_equal("arpc-call: writing the help: No space left on device\n", r.err);
}

static void test_usage(void **state)
{
    struct fixture *fx = *state;
    struct call_run r;
    RUN(&r, "--help");
    assert_int_equal(0, r.status);
    assert_non_null(strstr(r.out, "usage: arpc-call"));
    assert_non_null(strstr(r.out, " 23 ARPC_ENOMETHOD"));
    RUN(&r, "--version");
    assert_int_equal(0, r.status);
    char want[64];
    snprintf(want, sizeof(want), "arpc-call %s\n", ARPC_VERSION_STRING);
    assert_string_equal(want, r.out);
    RUN(&r, fx->addr);
    assert_int_equal(2, r.status);
    RUN(&r, "--no-such-option", fx->addr, "t.echo");
    assert_int_equal(2, r.status);
    RUN(&r, "--repeat", "x", fx->addr, "t.echo");
    assert_int_equal(2, r.status);
    RUN(&r, "--list", fx->addr, "t.echo");
    assert_int_equal(2, r.status);
}

/* A refused option value is named, with what the option takes, so the user can fix it. */
static void test_bad_value_says_what_is_wanted(void **state)
{
    struct fixture *fx = *state;
    struct call_run r;
    RUN(&r, "--deadline-ms", "0", fx->addr, "t.echo");
    assert_int_equal(2, r.status);
    assert_string_equal("arpc-call: bad value '0' for --deadline-ms: "
                        "it takes a whole number of milliseconds, 1 or more\n"
                        "(arpc-call --help for usage)\n",
                        r.err);
    RUN(&r, "--repeat=ten", fx->addr, "t.echo");
    assert_int_equal(2, r.status);
    assert_non_null(strstr(r.err, "bad value 'ten' for --repeat: it takes a whole number, 1 or more\n"));
    RUN(&r, "--ca", "", "tls://127.0.0.1:1", "t.echo");
    assert_int_equal(2, r.status);
    assert_non_null(strstr(r.err, "bad value '' for --ca: it takes a file name, not empty\n"));
    assert_int_equal(2, call_run_lines(r.err));
}

/* ---- --json: JSON-RPC 1.0 ---- */

#ifdef ARPC_WITH_JSONRPC
#ifndef KV_SERVER_BIN
#error "tests/CMakeLists.txt defines KV_SERVER_BIN, the kv_server example's path"
#endif

struct kv_server {
    pid_t pid;
    int out; /* its standard output, kept open: it says "stopped" there at the end */
    char addr[512]; /* as long as the line it comes from */
};

/* Starts examples/kv_server on a free port; its "kv_server listening on ADDR" line (flushed
 * once it listens) says where, and that it is ready. */
static void kv_server_start(struct kv_server *kv)
{
    int p[2];
    assert_int_equal(0, pipe(p));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_addclose(&fa, p[0]);
    char *argv[] = {(char *)KV_SERVER_BIN, (char *)"--listen", (char *)"tcp://127.0.0.1:0", NULL};
    assert_int_equal(0, posix_spawn(&kv->pid, KV_SERVER_BIN, &fa, NULL, argv, environ));
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    kv->out = p[0];
    char line[512];
    size_t n = 0;
    while (n < sizeof(line) - 1 && read(kv->out, line + n, 1) == 1 && line[n] != '\n')
        n++;
    line[n] = '\0';
    static const char ready[] = "kv_server listening on ";
    assert_memory_equal(ready, line, sizeof(ready) - 1);
    snprintf(kv->addr, sizeof(kv->addr), "%s", line + sizeof(ready) - 1);
}

/* SIGTERM: a clean stop, exit status 0. */
static void kv_server_stop(struct kv_server *kv)
{
    kill(kv->pid, SIGTERM);
    int ws;
    assert_int_equal(kv->pid, waitpid(kv->pid, &ws, 0));
    close(kv->out);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
}

static void test_json(void **state)
{
    struct fixture *fx = *state;
    struct kv_server kv;
    kv_server_start(&kv);
    fx->kv_pid = kv.pid;
    const char *addr = kv.addr;
    struct call_run r;
    RUN(&r, "--json", addr, "KV.Put", "{\"key\":\"greeting\",\"value\":\"hi \\\"there\\\"\"}");
    assert_int_equal(0, r.status);
    assert_string_equal("true\n", r.out);
    RUN(&r, "--json", "--deadline-ms", "10000", addr, "KV.Get", "{\"key\":\"greeting\"}");
    assert_int_equal(0, r.status);
    assert_string_equal("\"hi \\\"there\\\"\"\n", r.out);
    /* the same store through arpc frames: one server, both codecs */
    RUN(&r, addr, "kv.get", "greeting");
    assert_int_equal(0, r.status);
    assert_string_equal("hi \"there\"", r.out);
    /* the server's error string */
    RUN(&r, "--json", addr, "KV.Get", "{\"key\":\"missing\"}");
    assert_int_equal(10 + ARPC_EHANDLER, r.status);
    assert_int_equal(0, r.out_len);
    assert_string_equal("arpc-call: KV.Get: ARPC_EHANDLER: no such key\n", r.err);
    /* no DATA: params [null], which KV.Get refuses */
    RUN(&r, "--json", addr, "KV.Get");
    assert_int_equal(10 + ARPC_EHANDLER, r.status);
    assert_string_equal("arpc-call: KV.Get: ARPC_EHANDLER: params must be [{\"key\":string}], at most 16 KiB of JSON\n",
                        r.err);
    /* The JSON methods through a plain arpc frame, past the example's bound: refused unparsed
     * (its routing key is parsed on the server's loop; an attacker's 16 MiB of small JSON
     * values stalled it 1.6 s and took 2 GB). */
    static char big[70 * 1024];
    int n = snprintf(big, sizeof(big), "{\"key\":\"k\",\"value\":\"");
    memset(big + n, 'v', sizeof(big) - (size_t)n - 3);
    memcpy(big + sizeof(big) - 3, "\"}", 3);
    RUN(&r, addr, "KV.Put", big);
    assert_int_equal(10 + ARPC_EHANDLER, r.status);
    assert_non_null(strstr(r.err, "at most 16 KiB of JSON (larger values: kv.put)"));
    /* unknown method and service: Go's texts */
    RUN(&r, "--json", addr, "KV.Delete", "{}");
    assert_int_equal(10 + ARPC_ENOMETHOD, r.status);
    assert_string_equal("arpc-call: KV.Delete: ARPC_ENOMETHOD: rpc: can't find method KV.Delete\n", r.err);
    RUN(&r, "--json", addr, "Nope.Get", "{}");
    assert_int_equal(10 + ARPC_ENOMETHOD, r.status);
    assert_string_equal("arpc-call: Nope.Get: ARPC_ENOMETHOD: rpc: can't find service Nope.Get\n", r.err);
    /* DATA that is not JSON never leaves: a usage error */
    RUN(&r, "--json", addr, "KV.Get", "{\"key\":");
    assert_int_equal(2, r.status);
    assert_string_equal("arpc-call: --json: DATA is not one JSON value\n", r.err);
    /* a METHOD that is not UTF-8 is said so, escaped (before: "DATA is not one JSON value",
     * the byte raw) */
    RUN(&r, "--json", addr, "K\xff", "{}");
    assert_int_equal(10 + ARPC_EINVAL, r.status);
    assert_string_equal("arpc-call: K\\xff: ARPC_EINVAL: the method name is not UTF-8\n", r.err);
    /* --file gives the params too */
    RUN_IN(&r, "{\"key\":\"greeting\"}\n", 19, "--json", "--file", "-", addr, "KV.Get");
    assert_int_equal(0, r.status);
    assert_string_equal("\"hi \\\"there\\\"\"\n", r.out);
    /* options that mean nothing for JSON-RPC */
    RUN(&r, "--json", "--hex", addr, "KV.Get", "7b7d");
    assert_int_equal(2, r.status);
    RUN(&r, "--json", "--repeat", "3", addr, "KV.Get", "{}");
    assert_int_equal(2, r.status);
    fx->kv_pid = 0;
    kv_server_stop(&kv);
}

/* --json to a tls:// address: refused before connecting (the JSON-RPC client has no TLS),
 * never sent in the clear to the port named. */
static void test_json_tls_refused(void **state)
{
    struct fixture *fx = *state;
    char tls_addr[ARPC_ADDR_MAX];
    snprintf(tls_addr, sizeof(tls_addr), "tls%s", fx->addr + strlen("tcp")); /* the same port */
    struct call_run r;
    RUN(&r, "--json", tls_addr, "t.echo", "\"secret\"");
    assert_int_equal(10 + ARPC_EADDR, r.status);
    assert_int_equal(0, r.out_len);
    assert_non_null(strstr(r.err, "ARPC_EADDR: JSON-RPC over TLS is not supported by the client"));
    arpc_server_stats st;
    assert_int_equal(ARPC_OK, arpc_server_stats(fx->server, &st));
    assert_int_equal(0, st.connections_accepted);
}

/* --json to a server that takes arpc frames only (no_jsonrpc): the server says so, none ran,
 * and the exit status is ARPC_EREJECTED's (before: ARPC_ECONNLOST's, "may have run", the
 * server's answer an arpc GOAWAY the JSON-RPC client could not read). */
static void test_json_to_arpc_only_server(void **state)
{
    (void)state;
    arpc_server_options so = {.no_jsonrpc = true};
    arpc_server *s;
    char addr[ARPC_ADDR_MAX];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    struct call_run r;
    RUN(&r, "--json", addr, "t.echo", "\"hi\"");
    assert_int_equal(10 + ARPC_EREJECTED, r.status);
    assert_int_equal(0, r.out_len);
    assert_string_equal("arpc-call: t.echo: ARPC_EREJECTED: the server refused this connection: this server takes "
                        "arpc frames only, not JSON-RPC\n",
                        r.err);
    arpc_method_stats ms;
    assert_int_equal(ARPC_OK, arpc_server_method_stats(s, "t.echo", &ms));
    assert_int_equal(0, ms.calls.by_outcome[ARPC_OK]);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

#else

/* Built without jansson: --json is refused with a clear message, not sent as arpc. */
static void test_json(void **state)
{
    struct fixture *fx = *state;
    struct call_run r;
    RUN(&r, "--json", fx->addr, "t.echo", "{}");
    assert_int_equal(2, r.status);
    assert_int_equal(0, r.out_len);
    assert_non_null(strstr(r.err, "built without JSON-RPC (jansson)"));
    arpc_method_stats ms;
    assert_int_equal(ARPC_OK, arpc_server_method_stats(fx->server, "t.echo", &ms));
    assert_int_equal(0, ms.calls.by_outcome[ARPC_OK]);
}

#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hex, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_bounds_connecting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repeat, setup, teardown),
        cmocka_unit_test_setup_teardown(test_output_unwritable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_value_says_what_is_wanted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json, setup, teardown),
#ifdef ARPC_WITH_JSONRPC
        cmocka_unit_test_setup_teardown(test_json_tls_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_to_arpc_only_server, setup, teardown),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
