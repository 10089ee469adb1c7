/*
 * A pool worker's replies of one take, written together: "many replies, one writev".
 *
 * A worker takes its whole mailbox at once (async/actor.c) and runs the requests one after the
 * other. Under pipelined load each reply used to go to the loop's lane, and the loop gathered
 * them into its own sendmsg: every reply's bytes were made on the worker's CPU and read again
 * on the loop's (its copy into the socket), and the loop did the queueing and the send for
 * each. Here a reply its worker may write itself (core/reply_direct.c: the call ran on an
 * actor, no reply log, a plain socket speaking arpc frames) is held while more requests of the
 * same take wait to run after its own, and the take's replies to one connection leave in one
 * gathered non-blocking send by the worker. Their jobs then go to the loop lazily (no wake-up)
 * for the bookkeeping only the loop does (reply_direct.c says what, and why lazy is safe).
 *
 * A held reply must never wait on its handler or a later one: a handler may reply and then
 * wait for its client to have read that reply (tests/conn_refs_test.c). So the take's first
 * held reply, the *anchor*, goes to the loop at once, lazily, and the later ones hang from it
 * (struct take_batch, allocated per take and freed by the last of the worker, the anchor's
 * job and the later replies' job to let go: a stack pushed with one CAS by the worker, newest
 * first). Whoever marks the batch first owns it:
 *   - the worker, at the take's end (the actor's take-end hook; a discard at a stop runs it
 *     too), or once the batch has TAKE_MAX replies or TAKE_BYTES, or a reply for another
 *     connection comes: TAKE_FLUSHING while it writes, TAKE_FLUSHED once the anchor is the
 *     loop's again (its rm_direct set), then the later replies are posted: those it wrote
 *     whole as one lazy job holding them in order (take_later_job), the first one cut short
 *     and those after it as a job each;
 *   - the loop, when the anchor's job finds the batch older than reply_take_hold_ns, or the server
 *     not running, or no loop running (a final drain): TAKE_STOLEN, and it delivers the anchor
 *     and the replies under it as any reply it writes itself. A younger batch's job is posted
 *     again (lazily) and a deadline (sv_take_turn) turns the loop by then; a batch being
 *     written is waited for the same way (the loop never waits for a worker).
 * A reply the worker could not push (the batch was stolen) takes the ordinary way.
 *
 * Who writes is core/conn_write.h's word, as for one reply: a worker that finds the socket
 * taken (the loop flushing its own queue) writes nothing and hands every reply to the loop as
 * before, waking it; a send cut short leaves the rest of the reply it cut to the loop (its job
 * wakes it; nobody writes until the rest is queued), and the replies after it go the loop's way.
 * Order: the anchor's job is on the lazy stack before TAKE_FLUSHED, the later replies' jobs are
 * pushed after it (lazy jobs run before the lane's in every drain, async/loop_lanes.c), and one
 * producer's jobs keep their order: a cut reply's rest is queued before any reply after it.
 * Producers never wait: the word and the batch are CASes, the send is non-blocking.
 *
 * What a reply may wait: the other requests of its take, at most reply_take_hold_ns and a turn of
 * the loop. A reply of ARPC_CONN_BODY_MIN or more is never held (worth a send of its own), nor
 * one for a connection its workers may not write (TLS, JSON-RPC). A reply held when the server
 * stops is dropped as any reply handed over after the stop is, though its handler was told
 * ARPC_OK (it counted as queued).
 */
#include "arpc/error.h"
#include "async/actor_internal.h"
#include "async/loop_internal.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/refcount.h"
#include "core/conn_write.h"
#include "core/request_internal.h"
#include "core/server_internal.h"

#include <string.h>
#include <sys/uio.h>

#define TAKE_MAX 64u
#define TAKE_BYTES (128u * 1024u)
/* How long a take's first reply may wait for the loop to look at its batch (then at most
 * reply_take_hold_ns more for the steal): a wake-up is saved when the loop turns by then. */
#define TAKE_ANCHOR_WITHIN_NS 2000000u

#define TAKE_STOLEN ((struct reply_msg *)1)
#define TAKE_FLUSHING ((struct reply_msg *)2)
#define TAKE_FLUSHED ((struct reply_msg *)3)

/* A batch: shared by its worker and the anchor's job, freed by the last of them to let go
 * (the worker may look at it after the loop stole it and let the anchor go). */
