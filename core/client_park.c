/*
 * A connection the server closed for being idle is opened again when next needed.
 *
 * A server with idle_timeout_ms (or one short of descriptors, shedding its idlest connection)
 * closes a connection nobody uses with a GOAWAY marked ARPC_GOAWAY_IDLE. Reconnecting at once,
 * as after a server's stop, would take the connection (and the server's descriptor) right
 * back, every idle period: the client parks instead, with no attempt under way, until a call
 * waits for a connection (resend_wait) or a one-way message comes (held meanwhile: a message
 * sent to a client with no connection is dropped, and a parked client has none only by
 * choice). Then it connects as after any loss; the calls wait within their deadlines and
 * reconnect_give_up_ms, counted from when they began to wait. A call already waiting when the
 * connection closes (it raced the server's idle verdict) keeps the reconnect immediate. At
 * the HELLO the held messages go out among the calls that waited with them, in the order both
 * came (om_order and cc_order count on one clock), as they would on an open connection; a
 * failed attempt drops them, as any message without a connection. Loop thread only.
 */
#include "arpc/error.h"
#include "base/log.h"
#include "core/client_internal.h"
#include "core/client_resend.h"
#include "core/waiting_calls.h"

bool client_park(arpc_client *c)
{
    if (!c->cl_idle_goaway)
        return false;
    c->cl_hold_oneways = true; /* (from the GOAWAY on: messages held meanwhile go at the HELLO) */
    if (waiting_count(&c->cl_waiting) != 0 || c->cl_nheld != 0)
        return false; /* needed now: the usual reconnect */
    c->cl_connector.cn_parked = true;
    arpc_log(ARPC_LOG_INFO, "the server at %s closed the idle connection; reconnecting at the next call",
             c->cl_target.t_addr);
    return true;
}

void client_connect_unpark(arpc_client *c)
{
    if (!c->cl_connector.cn_parked)
        return;
    c->cl_connector.cn_parked = false;
    client_connect_start(c);
}

bool client_hold_oneway(arpc_client *c, struct client_oneway *m)
{
    /* From the idle GOAWAY (the connection drains, then closes) until the next HELLO. */
    int state = atomic_load(&c->cl_state);
    bool holding = (state == CL_DRAINING && c->cl_idle_goaway) || (state == CL_CONNECTING && c->cl_hold_oneways);
    if (!holding || c->cl_nheld >= CLIENT_HELD_ONEWAYS || c->cl_held_bytes + m->om_len > CLIENT_HELD_ONEWAY_BYTES)
        return false;
    m->om_give_up = arpc_deadline_from_ms(c->cl_give_up_ms); /* as a call waiting for a connection */
    if (give_up_arm(c, m->om_give_up) != ARPC_OK)
        return false; /* no memory for the timer that would drop it in time: dropped now */
    m->om_next = NULL;
    m->om_order = c->cl_next_order++; /* its place among the calls that wait with it */
    if (c->cl_held_last != NULL)
        c->cl_held_last->om_next = m;
    else
        c->cl_held_first = m;
    c->cl_held_last = m;
    c->cl_nheld++;
    c->cl_held_bytes += m->om_len;
    client_connect_unpark(c);
    return true;
}

/* Takes the held list out of the client. */
static struct client_oneway *held_take(arpc_client *c)
{
    struct client_oneway *m = c->cl_held_first;
    c->cl_held_first = c->cl_held_last = NULL;
    c->cl_nheld = c->cl_held_bytes = 0;
    c->cl_hold_oneways = false;
    return m;
}

/* Takes the first held message out of the list. */
static struct client_oneway *held_pop(arpc_client *c)
{
    struct client_oneway *m = c->cl_held_first;
    c->cl_held_first = m->om_next;
    if (c->cl_held_first == NULL)
        c->cl_held_last = NULL;
    c->cl_nheld--;
    c->cl_held_bytes -= m->om_len;
    return m;
}

void client_send_held_oneways(arpc_client *c, const struct client_call *next)
{
    c->cl_hold_oneways = false; /* connected: nothing more is held */
    struct client_oneway *m;
    while ((m = c->cl_held_first) != NULL && (next == NULL || call_order_before(m->om_order, next->cc_order)) &&
           atomic_load(&c->cl_state) == CL_READY && c->cl_conn.c_open)
        client_oneway_queue(c, held_pop(c));
}

void client_expire_held_oneways(arpc_client *c, uint64_t now)
{
    size_t n = 0;
    struct client_oneway *m;
    while ((m = c->cl_held_first) != NULL && m->om_give_up <= now) { /* (in give-up order) */
        client_oneway_drop(c, held_pop(c));
        n++;
    }
    uint64_t unlogged = 0;
    if (n != 0 && arpc_log_throttle_due(&c->cl_dropped_log, arpc_now_coarse_ns(), CLIENT_ATTEMPTS_LOG_NS, 1, &unlogged)) {
        char more[96];
        arpc_log(ARPC_LOG_WARN, "client of %s: %zu one-way message%s dropped unsent: no connection within "
                 "reconnect_give_up_ms (%lld ms)%s", c->cl_target.t_addr, n, n == 1 ? "" : "s",
                 (long long)c->cl_give_up_ms, arpc_log_throttle_more(more, sizeof(more), unlogged, "more dropped"));
    }
}

void client_drop_held_oneways(arpc_client *c, const char *why)
{
    size_t n = c->cl_nheld;
    for (struct client_oneway *m = held_take(c), *next; m != NULL; m = next) {
        next = m->om_next;
        client_oneway_drop(c, m);
    }
    if (n != 0) /* as the close's linger names what it could not send */
        arpc_log(ARPC_LOG_WARN, "client of %s: %zu one-way message%s dropped unsent: %s", c->cl_target.t_addr, n,
                 n == 1 ? "" : "s", why);
}
