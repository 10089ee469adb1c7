/*
 * arpc-call --json (tools/call_json.h): the JSON-RPC client's blocking call, its result
 * printed as the JSON it is.
 */
#include "call_json.h"

#include <stdio.h>
#include <string.h>

#include "arpc/arpc.h"
#include "call_fail.h"
#include "exit_codes.h"

#ifdef ARPC_WITH_JSONRPC
#include "arpc/jsonrpc.h"

int call_json(const struct call_args *a, const char *params, size_t len)
{
    if (params == NULL) { /* no DATA: Go's client sends one parameter, here null */
        params = "null";
        len = strlen(params);
    }
    char why[512] = "";
    /* --deadline-ms bounds connecting too, as in arpc_call.c */
    arpc_jsonrpc_options o = {.connect_timeout_ms = a->deadline_ms, .errbuf = why, .errbuf_len = sizeof(why)};
    arpc_jsonrpc_client *c = NULL;
    int rc = arpc_jsonrpc_connect(&c, a->addr, &o);
    if (rc != ARPC_OK)
        return call_fail_connect(a->addr, rc, why);
    char *out = NULL;
    size_t out_len = 0;
    rc = arpc_jsonrpc_call(c, a->method, params, len, &out, &out_len, a->deadline_ms);
    int status;
    if (rc == ARPC_OK) {
        bool bad = fwrite(out, 1, out_len, stdout) != out_len || fputc('\n', stdout) == EOF;
        status = fflush(stdout) != 0 || bad ? ARPC_CALL_EXIT_LOCAL : ARPC_CALL_EXIT_OK;
        if (status != ARPC_CALL_EXIT_OK)
            fprintf(stderr, "arpc-call: writing the reply: %m\n");
    } else if (rc == ARPC_EINVAL && out != NULL && strcmp(out, "params_json is not one JSON value") == 0) {
        /* The client checked params before sending anything: the command line's mistake. */
        fprintf(stderr, "arpc-call: --json: DATA is not one JSON value\n");
        status = ARPC_CALL_EXIT_USAGE;
    } else { /* EINVAL for the method too ("the method name is not UTF-8"): the client's words */
        status = call_fail(a->method, rc, out, out_len);
    }
    arpc_free(out);
    arpc_jsonrpc_close(c);
    return status;
}

#else

int call_json(const struct call_args *a, const char *params, size_t len)
{
    (void)a;
    (void)params;
    (void)len;
    fprintf(stderr, "arpc-call: --json: built without JSON-RPC (jansson): rebuild arpc with libjansson-dev installed\n");
    return ARPC_CALL_EXIT_USAGE;
}

#endif
