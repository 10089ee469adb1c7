/*
 * Calls between connections, and the acknowledgement.
 *
 * Waiting: calls that cannot be sent now (no connection yet, the connection broke, the server
 * said GOAWAY) wait on cl_waiting in the order they began to, until their deadline (its wheel
 * node, armed while they wait) or their give-up time (reconnect_give_up_ms from when they began
 * waiting: client_give_up.c, which needs that order) comes.
 *
 * When the server's HELLO makes the client ready, every waiting call is sent again, oldest
 * first, with a new xid (a numbered call keeps its own: its seq), the current ack and what is
 * left of its budget -- unless sending it again could run it twice: an at-most-once call
 * already sent to a server is re-sent only to a
 * server that deduplicates, is the same instance (its epoch: a server without a reply log that
 * restarted has forgotten the call), and cannot have forgotten this client for being idle
 * (the call was first sent less than ~90% of the server's expiry ago). Otherwise the outcome is
 * unknown and the call ends with ARPC_ECONNLOST.
 *
 * When the connection breaks, the calls in flight on it go back to waiting, in arrival order,
 * unless their semantics forbid a re-send (ARPC_NO_RETRY: ARPC_ECONNLOST at once).
 *
 * The ack: the highest seq such that every numbered call up to it has finished (answered, or
 * given up for good): the server may drop those replies and refuses those seqs from then on.
 * Finished seqs above it wait in cl_done until the gap below them closes (without memory for
 * cl_done, in a small spill of the client's own: a seq noted nowhere would stop the ack).
 * A call left unanswered (a long poll) holds the gap open: every CLIENT_ACK_BEYOND_EVERY seqs
 * gathered in cl_done are folded into the claim beyond the ack (cl_claim, core/ack_claim.h:
 * all up to a high but the seqs still waited for), told to the server in an ACK frame, which
 * then lets those replies go as it does those under the ack; the ack, once the gap closes,
 * moves through the claim as through cl_done.
 */
#include <stdlib.h>
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "core/client_resend.h"
#include "core/frame.h"

#define EXPIRY_MARGIN_NUM 9 /* re-send only within 9/10 of the server's idle expiry */
#define EXPIRY_MARGIN_DEN 10

/* ---- the waiting list ---- */

void resend_unlink(arpc_client *c, struct client_call *call)
{
    /* (Its deadline's node stays armed: the deadline holds wherever the call goes.) */
    waiting_remove(&c->cl_waiting, call);
    call->cc_waiting = false;
}

void resend_wait(arpc_client *c, struct client_call *call)
{
    /* At the tail: the latest give-up time (client_give_up.c). */
    uint64_t give_up = arpc_deadline_from_ms(c->cl_give_up_ms);
    bool armed = !call->cc_timed || arpc_wheel_node_armed(&call_timed(call)->ct_node);
    if (waiting_push(&c->cl_waiting, call, give_up) != ARPC_OK) {
        call_finish_no_memory(call); /* no room to wait in (it is not waiting) */
        return;
    }
    call->cc_waiting = true;
    if ((!armed && call_arm(call) != ARPC_OK) || give_up_arm(c, give_up) != ARPC_OK) {
        /* Without a heap entry it could wait for ever: end it now. */
        call_finish(call, call_ended_code(call, ARPC_EUNREACHABLE), NULL, 0);
        return;
    }
    client_connect_unpark(c); /* last: a parked client connects now (it may end the call) */
}

static bool order_before(const struct waiting_slot *a, const struct waiting_slot *b)
{
    return call_order_before(a->ws_call->cc_order, b->ws_call->cc_order);
}

static bool give_up_before(const struct waiting_slot *a, const struct waiting_slot *b)
{
    return a->ws_give_up < b->ws_give_up;
}

/* Whether the waiting calls are in arrival order already (they are, unless a connection broke
 * while calls that came after its own waited: a GOAWAY's drain). */
static bool waiting_in_order(arpc_client *c)
{
    struct waiting_calls *w = &c->cl_waiting;
    struct client_call *prev = NULL, *call;
    for (uint32_t pos = w->wc_head; (call = waiting_at(w, &pos)) != NULL; pos++, prev = call)
        if (prev != NULL && call_order_before(call->cc_order, prev->cc_order))
            return false;
    return true;
}

