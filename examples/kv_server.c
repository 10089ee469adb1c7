/*
 * A string key-value server whose table needs no lock: it is split into shards, one per actor
 * of a group, and every call is routed by its key (arpc_method_options.key) to the actor that
 * owns the key's shard. Calls for one key run one at a time, in order; calls for keys of other
 * shards run in parallel.
 *   kv_server --listen ADDR [--shards N] [--tls-cert FILE --tls-key FILE] [--no-jsonrpc]
 *   (runs until SIGINT/SIGTERM; N default 4). With a certificate and key it can listen on
 *   tls://HOST:PORT; SIGHUP loads them again from the same files (certificate rotation: new
 *   connections get the new ones, open ones keep theirs; a failed reload changes nothing).
 * Wire format of requests: kv.put = u16 key length (LE), key bytes, value bytes;
 *                          kv.get = key bytes. Replies: kv.get = value bytes.
 * Built with JSON-RPC (ARPC_WITH_JSONRPC), the same port answers JSON-RPC 1.0 too, e.g. from
 * Go's jsonrpc.NewClient, on the same table (--no-jsonrpc: not, for a server strangers reach:
 * JSON-RPC requests are parsed on the server's loop, docs/SECURITY.md):
 *   KV.Put  params [{"key":K,"value":V}]  -> result true
 *   KV.Get  params [{"key":K}]            -> result V, or error "no such key"
 */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arpc/arpc.h"
#ifdef ARPC_WITH_JSONRPC
#include <jansson.h>
#endif

struct entry {
    char *key, *value;
    size_t klen, vlen;
    struct entry *next;
};

#define MAX_SHARDS 64
#define SLOTS 1024

/* Shard i is touched only by the group's actor i: no lock needed. */
static struct entry *shards[MAX_SHARDS][SLOTS];
static arpc_actor_group *store;

static uint64_t key_hash(const char *k, size_t n)
{
    uint64_t h = 5381;
    for (size_t i = 0; i < n; i++)
        h = h * 33 + (unsigned char)k[i];
    return h;
}

/* The routing keys (on the server's loop): the same hash for a put and a get of one key. */
static uint64_t put_key(const void *data, size_t len, void *ctx)
{
    (void)ctx;
    const unsigned char *p = data;
    size_t klen = len >= 2 ? (size_t)(p[0] | p[1] << 8) : 0;
    return key_hash((const char *)p + 2, klen <= len - 2 ? klen : 0);
}

static uint64_t get_key(const void *data, size_t len, void *ctx)
{
    (void)ctx;
    return key_hash(data, len);
}

/* The shard of the actor running this handler. */
static struct entry **my_shard(void)
{
    for (unsigned i = 0; i < arpc_actor_group_size(store); i++)
        if (arpc_actor_on_thread(arpc_actor_group_member(store, i)))
            return shards[i];
    abort(); /* every kv method runs on the group */
}

static struct entry *lookup(struct entry **table, const char *k, size_t n)
{
    for (struct entry *e = table[key_hash(k, n) % SLOTS]; e; e = e->next)
        if (e->klen == n && memcmp(e->key, k, n) == 0)
            return e;
    return NULL;
}

/* false, and the store as it was, when memory ran out. */
static bool store_put(const char *k, size_t klen, const char *v, size_t vlen)
{
    char *value = malloc(vlen ? vlen : 1);
    if (value == NULL)
        return false;
    struct entry **table = my_shard();
    struct entry *e = lookup(table, k, klen);
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        char *key = malloc(klen ? klen : 1);
        if (e == NULL || key == NULL) {
            free(e);
            free(key);
            free(value);
            return false;
        }
        e->key = key;
        memcpy(e->key, k, klen);
        e->klen = klen;
        size_t s = key_hash(k, klen) % SLOTS;
        e->next = table[s];
        table[s] = e;
    }
    free(e->value);
    e->value = value;
    memcpy(e->value, v, vlen);
    e->vlen = vlen;
    return true;
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
    size_t klen = (size_t)(p[0] | p[1] << 8);
    if (store_put((const char *)p + 2, klen, (const char *)p + 2 + klen, len - 2 - klen))
        arpc_reply(req, "OK", 2);
    else
        arpc_reply_error(req, "out of memory"); /* the key keeps its old value */
}