struct take_batch {
    _Atomic(struct reply_msg *) b_top; /* the replies after the anchor, newest first; or a mark */
    arpc_refcount b_refs;
    struct reply_msg *b_anchor;
    /* The replies after the anchor that the worker wrote whole, in order, for the loop's
     * bookkeeping in one lazy job (take_later_job, holding a reference): walked as an array,
     * each reply and its request fetched ahead of their turn. As a job each, the loop found
     * them by reversing a chain of lines the worker had just written, a dependent cache miss
     * per reply (docs/PERFORMANCE.md). */
    struct arpc_loop_job b_later_job;
    unsigned b_later_n;
    struct reply_msg *b_later[TAKE_MAX - 1];
};

/* The worker's thread: the batch it holds. */
struct reply_take {
    arpc_server *t_server;
    struct server_conn *t_conn;
    struct take_batch *t_batch; /* NULL: none */
    unsigned t_n;               /* replies in the batch, the anchor's included */
    size_t t_bytes;
};

static _Thread_local struct reply_take take;

const size_t reply_take_batch_size = sizeof(struct take_batch);

uint64_t reply_take_hold_ns = 200000; /* 200 us: a take of 256 small calls runs in about half */

static void reply_take_drop(struct reply_msg *rm)
{
    arpc_request *req = rm->rm_req;
    reply_msg_free(rm);
    request_reply_done(req, false); /* no loop will deliver it */
}

static void take_batch_put(struct take_batch *b)
{
    if (arpc_refcount_put(&b->b_refs))
        arpc_free(b);
}

/* The replies under an anchor, in the order they were made; at most TAKE_MAX - 1. */
static unsigned take_chain(struct reply_msg *top, struct reply_msg **out)
{
    unsigned n = 0;
    for (struct reply_msg *rm = top; rm != NULL; rm = rm->rm_take_next)
        n++;
    unsigned i = n;
    for (struct reply_msg *rm = top; rm != NULL; rm = rm->rm_take_next)
        out[--i] = rm;
    return n;
}

static void take_turn_noop(struct arpc_deadline *d, void *arg)
{
    (void)d;
    (void)arg; /* the turn itself runs the lazy jobs */
}

bool reply_take_turn_soon(arpc_server *s)
{
    /* Only while running: after the stop's last step nothing would cancel it, and the server
     * may be freed on a loop of the user's. Not running, a batch is held only while its
     * worker writes it, and the worker wakes the loop once done: nothing to turn for. */
    if (atomic_load(&s->sv_state) != SV_RUNNING)
        return true;
    if (!arpc_deadline_is_armed(&s->sv_take_turn)) {
        arpc_deadline_init(&s->sv_take_turn, take_turn_noop, s);
        (void)arpc_deadline_arm_after_s(s->sv_loop, &s->sv_take_turn, (double)reply_take_hold_ns * 1e-9);
    }
    return arpc_deadline_is_armed(&s->sv_take_turn) || arpc_deadline_is_armed(&s->sv_lazy); /* ENOMEM: sv_lazy turns it */
}

/* Loop thread (or a final drain, loop NULL): the bookkeeping of the replies after the
 * anchor that left whole. Their lines were written on the worker's CPU: each is fetched
 * ahead, the reply three turns before its own, its request two, the request's state one. */
static void take_later_job(arpc_loop *loop, struct arpc_loop_job *job)
{
    struct take_batch *b = (struct take_batch *)((char *)job - offsetof(struct take_batch, b_later_job));
    unsigned n = b->b_later_n;
    for (unsigned i = 0; i < n && i < 3; i++)
        __builtin_prefetch(b->b_later[i]);
    for (unsigned i = 0; i < n; i++) {
        if (i + 3 < n)
            __builtin_prefetch(b->b_later[i + 3]);
        if (i + 2 < n)
            __builtin_prefetch(b->b_later[i + 2]->rm_req);
        if (i + 1 < n)
            __builtin_prefetch(b->b_later[i + 1]->rm_req->rq_state);
        reply_deliver(loop, &b->b_later[i]->rm_job);
    }
    take_batch_put(b);
}

