/*
 * Tutorial step 1 (docs/TUTORIAL.md): a server with one method, run on the worker pool, and a
 * client that calls it and waits for the reply.
 * usage: step1_first_call [ADDR]   (where the server listens; default tcp://127.0.0.1:0)
 * Prints the reply and exits 0; exits 1 if anything failed.
 */
#include <stdio.h>
#include <string.h>

#include <arpc/arpc.h>

/* Runs on one of the server's worker threads. The request's bytes are whatever the caller
 * sent: check them before use. The reply is copied, so a local buffer is fine. */
static void greet(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const char *name = arpc_request_data(req, &len);
    if (len == 0 || len > 64) {
        arpc_reply_error(req, "greet takes a name of 1 to 64 bytes");
        return;
    }
    char out[80];
    int n = snprintf(out, sizeof out, "hello, %.*s", (int)len, name);
    arpc_reply(req, out, (size_t)n);
}

/* Calls hello.Greet, waiting up to 2 s, and prints what came back. */
static int greet_call(arpc_client *client, const char *name)
{
    void *reply;
    size_t reply_len;
    int rc = arpc_call(client, "hello.Greet", name, strlen(name), &reply, &reply_len, 2000);
    if (rc == ARPC_OK)
        printf("reply: %.*s\n", (int)reply_len, (const char *)reply);
    else /* an error's reply, when there is one, is its reason, NUL-terminated */
        printf("failed: %s: %s\n", arpc_errname(rc),
               reply != NULL ? (const char *)reply : arpc_strerror(rc));
    arpc_free(reply); /* yours on every outcome; arpc_free(NULL) does nothing */
    return rc;
}

int main(int argc, char **argv)
{
    const char *listen = argc > 1 ? argv[1] : "tcp://127.0.0.1:0";

    arpc_server *server;
    char addr[256];
    int rc = arpc_server_create(&server, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, "hello.Greet", greet, NULL, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_listen(server, listen, addr, sizeof addr);
    if (rc != ARPC_OK) {
        fprintf(stderr, "server: %s\n", arpc_strerror(rc));
        return 1;
    }

    arpc_client *client;
    char why[ARPC_ERRBUF_SIZE] = "";
    arpc_client_options copts = {.errbuf = why, .errbuf_len = sizeof why};
    rc = arpc_client_connect(&client, addr, &copts);
    if (rc != ARPC_OK) {
        fprintf(stderr, "connect %s: %s: %s\n", addr, arpc_errname(rc), why);
        arpc_server_destroy(server);
        return 1;
    }

    int ok = greet_call(client, "world") == ARPC_OK;
    ok &= greet_call(client, "") == ARPC_EHANDLER; /* the handler refuses an empty name */

    arpc_client_close(client);
    arpc_server_destroy(server);
    return ok ? 0 : 1;
}
