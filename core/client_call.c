/*
 * The call object on the loop: arrival, sending, finishing, deadline, cancel.
 *
 * Each call is one allocation (client_internal.h): the caller's future, the struct client_call
 * (the loop's until the call finishes) and its request's method and payload, kept until the
 * call is freed so it can be sent again over a new connection; each send makes the frame's
 * header and fixed fields (call_head) and gathers them with those bytes. A request larger than
 * CALL_INLINE_MAX lives in a block of its own instead (from the client's pool of size classes,
 * cl_blocks, or from ARPC_CONN_BODY_MIN on its cache, cl_bufs), with a count of its own, so that it goes when the call is done
 * rather than when the caller lets go of the future. The block goes when
 * its three kinds of holders have let go, all counted as the future's references (no count of
 * its own): the caller's (who may keep it long after the call, and the client, are gone), the
 * call's (call_free), and the output queue's for each send of a small request (a call may end
 * while its request still waits to be written).
 *
 * A call whose future was cancelled is referenced by two parties at once: the loop, which
 * finishes it, and the cancelling thread, whose job (calls_cancel) travels to the loop. Whichever
 * lets go second frees it (and only then does cl_live drop, which arpc_client_close waits
 * for, so the client outlives every cancel).
 *
 * Deadlines: one node of the client's timing wheel per call (client_deadlines.c), armed at the
 * sooner of the call's own deadline and, while it waits for a connection, its give-up time
 * (call_on_deadline tells which it was).
 */
#include <stddef.h>
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "core/client_internal.h"
#include "core/client_resend.h"
#include "core/frame.h"

/* ---- the call and its request frame: one allocation ---- */

/* Requests up to this size (the whole frame) share the call's block: a completed future the
 * caller keeps pins them (and no more than this) until it is released. */
#define CALL_INLINE_MAX 1024u

/* A larger request: a block of its own, held by the call and by each send of it. */
struct call_bulk {
    arpc_refcount b_refs;
    uint32_t b_cap;        /* from cl_bufs, of this capacity; 0: from cl_blocks, of class b_class */
    int b_class;
    uint32_t b_body_len;   /* method and payload */
    arpc_client *b_client;
    uint8_t b_bytes[];     /* the method's length (u8), then the body */
};

/* The record's request room holds a large request's block: a pointer, unaligned (memcpy). */
static struct call_bulk *bulk_of(struct client_call *call)
{
    struct call_bulk *b;
    memcpy(&b, call->cc_req, sizeof(b));
    return b;
}

/* What the output queue holds of the call's request, and names it by: its block, or the call. */
static void *call_holder(struct client_call *call)
{
    return call->cc_bulk ? (void *)bulk_of(call) : (void *)call;
}
struct client_call *call_of_future(arpc_future *f)
{
    return (struct client_call *)((char *)f - offsetof(struct client_call, cc_future));
}

/* The request the call keeps (call_req): a byte, then the body, in the record's request room
 * (cc_req; the body's length in cc_inline_len: a frame of CALL_INLINE_MAX at most), or in a
 * large request's block (b_bytes; its length in b_body_len). The byte is the method's index
 * in cl_names for a call whose method is kept there (cc_named: an inline request only), and
 * the body its payload; else the byte is the method's length, and the body the method and
 * the payload. The rest of the frame (and a kept method's name) is made at each send. */
enum {
    REQ_METHOD = 0,
    REQ_BODY = 1,
    REQ_HEAD = ARPC_FRAME_HEADER_SIZE + ARPC_REQUEST_FIXED_SIZE, /* what a send makes before the body */
    INLINE_BODY_MAX = CALL_INLINE_MAX - REQ_HEAD,
};
_Static_assert(INLINE_BODY_MAX < (1u << 11), "an inline request's body length is kept in 11 bits (cc_inline_len)");
_Static_assert(ARPC_OUTQ_HEAD_MAX >= REQ_HEAD + METHOD_NAME_SHORT,
               "a send's head (fixed fields and a kept method's name) fits the output queue's head room");
