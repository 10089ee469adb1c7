/*
 * The classic first RPC program: procedure 22 returns its argument + 1.
 * An embedded server listens on loopback; the client calls it like a local function.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "arpc/arpc.h"

/* Runs on a server worker actor. Integers travel as 8 bytes in the host's order (client and
 * server are one process here; across machines, pick a byte order). */
static void proc22(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const uint8_t *in = arpc_request_data(req, &len);
    if (len != 8) {
        arpc_reply_error(req, "procedure 22 takes one 64-bit integer");
        return;
    }
    int64_t x;
    memcpy(&x, in, 8);
    x += 1;
    arpc_reply(req, &x, sizeof(x));
}

int main(void)
{
    arpc_server *server;
    char addr[256];
    int rc = arpc_server_create(&server, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, "22", proc22, NULL, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_listen(server, "tcp://127.0.0.1:0", addr, sizeof(addr));
    if (rc != ARPC_OK) {
        fprintf(stderr, "toy: server: %s\n", arpc_strerror(rc));
        return 1;
    }

    arpc_client *client;
    rc = arpc_client_connect(&client, addr, NULL);
    if (rc != ARPC_OK) {
        fprintf(stderr, "toy: connect %s: %s\n", addr, arpc_strerror(rc));
        return 1;
    }
    int64_t x = 100, z = 0;
    void *reply = NULL;
    size_t len = 0;
    rc = arpc_call(client, "22", &x, sizeof(x), &reply, &len, 2000);
    if (rc != ARPC_OK || len != sizeof(z)) {
        /* A failure's reply, when it has one, is the reason in words (NUL-terminated): the
         * handler's message for ARPC_EHANDLER, the method's name for ARPC_ENOMETHOD, ... */
        if (rc != ARPC_OK)
            fprintf(stderr, "toy: call failed: %s: %s\n", arpc_errname(rc),
                    reply != NULL ? (const char *)reply : arpc_strerror(rc));
        else
            fprintf(stderr, "toy: the reply has %zu bytes, not %zu\n", len, sizeof(z));
        arpc_free(reply);
        arpc_client_close(client);
        arpc_server_destroy(server);
        return 1;
    }
    memcpy(&z, reply, sizeof(z));
    arpc_free(reply);
    printf("Call(22, %" PRId64 ") -> %" PRId64 "\n", x, z);

    arpc_client_close(client);
    arpc_server_destroy(server);
    return 0;
}
