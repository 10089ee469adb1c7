/*
 * The tls:// transport: tcp's sockets under another scheme. Resolving, connecting, listening
 * and accepting are tcp's own ops; only the names change ("tls://..." in targets, listeners
 * and peers), so that the core, seeing arpc_transport_tls, puts a TLS stream on the socket
 * (transport/tls.h). The TLS itself is in tls_ctx.c and tls_stream.c.
 */
#include <stdio.h>
#include <string.h>

#include "arpc/error.h"
#include "transport/transport.h"

static int tls_resolve(const char *rest, struct arpc_target *target, char *why, size_t whylen)
{
    int rc = arpc_transport_tcp.t_resolve(rest, target, why, whylen);
    if (rc != ARPC_OK)
        return rc;
    target->t_ops = &arpc_transport_tls;
    snprintf(target->t_addr, sizeof(target->t_addr), "%s://%s", arpc_transport_tls.t_scheme, rest);
    return ARPC_OK;
}

static int tls_listen(const char *rest, struct arpc_listener **out, char *why, size_t whylen)
{
    int rc = arpc_transport_tcp.t_listen(rest, out, why, whylen);
    if (rc != ARPC_OK)
        return rc;
    /* Accepted peers are named after l_ops' scheme (transport/sock.c); the bound address is
     * tcp's with the scheme, of the same length, swapped. */
    (*out)->l_ops = &arpc_transport_tls;
    memcpy((*out)->l_addr, arpc_transport_tls.t_scheme, strlen(arpc_transport_tcp.t_scheme));
    return ARPC_OK;
}

static int tls_connect_start(const struct arpc_target *t, size_t i, int *fd_out, char *why, size_t whylen)
{
    return arpc_transport_tcp.t_connect_start(t, i, fd_out, why, whylen);
}

static int tls_connect_done(const struct arpc_target *t, size_t i, int fd, char *why, size_t whylen)
{
    return arpc_transport_tcp.t_connect_done(t, i, fd, why, whylen);
}

static int tls_accept(struct arpc_listener *l, int *fd_out, char *peer, size_t peerlen, char *why, size_t whylen)
{
    return arpc_transport_tcp.t_accept(l, fd_out, peer, peerlen, why, whylen);
}

static void tls_unlisten(struct arpc_listener *l) { arpc_transport_tcp.t_unlisten(l); }

_Static_assert(sizeof("tls") == sizeof("tcp"), "tls_listen swaps the scheme in place");

const struct arpc_transport_ops arpc_transport_tls = {
    .t_scheme = "tls",
    .t_resolve = tls_resolve,
    .t_connect_start = tls_connect_start,
    .t_connect_done = tls_connect_done,
    .t_listen = tls_listen,
    .t_accept = tls_accept,
    .t_unlisten = tls_unlisten,
};