_Static_assert(ARPC_METHOD_MAX <= UINT8_MAX && METHOD_NAMES_SLOTS <= UINT8_MAX + 1,
               "the method's length or index is kept in a byte");
/* Every byte here is paid per outstanding call (docs/PERFORMANCE.md, "Client memory per call"). */
_Static_assert(offsetof(struct client_call, cc_req) <= 86, "the call record grew: count its bytes again");
_Static_assert(sizeof(struct call_timed) == 24, "a call with a deadline grew: count its bytes again");

/* The block's holders are the future's own references: the caller's (USER), the call's two
 * holds (one dropped as the call finishes, one by call_free) and one for each send of a small
 * request (call_hold_frame), so the block needs no count of its own; its future's last
 * reference of any kind frees it. */

/* One holder of the block lets go; the last frees it. Any thread. */
static void call_put(struct client_call *call) { arpc_future_drop(&call->cc_future); }

/* Where the call's block begins: its deadline part, if any, comes first. */
static void *call_block(struct client_call *call)
{
    return call->cc_timed ? (void *)call_timed(call) : (void *)call;
}

void call_future_gone(arpc_future *f) { arpc_free(call_block(call_of_future(f))); }

static void call_bulk_put(struct call_bulk *b)
{
    if (!arpc_refcount_put(&b->b_refs))
        return;
    if (b->b_cap != 0)
        arpc_buf_put(&b->b_client->cl_bufs, b, b->b_cap);
    else
        block_pool_put(&b->b_client->cl_blocks, b, b->b_class);
}

static void call_frame_release(void *base) { call_put(base); }
static void call_bulk_release(void *base) { call_bulk_put(base); }

struct client_call *call_new(arpc_client *c, const char *method, size_t method_len, size_t payload_len, uint64_t when,
                             enum arpc_call_semantics semantics)
{
    size_t frame_len = arpc_frame_request_size(method_len, payload_len);
    bool bulk = frame_len > CALL_INLINE_MAX;
    /* A large request keeps its name: a byte saved in its block is nothing. */
    int name = bulk ? -1 : method_names_index(&c->cl_names, method, method_len);
    size_t body_len = name >= 0 ? payload_len : method_len + payload_len, req_len = REQ_BODY + body_len;
    bool timed = when != ARPC_NEVER;
    size_t size = offsetof(struct client_call, cc_req) + (bulk ? sizeof(struct call_bulk *) : req_len);
    if (size < sizeof(struct client_call))
        size = sizeof(struct client_call);
    char *block = arpc_malloc(timed ? sizeof(struct call_timed) + size : size);
    if (block == NULL)
        return NULL;
    struct client_call *call = (struct client_call *)(void *)block;
    if (timed) { /* the deadline part first */
        struct call_timed *t = (struct call_timed *)(void *)block;
        t->ct_when = when;
        arpc_wheel_node_init(&t->ct_node); /* not armed */
        call = (struct client_call *)(void *)(t + 1);
    }
    /* The record zeroed and its flag word made in one go (no read-modify-write per field). */
    *call = (struct client_call){
        .cc_inline_len = bulk ? 0 : (uint16_t)(body_len & 0x7ffu), /* INLINE_BODY_MAX at most */
        .cc_semantics = (uint16_t)((unsigned)semantics & 3u),
        .cc_timed = timed,
        .cc_bulk = bulk,
        .cc_named = name >= 0,
    };
    if (name >= 0)
        call->cc_req[REQ_METHOD] = (uint8_t)name;
    if (bulk) {
        /* They reuse memory: blocks of a few KiB are slow for the allocator (past its
         * per-thread cache), large ones fault fresh pages in. (Which of the two: by the
         * frame's size, as when the call kept its whole frame.) */
        size_t total = sizeof(struct call_bulk) + req_len, cap = 0;
        int cls = BLOCK_POOL_NONE;
        struct call_bulk *b = sizeof(struct call_bulk) + frame_len >= ARPC_CONN_BODY_MIN
                                  ? arpc_buf_get(&c->cl_bufs, total, &cap)
                                  : block_pool_get(&c->cl_blocks, total, &cls);
        if (b == NULL) {
            arpc_free(block);
            return NULL;
        }
        arpc_refcount_init(&b->b_refs, 1); /* the call's */
        b->b_cap = (uint32_t)cap;
        b->b_class = cls;
        b->b_client = c;
        memcpy(call->cc_req, &b, sizeof(b));
    }
    /* The caller's reference and the call's two holds: one dropped by call_finish (or by
     * call_start when the call does not start), the other by call_free or call_discard (the
     * call's share of the block). Not the caller's to release. */
    arpc_future_init_embedded_held(&call->cc_future, &c->cl_call_owner, 2);
    if (c->cl_call_home != NULL)
        arpc_future_set_home(&call->cc_future, c->cl_call_home);
    else
        arpc_future_set_completer(&call->cc_future, c->cl_loop);
    arpc_loop_job_init(&call->cc_job, call_job_start);
    return call;
}

