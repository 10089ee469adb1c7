/*
 * A call's request written by its caller's thread, so an idle client loop is not woken just
 * to write it (issue #9; the server's replies do the same, core/reply_direct.c; who may write
 * a socket and when: core/conn_write.h).
 *
 * When: a plain-socket connection (a TLS stream is the loop thread's; the JSON-RPC client is
 * apart), ready (after the server's HELLO, not draining), a caller on another thread than the
 * loop's, while the loop sleeps in its poll with nothing posted (arpc_loop_idle: a loop on a
 * thread of its own between calls, or an application's loop asleep; a caller-driven loop
 * nobody runs, or a pollable one between steps, does not count as asleep) and nobody writes
 * the socket. A busy loop (pipelined replies being read, calls queued) gets the call as
 * before and batches it with the others in one gathered write: under pipelined load nothing
 * changes. Nor while more than CD_OUTSTANDING_MAX calls of the client are out: a thread
 * issuing a window of calls at a time (a completion-queue consumer refilling its window)
 * finds the loop asleep between its bursts, and writing each call itself would cost a send
 * per call where the loop, woken once, writes the burst in one gathered write (measured:
 * window 256 through a completion queue fell from 754 k to 388 k calls/s, context switches
 * per call 0.06 -> 0.56, before this rule). A caller that loses the race for the socket
 * (another caller, or the loop, took it) hands the call over with a wake-up, as before.
 *
 * The pending table and the deadline wheel stay the loop's alone (no lock): the caller numbers
 * an at-most-once call itself (cl_next_seq is atomic; its xid is its seq with
 * ARPC_XID_SEQ_BIT), picks another call's xid from a range of its own (CD_XID_BIT set: never
 * one the loop gives), stamps the latest ack it can see (one
 * published by the loop: an older one only makes the server keep replies a little longer),
 * and hands the call record to the loop on a stack of its own (cd_calls) without waking it:
 * the loop takes the stack when something needs the calls (below). Only a caller whose call
 * needs the loop soon posts cd_job, with a wake-up: a partial write (the rest must be queued),
 * nothing written, a loop that waited to flush, a deadline before the next sweep. The hard
 * parts:
 *
 * The reply can come before the loop has seen the call: the caller pushes the call *before*
 * it writes (state DW_WRITING), so by the time any reply to it can be read, the call is on
 * cd_calls. A reply whose xid may be a caller's (either bit) and is not in the pending table makes the loop
 * take cd_calls first (client_direct_catch_up) and look again: not found then, it is late
 * (the call ended) and dropped, as before. The price of pushing first: the loop may meet a
 * call still DW_WRITING (it woke between the push and the outcome); it then waits for the
 * outcome, which is one non-blocking send away (a bounded wait, as the loop's own at a close
 * in conn_write.c; only a caller preempted right there makes it long). A stack of the
 * client's own, not the loop's lazy jobs, so that this catch-up, run from inside a reply's
 * dispatch, runs nothing but these calls.
 *
 * Every path that looks through the calls takes cd_calls first: a reply's miss, a cancel,
 * the connection's loss, a refusal, the close (client_resend.c, client_call.c). So a cancel,
 * a loss, a reconnect, a resend or a close finds each call exactly once: either in the
 * table/waiting list (it arrived) or on cd_calls (it arrives now, and is then handled with
 * the others). Callers enter a gate (cd_gate) around everything they do with the
 * connection; the loop closes it and waits for those inside before a connection is lost,
 * drains or closes, and opens it at the next HELLO: the connection's memory (reset at each
 * reconnect) is never read by a caller meanwhile, and a call written on a connection is on
 * cd_calls before that connection's loss is handled (the push precedes the caller's claim of
 * the socket, which precedes the loop's CW_CLOSED): a call that arrives with its connection
 * open was written on the current one; one that arrives with it closed is counted as sent on
 * the lost one and settled as the others (sent again or ended, by its semantics; not sent if
 * that server's last word said it read none it left unanswered), unless its caller wrote
 * only part of it and its rest was never queued: never whole, it was not sent. A call that arrives
 * cancelled is not ended at its arrival, as one the loop never sent would be: it is on the
 * wire, and the cancel's own job, which follows, ends it and sends the server CANCEL.
 *
 * Deadlines: a call no reply ever comes for must still end at its deadline, so the loop must
 * take it in time. While callers' calls with deadlines keep arriving, a sweep (cd_sweep, on
 * the loop's deadline heap, so pollable and wrapped loops keep working) turns the loop every
 * CD_SWEEP_S and takes cd_calls; it is not armed again once a whole period passed with none
 * (an idle client sleeps; calls without a deadline never arm it). At most ~16 wake-ups a
 * second while such calls flow, whatever their rate: the cost of not waking per call. Its
 * time is published (cd_sweep_at): a caller whose deadline comes before it (or finds none
 * armed) posts cd_job after its push. The caller's push and the
 * sweep's publication are each followed by a full fence before the other side's look
 * (the caller reads cd_sweep_at, the sweep takes cd_calls), so either the sweep takes the
 * call or the caller sees the new time. The same pattern posts cd_job once (cd_posted). A
 * call without a deadline (the default) never wakes the loop for it: until its reply, a
 * cancel (its own job, with a wake-up), a loss (I/O) or the close, nothing needs it there.
 *
 * Order: frames never interleave: the caller writes only while it owns the socket
 * (conn_write.h); a partial write (DW_PART) leaves the socket to nobody until the loop has
 * queued the rest at the front (arpc_conn_send_rest_headed), which the caller's wake-up brings
 * about at once; a frame the loop queued or half wrote is finished before a caller may write
 * (the loop owns the socket until its queue is empty).
 */
