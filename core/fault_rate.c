/*
 * Faulty connections (max_fault_rate, fault_burst; docs/SECURITY.md, "Faulty connections"), on
 * the loop thread: a connection the server closes for its peer's fault is counted, and charged
 * to one token bucket per server (base/token_bucket.h); while the bucket owes, the listeners
 * stop accepting (core/listener.c), as for max_accept_rate.
 *
 * Why. A peer that opens connections only to have them closed at once (a 4 GiB length header,
 * a wrong token, garbage on a TLS port) holds none for long, so max_connections never sees it,
 * yet each costs the server ~40 us of a core (accept4, the epoll_ctls, the read, the GOAWAY,
 * the close), and a good client's calls wait for a CPU behind that work: measured on 2 vCPUs
 * (docs/SECURITY.md), its p99 went to 6-8x unloaded. Charging faults, not connections, leaves
 * well-behaved clients alone: a reconnect storm of good clients is never slowed (what keeps
 * max_accept_rate off by default), while a faulting peer gets max_fault_rate connections a
 * second. A fault is charged even when the bucket is empty (the accepts of one batch all fault
 * after it emptied), so the listener's pause covers them.
 *
 * A fault is charged by its cost: one token, and one more for every FAULT_PLAIN_NS of CPU the
 * loop spent on the connection's TLS handshake (transport/tls_stream.c counts it). A peer that
 * makes the server do its key exchange and signature (~70 us with a P-256 key, ~330 us with
 * RSA-2048) or parse a client chain (up to ~10 ms for 16 KiB of small certificates) before
 * faulting would otherwise cost up to hundreds of plain faults for the price of one.
 *
 * Clock: arpc_now_ns, the listener's.
 */
#include <stdio.h>
#include <string.h>

#include "arpc/error.h"
#include "base/clock.h"
#include "core/server_internal.h"
#include "transport/transport.h"

void fault_rate_init(arpc_server *s, const arpc_server_options *o)
{
    uint32_t rate = o->max_fault_rate < 0    ? 0
                    : o->max_fault_rate == 0 ? ARPC_FAULT_RATE_DEFAULT
                                             : (uint32_t)o->max_fault_rate;
    uint32_t burst = o->fault_burst ? o->fault_burst : rate;
    char why[LISTENER_GATE_WHY_MAX];
    snprintf(why, sizeof(why), "connections closed for their peers' faults are over max_fault_rate (%u a second, "
             "burst %u): not accepting until they are paid for", rate, burst);
    for (int i = FAULT_NETWORK; i <= FAULT_LOCAL; i++)
        listener_gate_init(&s->sv_fault_gates[i], rate, burst, &s->sv_stats.ss_fault_pauses,
                           &s->sv_stats.ss_fault_paused_ns, why);
}

struct listener_gate *fault_gate(arpc_server *s, const char *scheme)
{
    if (strcmp(scheme, arpc_transport_inproc.t_scheme) == 0)
        return NULL;
    bool local = strcmp(scheme, arpc_transport_unix.t_scheme) == 0;
    return &s->sv_fault_gates[local ? FAULT_LOCAL : FAULT_NETWORK];
}

bool fault_is_peers(int reason)
{
    switch (reason) {
    case ARPC_EPROTO:    /* a malformed frame, a second HELLO, ... (core/server_conn.c) */
    case ARPC_ETOOLARGE: /* a frame header past what may be skipped */
    case ARPC_EAUTH:     /* a refused token or credentials (core/server_auth.c) */
    case ARPC_ETLS:      /* a failed handshake, a broken record */
        return true;
    default:
        return false;
    }
}

/* What a plain fault costs the loop (accept4, the epoll_ctls, the read, the GOAWAY, the close):
 * measured on the 2-vCPU machine of docs/SECURITY.md. */
#define FAULT_PLAIN_NS 40000u

void fault_rate_charge(struct server_conn *sc)
{
    arpc_server *s = sc->sc_server;
    arpc_stat_inc(&s->sv_stats.ss_faulted);
    /* An inproc:// peer is this process: its faults are its own bugs, and must not pause the
     * listeners strangers use (inproc's is never paused either). */
    struct listener_gate *g = fault_gate(s, sc->sc_peer.transport);
    if (g == NULL || g->lg_rate == 0)
        return;
    uint64_t extra = arpc_conn_setup_ns(&sc->sc_conn) / FAULT_PLAIN_NS;
    arpc_token_bucket_charge(&g->lg_bucket, arpc_now_ns(), extra < UINT32_MAX ? 1 + (uint32_t)extra : UINT32_MAX);
}