arpc_future *call_future(struct client_call *call) { return &call->cc_future; }

/* The request's bytes (the method's byte, then the body) and the body's length: one look at
 * where they are. */
static uint8_t *call_req(struct client_call *call, uint32_t *body_len)
{
    if (call->cc_bulk) {
        struct call_bulk *b = bulk_of(call);
        *body_len = b->b_body_len;
        return b->b_bytes;
    }
    *body_len = call->cc_inline_len;
    return call->cc_req;
}

static uint32_t call_body_len(struct client_call *call)
{
    uint32_t len;
    (void)call_req(call, &len);
    return len;
}

void call_set_request(struct client_call *call, const char *method, size_t method_len, const void *payload,
                      size_t payload_len)
{
    uint8_t *req;
    if (call->cc_named) { /* call_new kept the method's index */
        if (payload_len > 0) /* payload may be NULL when empty */
            memcpy(call->cc_req + REQ_BODY, payload, payload_len);
        return;
    }
    if (call->cc_bulk) {
        struct call_bulk *b = bulk_of(call);
        b->b_body_len = (uint32_t)(method_len + payload_len); /* request_check bounds them; an inline
                                                              * request's length: call_new */
        req = b->b_bytes;
    } else {
        req = call->cc_req;
    }
    req[REQ_METHOD] = (uint8_t)method_len;
    memcpy(req + REQ_BODY, method, method_len);
    if (payload_len > 0) /* payload may be NULL when empty */
        memcpy(req + REQ_BODY + method_len, payload, payload_len);
}

uint8_t *call_body(struct client_call *call, size_t *len)
{
    uint32_t body_len;
    uint8_t *req = call_req(call, &body_len);
    *len = body_len;
    return req + REQ_BODY;
}

/* The method kept in cl_names for a call whose request keeps its index (cc_named). */
static const struct method_name *call_name(const struct client_call *call)
{
    return method_names_at(&call_client(call)->cl_names, call->cc_req[REQ_METHOD]);
}

size_t call_head_len(const struct client_call *call)
{
    return REQ_HEAD + (call->cc_named ? call_name(call)->mn_len : 0);
}

size_t call_frame_size(struct client_call *call) { return call_head_len(call) + (size_t)call_body_len(call); }

size_t call_head(const struct client_call *call, const uint8_t *body, size_t body_len, uint8_t *head, uint64_t ack,
                 uint32_t budget_ms)
{
    if (call->cc_named) {
        const struct method_name *name = call_name(call);
        size_t len = arpc_frame_encode_request_fixed(head, ARPC_FRAME_REQUEST, call->cc_xid, call_seq(call), ack,
                                                     budget_ms, name->mn_len, (uint32_t)body_len);
        memcpy(head + len, name->mn_bytes, METHOD_NAME_SHORT); /* the room's all: a constant copy */
        return len + name->mn_len;
    }
    uint8_t method_len = body[REQ_METHOD - REQ_BODY];
    return arpc_frame_encode_request_fixed(head, ARPC_FRAME_REQUEST, call->cc_xid, call_seq(call), ack, budget_ms,
                                           method_len, (uint32_t)body_len - method_len);
}

