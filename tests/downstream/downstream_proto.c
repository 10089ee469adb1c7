/*
 * A downstream program with typed stubs: ping.proto compiled by the installed
 * arpc_protobuf_generate(), its Echo service served and called over inproc:// (ds.Echo.Say).
 * Exits 0 and prints "downstream proto ok" only if the reply is the request.
 */
#include <stdio.h>
#include <string.h>

#include <arpc/arpc.h>
#include <arpc/protobuf.h>

#include "ping.pb-c.h"

static void echo_say(Ds__Echo_Service *svc, const Ds__Ping *in, Ds__Ping_Closure closure, void *data)
{
    (void)svc;
    Ds__Ping out = DS__PING__INIT;
    out.text = in->text;
    closure(&out, data);
}

static Ds__Echo_Service echo_service = DS__ECHO__INIT(echo_);

int main(void)
{
    arpc_server *server;
    arpc_client *client;
    int rc = arpc_server_create(&server, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_register_protobuf(server, &echo_service.base, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_listen(server, "inproc://downstream-proto", NULL, 0);
    if (rc != ARPC_OK || (rc = arpc_client_connect(&client, "inproc://downstream-proto", NULL)) != ARPC_OK) {
        fprintf(stderr, "downstream proto: %s\n", arpc_strerror(rc));
        return 1;
    }
    Ds__Ping ping = DS__PING__INIT;
    ping.text = "typed";
    arpc_future *f = arpc_protobuf_call_async(client, &ds__echo__descriptor, 0, &ping.base, 5000);
    ProtobufCMessage *out = NULL;
    rc = arpc_protobuf_unpack_reply(f, &ds__ping__descriptor, &out);
    int ok = rc == ARPC_OK && strcmp(((Ds__Ping *)out)->text, "typed") == 0;
    arpc_protobuf_free(out);
    arpc_future_release(f);
    arpc_client_close(client);
    arpc_server_destroy(server);
    if (!ok) {
        fprintf(stderr, "downstream proto: %s\n", arpc_strerror(rc));
        return 1;
    }
    printf("downstream proto ok\n");
    return 0;
}