/* ---- the ack ---- */

/* Takes seq out of the spill (cl_done_spill): whether it was there. */
static bool done_spill_take(arpc_client *c, uint64_t seq)
{
    for (uint32_t i = 0; i < c->cl_done_nspill; i++) {
        if (c->cl_done_spill[i] == seq) {
            c->cl_done_spill[i] = c->cl_done_spill[--c->cl_done_nspill];
            return true;
        }
    }
    return false;
}

/* Takes seq out of cl_done or the spill: whether it was noted finished there. */
static bool done_take(arpc_client *c, uint64_t seq)
{
    return (arpc_u64_map_count(&c->cl_done) != 0 && arpc_u64_map_take(&c->cl_done, seq) != NULL) ||
           (c->cl_done_nspill != 0 && done_spill_take(c, seq));
}

void resend_ack_beyond_tell(arpc_client *c)
{
    const struct arpc_ack_claim *cl = &c->cl_claim;
    uint32_t need = ARPC_HELLO_ACKS | ARPC_HELLO_DEDUP;
    if (cl->ac_high <= c->cl_ack || (c->cl_server_flags & need) != need || !c->cl_conn.c_open ||
        atomic_load(&c->cl_state) != CL_READY)
        return; /* (told on the next connection, which may be to a server that hears it) */
    size_t len = arpc_frame_ack_size(cl->ac_n);
    uint8_t *frame = arpc_malloc(len);
    if (frame == NULL)
        return; /* the server keeps those replies longer, no more: told with the next claim */
    arpc_frame_encode_ack(frame, c->cl_ack, cl->ac_high, cl->ac_waiting, cl->ac_n);
    (void)arpc_conn_send(&c->cl_conn, frame, frame, len); /* best effort: a lost one is told again */
}

/* Folds the finished seqs above the ack, up to the highest, into the claim (cl_claim), and
 * tells the server. The walk covers the seqs since the last claim once, and a claim comes
 * every CLIENT_ACK_BEYOND_EVERY finished seqs: O(1) a call, amortized. A claim lists at most
 * ARPC_ACK_WAITING_MAX waiting seqs; its high stops below the next one. */
static void beyond_claim(arpc_client *c)
{
    struct arpc_ack_claim *cl = &c->cl_claim;
    if (cl->ac_waiting == NULL) {
        if ((cl->ac_waiting = arpc_malloc(ARPC_ACK_WAITING_MAX * sizeof(uint64_t))) == NULL) {
            c->cl_beyond_next = arpc_u64_map_count(&c->cl_done) + CLIENT_ACK_BEYOND_EVERY;
            return; /* no claim: the server keeps those replies, as before claims */
        }
        cl->ac_cap = ARPC_ACK_WAITING_MAX;
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < cl->ac_n; i++)
        if (!done_take(c, cl->ac_waiting[i]))
            cl->ac_waiting[n++] = cl->ac_waiting[i]; /* still waited for (in order: n <= i) */
    uint64_t seq = (cl->ac_high > c->cl_ack ? cl->ac_high : c->cl_ack) + 1;
    for (; seq <= c->cl_done_high; seq++) {
        if (done_take(c, seq))
            continue;
        if (n == ARPC_ACK_WAITING_MAX)
            break;
        cl->ac_waiting[n++] = seq;
    }
    cl->ac_n = n;
    cl->ac_high = seq - 1; /* above the ack: cl_ack + 1 has not finished (the ack would be past it) */
    c->cl_beyond_next = arpc_u64_map_count(&c->cl_done) + CLIENT_ACK_BEYOND_EVERY;
    resend_ack_beyond_tell(c);
}