/* The owner of a call's future once the call is done with: the block's free function, no
 * cancel hook (nothing left to tell), and no client (it may be gone). */
static const struct arpc_future_owner call_done_owner = {.fo_on_cancel = NULL, .fo_free = call_future_gone};

/* The call's share of the block and of a large request. The client's owner (call_client) is
 * read for the last time here: the future, which may outlive the client, gets the constant
 * one. Plain store: whoever reads f_owner later (the last reference's free, a cancel that
 * cannot win the claim of a completed future) comes after our drop below (acquire-release),
 * and a cancel's hook came before the latch that let us here (call_release_shared). */
static void call_memory_put(struct client_call *call)
{
    if (call->cc_bulk)
        call_bulk_put(bulk_of(call));
    call->cc_future.f_owner = &call_done_owner;
    call_put(call);
}

void call_discard(struct client_call *call) { call_memory_put(call); }

/* ---- finishing ---- */

void call_free(struct client_call *call)
{
    arpc_client *c = call_client(call);
    call_memory_put(call);
    atomic_fetch_sub(&c->cl_live, 1); /* last: close may free the client from here on */
}

static void call_release_shared(struct client_call *call)
{
    if (arpc_future_owner_latch(&call->cc_future))
        call_free(call);
}

void call_finish(struct client_call *call, int status, void *data, size_t len)
{
    arpc_client *c = call_client(call);
    /* Never sent: without a connection, its result says why (client_unreachable_why), on
     * every path that ends it so (its deadline, its give-up time, a client lost at its first
     * attempt): the code alone cannot tell a server down from a configuration to mend. */
    if (status == ARPC_EUNREACHABLE && data == NULL)
        data = client_unreachable_why(c, &len);
    else if (status == ARPC_ECONNLOST && data == NULL) /* the loss, at least (call_finish_lost) */
        data = client_lost_why(c, c->cl_reconnect ? CALL_LOST : CALL_LOST_NO_RECONNECT, &len);
    call->cc_finished = true;
    call_disarm(call);
    if (call->cc_waiting)
        resend_unlink(c, call);
    else if (call->cc_tracked)
        call_untrack(call);
    uint64_t seq = call_seq(call);
    if (seq != 0)
        resend_seq_done(c, seq); /* never sent again: the ack may cover it */
    arpc_future *f = &call->cc_future;
    stats_call_finished(&c->cl_stats.cst_calls, status);
    atomic_fetch_sub(&c->cl_npending, 1); /* before completing: a woken caller sees it */
    bool completed = arpc_future_complete_drop(f, status, data, len); /* and the call's hold */
    if (completed)
        call_free(call); /* no cancel hook ran or will run: the call is ours alone */
    else
        call_release_shared(call); /* cancelled: its hook ran or is running */
}

/* Ends the call with code and a copy of words as its result (NULL: none; without memory for
 * the copy, the code alone). */
static void call_finish_saying(struct client_call *call, int code, const char *words)
{
    size_t len;
    char *data = arpc_text_dup(words, &len);
    call_finish(call, code, data, len);
}

/* ---- deadlines ---- */

/* The client's own clock found the call's deadline passed. Sent (or queued on a live
 * connection): ARPC_ETIMEDOUT, saying whose clock it was (a server's answer at the deadline
 * brings its own words). Else it could not reach the server: ARPC_EUNREACHABLE (call_finish
 * says why; connected, the loop took it up too late). */
static void call_finish_past_deadline(struct client_call *call, bool sent)
{
    if (sent)
        call_finish_saying(call, ARPC_ETIMEDOUT, CALL_TIMED_OUT);
    else if (atomic_load(&call_client(call)->cl_state) == CL_READY)
        call_finish_saying(call, ARPC_EUNREACHABLE, CALL_NOT_SENT_IN_TIME);
    else
        call_finish(call, ARPC_EUNREACHABLE, NULL, 0);
}

