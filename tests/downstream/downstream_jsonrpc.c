/*
 * A downstream program using arpc's JSON-RPC client, built when the installed arpc says it has
 * one (arpc_WITH_JSONRPC): the header is installed and the library (static too: it needs
 * jansson) links. Connects to an inproc:// name nobody listens on and expects the refusal
 * with a reason. Exits 0 and prints "downstream jsonrpc ok" only then.
 */
#include <stdio.h>

#include <arpc/arpc.h>
#include <arpc/jsonrpc.h>

int main(void)
{
    char why[ARPC_ERRBUF_SIZE] = "";
    arpc_jsonrpc_options o = {.errbuf = why, .errbuf_len = sizeof(why)};
    arpc_jsonrpc_client *c = NULL;
    int rc = arpc_jsonrpc_connect(&c, "inproc://downstream-nobody", &o);
    if (rc == ARPC_OK || why[0] == '\0') {
        fprintf(stderr, "downstream jsonrpc: connect to nobody gave %s (%s)\n", arpc_errname(rc), why);
        if (rc == ARPC_OK)
            arpc_jsonrpc_close(c);
        return 1;
    }
    printf("downstream jsonrpc ok (%s: %s)\n", arpc_errname(rc), why);
    return 0;
}
