/*
 * A string key-value server: kv.put and kv.get run on one actor, so the table needs no lock.
 *   kv_server --listen ADDR     (runs until SIGINT/SIGTERM)
 * Wire format of requests: kv.put = u16 key length (LE), key bytes, value bytes;
 *                          kv.get = key bytes. Replies: kv.get = value bytes.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arpc/arpc.h"

struct entry {
    char *key, *value;
    size_t klen, vlen;
    struct entry *next;
};

/* Touched only by the store actor: no lock needed. */
static struct entry *table[1024];

static size_t slot_of(const char *k, size_t n)
{
    size_t h = 5381;
    for (size_t i = 0; i < n; i++)
        h = h * 33 + (unsigned char)k[i];
    return h % 1024;
}

static struct entry *lookup(const char *k, size_t n)
{
    for (struct entry *e = table[slot_of(k, n)]; e; e = e->next)
        if (e->klen == n && memcmp(e->key, k, n) == 0)
            return e;
    return NULL;
}

static void kv_put(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const unsigned char *p = arpc_request_data(req, &len);
    if (len < 2 || (size_t)(p[0] | p[1] << 8) > len - 2) {
        arpc_reply_error(req, "malformed put");
        return;
    }
    size_t klen = (size_t)(p[0] | p[1] << 8), vlen = len - 2 - klen;
    const char *k = (const char *)p + 2, *v = k + klen;
    struct entry *e = lookup(k, klen);
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        e->key = malloc(klen ? klen : 1);
        memcpy(e->key, k, klen);
        e->klen = klen;
        size_t s = slot_of(k, klen);
        e->next = table[s];
        table[s] = e;
    }
    free(e->value);
    e->value = malloc(vlen ? vlen : 1);
    memcpy(e->value, v, vlen);
    e->vlen = vlen;
    arpc_reply(req, "OK", 2);
}

static void kv_get(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const char *k = arpc_request_data(req, &len);
    struct entry *e = lookup(k, len);
    if (e == NULL)
        arpc_reply_error(req, "no such key");
    else
        arpc_reply(req, e->value, e->vlen);
}

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv)
{
    const char *listen = NULL;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
            listen = argv[++i];
    if (listen == NULL) {
        fprintf(stderr, "usage: kv_server --listen ADDR   (e.g. tcp://127.0.0.1:7000, unix:///tmp/kv.sock)\n");
        return 2;
    }
    arpc_server *server;
    arpc_actor *store;
    char bound[256];
    int rc = arpc_server_create(&server, NULL);
    if (rc == ARPC_OK)
        rc = arpc_actor_create(&store, &(arpc_actor_options){.name = "kv-store"});
    arpc_method_options one_actor = {.actor = store};
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, "kv.put", kv_put, NULL, &one_actor);
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, "kv.get", kv_get, NULL, &one_actor);
    if (rc == ARPC_OK)
        rc = arpc_server_listen(server, listen, bound, sizeof(bound));
    if (rc != ARPC_OK) {
        fprintf(stderr, "kv_server: %s: %s\n", listen, arpc_strerror(rc));
        return 1;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    printf("kv_server listening on %s\n", bound);
    fflush(stdout);
    while (!stop)
        pause();
    arpc_server_destroy(server);
    arpc_actor_destroy(store);
    for (size_t i = 0; i < 1024; i++)
        while (table[i]) {
            struct entry *e = table[i];
            table[i] = e->next;
            free(e->key);
            free(e->value);
            free(e);
        }
    printf("kv_server stopped\n");
    return 0;
}