/* Behind a server that does not read, a request taken back is never run, late, by a server
 * that catches up with budgets it still believes (cc_reached: an earlier send may have). */
bool call_withdraw(struct client_call *call)
{
    arpc_client *c = call_client(call);
    if (!call->cc_sent || call->cc_reached || call->cc_waiting)
        return false;
    return arpc_conn_withdraw(&c->cl_conn, call_holder(call));
}

void call_on_deadline(struct client_call *call)
{
    /* (Its give-up time, while it waits, is client_give_up.c's.) */
    arpc_client *c = call_client(call);
    bool connected = atomic_load(&c->cl_state) == CL_READY;
    if (connected && call_withdraw(call)) {
        call_finish_saying(call, ARPC_EUNREACHABLE, ARPC_CONN_WITHDRAWN_WHY);
        return;
    }
    call_finish_past_deadline(call, call->cc_sent || (connected && !call->cc_waiting));
}

/* ---- sending ---- */

/* The budget to put on the wire: ms left, at least 1; 0 for none. */
uint32_t call_budget_ms(const struct client_call *call, uint64_t now_ns)
{
    if (!call->cc_timed)
        return 0;
    int64_t left = arpc_ms_left_after(now_ns != 0 ? now_ns : arpc_now_ns(), call_timed(call)->ct_when);
    return left < 1 ? 1 : left > UINT32_MAX ? UINT32_MAX : (uint32_t)left;
}

bool call_track(struct client_call *call)
{
    arpc_client *c = call_client(call);
    /* Without memory: ARPC_ENOMEM ("did not run") only if no send of it may have reached a
     * server (a re-send's earlier one, or its caller's own write: call_ended_code). */
    if (pending_put(&c->cl_pending, call) != ARPC_OK) {
        call_finish_no_memory(call);
        return false;
    }
    call->cc_tracked = true;
    /* Most calls have no deadline: no call to make for them; a re-sent one is armed already. */
    bool arm = call->cc_timed && !arpc_wheel_node_armed(&call_timed(call)->ct_node);
    if (arm && call_arm(call) != ARPC_OK) {
        call_untrack(call);
        call_finish_no_memory(call);
        return false;
    }
    call_mark_sent(call);
    return true;
}

void call_untrack(struct client_call *call)
{
    pending_take(&call_client(call)->cl_pending, call_xid(call));
    call->cc_tracked = false;
}

void call_mark_sent(struct client_call *call)
{
    if (!call->cc_sent) {
        call->cc_sent = true;
        call_stamp_sent(call, call_tick_stamp());
    }
    call->cc_epoch_gen = call_client(call)->cl_epoch_gen;
}

arpc_outq_release_fn call_hold_frame(struct client_call *call, void **holder)
{
    *holder = call_holder(call);
    if (call->cc_bulk) {
        arpc_refcount_get(&bulk_of(call)->b_refs);
        return call_bulk_release;
    }
    arpc_future_hold(&call->cc_future);
    return call_frame_release;
}

void call_on_unwritten(struct arpc_conn *conn, void *base, arpc_outq_release_fn release, size_t left, bool offered)
{
    (void)left; /* a frame not written whole is not whole at the server, however little is left */
    client_linger_unwritten(conn->c_owner, release); /* counted if the close drops it */
    if (release != call_frame_release && release != call_bulk_release)
        return; /* not a request (a HELLO, a CANCEL) */
    if (offered)
        return; /* its records may all have left: "may have run", the safe side */
    struct arpc_u64_map *m = &((arpc_client *)conn->c_owner)->cl_unwritten;
    if (m->p_slots == NULL && arpc_u64_map_init(m, 16) != ARPC_OK) {
        *m = (struct arpc_u64_map){0};
        return; /* counted as written: "may have run", the safe side */
    }
    (void)arpc_u64_map_put(m, (uint64_t)(uintptr_t)base, base); /* ENOMEM: the same */
}

