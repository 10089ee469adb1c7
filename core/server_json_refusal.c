/*
 * A JSON peer at a server that does not take JSON-RPC (no_jsonrpc, or built without it): told
 * so in JSON, once, rather than with an arpc GOAWAY it cannot read, so that its client knows
 * none of its calls ran (docs/PROTOCOL.md, "Refused connections").
 */
#include <stdio.h>
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/log.h"
#include "core/peer_log.h"
#include "core/server_internal.h"

/* By id null, as the server's other refusals of a JSON-RPC connection, with the error's name
 * (a constant: no jansson needed, so a server built without it says the same). */
static const char sconn_no_json_line[] =
    "{\"id\":null,\"result\":null,\"error\":\"ARPC_EREJECTED: this server takes arpc frames only, not JSON-RPC\"}\n";

/* Its bytes are dropped unread; the close is charged as a fault, as any stranger's bad input. */
void sconn_refuse_json(struct server_conn *sc)
{
    struct arpc_conn *conn = &sc->sc_conn;
    snprintf(conn->c_why, sizeof(conn->c_why), "a JSON-RPC client, and this server takes arpc frames only");
    peer_log(conn->c_loop, conn_fault_log_level(conn), "closing the connection from %s: %s (%s)", conn->c_peer,
             conn->c_why, sc->sc_server->sv_no_jsonrpc ? "no_jsonrpc" : "built without JSON-RPC");
    conn->c_rstart = conn->c_rend;
    uint8_t *line = arpc_malloc(sizeof(sconn_no_json_line) - 1);
    if (line != NULL) {
        memcpy(line, sconn_no_json_line, sizeof(sconn_no_json_line) - 1);
        (void)arpc_conn_send(conn, line, line, sizeof(sconn_no_json_line) - 1); /* ENOMEM: closed the same */
    }
    arpc_conn_close_after_flush(conn, ARPC_EPROTO);
}