#include <stddef.h>
#include <string.h>

#include "arpc/error.h"
#include "base/backoff.h"
#include "base/clock.h"
#include "base/stack_fifo.h"
#include "core/client_resend.h"
#include "core/frame.h"

enum direct_state {
    DW_NO = 0,  /* not written by its caller (or not yet told) */
    DW_WRITING, /* on cd_calls; its caller is writing it */
    DW_ALL,     /* written whole */
    DW_ALL_WAKE, /* written whole; the loop waits to flush its own queue (ARPC_DIRECT_ALL_WAKE) */
    DW_PART,    /* some bytes written (cc_direct >> DW_STATE_BITS): the rest must be queued first */
    DW_NONE,    /* nothing written: the loop sends it, as a call posted to it */
};

/* cc_direct holds the state in its low bits and, above them, the bytes a partial write
 * wrote: so a caller never writes a frame of DW_FRAME_MAX bytes or more itself. */
#define DW_STATE_BITS 3
#define DW_STATE_MASK ((1u << DW_STATE_BITS) - 1)
#define DW_FRAME_MAX (UINT32_MAX >> DW_STATE_BITS)

#define CD_GATE_OPEN (1u << 31)
/* Callers write only while at most this many calls are out (this one included): see "When". */
#define CD_OUTSTANDING_MAX 4
#define CD_SWEEP_S 0.064

static struct client_call *call_of_link(ck_stack_entry_t *e)
{
    return (struct client_call *)((char *)e - offsetof(struct client_call, cc_job.j_link));
}

/* ---- the gate ---- */

static bool gate_enter(struct client_direct *d)
{
    if (atomic_fetch_add(&d->cd_gate, 1) & CD_GATE_OPEN)
        return true;
    atomic_fetch_sub(&d->cd_gate, 1);
    return false;
}

static void gate_leave(struct client_direct *d) { atomic_fetch_sub(&d->cd_gate, 1); }

void client_direct_pause(arpc_client *c)
{
    struct client_direct *d = &c->cl_direct;
    if (!(atomic_fetch_and(&d->cd_gate, ~CD_GATE_OPEN) & CD_GATE_OPEN))
        return; /* closed already, and waited for */
    unsigned attempt = 0;
    while (atomic_load(&d->cd_gate) & ~CD_GATE_OPEN) /* one send each, at most */
        arpc_backoff_spin(&attempt);
}

void client_direct_resume(arpc_client *c)
{
    struct client_direct *d = &c->cl_direct;
    struct arpc_conn *conn = &c->cl_conn;
    if (d->cd_stopped || !conn->c_open || !arpc_conn_allow_direct(conn))
        return;
    if (!arpc_outq_empty(&conn->c_out))
        (void)arpc_conn_writer_take(conn); /* what the loop queued leaves first */
    atomic_fetch_or(&d->cd_gate, CD_GATE_OPEN);
}

/* ---- the sweep ---- */

static void sweep_arm(arpc_client *c)
{
    struct client_direct *d = &c->cl_direct;
    if (d->cd_stopped || arpc_deadline_is_armed(&d->cd_sweep))
        return;
    uint64_t at = arpc_now_ns() + (uint64_t)(CD_SWEEP_S * 1e9);
    /* Out of memory for the heap: callers with a deadline wake the loop themselves. */
    atomic_store(&d->cd_sweep_at, arpc_deadline_arm(c->cl_loop, &d->cd_sweep, at) == ARPC_OK ? at : ARPC_NEVER);
}

static void sweep_fire(struct arpc_deadline *dl, void *arg)
{
    (void)dl;
    arpc_client *c = arg;
    struct client_direct *d = &c->cl_direct;
    bool again = d->cd_active;
    d->cd_active = false;
    if (again)
        sweep_arm(c);
    else
        atomic_store(&d->cd_sweep_at, ARPC_NEVER);
    atomic_thread_fence(memory_order_seq_cst); /* the time published before the take (notes) */
    client_direct_catch_up(c);
}