/* Compared only with blocks of calls alive since before the close: a block the close freed
 * cannot be one of theirs. */
void call_settle_sent(struct client_call *call)
{
    struct arpc_u64_map *m = &call_client(call)->cl_unwritten;
    void *holder = call_holder(call);
    if (call_client(call)->cl_unread ||
        (arpc_u64_map_count(m) != 0 && arpc_u64_map_get(m, (uint64_t)(uintptr_t)holder) != NULL))
        call->cc_sent = call->cc_reached;
    else
        call->cc_reached = true;
}

void calls_unwritten_forget(arpc_client *c)
{
    if (c->cl_unwritten.p_slots != NULL)
        arpc_u64_map_fini(&c->cl_unwritten);
    c->cl_unwritten = (struct arpc_u64_map){0};
}

void call_send(struct client_call *call, uint64_t now_ns)
{
    arpc_client *c = call_client(call);
    bool sent_before = call->cc_sent; /* an earlier send may have reached a server */
    /* A new xid first (a numbered call keeps its own): it is the pending table's key. The head
     * is made for this send (the current ack and what is left of the budget); the body is the
     * call's, kept for re-sends. */
    if (!(call->cc_xid & ARPC_XID_SEQ_BIT))
        call->cc_xid = c->cl_next_xid++;
    uint8_t head[ARPC_OUTQ_HEAD_MAX];
    size_t body_len;
    uint8_t *body = call_body(call, &body_len);
    size_t head_len = call_head(call, body, body_len, head, c->cl_ack, call_budget_ms(call, now_ns));
    if (!call_track(call))
        return;
    /* The output queue holds the request until written. */
    void *holder;
    arpc_outq_release_fn release = call_hold_frame(call, &holder);
    int rc = arpc_conn_send_headed(&c->cl_conn, head, head_len, holder, body, body_len, release);
    if (rc == ARPC_ENOMEM) {
        /* Not sent this time: say so rather than wait. "Did not run" (ARPC_ENOMEM) only for a
         * call never sent before: a re-send's earlier send may have run (ARPC_ECONNLOST). */
        call_untrack(call);
        call->cc_sent = sent_before;
        call_finish_no_memory(call);
    }
    /* Any other failure is a closed connection: its loss handling takes the call over. */
}

int call_ended_code(const struct client_call *call, int reason)
{
    if (!call->cc_sent) /* it never reached a server: it did not run */
        return reason == ARPC_ECONNLOST ? ARPC_EUNREACHABLE : reason;
    return reason == ARPC_ESHUTDOWN ? ARPC_ECANCELLED : ARPC_ECONNLOST;
}

const char *call_not_resent_why(const arpc_client *c, const struct client_call *call)
{
    if (!c->cl_reconnect)
        return CALL_LOST_NO_RECONNECT;
    return call->cc_semantics == ARPC_NO_RETRY && call->cc_sent ? CALL_LOST_NO_RETRY : NULL;
}

void call_finish_lost(struct client_call *call, const char *why)
{
    int code = call_ended_code(call, ARPC_ECONNLOST);
    size_t len = 0;
    void *data = code == ARPC_ECONNLOST ? client_lost_why(call_client(call), why, &len) : NULL;
    call_finish(call, code, data, len);
}

void call_finish_no_memory(struct client_call *call)
{
    int code = call_ended_code(call, ARPC_ENOMEM);
    call_finish_saying(call, code, code == ARPC_ECONNLOST ? CALL_LOST_NO_MEMORY : NULL);
}

void call_finish_unavailable(struct client_call *call, int reason, bool say_why)
{
    int code = call_ended_code(call, reason);
    size_t len = 0;
    char *why = say_why && code != ARPC_ECONNLOST ? client_unreachable_why(call_client(call), &len) : NULL;
    call_finish(call, code, why, len);
}

