/*
 * A client says goodbye, or its connection closes: which of its calls still running are
 * cancelled (docs/SEMANTICS.md, "The client goes away"). A handler that waits for something
 * (a long poll) ends only when its caller cancels it; a caller that is gone cannot, so the
 * server does it for the caller when nobody can ever get the call's answer. Loop thread:
 * at the GOAWAY (core/server_conn.c: sconn_on_goodbye, a held connection's too), and from
 * the connection's on_close.
 *
 * - The client said goodbye (a GOAWAY: it closed and will re-send nothing): every call of
 *   the connection, numbered or not, and every numbered call of the client object's still
 *   running, whichever connection began it (dedup_cancel_client: the original a copy here
 *   waits for, and one begun on a connection lost before whose copy was never sent or waits
 *   unread behind a hold). A client without an incarnation (an older one) may share its key
 *   with another object of the same chosen id: then only the originals its copies here wait
 *   for (a re-send after a reconnect waits for the run that began on an earlier connection).
 * - Otherwise (a lost connection, bad input, the server's close): only unnumbered calls. A
 *   numbered (at-most-once) call may be re-sent by its client on its next connection, and
 *   that copy waits for this very run and its result: it is left running.
 * - A one-way message is never cancelled: nobody waits for an answer, and its sender meant
 *   it to run whatever became of its connection (a CANCEL cannot name one either).
 *
 * A cancel runs the handler's callback at once, which may reply at once, which takes the
 * call out of the table (request_untrack) and may answer copies: nothing is cancelled while
 * a walk is under way. Calls are collected, then cancelled, a batch at a time; a pass skips
 * what is cancelled already, so the passes end.
 */
#include "core/request_internal.h"

#define DEPARTURE_BATCH 64

/* Whether req dies with its connection: see the top of this file. Not twice: a call
 * cancelled already (its own CANCEL) is left as it is. */
static bool call_dies(const struct server_conn *sc, const arpc_request *req)
{
    unsigned flags = atomic_load(&((arpc_request *)req)->rq_flags);
    return !(flags & RQ_CANCELLED) && (sc->sc_goodbye || req->rq_seq == 0);
}

/* The calls in sc's own table (one-way messages are never in it). */
static void cancel_own_calls(struct server_conn *sc)
{
    uint64_t xids[DEPARTURE_BATCH];
    size_t n;
    do {
        n = 0;
        size_t pos = 0;
        uint64_t xid;
        void *val;
        while (n < DEPARTURE_BATCH && arpc_u64_map_next(&sc->sc_calls, &pos, &xid, &val))
            if (call_dies(sc, val))
                xids[n++] = xid;
        for (size_t i = 0; i < n; i++) {
            arpc_request *req = arpc_u64_map_get(&sc->sc_calls, xids[i]);
            if (req != NULL) /* else an earlier callback answered it: it left the table */
                request_cancel_now(req);
        }
    } while (n == DEPARTURE_BATCH);
}

/* The smallest xid above after among sc's copies waiting for a running call; false: none. */
static bool next_copy_xid(const struct server_conn *sc, uint64_t after, uint64_t *xid)
{
    bool found = false;
    for (const struct arpc_dlink *l = sc->sc_copies.dl_head; l != NULL; l = l->dl_next) {
        uint64_t x = ARPC_DLIST_ENTRY(l, struct arpc_rc_waiter, w_copy_link)->w_xid;
        if (x > after && (!found || x < *xid)) {
            *xid = x;
            found = true;
        }
    }
    return found;
}

/* Each copy's original is cancelled as a CANCEL naming the copy would (dedup_cancel), in xid
 * order: a callback's reply may take any copy off the list meanwhile. A walk per copy, as
 * dedup_cancel's own: a connection rarely has more than a few copies waiting. */
static void cancel_copied_calls(struct server_conn *sc)
{
    for (uint64_t xid = 0; next_copy_xid(sc, xid, &xid);)
        dedup_cancel(sc, xid);
}

void sconn_cancel_departed(struct server_conn *sc)
{
    cancel_own_calls(sc);
    if (!sc->sc_goodbye)
        return;
    if (sc->sc_incarnation != 0) /* its key is this client object's alone */
        dedup_cancel_client(sc);
    else
        cancel_copied_calls(sc);
}