/* ---- on the loop ---- */

/* A caller's call reaches the loop. */
static void direct_arrive(arpc_client *c, struct client_call *call)
{
    unsigned attempt = 0;
    uint32_t word;
    while ((word = atomic_load_explicit(&call->cc_direct, memory_order_acquire)) == DW_WRITING)
        arpc_backoff_spin(&attempt); /* its caller is inside one non-blocking send (notes) */
    uint32_t st = word & DW_STATE_MASK;
    call_land(call, true); /* (its link was read: catch_up) the xid its caller stamped stays */
    if (attempt != 0)
        arpc_stat_inc(&c->cl_direct.cd_waited);
    if (st != DW_NONE)
        arpc_stat_inc(&c->cl_direct.cd_written);
    struct arpc_conn *conn = &c->cl_conn;
    if (call->cc_timed) { /* only a deadline needs the sweep */
        c->cl_direct.cd_active = true;
        sweep_arm(c);
    }
    bool rest_queued = false;
    if (conn->c_open) {
        size_t body_len, head_len = call_head_len(call);
        uint8_t *body = call_body(call, &body_len);
        size_t len = head_len + body_len, done = st == DW_PART ? word >> DW_STATE_BITS : st == DW_NONE ? 0 : len;
        if (conn->c_stats != NULL)
            arpc_stat_add(&conn->c_stats->io_bytes_out, done); /* the rest counts as it is written */
        if (done < len && done > 0) {
            arpc_stat_inc(&c->cl_direct.cd_partial);
            void *holder;
            arpc_outq_release_fn release = call_hold_frame(call, &holder);
            /* The rest of the head as its caller made it (cd_head: the same ack and budget),
             * or of the body. ENOMEM closes. */
            int rc = done < head_len ? arpc_conn_send_rest_headed(conn, c->cl_direct.cd_head + done, head_len - done,
                                                                  holder, body, body_len, release)
                                     : arpc_conn_send_rest(conn, holder, body + (done - head_len), len - done, release);
            rest_queued = rc == ARPC_OK;
        }
        arpc_conn_direct_done(conn); /* the loop's own queue, if it waited for the caller */
    }
    if (st == DW_NONE) {
        call_loop_start(call); /* as if posted, but numbered already */
        return;
    }
    /* When: its caller stamped its first-send tick as it wrote. A part whose rest was never queued
     * (its connection closed first) never left whole: the server cannot have run it. One
     * whose rest was queued is judged at the loss, as any queued frame (call_settle_sent). */
    call->cc_sent = st != DW_PART || rest_queued;
    /* Closed: written on the connection whose loss is being handled (or that send_rest just
     * closed). Settled first as the calls pending there, by what its server said
     * (call_settle_sent: a call its last GOAWAY left unanswered was not read), so that an end
     * at its arrival (a client down for good, its deadline passed) says so too. */
    bool lost = !conn->c_open;
    if (lost && call->cc_sent) {
        call_mark_sent(call);
        call_settle_sent(call);
    }
    uint64_t now = 0;
    if (!call_arrive(call, true, &now))
        return;
    if (!lost) {
        (void)call_track(call); /* under the xid its caller stamped */
        return;
    }
    const char *why = call_not_resent_why(c, call);
    if (why != NULL)
        call_finish_lost(call, why);
    else
        resend_wait(c, call); /* sent again, or, never whole, for the first time */
}

void client_direct_catch_up(arpc_client *c)
{
    for (ck_stack_entry_t *e = arpc_stack_take_fifo(&c->cl_direct.cd_calls), *next; e != NULL; e = next) {
        next = e->next; /* before: the loop's fields overlay the link from the call's arrival */
        direct_arrive(c, call_of_link(e));
    }
}

static void direct_job(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    arpc_client *c = (arpc_client *)((char *)job - offsetof(arpc_client, cl_direct.cd_job));
    atomic_store(&c->cl_direct.cd_posted, false);
    atomic_thread_fence(memory_order_seq_cst); /* cleared before the take (notes) */
    client_direct_catch_up(c);
}

void client_direct_init(arpc_client *c)
{
    struct client_direct *d = &c->cl_direct;
    atomic_init(&d->cd_gate, 0);
    atomic_init(&d->cd_next_xid, 1);
    atomic_init(&d->cd_ack, 0);
    ck_stack_init(&d->cd_calls);
    atomic_init(&d->cd_posted, false);
    arpc_loop_job_init(&d->cd_job, direct_job);
    atomic_init(&d->cd_sweep_at, ARPC_NEVER);
    arpc_deadline_init(&d->cd_sweep, sweep_fire, c);
    d->cd_active = false;
    d->cd_stopped = false;
}