bool call_arrive(struct client_call *call, bool written, uint64_t *now_ns)
{
    arpc_client *c = call_client(call);
    stats_call_started(&c->cl_stats.cst_calls);
    int state = atomic_load(&c->cl_state);
    if (state == CL_CLOSED || state == CL_LOST) {
        call_finish_unavailable(call, client_unavailable_reason(c), state == CL_LOST); /* its caller may have written it */
        return false;
    }
    if (!written && arpc_future_done(&call->cc_future)) { /* the caller may have released it: no handle check */
        call_finish(call, ARPC_ECANCELLED, NULL, 0); /* cancelled before it reached the loop */
        return false;
    }
    if (call->cc_timed && (*now_ns = arpc_now_ns()) >= call_timed(call)->ct_when) {
        /* Never sent (connected or not): it did not reach the server before its deadline. */
        call_finish_past_deadline(call, call->cc_sent);
        return false;
    }
    call->cc_order = c->cl_next_order++;
    /* (A call its caller wrote was numbered by its caller.) */
    if (call->cc_semantics == ARPC_AT_MOST_ONCE && call->cc_xid == 0)
        call->cc_xid = ARPC_XID_SEQ_BIT | atomic_fetch_add(&c->cl_next_seq, 1);
    return true;
}

void call_job_start(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    struct client_call *call = (struct client_call *)((char *)job - offsetof(struct client_call, cc_job));
    call_land(call, false);
    call_loop_start(call);
}

void call_loop_start(struct client_call *call)
{
    uint64_t now = 0; /* read by call_arrive for a call with a deadline: its budget's too */
    if (!call_arrive(call, false, &now))
        return;
    arpc_client *c = call_client(call); /* (a send without memory finishes and frees the call) */
    if (atomic_load(&c->cl_state) == CL_READY) {
        call_send(call, now);
        /* Calls drained from the lane in a row make a batch: once large, it leaves now. */
        arpc_conn_flush_batch(&c->cl_conn);
    } else
        resend_wait(c, call); /* sent once a connection is ready */
}

/* ---- cancel ---- */

void calls_cancel(struct client_call *call)
{
    calls_cancel_settle(call);
    call_release_shared(call);
}

/* Tells the server the call is cancelled (a CANCEL by its xid): a call that has not started
 * will not run. Best effort. */
static void cancel_tell_server(arpc_client *c, struct client_call *call)
{
    uint8_t *frame = arpc_malloc(ARPC_FRAME_HEADER_SIZE);
    if (frame != NULL) {
        arpc_frame_encode_header(frame, ARPC_FRAME_CANCEL, call_xid(call), 0);
        arpc_conn_send(&c->cl_conn, frame, frame, ARPC_FRAME_HEADER_SIZE);
    }
    /* The connection may be broken already, unnoticed: until the server answers, the seq is
     * kept for the next one (core/client_cancel_seq.c). */
    if (call_seq(call) != 0)
        cancel_seq_sent(c, call_xid(call), call_seq(call));
}

void calls_cancel_settle(struct client_call *call)
{
    arpc_client *c = call_client(call);
    client_direct_catch_up(c); /* a call its caller wrote reaches the loop first */
    if (!call->cc_finished) {
        if (!call->cc_waiting && call->cc_tracked) {
            /* Its request still queued whole is taken back: the server never hears of it, and
             * has nothing to read, run or answer (no CANCEL either). */
            if (!call_withdraw(call) && c->cl_conn.c_open && (c->cl_server_flags & ARPC_HELLO_CANCEL))
                cancel_tell_server(c, call);
        } else if (call->cc_waiting && call->cc_sent && call_seq(call) != 0 && !c->cl_cleaned) {
            /* Sent on a connection since lost, it may run there: no xid names it any more, so
             * the next connection names its seq (core/client_cancel_seq.c). */
            cancel_seq_remember(c, call_seq(call));
        }
        call_finish(call, ARPC_ECANCELLED, NULL, 0); /* the future is cancelled already */
    }
}