static void kv_get(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const char *k = arpc_request_data(req, &len);
    struct entry *e = lookup(my_shard(), k, len);
    if (e == NULL)
        arpc_reply_error(req, "no such key");
    else
        arpc_reply(req, e->value, e->vlen);
}

#ifdef ARPC_WITH_JSONRPC
/* The JSON methods' params, at most: the routing key is parsed on the server's loop, and an
 * arpc frame (not JSON-RPC's, whose requests the library bounds) may be 16 MiB of small JSON
 * values, ~2 GB in jansson's objects (an attacker's trial stalled the loop 1.6 s); 64 KiB of
 * them still took 3.8 ms, 16 KiB about 1 ms. Larger values go through kv.put. */
#define KV_JSON_MAX (16 * 1024)

/* JSON-RPC: the handler gets params[0] as JSON text (arpc/jsonrpc.h), here {"key":K,...}:
 * parsed, with its key (valid while the object is). NULL when it is not that, or over
 * KV_JSON_MAX (not parsed). */
static json_t *json_params_of(const void *data, size_t len, const char **k, size_t *klen)
{
    if (len > KV_JSON_MAX)
        return NULL;
    json_t *o = json_loadb(data, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL); /* \u0000 is JSON */
    json_t *key = json_object_get(o, "key");
    if (!json_is_string(key)) {
        json_decref(o);
        return NULL;
    }
    *k = json_string_value(key);
    *klen = json_string_length(key);
    return o;
}

static json_t *json_params(arpc_request *req, const char **k, size_t *klen)
{
    size_t len;
    const void *p = arpc_request_data(req, &len);
    return json_params_of(p, len, k, klen);
}

/* Routing on the loop: the same shard as kv.put / kv.get of that key. A key function must
 * be quick (arpc/server.h): params over KV_JSON_MAX are not parsed here either (any shard:
 * their handler refuses them). */
static uint64_t json_key(const void *data, size_t len, void *ctx)
{
    (void)ctx;
    const char *k;
    size_t klen;
    json_t *o = json_params_of(data, len, &k, &klen);
    uint64_t h = o != NULL ? key_hash(k, klen) : 0;
    json_decref(o);
    return h;
}

static void json_put(arpc_request *req, void *ctx)
{
    (void)ctx;
    const char *k;
    size_t klen;
    json_t *o = json_params(req, &k, &klen);
    json_t *value = json_object_get(o, "value");
    if (!json_is_string(value)) {
        json_decref(o);
        arpc_reply_error(req, "params must be [{\"key\":string,\"value\":string}], at most 16 KiB of JSON "
                              "(larger values: kv.put)");
        return;
    }
    bool stored = store_put(k, klen, json_string_value(value), json_string_length(value));
    json_decref(o);
    if (stored)
        arpc_reply(req, "true", 4);
    else
        arpc_reply_error(req, "out of memory");
}

static void json_get(arpc_request *req, void *ctx)
{
    (void)ctx;
    const char *k;
    size_t klen;
    json_t *o = json_params(req, &k, &klen);
    if (o == NULL) {
        arpc_reply_error(req, "params must be [{\"key\":string}], at most 16 KiB of JSON");
        return;
    }
    struct entry *e = lookup(my_shard(), k, klen);
    json_decref(o);
    if (e == NULL) {
        arpc_reply_error(req, "no such key");
        return;
    }
    /* The stored bytes as a JSON string (a value put by kv.put may not be UTF-8: an error). */
    json_t *v = json_stringn(e->value, e->vlen);
    char *text = v != NULL ? json_dumps(v, JSON_ENCODE_ANY) : NULL;
    json_decref(v);
    if (text == NULL)
        arpc_reply_error(req, "value is not UTF-8 text");
    else
        arpc_reply(req, text, strlen(text));
    free(text);
}
#endif