void client_direct_stop(arpc_client *c)
{
    struct client_direct *d = &c->cl_direct;
    d->cd_stopped = true;
    client_direct_pause(c);
    client_direct_catch_up(c);
    arpc_deadline_cancel(c->cl_loop, &d->cd_sweep);
    atomic_store(&d->cd_sweep_at, ARPC_NEVER);
}

/* ---- on the caller's thread ---- */

/* Brings the loop cd_job with a wake-up, unless it is on its way already. */
static void direct_wake(arpc_client *c)
{
    struct client_direct *d = &c->cl_direct;
    if (!atomic_load(&d->cd_posted) && !atomic_exchange(&d->cd_posted, true) &&
        arpc_loop_post(c->cl_loop, &d->cd_job) != ARPC_OK)
        atomic_store(&d->cd_posted, false); /* a stopping loop: its close takes cd_calls */
}

static uint32_t direct_state_of(enum arpc_direct how)
{
    switch (how) {
    case ARPC_DIRECT_ALL:
        return DW_ALL;
    case ARPC_DIRECT_ALL_WAKE:
        return DW_ALL_WAKE;
    case ARPC_DIRECT_PART:
        return DW_PART;
    default:
        return DW_NONE;
    }
}

bool client_direct_try(arpc_client *c, struct client_call *call)
{
    struct client_direct *d = &c->cl_direct;
    /* The cheap refusals first: loads only. */
    if (!(atomic_load_explicit(&d->cd_gate, memory_order_relaxed) & CD_GATE_OPEN) ||
        atomic_load_explicit(&c->cl_npending, memory_order_relaxed) > CD_OUTSTANDING_MAX ||
        arpc_loop_on_thread(c->cl_loop) || !arpc_loop_idle(c->cl_loop) ||
        call_frame_size(call) >= DW_FRAME_MAX)
        return false;
    if (!gate_enter(d))
        return false;
    struct arpc_conn *conn = &c->cl_conn;
    if (atomic_load(&c->cl_state) != CL_READY || atomic_load(&conn->c_writer.w_state) != 0) {
        gate_leave(d);
        return false;
    }
    /* A numbered call's xid is its seq (ARPC_XID_SEQ_BIT); another's from the callers' range. */
    call->cc_xid = call->cc_semantics == ARPC_AT_MOST_ONCE
                       ? ARPC_XID_SEQ_BIT | atomic_fetch_add(&c->cl_next_seq, 1)
                       : CD_XID_BIT | atomic_fetch_add_explicit(&d->cd_next_xid, 1, memory_order_relaxed);
    uint8_t head[ARPC_OUTQ_HEAD_MAX];
    size_t body_len;
    uint8_t *body = call_body(call, &body_len);
    size_t head_len = call_head(call, body, body_len, head, atomic_load_explicit(&d->cd_ack, memory_order_relaxed),
                                call_budget_ms(call, 0));
    /* Stamped now, not as the loop takes the call up, which may be much later (at the
     * connection's loss): a re-send's safety is judged by the age of the first send. */
    call_stamp_sent(call, call_tick_stamp());
    uint64_t when = call_when(call); /* before the loop can see the call (below) */
    atomic_store_explicit(&call->cc_direct, DW_WRITING, memory_order_relaxed);
    arpc_stack_push(&d->cd_calls, &call->cc_job.j_link); /* before the write: its reply cannot overtake it */
    atomic_thread_fence(memory_order_seq_cst); /* the push before the looks below (notes) */
    size_t written = 0;
    struct iovec iov[2] = {{.iov_base = head, .iov_len = head_len}, {.iov_base = body, .iov_len = body_len}};
    enum arpc_direct how = arpc_conn_writev_direct(conn, iov, 2, head_len + body_len, &written);
    uint32_t st = direct_state_of(how);
    if (st == DW_PART && written < head_len)
        memcpy(d->cd_head, head, head_len); /* the loop queues its rest (before the release below) */
    /* From here the loop may finish the call: the future the caller has not returned yet
     * keeps its memory, and the caller touches none of the record after this store (its
     * deadline was read before). */
    atomic_store_explicit(&call->cc_direct, st == DW_PART ? st | (uint32_t)written << DW_STATE_BITS : st,
                          memory_order_release);
    bool wake = st != DW_ALL; /* a rest to queue, a flush waiting, or the whole call to send */
    if (!wake && when != ARPC_NEVER)
        wake = when < atomic_load(&d->cd_sweep_at); /* after the push's fence */
    if (wake)
        direct_wake(c); /* never waits: a post to the loop's lane */
    /* The last touch of the client: a close waits for the gate to empty before it frees it. */
    gate_leave(d);
    return true;
}