/* Loop thread (or a final drain, loop NULL): the anchor's job. */
static void take_anchor_job(arpc_loop *loop, struct arpc_loop_job *job)
{
    struct reply_msg *rm0 = (struct reply_msg *)job;
    struct take_batch *b = rm0->rm_batch;
    arpc_server *s = rm0->rm_req->rq_state->rs_conn->sc_server;
    struct reply_msg *top = atomic_load(&b->b_top);
    for (;;) {
        if (top == TAKE_FLUSHED) { /* the worker wrote it, or left it to us */
            take_batch_put(b);
            reply_deliver(loop, job);
            return;
        }
        bool young = top == TAKE_FLUSHING ||
                     (loop != NULL && atomic_load(&s->sv_state) == SV_RUNNING && arpc_now_ns() - rm0->rm_made_ns < reply_take_hold_ns);
        if (young) {
            if (loop != NULL && arpc_loop_post_lazy(loop, job) == ARPC_OK) {
                /* No timer turns the loop by then (no memory for one): woken instead. */
                if (!reply_take_turn_soon(s))
                    arpc_loop_kick(loop);
                return;
            }
            /* No loop to come back on: only a write under way can keep us, for one send (not
             * the batch's age: that would spin until it passed). */
            while ((top = atomic_load(&b->b_top)) == TAKE_FLUSHING)
                ;
            if (top == TAKE_FLUSHED)
                continue;
            if (atomic_compare_exchange_weak(&b->b_top, &top, TAKE_STOLEN))
                break;
            continue;
        }
        if (atomic_compare_exchange_weak(&b->b_top, &top, TAKE_STOLEN))
            break;
    }
    take_batch_put(b);
    struct reply_msg *later[TAKE_MAX];
    unsigned n = take_chain(top, later);
    reply_deliver(loop, job);
    for (unsigned i = 0; i < n; i++)
        reply_deliver(loop, &later[i]->rm_job);
}

/* Worker's thread: writes the batch with one gathered send if the socket is free and hands
 * its replies to the loop, unless the loop stole it. */
static void reply_take_flush(struct reply_take *t)
{
    struct take_batch *b = t->t_batch;
    if (b == NULL)
        return;
    arpc_server *s = t->t_server;
    struct server_conn *sc = t->t_conn;
    t->t_batch = NULL;
    struct reply_msg *top = atomic_load(&b->b_top);
    do
        if (top == TAKE_STOLEN) {
            take_batch_put(b); /* the loop has them all */
            return;
        }
    while (!atomic_compare_exchange_weak(&b->b_top, &top, TAKE_FLUSHING));
    /* Ours until TAKE_FLUSHED: the anchor's job waits meanwhile (its request pins s). */
    struct reply_msg *rms[TAKE_MAX];
    rms[0] = b->b_anchor;
    unsigned n = 1 + take_chain(top, rms + 1);
    atomic_fetch_add(&s->sv_replying, 1);
    if (atomic_load(&s->sv_state) == SV_STOPPED) {
        atomic_store(&b->b_top, TAKE_FLUSHED); /* the anchor: the loop's last drain has it */
        take_batch_put(b);
        atomic_fetch_sub(&s->sv_replying, 1);
        for (unsigned i = 1; i < n; i++)
            reply_take_drop(rms[i]);
        return;
    }
    struct iovec iov[TAKE_MAX];
    size_t len = 0;
    for (unsigned i = 0; i < n; i++) {
        iov[i] = (struct iovec){.iov_base = rms[i]->rm_frame, .iov_len = rms[i]->rm_len};
        len += rms[i]->rm_len;
    }
    size_t left = 0;
    enum arpc_direct how = arpc_conn_writev_frames_direct(&sc->sc_conn, iov, (int)n, len, &left);
    for (unsigned i = 0; i < n; i++) {
        size_t mine = left < rms[i]->rm_len ? left : rms[i]->rm_len;
        left -= mine;
        rms[i]->rm_direct = mine;
        rms[i]->rm_direct_to = sc;
    }
    /* Those written whole need only the loop's bookkeeping, no wake-up: one lazy job for
     * all. The first cut short, or not written, and those after it wake the loop with a job
     * each, after them (one producer's jobs keep their order). */
    unsigned whole = 1;
    while (whole < n && rms[whole]->rm_direct == rms[whole]->rm_len)
        whole++;
    if (whole > 1) {
        b->b_later_n = whole - 1;
        memcpy(b->b_later, rms + 1, (whole - 1) * sizeof(rms[0]));
        arpc_loop_job_init(&b->b_later_job, take_later_job);
        arpc_refcount_get(&b->b_refs);
    }
    atomic_store(&b->b_top, TAKE_FLUSHED); /* the anchor is the loop's from here */
    take_batch_put(b);
    if (whole > 1 && arpc_loop_post_lazy(s->sv_loop, &b->b_later_job) != ARPC_OK &&
        !server_job_for_stop(s, &b->b_later_job)) {
        for (unsigned i = 1; i < whole; i++)
            reply_take_drop(rms[i]);
        take_batch_put(b);
    }
    for (unsigned i = whole; i < n; i++) {
        struct reply_msg *rm = rms[i];
        /* Whole: bookkeeping only, no wake-up. Cut short, or not written: its job wakes the
         * loop (once per empty lane). */
        bool lazy = rm->rm_direct == rm->rm_len;
        int rc = lazy ? arpc_loop_post_lazy(s->sv_loop, &rm->rm_job) : arpc_loop_post(s->sv_loop, &rm->rm_job);
        if (rc != ARPC_OK && !server_job_for_stop(s, &rm->rm_job))
            reply_take_drop(rm);
    }
    /* The loop must come now when it has something to write (a rest, a reply not written, its
     * own queue it could not flush: ALL_WAKE); and a stop waits for these requests: looked at
     * after the pushes, so that either its first step drains them or we wake the loop. */
    if (how != ARPC_DIRECT_ALL || atomic_load(&s->sv_state) != SV_RUNNING)
        arpc_loop_kick(s->sv_loop);
    else /* the bookkeeping frees calls a flow limit may be holding input for: not for ever */
        arpc_loop_lazy_soon(s->sv_loop);
    atomic_fetch_sub(&s->sv_replying, 1);
}

