/*
 * A downstream program: checks that the headers and the library it was linked against are one
 * version, then makes one call over inproc:// (a server and a client in this process), and
 * completes a future of its own with a block from arpc_malloc. It defines functions named as
 * arpc's internal ones are (call_new, pending_get): linked statically too, they must not clash
 * (libarpc.a's only global symbols are the public API, cmake/static_prelink.cmake).
 * Exits 0 and prints "downstream ok" only if all of it holds.
 */
#include <stdio.h>
#include <string.h>

#include <arpc/arpc.h>

/* A program's own names, which arpc's internals also use. */
int call_new(int x);
int pending_get(int x);
int call_new(int x) { return x + 1; }
int pending_get(int x) { return x * 2; }

static void echo(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const void *in = arpc_request_data(req, &len);
    arpc_reply(req, in, len);
}

int main(void)
{
    if (call_new(1) != 2 || pending_get(2) != 4) {
        fprintf(stderr, "downstream: its own call_new or pending_get is not the one called\n");
        return 1;
    }
    if (arpc_version() != ARPC_VERSION_NUMBER || strcmp(arpc_version_string(), ARPC_VERSION_STRING) != 0) {
        fprintf(stderr, "downstream: headers are %s, library is %s\n", ARPC_VERSION_STRING,
            arpc_version_string());
        return 1;
    }
    arpc_server *server;
    char addr[256];
    int rc = arpc_server_create(&server, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, "echo", echo, NULL, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_listen(server, "inproc://downstream", addr, sizeof(addr));
    if (rc != ARPC_OK) {
        fprintf(stderr, "downstream: server: %s\n", arpc_strerror(rc));
        return 1;
    }
    arpc_client *client;
    rc = arpc_client_connect(&client, addr, NULL);
    if (rc != ARPC_OK) {
        fprintf(stderr, "downstream: connect %s: %s\n", addr, arpc_strerror(rc));
        arpc_server_destroy(server);
        return 1;
    }
    const char msg[] = "hello from downstream";
    void *reply = NULL;
    size_t len = 0;
    rc = arpc_call(client, "echo", msg, sizeof(msg), &reply, &len, 5000);
    int ok = rc == ARPC_OK && len == sizeof(msg) && memcmp(reply, msg, len) == 0;
    if (!ok)
        fprintf(stderr, "downstream: call: %s\n", rc == ARPC_OK ? "wrong reply" : arpc_strerror(rc));
    arpc_free(reply);
    arpc_client_close(client);
    arpc_server_destroy(server);
    /* A future of its own, completed with a block from arpc's allocator (exported for it). */
    arpc_future *f = NULL;
    char *data = arpc_malloc(3);
    if (ok && (data == NULL || arpc_future_create(&f) != ARPC_OK)) {
        fprintf(stderr, "downstream: arpc_malloc or arpc_future_create failed\n");
        ok = 0;
    }
    if (ok) {
        memcpy(data, "hi", 3);
        arpc_future_complete(f, ARPC_OK, data, 3);
        data = NULL; /* the future's now */
        size_t got = 0;
        char *taken = arpc_future_take(f, &got);
        if (taken == NULL || got != 3 || strcmp(taken, "hi") != 0) {
            fprintf(stderr, "downstream: the future's data came back wrong\n");
            ok = 0;
        }
        arpc_free(taken);
    }
    arpc_free(data);
    if (f != NULL)
        arpc_future_release(f);
    if (ok)
        printf("downstream ok: arpc %s\n", arpc_version_string());
    return ok ? 0 : 1;
}
