/*
 * Built without TLS (ARPC_WITH_TLS off): tls:// is known, so that it is refused in words
 * ("built without TLS") rather than as an unknown scheme, and transport/tls.h's functions
 * refuse the same way, so the core needs no #ifdef. Compiled instead of tls_transport.c,
 * tls_ctx.c and tls_stream.c.
 */
#include <stdio.h>
#include <unistd.h>

#include "arpc/error.h"
#include "transport/sock.h"
#include "transport/tls.h"

#define TLS_ABSENT "built without TLS (arpc was configured with ARPC_WITH_TLS off, or without libssl-dev)"

static int absent_resolve(const char *rest, struct arpc_target *target, char *why, size_t whylen)
{
    (void)target;
    return arpc_sock_why(why, whylen, ARPC_EADDR, "tls://%s: " TLS_ABSENT, rest);
}

static int absent_connect_start(const struct arpc_target *t, size_t i, int *fd_out, char *why, size_t whylen)
{
    (void)i;
    (void)fd_out;
    return arpc_sock_why(why, whylen, ARPC_EADDR, "%s: " TLS_ABSENT, t->t_addr);
}

static int absent_connect_done(const struct arpc_target *t, size_t i, int fd, char *why, size_t whylen)
{
    (void)fd;
    return absent_connect_start(t, i, NULL, why, whylen);
}

static int absent_listen(const char *rest, struct arpc_listener **out, char *why, size_t whylen)
{
    (void)out;
    return arpc_sock_why(why, whylen, ARPC_EADDR, "tls://%s: " TLS_ABSENT, rest);
}

static int absent_accept(struct arpc_listener *l, int *fd_out, char *peer, size_t peerlen, char *why,
                         size_t whylen)
{
    (void)l;
    (void)fd_out;
    (void)peer;
    (void)peerlen;
    return arpc_sock_why(why, whylen, ARPC_ESYSTEM, TLS_ABSENT); /* unreachable: no listener */
}

static void absent_unlisten(struct arpc_listener *l) { (void)l; }

const struct arpc_transport_ops arpc_transport_tls = {
    .t_scheme = "tls",
    .t_resolve = absent_resolve,
    .t_connect_start = absent_connect_start,
    .t_connect_done = absent_connect_done,
    .t_listen = absent_listen,
    .t_accept = absent_accept,
    .t_unlisten = absent_unlisten,
};

int arpc_tls_server_new(struct arpc_tls **out, const arpc_tls_options *o, char *why, size_t whylen)
{
    (void)out;
    (void)o;
    return arpc_sock_why(why, whylen, ARPC_EADDR, TLS_ABSENT);
}

int arpc_tls_client_new(struct arpc_tls **out, const struct arpc_target *target, const arpc_tls_options *o,
                        char *why, size_t whylen)
{
    (void)out;
    (void)target;
    (void)o;
    return arpc_sock_why(why, whylen, ARPC_EADDR, TLS_ABSENT);
}

void arpc_tls_free(struct arpc_tls *tls) { (void)tls; }

bool arpc_tls_built(void) { return false; }

void arpc_tls_swap(struct arpc_tls *a, struct arpc_tls *b) /* no context is ever made */
{
    (void)a;
    (void)b;
}

int arpc_tls_stream_new(struct arpc_tls *tls, int fd, struct arpc_stream **out)
{
    (void)tls;
    (void)out;
    close(fd); /* ours from here on, as with TLS; unreachable: no context can be made */
    return ARPC_EADDR;
}

int arpc_tls_peer_subject(const struct arpc_stream *s, char **out, uint8_t holder[ARPC_TLS_HOLDER_DIGEST])
{
    (void)s;
    (void)holder;
    *out = NULL;
    return ARPC_OK;
}
