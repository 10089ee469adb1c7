/*
 * The kv store as a protobuf-c service (examples/proto/kv.proto): a server registers the
 * generated KV service (served as kv.KV.Put and kv.KV.Get) and a client calls it through the
 * generated stubs, with typed messages instead of hand-packed bytes; once with a closure (run
 * on the client's loop thread), once with a future. Built only with ARPC_WITH_PROTOBUF.
 *
 *   kv_proto [ADDR]   (default tcp://127.0.0.1:0: a free port)
 */
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <string.h>

#include "arpc/arpc.h"
#include "arpc/protobuf.h"
#include "kv.pb-c.h"

/* ---- server: one key/value pair under a lock (handlers run on the worker pool) ---- */

static pthread_mutex_t store_mu = PTHREAD_MUTEX_INITIALIZER;
static char store_key[128];
static char store_value[256];
static bool store_set;

static void kv_put(Kv__KV_Service *svc, const Kv__PutRequest *in, Kv__PutReply_Closure closure, void *data)
{
    (void)svc;
    Kv__PutReply out = KV__PUT_REPLY__INIT;
    pthread_mutex_lock(&store_mu);
    out.replaced = store_set && strcmp(store_key, in->key) == 0;
    snprintf(store_key, sizeof(store_key), "%s", in->key);
    snprintf(store_value, sizeof(store_value), "%.*s", (int)in->value.len,
             in->value.len > 0 ? (const char *)in->value.data : ""); /* empty bytes: no data */
    store_set = true;
    pthread_mutex_unlock(&store_mu);
    closure(&out, data); /* packed and sent before it returns */
}

static void kv_get(Kv__KV_Service *svc, const Kv__GetRequest *in, Kv__GetReply_Closure closure, void *data)
{
    (void)svc;
    Kv__GetReply out = KV__GET_REPLY__INIT;
    char value[sizeof(store_value)];
    pthread_mutex_lock(&store_mu);
    if (store_set && strcmp(store_key, in->key) == 0) {
        out.found = true;
        snprintf(value, sizeof(value), "%s", store_value);
        out.value.data = (uint8_t *)value;
        out.value.len = strlen(value);
    }
    pthread_mutex_unlock(&store_mu);
    closure(&out, data);
}

static Kv__KV_Service kv_service = KV__KV__INIT(kv_);

/* ---- client: a closure, run on the client's loop thread ---- */

struct put_wait {
    sem_t done;
    ProtobufCService *stub;
};

static void put_done(const Kv__PutReply *reply, void *data)
{
    struct put_wait *w = data;
    if (reply == NULL)
        printf("put failed: %s\n", arpc_strerror(arpc_protobuf_client_last_error(w->stub)));
    else
        printf("kv.KV.Put greeting = \"hello, protobuf\" -> replaced: %s\n", reply->replaced ? "yes" : "no");
    sem_post(&w->done);
}

int main(int argc, char **argv)
{
    if (argc > 2 || (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0))) {
        fprintf(argc > 2 ? stderr : stdout, "usage: kv_proto [ADDR]   (where the embedded server listens; default "
                "tcp://127.0.0.1:0: a free port)\n");
        return argc > 2 ? 2 : 0;
    }
    const char *listen_addr = argc > 1 ? argv[1] : "tcp://127.0.0.1:0";
    arpc_server *server;
    char addr[256];
    int rc = arpc_server_create(&server, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_register_protobuf(server, &kv_service.base, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_listen(server, listen_addr, addr, sizeof(addr));
    if (rc != ARPC_OK) {
        fprintf(stderr, "server: %s\n", arpc_strerror(rc));
        return 1;
    }
    arpc_client *client;
    if ((rc = arpc_client_connect(&client, addr, NULL)) != ARPC_OK) {
        fprintf(stderr, "connect %s: %s\n", addr, arpc_strerror(rc));
        arpc_server_destroy(server);
        return 1;
    }
    printf("serving kv.KV.Put and kv.KV.Get on %s\n", addr);

    /* A typed call through the generated stub; the closure gets the typed reply. */
    ProtobufCService *kv = arpc_protobuf_client_service(client, &kv__kv__descriptor, 5000);
    struct put_wait w = {.stub = kv};
    sem_init(&w.done, 0, 0);
    Kv__PutRequest put = KV__PUT_REQUEST__INIT;
    put.key = "greeting";
    put.value.data = (uint8_t *)"hello, protobuf";
    put.value.len = strlen("hello, protobuf");
    if (kv != NULL) {
        kv__kv__put(kv, &put, put_done, &w);
        sem_wait(&w.done);
    }
    sem_destroy(&w.done);
    protobuf_c_service_destroy(kv);

    /* The same service through a future: method 1 of the descriptor is Get. */
    Kv__GetRequest get = KV__GET_REQUEST__INIT;
    get.key = "greeting";
    arpc_future *f = arpc_protobuf_call_async(client, &kv__kv__descriptor, 1, &get.base, 5000);
    ProtobufCMessage *msg = NULL;
    rc = f != NULL ? arpc_protobuf_unpack_reply(f, &kv__get_reply__descriptor, &msg) : ARPC_ENOMEM;
    bool round_trip = false; /* the exit status: Get gives back what Put stored */
    if (rc == ARPC_OK) {
        const Kv__GetReply *reply = (const Kv__GetReply *)msg;
        printf("kv.KV.Get greeting -> found: %s, value: \"%.*s\"\n", reply->found ? "yes" : "no",
               (int)reply->value.len, (const char *)reply->value.data);
        round_trip = reply->found && reply->value.len == put.value.len &&
                     memcmp(reply->value.data, put.value.data, put.value.len) == 0;
    } else {
        printf("get failed: %s\n", arpc_strerror(rc));
    }
    arpc_protobuf_free(msg);
    arpc_future_release(f);

    arpc_client_close(client);
    arpc_server_destroy(server);
    return round_trip ? 0 : 1;
}