int main(int argc, char **argv)
{
    const char *listen = NULL;
    unsigned nshards = 4;
    arpc_tls_options tls = {0};
    bool no_jsonrpc = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
            listen = argv[++i];
        else if (strcmp(argv[i], "--shards") == 0 && i + 1 < argc)
            nshards = (unsigned)atoi(argv[++i]);
        else if (strcmp(argv[i], "--tls-cert") == 0 && i + 1 < argc)
            tls.cert_file = argv[++i];
        else if (strcmp(argv[i], "--tls-key") == 0 && i + 1 < argc)
            tls.key_file = argv[++i];
        else if (strcmp(argv[i], "--no-jsonrpc") == 0)
            no_jsonrpc = true;
        else
            listen = NULL, i = argc; /* unknown: the usage below */
    }
    if (nshards < 1 || nshards > MAX_SHARDS) {
        fprintf(stderr, "kv_server: --shards takes 1 to %d\n", MAX_SHARDS);
        return 2;
    }
    if (listen == NULL || (tls.cert_file == NULL) != (tls.key_file == NULL)) {
        fprintf(stderr, "usage: kv_server --listen ADDR [--shards 1..%d] [--tls-cert FILE --tls-key FILE] [--no-jsonrpc]\n"
                        "  (e.g. tcp://127.0.0.1:7000, unix:///tmp/kv.sock, tls://127.0.0.1:7443)\n", MAX_SHARDS);
        return 2;
    }
    /* The signals are taken by sigwait below: blocked first, so that every thread arpc starts
     * inherits the mask and none of them takes one (a handler and pause() would race). */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    arpc_server *server;
    char bound[256], why[ARPC_ERRBUF_SIZE] = "";
    arpc_server_options so = {.tls = tls.cert_file != NULL ? &tls : NULL, .no_jsonrpc = no_jsonrpc, .errbuf = why,
                              .errbuf_len = sizeof(why)};
    int rc = arpc_server_create(&server, &so);
    if (rc != ARPC_OK) { /* why says it ("TLS: cannot load the certificate ..."): the code's text is wider */
        fprintf(stderr, "kv_server: %s\n", why[0] != '\0' ? why : arpc_strerror(rc));
        return 1;
    }
    rc = arpc_actor_group_create(&store, nshards, &(arpc_actor_options){.name = "kv-shard"});
    arpc_method_options put_by_key = {.group = store, .key = put_key};
    /* A read changes nothing: its reply is not kept for retries nor logged (a retry runs it again). */
    arpc_method_options get_by_key = {.group = store, .key = get_key, .read_only = true};
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, "kv.put", kv_put, NULL, &put_by_key);
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, "kv.get", kv_get, NULL, &get_by_key);
#ifdef ARPC_WITH_JSONRPC
    arpc_method_options json_by_key = {.group = store, .key = json_key};
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, "KV.Put", json_put, NULL, &json_by_key);
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, "KV.Get", json_get, NULL, &json_by_key);
#endif
    if (rc != ARPC_OK) {
        fprintf(stderr, "kv_server: setting up the methods: %s\n", arpc_strerror(rc));
        return 1;
    }
    rc = arpc_server_listen(server, listen, bound, sizeof(bound));
    if (rc != ARPC_OK) { /* the library's line above says why; the code's text may not fit it */
        fprintf(stderr, "kv_server: cannot listen on %s (%s)\n", listen, arpc_errname(rc));
        return 1;
    }
    printf("kv_server listening on %s\n", bound);
    fflush(stdout);
    for (int sig = 0; sigwait(&signals, &sig) == 0 && sig == SIGHUP;) { /* until SIGINT or SIGTERM */
        rc = tls.cert_file != NULL ? arpc_server_tls_reload(server, &tls, why, sizeof(why)) : ARPC_EINVAL;
        if (rc == ARPC_OK)
            printf("kv_server: reloaded %s and %s\n", tls.cert_file, tls.key_file);
        else
            fprintf(stderr, "kv_server: reload: %s\n",
                    tls.cert_file == NULL ? "no --tls-cert" : why[0] != '\0' ? why : arpc_strerror(rc));
        fflush(stdout);
    }
    arpc_server_destroy(server);
    arpc_actor_group_destroy(store);
    for (unsigned sh = 0; sh < nshards; sh++)
        for (size_t i = 0; i < SLOTS; i++)
            while (shards[sh][i]) {
                struct entry *e = shards[sh][i];
                shards[sh][i] = e->next;
                free(e->key);
                free(e->value);
                free(e);
            }
    printf("kv_server stopped\n");
    return 0;
}
