/*
 * arpc-call: a command-line client, like grpcurl or nngcat. `arpc-call --help` says how to use
 * it; tools/exit_codes.h and the README give the exit statuses.
 *
 * The reply's bytes go to standard output as they are (hex with --hex; with --json, the
 * result's JSON and a line feed); every failure is one line on standard error,
 * "arpc-call: WHAT: ARPC_EXXX: text", where the text is the server's message when it sent one
 * (escaped: it is a peer's bytes) and arpc_strerror otherwise (tools/call_fail.c). The
 * library's own log lines are held back (tools/call_log.c): folded into that line when they
 * add to it, written as they were after a success, so a failure is still one line.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "call_args.h"
#include "call_creds.h"
#include "call_fail.h"
#include "call_json.h"
#include "call_log.h"
#include "call_repeat.h"
#include "exit_codes.h"
#include "hex.h"

#define REPEAT_WINDOW 64

/* The whole of f into a malloc'd buffer. */
static int read_all(FILE *f, char **out, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *bigger = realloc(buf, cap * 2);
        if (bigger == NULL) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    if (buf == NULL || ferror(f)) {
        free(buf);
        return -1;
    }
    *out = buf;
    *len = n;
    return 0;
}

/* The request body: --file, DATA or nothing; hex-decoded with --hex. Exit status or -1 (ok). */
static int request_body(const struct call_args *a, char **body, size_t *len)
{
    *body = NULL;
    *len = 0;
    if (a->file != NULL) {
        bool is_stdin = strcmp(a->file, "-") == 0;
        FILE *f = is_stdin ? stdin : fopen(a->file, "rb");
        int rc = f == NULL ? -1 : read_all(f, body, len);
        if (f != NULL && !is_stdin)
            fclose(f);
        if (rc != 0) {
            fprintf(stderr, "arpc-call: %s: cannot read: %m\n", a->file);
            return ARPC_CALL_EXIT_LOCAL;
        }
    } else if (a->data != NULL) {
        *len = strlen(a->data);
        *body = malloc(*len + 1);
        if (*body == NULL)
            return ARPC_CALL_EXIT_LOCAL;
        memcpy(*body, a->data, *len + 1);
    }
    if (a->hex && *body != NULL) {
        size_t n = 0;
        if (!hex_decode(*body, *len, (uint8_t *)*body, &n)) {
            fprintf(stderr, "arpc-call: the request is not hex (pairs of 0-9a-f digits)\n");
            free(*body);
            *body = NULL;
            return ARPC_CALL_EXIT_USAGE;
        }
        *len = n;
    }
    return -1;
}

static int print_reply(const struct call_args *a, const void *data, size_t len)
{
    int bad = 0;
    if (a->hex) {
        char *text = malloc(2 * len + 1);
        if (text == NULL)
            return ARPC_CALL_EXIT_LOCAL;
        hex_encode(data, len, text);
        text[2 * len] = '\n';
        bad = fwrite(text, 1, 2 * len + 1, stdout) != 2 * len + 1;
        free(text);
    } else if (len > 0) {
        bad = fwrite(data, 1, len, stdout) != len;
    }
    if (fflush(stdout) != 0 || bad) {
        fprintf(stderr, "arpc-call: writing the reply: %m\n");
        return ARPC_CALL_EXIT_LOCAL;
    }
    return ARPC_CALL_EXIT_OK;
}

static int call_once(arpc_client *c, const struct call_args *a, const char *body, size_t len)
{
    void *reply = NULL;
    size_t reply_len = 0;
    int rc = arpc_call(c, a->method, body, len, &reply, &reply_len, a->deadline_ms);
    int status = rc == ARPC_OK ? print_reply(a, reply, reply_len) : call_fail(a->method, rc, reply, reply_len);
    arpc_free(reply);
    return status;
}

static int call_repeated(arpc_client *c, const struct call_args *a, const char *body, size_t len)
{
    struct repeat_summary s;
    int rc = call_repeat(c, a->method, body, len, a->deadline_ms, a->repeat, REPEAT_WINDOW, &s);
    if (rc != ARPC_OK)
        return call_fail(a->method, rc, NULL, 0);
    bool bad = printf("calls %llu ok %llu failed %llu p50_us %.1f p99_us %.1f max_us %.1f elapsed_s %.3f "
                      "calls_per_s %.0f\n",
                      (unsigned long long)s.calls, (unsigned long long)s.ok, (unsigned long long)(s.calls - s.ok),
                      (double)s.p50_ns / 1e3, (double)s.p99_ns / 1e3, (double)s.max_ns / 1e3, s.elapsed_s,
                      s.elapsed_s > 0 ? (double)s.calls / s.elapsed_s : 0.0) < 0;
    int status = ARPC_CALL_EXIT_OK;
    if (fflush(stdout) != 0 || bad) {
        fprintf(stderr, "arpc-call: writing the summary: %m\n");
        status = ARPC_CALL_EXIT_LOCAL; /* a call's failure below says more: its status wins */
    }
    if (s.first_error != ARPC_OK)
        status = call_fail(a->method, s.first_error, s.first_error_msg, s.first_error_len);
    arpc_free(s.first_error_msg);
    return status;
}

static int run(int argc, char **argv)
{
    struct call_args a;
    switch (call_args_parse(argc, argv, &a)) {
    case CALL_ARGS_HELP:
        if (fflush(stdout) != 0 || ferror(stdout)) {
            fprintf(stderr, "arpc-call: writing the help: %m\n");
            return ARPC_CALL_EXIT_LOCAL;
        }
        return ARPC_CALL_EXIT_OK;
    case CALL_ARGS_USAGE:
        return ARPC_CALL_EXIT_USAGE;
    case CALL_ARGS_OK:
        break;
    }
    char *body = NULL;
    size_t len = 0;
    int status = request_body(&a, &body, &len);
    if (status >= 0)
        return status;

    if (a.json) {
        status = call_json(&a, body, len);
        free(body);
        return status;
    }
    char why[512] = "";
    /* --deadline-ms bounds connecting too: a server that never answers fails in N ms, not in
     * the library's 5 s connect timeout. */
    arpc_client_options o = {.no_reconnect = true, .connect_timeout_ms = a.deadline_ms, .errbuf = why,
                             .errbuf_len = sizeof(why)};
    struct call_creds creds;
    status = call_creds_apply(&a, &creds, &o);
    if (status >= 0) {
        free(body);
        return status;
    }
    arpc_client *c = NULL;
    int rc = arpc_client_connect(&c, a.addr, &o);
    call_creds_clear(&creds);
    if (rc != ARPC_OK) {
        free(body);
        return call_fail_connect(a.addr, rc, why);
    }
    status = a.repeat > 0 ? call_repeated(c, &a, body, len) : call_once(c, &a, body, len);
    arpc_client_close(c);
    free(body);
    return status;
}

int main(int argc, char **argv)
{
    /* A reader that goes away (| head) fails the write instead of killing us: exit 1 with a
     * line, as for any output that cannot be written. */
    signal(SIGPIPE, SIG_IGN);
    call_log_start();
    int status = run(argc, argv);
    call_log_end(status == ARPC_CALL_EXIT_OK);
    return status;
}
