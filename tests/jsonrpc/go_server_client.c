/*
 * arpc's JSON-RPC client against Go's jsonrpc server (tests/go/main.go, "interop server"; run by tests/go/run.sh):
 * 1,000 pipelined Arith.Multiply calls, an error reply and missing names, as Go answers them.
 *   jsonrpc_go_client tcp://127.0.0.1:PORT
 */
#include <stdio.h>
#include <string.h>

#include "arpc/arpc.h"
#include "arpc/jsonrpc.h"

#define CALLS 1000
#define WAIT_MS 60000 /* bounds a hang on a loaded machine; not a timing check */

static int failed(const char *what, int rc, const char *text)
{
    fprintf(stderr, "FAIL: %s: %s (%s)\n", what, arpc_errname(rc), text ? text : "");
    return 1;
}

static int expect(arpc_jsonrpc_client *c, const char *method, const char *params, int want_rc, const char *want)
{
    char *out = NULL;
    int rc = arpc_jsonrpc_call(c, method, params, strlen(params), &out, NULL, WAIT_MS);
    int bad = rc != want_rc || out == NULL || strcmp(out, want) != 0;
    if (bad)
        failed(method, rc, out);
    else
        printf("ok - arpc client: %s -> %s \"%s\"\n", method, arpc_errname(rc), out);
    arpc_free(out);
    return bad;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: jsonrpc_go_client ADDR\n");
        return 2;
    }
    arpc_jsonrpc_client *c;
    char why[ARPC_ERRBUF_SIZE] = "";
    arpc_jsonrpc_options o = {.errbuf = why, .errbuf_len = sizeof(why)};
    int rc = arpc_jsonrpc_connect(&c, argv[1], &o);
    if (rc != ARPC_OK)
        return failed("connect", rc, why);
    static arpc_future *fs[CALLS];
    for (int i = 0; i < CALLS; i++) {
        char p[64];
        int n = snprintf(p, sizeof(p), "{\"A\":%d,\"B\":3}", i);
        fs[i] = arpc_jsonrpc_call_async(c, "Arith.Multiply", p, (size_t)n, WAIT_MS);
        if (fs[i] == NULL)
            return failed("call_async", ARPC_ENOMEM, NULL);
    }
    int bad = 0;
    for (int i = 0; i < CALLS; i++) {
        char want[32];
        snprintf(want, sizeof(want), "%d", i * 3);
        rc = arpc_future_wait(fs[i]);
        const char *got = arpc_future_data(fs[i], NULL);
        if (rc != ARPC_OK || got == NULL || strcmp(got, want) != 0)
            bad |= failed("Arith.Multiply", rc, got);
        arpc_future_release(fs[i]);
    }
    if (!bad)
        printf("ok - arpc client: %d pipelined Arith.Multiply on Go's server\n", CALLS);
    bad |= expect(c, "Arith.Fail", "{\"A\":7,\"B\":0}", ARPC_EHANDLER, "boom: 7");
    bad |= expect(c, "Arith.Nope", "{}", ARPC_ENOMETHOD, "rpc: can't find method Arith.Nope");
    bad |= expect(c, "Nope.Multiply", "{}", ARPC_ENOMETHOD, "rpc: can't find service Nope.Multiply");
    bad |= expect(c, "Arith.Echo", "\"after the errors\"", ARPC_OK, "\"after the errors\"");
    arpc_jsonrpc_close(c);
    return bad;
}