void resend_seq_done(arpc_client *c, uint64_t seq)
{
    if (seq != c->cl_ack + 1) {
        if (seq > c->cl_done_high)
            c->cl_done_high = seq;
        if (arpc_u64_map_put(&c->cl_done, seq, (void *)1) == ARPC_OK) {
            if (arpc_u64_map_count(&c->cl_done) >= c->cl_beyond_next)
                beyond_claim(c); /* a call left unanswered holds the ack below many */
            return;
        }
        /* No memory to note it: the spill keeps it, or the ack stops below it for good (the
         * server then keeps every later reply of this client, until its cache is full). */
        if (c->cl_done_nspill < CLIENT_DONE_SPILL)
            c->cl_done_spill[c->cl_done_nspill++] = seq;
        else if (!c->cl_done_spill_warned) {
            c->cl_done_spill_warned = true;
            arpc_log(ARPC_LOG_WARN, "client: out of memory noting call %llu finished: the client's "
                     "acknowledgement stops below it, and the server keeps every later reply of this client",
                     (unsigned long long)seq);
        }
        return;
    }
    c->cl_ack = seq;
    /* Calls answered in order leave nothing above the ack: no lookup for them. */
    struct arpc_ack_claim *cl = &c->cl_claim;
    for (;;) {
        uint64_t next = c->cl_ack + 1;
        if (done_take(c, next)) {
            c->cl_ack = next;
            continue;
        }
        if (next > cl->ac_high)
            break;
        uint32_t k = arpc_ack_claim_after(cl, c->cl_ack); /* the first waiting seq >= next */
        if (k < cl->ac_n && cl->ac_waiting[k] == next)
            break; /* still waited for */
        /* Finished, as the claim says, up to the next seq it waits for. */
        c->cl_ack = k < cl->ac_n ? cl->ac_waiting[k] - 1 : cl->ac_high;
    }
    if (cl->ac_high != 0)
        arpc_ack_claim_trim(cl, c->cl_ack);
    if (arpc_u64_map_count(&c->cl_done) + CLIENT_ACK_BEYOND_EVERY < c->cl_beyond_next)
        c->cl_beyond_next = arpc_u64_map_count(&c->cl_done) + CLIENT_ACK_BEYOND_EVERY;
    atomic_store_explicit(&c->cl_direct.cd_ack, c->cl_ack, memory_order_relaxed); /* callers' frames */
}

/* ---- connected ---- */

/* May this call, sent before, be sent to the server we are now connected to? NULL if so, else
 * why not (CALL_LOST_...). */
static const char *resend_unsafe_why(const arpc_client *c, const struct client_call *call)
{
    if (!call->cc_sent || call->cc_semantics == ARPC_AT_LEAST_ONCE)
        return NULL; /* never reached a server, or may run twice by contract */
    if (call->cc_semantics != ARPC_AT_MOST_ONCE)
        return CALL_LOST_NO_RETRY;
    if (!(c->cl_server_flags & ARPC_HELLO_DEDUP) || c->cl_epoch == 0 || call->cc_epoch_gen != c->cl_epoch_gen)
        return CALL_LOST_FORGOTTEN; /* this server does not remember the call */
    if (c->cl_server_expiry_s != 0) {
        uint64_t keep_ns = (uint64_t)c->cl_server_expiry_s * 1000000000ull / EXPIRY_MARGIN_DEN * EXPIRY_MARGIN_NUM;
        /* Ticks truncate: the age is counted one tick long, to err on the safe side. */
        uint64_t ticks = call_age_ticks(call_sent_tick(call)) + 1ull;
        if (ticks << CALL_TICK_SHIFT >= keep_ns)
            return CALL_LOST_EXPIRED; /* it may have forgotten us meanwhile */
    }
    return NULL;
}

/* Calls cancelled while they waited whose cancel's job has not reached the loop (none could be
 * had: core/client_api.c; or it is on its way): ended as calls_cancel would, never sent (a
 * call that had not started does not run), one sent before named by its seq. The job, if
 * any, finds them finished. */
static void calls_drop_cancelled(arpc_client *c)
{
    struct waiting_calls *w = &c->cl_waiting;
    struct client_call *call;
    for (uint32_t pos = w->wc_head; (call = waiting_at(w, &pos)) != NULL; pos++) { /* (ending calls moves none) */
        if (!arpc_future_done(call_future(call)))
            continue;
        uint64_t seq = call_seq(call);
        if (call->cc_sent && seq != 0)
            cancel_seq_remember(c, seq);
        call_finish(call, ARPC_ECANCELLED, NULL, 0); /* the future is cancelled already */
    }
}