static void reply_take_end(void *arg) { reply_take_flush(arg); }

/* Posts rm as its take's anchor, lazily; false if it cannot (no memory, or the loop cannot
 * take it now: the ordinary hand-over then says why). */
static bool take_open(struct reply_take *t, arpc_server *s, struct server_conn *sc, struct reply_msg *rm)
{
    struct take_batch *b = arpc_malloc(sizeof(*b));
    if (b == NULL)
        return false;
    atomic_init(&b->b_top, NULL);
    arpc_refcount_init(&b->b_refs, 2); /* the worker's and the anchor job's */
    b->b_anchor = rm;
    rm->rm_batch = b;
    arpc_loop_job_init(&rm->rm_job, take_anchor_job);
    size_t len = rm->rm_len; /* once posted, the loop may steal, deliver and free rm at once */
    atomic_fetch_add(&s->sv_replying, 1);
    /* Lazily while the loop works (it takes the job at this iteration's end); a loop going to
     * sleep is woken, else the anchor's first look, which arms the steal's deadline, would wait
     * for its next event (a slow handler later in the take would hold this reply meanwhile) --
     * unless a deadline of the loop's turns it within TAKE_ANCHOR_WITHIN_NS anyway: under
     * pipelined load sv_take_turn is armed as calls go out (reply_direct_watch), and a wake-up
     * per take cost the pool ~13% of its calls/s (docs/PERFORMANCE.md). */
    bool ok = atomic_load(&s->sv_state) != SV_STOPPED && !arpc_loop_on_thread(s->sv_loop) &&
              arpc_loop_post_lazy_within(s->sv_loop, &rm->rm_job, TAKE_ANCHOR_WITHIN_NS) == ARPC_OK;
    if (ok && atomic_load(&s->sv_state) != SV_RUNNING)
        arpc_loop_kick(s->sv_loop); /* a stop waits for this request: see server_loop_hand */
    atomic_fetch_sub(&s->sv_replying, 1);
    if (!ok) {
        arpc_free(b);
        arpc_loop_job_init(&rm->rm_job, reply_deliver);
        return false;
    }
    t->t_server = s;
    t->t_conn = sc;
    t->t_batch = b;
    t->t_n = 1;
    t->t_bytes = len;
    arpc_actor_at_take_end(reply_take_end, t);
    return true;
}

bool reply_take_hold(arpc_server *s, struct reply_msg *rm)
{
    struct reply_take *t = &take;
    struct server_conn *sc = rm->rm_req->rq_state->rs_conn;
    /* Not for a connection its workers may not write (TLS, JSON-RPC: fixed before its first
     * request was read), nor for a large reply. */
    bool small = rm->rm_len < ARPC_CONN_BODY_MIN && sc->sc_conn.c_writer.w_direct;
    if (t->t_batch != NULL && (t->t_conn != sc || t->t_n == TAKE_MAX || t->t_bytes + rm->rm_len > TAKE_BYTES || !small))
        reply_take_flush(t);
    if (!small)
        return false;
    bool more = arpc_actor_take_continues();
    if (t->t_batch == NULL)
        return more && take_open(t, s, sc, rm); /* alone in its take: the one reply's way */
    struct take_batch *b = t->t_batch;
    size_t len = rm->rm_len; /* once pushed, the loop may steal the batch and free rm */
    struct reply_msg *top = atomic_load(&b->b_top);
    do {
        if (top == TAKE_STOLEN) { /* the loop took the batch: this one goes the ordinary way */
            t->t_batch = NULL;
            take_batch_put(b);
            return false;
        }
        rm->rm_take_next = top;
    } while (!atomic_compare_exchange_weak(&b->b_top, &top, rm));
    t->t_n++;
    t->t_bytes += len;
    if (!more)
        reply_take_flush(t);
    return true;
}