void calls_on_connected(arpc_client *c)
{
    calls_drop_cancelled(c); /* before the CANCELs by seq are told */
    cancel_seq_tell(c); /* first: the re-sends' ack may cover their seqs */
    resend_ack_beyond_tell(c); /* (a restarted server read its replies back from its log) */
    bool sorted = !waiting_in_order(c);
    if (sorted)
        waiting_sort(&c->cl_waiting, order_before); /* re-sent in arrival order */
    struct client_call *call;
    while ((call = waiting_first(&c->cl_waiting, NULL)) != NULL && atomic_load(&c->cl_state) == CL_READY) {
        client_send_held_oneways(c, call); /* one-way messages held while parked, that came first */
        if (atomic_load(&c->cl_state) != CL_READY)
            break;
        resend_unlink(c, call);
        const char *why = resend_unsafe_why(c, call);
        if (why == NULL)
            call_send(call, 0);
        else
            call_finish_lost(call, why);
    }
    if (atomic_load(&c->cl_state) == CL_READY)
        client_send_held_oneways(c, NULL);
    else /* as the messages queued on the connection that went */
        client_drop_held_oneways(c, "the connection closed before they were written");
    /* Not all sent (the connection went meanwhile): the rest back in give-up order, for
     * client_give_up.c (the calls the loss added came last, with the latest times). */
    if (sorted && waiting_count(&c->cl_waiting) != 0)
        waiting_sort(&c->cl_waiting, give_up_before);
}

/* ---- connection lost ---- */

static int by_order(const void *a, const void *b)
{
    const struct client_call *x = *(struct client_call *const *)a, *y = *(struct client_call *const *)b;
    return call_order_before(x->cc_order, y->cc_order) ? -1 : x->cc_order != y->cc_order;
}

void calls_on_conn_lost(arpc_client *c)
{
    cancel_seq_unanswered(c); /* cancelled on it and never answered: named by seq on the next */
    client_direct_catch_up(c); /* calls their callers wrote on it are among its calls */
    size_t n = pending_count(&c->cl_pending);
    if (n == 0) {
        calls_unwritten_forget(c);
        return;
    }
    struct client_call **calls = arpc_malloc(n * sizeof(*calls));
    size_t k = 0;
    struct pending_iter it;
    pending_iter_init(&it);
    while (calls != NULL && k < n && pending_next(&c->cl_pending, &it, &calls[k]))
        k++;
    if (calls != NULL) {
        for (size_t i = 0; i < k; i++) {
            call_untrack(calls[i]); /* its xid died with the connection */
            call_settle_sent(calls[i]); /* a frame that never left whole was not sent */
        }
        calls_unwritten_forget(c);
        qsort(calls, k, sizeof(*calls), by_order);
        for (size_t i = 0; i < k; i++) {
            /* One never sent waits for the next connection, whatever its semantics. */
            const char *why = call_not_resent_why(c, calls[i]);
            if (why != NULL)
                call_finish_lost(calls[i], why);
            else
                resend_wait(c, calls[i]);
        }
        arpc_free(calls);
        return;
    }
    calls_unwritten_forget(c);
    /* Out of memory to sort them: their outcome cannot be settled in order; end them. */
    calls_fail_all(c, ARPC_ECONNLOST);
}

static void call_fail(struct client_call *call, void *reason)
{
    call->cc_tracked = false; /* pending_drain took it */
    /* A close's (or its loop's stop): a request still queued whole is taken back rather than
     * sent as last words for a call already ended: never sent, it did not run. */
    if (*(int *)reason == ARPC_ESHUTDOWN && call_withdraw(call))
        call->cc_sent = false;
    call_finish(call, call_ended_code(call, *(int *)reason), NULL, 0);
}

/* Ends every waiting call for reason (call_ended_code). */
static void waiting_fail_all(arpc_client *c, int reason, bool say_why)
{
    struct client_call *call;
    while ((call = waiting_first(&c->cl_waiting, NULL)) != NULL)
        call_finish_unavailable(call, reason, say_why);
}

void calls_fail_all(arpc_client *c, int reason)
{
    client_direct_catch_up(c);
    pending_drain(&c->cl_pending, call_fail, &reason);
    waiting_fail_all(c, reason, false);
}

void calls_refused(arpc_client *c, int reason)
{
    client_direct_catch_up(c);
    /* A call sent on an earlier connection may have run there: its outcome stays unknown. One
     * never sent says why (the server's refusal), in its result. */
    waiting_fail_all(c, reason, true);
}
