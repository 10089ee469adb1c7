/*
 * The call functions of arpc/client.h, on the caller's thread: validate, encode the request
 * once (its xid, seq, ack and budget are stamped on the loop at each send), and hand the call
 * to the loop. Every outcome, immediate failures included, arrives through the future.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/options.h"
#include "core/client_internal.h"
#include "core/client_resend.h"
#include "core/frame.h"

/* ---- the loop thread's own posts ---- */

static struct arpc_loop_job *job_of_link(ck_stack_entry_t *link)
{
    return (struct arpc_loop_job *)((char *)link - offsetof(struct arpc_loop_job, j_link));
}

/* Runs the jobs queued by client_post on the loop thread, in order, those queued meanwhile
 * (a call that ends at once and whose callback starts another) included. The reference taken
 * with the post keeps c while they run: a job may let go of the last call (close may free c
 * from then on but for that reference) or of a cancel's reference.
 * Unbounded, unlike the lane's drain (LOOP_DRAIN_BATCH): a run cut short would post the rest
 * behind what other threads posted after those jobs were queued (a call made once a callback
 * said it had sent its messages would overtake them: client_loop_post_test). A run that never
 * ends needs callbacks that keep starting calls that end before they are sent, for ever; a
 * client that fails calls at once (closed, or down for good) fails them in call_start,
 * without a job. */
static void local_run(arpc_loop *loop, struct arpc_loop_job *job)
{
    arpc_client *c = (arpc_client *)((char *)job - offsetof(arpc_client, cl_local_job));
    ck_stack_entry_t *link;
    while ((link = c->cl_local_head) != NULL) {
        c->cl_local_head = link->next;
        if (c->cl_local_head == NULL)
            c->cl_local_tail = &c->cl_local_head;
        link->next = NULL;
        struct arpc_loop_job *next = job_of_link(link);
        next->j_fn(loop, next);
    }
    c->cl_local_posted = false;
    client_release(c);
}

void client_local_init(arpc_client *c)
{
    c->cl_local_head = NULL;
    c->cl_local_tail = &c->cl_local_head;
    c->cl_local_posted = false;
    arpc_loop_job_init(&c->cl_local_job, local_run);
}

/*
 * On the loop's own thread (a reply's callback starting the next call), the job joins the
 * client's queue, which one job runs: posted when the queue starts (arpc_loop_post_local: after
 * this iteration's reads, without another poll first, unless earlier posts wait on the lane),
 * it runs every job queued before it ends, in order, so the thread's jobs keep their order
 * among themselves as on the lane. When the lane refuses (the loop is stopping) the queue does not start and the
 * job is refused as a post is; a job that joins a queue already posted runs with it, in the
 * loop's final drain at the latest, as a post accepted just before the stop would (the
 * client's stop hook has made it end then: client_on_loop_stop).
 */
int client_post(arpc_client *c, struct arpc_loop_job *job)
{
    if (!arpc_loop_running_here(c->cl_loop))
        return arpc_loop_post(c->cl_loop, job);
    if (!c->cl_local_posted) {
        client_retain(c); /* local_run's */
        int rc = arpc_loop_post_local(c->cl_loop, &c->cl_local_job);
        if (rc != ARPC_OK) {
            client_release(c);
            return rc;
        }
        c->cl_local_posted = true;
    }
    job->j_link.next = NULL;
    *c->cl_local_tail = &job->j_link;
    c->cl_local_tail = &job->j_link.next;
    return ARPC_OK;
}

/* ---- cancel ---- */

struct cancel_job {
    struct arpc_loop_job cj_job;
    struct client_call *cj_call;
};

/* The cancel has been heard: lets go of the call and the client once the canceller has
 * published ARPC_ECANCELLED (the loop turns until then: arpc_future_repost_while_settling). */
static void cancel_heard(arpc_loop *loop, struct arpc_loop_job *job)
{
    struct cancel_job *cj = (struct cancel_job *)job;
    if (arpc_future_repost_while_settling(&cj->cj_call->cc_future, loop, job, cancel_heard))
        return;
    arpc_client *c = call_client(cj->cj_call);
    calls_cancel(cj->cj_call); /* (settled already) lets go of the call: the cancel's share */
    client_release(c);
    arpc_free(cj);
}

static void cancel_run(arpc_loop *loop, struct arpc_loop_job *job)
{
    struct cancel_job *cj = (struct cancel_job *)job;
    calls_cancel_settle(cj->cj_call); /* now, in the lane's order: before a close posted after it */
    cancel_heard(loop, job);
}

/* Runs on the cancelling thread while the call may be anywhere: on the lane, waiting, sent, or
 * finishing on the loop. The call stays alive until the job has run (call_release_shared). */
static void call_on_cancel(arpc_future *f, void *arg)
{
    (void)arg; /* NULL: an embedded future's hook finds its call from f */
    struct client_call *call = call_of_future(f);
    arpc_client *c = call_client(call);
    if (!client_in_its_process(c, "arpc_future_cancel")) {
        /* A child of a fork: the CANCEL would go out on the parent's connection. The future
         * is cancelled here; only our share of the call is let go. */
        if (arpc_future_owner_latch(&call->cc_future))
            call_free(call);
        return;
    }
    struct cancel_job *cj = arpc_malloc(sizeof(*cj));
    if (cj != NULL) {
        arpc_loop_job_init(&cj->cj_job, cancel_run);
        cj->cj_call = call;
        client_retain(c);
        if (client_post(c, &cj->cj_job) == ARPC_OK)
            return;
        client_release(c);
        arpc_free(cj);
    } else {
        /* No job to wake the loop: a thread driving it to wait for this call must still see
         * the cancel (async/loop_wait.c: it spins until the cancel is published). The fence
         * orders our claim before the kick's look at a wake-up already on its way. */
        atomic_thread_fence(memory_order_seq_cst);
        arpc_loop_kick(c->cl_loop);
    }
    /* No job of its own: the client's sweep settles the call on the loop (it holds its share
     * there until then), or, waiting for a connection, the next one does (never sent then:
     * client_resend.c); only let go of our share. The sweep is posted first: our share may be
     * the call's last, and the client outlives only its calls (cl_live). */
    cancel_sweep_post(c);
    if (arpc_future_owner_latch(&call->cc_future))
        call_free(call);
}

const struct arpc_future_owner call_future_owner = {.fo_on_cancel = call_on_cancel, .fo_free = call_future_gone};

/* ---- starting calls ---- */

/*
 * A caller's way in: the client may be closed by another thread while this one is between
 * its check and its hand-over to the loop. Callers are counted in cl_live, which close waits
 * for (base/handle.h: arpc_handle_enter_unless). The count passes to the call object at the
 * hand-over (call_free gives it back), or is given back by client_leave. From the hand-over
 * on, the caller touches nothing of the client's. fn is the public name (the _v symbols are
 * reached through macros, see arpc/common.h). Returns c, counted, or NULL with *refused the
 * call's outcome: ARPC_EINVAL (NULL, or misuse, reported), ARPC_ESHUTDOWN (closing: a call
 * then is refused, not misuse), and in *why the words a call's result carries for it.
 */
static arpc_client *client_enter(arpc_client *c, const char *fn, int *refused, const char **why)
{
    *refused = ARPC_EINVAL;
    *why = NULL;
    if (c == NULL) {
        *why = "the client is NULL: the call was not sent";
        return NULL;
    }
    switch (arpc_handle_enter_unless(c, &c->cl_live, ARPC_MAGIC_CLIENT, ARPC_MAGIC_CLIENT_CLOSING, "client", fn)) {
    case ARPC_HANDLE_IN:
        if (client_in_its_process(c, fn))
            return c;
        atomic_fetch_sub(&c->cl_live, 1);
        *why = "the client was made in another process (a fork's parent): the call was not sent; "
               "a child connects a client of its own";
        return NULL;
    case ARPC_HANDLE_CLOSING:
        *refused = ARPC_ESHUTDOWN;
        *why = "the client is closing (arpc_client_close has begun): the call was not sent";
        return NULL;
    default:
        *why = "not a live client (closed already, or never a client): the call was not sent";
        return NULL;
    }
}

/* A caller that entered and hands nothing to the loop. Its last touch of c. */
static void client_leave(arpc_client *c)
{
    if (c != NULL)
        atomic_fetch_sub(&c->cl_live, 1);
}

/* The absolute deadline of a call (ARPC_NEVER: none) from its options (NULL: the client's
 * default), or ARPC_EINVAL / ARPC_EUNREACHABLE with why. */
static int call_deadline(const arpc_client *c, const arpc_call_options *o, uint64_t *deadline, const char **why)
{
    int64_t deadline_ms = o != NULL ? o->deadline_ms : 0;
    if (o != NULL && o->deadline_at_ns != 0) {
        *deadline = o->deadline_at_ns;
        if (deadline_ms != 0) {
            *why = "the call's options set both deadline_ms and deadline_at_ns";
            return ARPC_EINVAL;
        }
        if (*deadline <= arpc_now_ns()) {
            *why = "the call's deadline (deadline_at_ns) had passed when it was made: not sent, it did not run";
            return ARPC_EUNREACHABLE;
        }
        return ARPC_OK;
    }
    if (deadline_ms == 0)
        deadline_ms = c->cl_default_deadline_ms ? c->cl_default_deadline_ms : ARPC_FOREVER;
    *deadline = arpc_deadline_from_ms(deadline_ms); /* saturates: huge means none */
    return ARPC_OK;
}

/* The text of a request refused ARPC_ETOOLARGE: its size and whose limit (the server's, from
 * its HELLO, or this client's max_frame) it is over. */
#define TOO_LARGE_WHY_MAX 192

/* Checks a request and the client's state; ARPC_OK with the method name's length and the
 * frame's total size. An argument refused ARPC_EINVAL, or a request ARPC_ETOOLARGE, is said
 * in *why (the call's result, so the caller learns which; the latter written into too_large,
 * TOO_LARGE_WHY_MAX bytes). */
static int request_check(arpc_client *c, const char *method, const void *req, size_t req_len, size_t *method_len,
                         size_t *total, const char **why, char *too_large)
{
    _Static_assert(ARPC_METHOD_MAX == 255, "the message below names the bound");
    size_t mlen = method ? strlen(method) : 0;
    *why = method == NULL ? "the method name is NULL"
           : mlen == 0    ? "the method name is empty"
           : mlen > ARPC_METHOD_MAX ? "the method name is longer than 255 bytes"
           : req == NULL && req_len != 0 ? "the request is NULL with a length other than 0"
                                         : NULL;
    if (*why != NULL)
        return ARPC_EINVAL;
    int state = atomic_load(&c->cl_state);
    if (state == CL_CLOSED || state == CL_LOST)
        return client_unavailable_reason(c);
    uint32_t server_max = atomic_load(&c->cl_server_max);
    uint32_t limit = c->cl_max_frame < server_max ? c->cl_max_frame : server_max;
    size_t fields = arpc_frame_request_size(mlen, 0) - ARPC_FRAME_HEADER_SIZE;
    size_t body = req_len <= SIZE_MAX - ARPC_FRAME_HEADER_SIZE - fields ? req_len + fields : SIZE_MAX; /* no wrap */
    if (body > limit) {
        snprintf(too_large, TOO_LARGE_WHY_MAX, "a request of %zu bytes (%zu with its method name and call fields) is over %s (%u bytes)",
                 req_len, body, limit == c->cl_max_frame ? "this client's max_frame" : "the server's frame limit", limit);
        *why = too_large;
        return ARPC_ETOOLARGE;
    }
    *method_len = mlen;
    *total = body + ARPC_FRAME_HEADER_SIZE;
    return ARPC_OK;
}

/* method_len as request_check() found it. */
static void request_encode(uint8_t *dst, uint8_t kind, const char *method, size_t method_len, const void *req,
                           size_t req_len)
{
    /* xid, seq, ack and budget are stamped on the loop, at each send. */
    arpc_frame_encode_request(dst, kind, 0, 0, 0, 0, method, (uint16_t)method_len, req, (uint32_t)req_len);
}

/* Starts a call on a client the caller entered (client_enter; NULL: the call fails with
 * refused and refused_why, client_enter's outcome and words), and leaves it. Before it is handed to the loop, attach (if not NULL) runs with
 * the future, so that e.g. a completion queue is attached before the call can complete; if
 * attach fails the call is not sent. Returns the future (NULL only without memory for it). */
static arpc_future *call_start(arpc_client *c, int refused, const char *refused_why, const char *method,
                               const void *req, size_t req_len,
                               const arpc_call_options *caller_o, size_t o_size,
                               int (*attach)(arpc_future *f, void *arg), void *attach_arg, int *attach_rc)
{
    arpc_call_options copy;
    int rc = arpc_options_copy(&copy, sizeof(copy), caller_o, o_size);
    const arpc_call_options *o = caller_o != NULL ? &copy : NULL;
    const char *why = NULL; /* an argument refused, for the result */
    if (rc == ARPC_OK && c == NULL) {
        rc = refused;
        why = refused_why;
    }
    size_t method_len = 0, total = 0;
    char too_large[TOO_LARGE_WHY_MAX];
    if (rc == ARPC_OK)
        rc = request_check(c, method, req, req_len, &method_len, &total, &why, too_large);
    struct client_call *call = NULL;
    enum arpc_call_semantics sem = ARPC_AT_MOST_ONCE;
    if (rc == ARPC_OK) {
        sem = o != NULL && o->semantics ? o->semantics : c->cl_semantics;
        if ((unsigned)sem < ARPC_AT_MOST_ONCE || (unsigned)sem > ARPC_NO_RETRY) {
            rc = ARPC_EINVAL;
            why = "the call's semantics is not one of enum arpc_call_semantics";
        }
    }
    uint64_t deadline = ARPC_NEVER; /* (misuse first: a deadline passed is no misuse) */
    if (rc == ARPC_OK)
        rc = call_deadline(c, o, &deadline, &why);
    if (rc == ARPC_OK && (call = call_new(c, method, method_len, req_len, deadline, sem)) == NULL)
        rc = ARPC_ENOMEM;
    /* Every outcome arrives through a future: a call that cannot start gets one of its own. */
    arpc_future *f = NULL;
    if (call != NULL)
        f = call_future(call);
    else if (arpc_future_create(&f) != ARPC_OK) {
        client_leave(c);
        return NULL;
    }
    int attached = attach != NULL ? attach(f, attach_arg) : ARPC_OK;
    if (attach_rc != NULL)
        *attach_rc = attached;
    if (attached != ARPC_OK)
        rc = attached; /* not sent: nothing runs on the server */
    if (rc != ARPC_OK) {
        if (call != NULL)
            call_discard(call); /* the future's share of the block remains the caller's */
        /* Why, as a server's message comes (its length; a NUL after it); without memory the
         * code alone. */
        size_t why_len;
        char *text = arpc_text_dup(why, &why_len);
        /* A client lost at its first attempt, or for good (a GOAWAY refused it): what was in
         * the way (before the leave: c may go then). */
        if (text == NULL && c != NULL &&
            (rc == ARPC_EUNREACHABLE || (atomic_load(&c->cl_state) == CL_LOST && rc == client_unavailable_reason(c))))
            text = client_unreachable_why(c, &why_len);
        client_leave(c);
        arpc_future_complete_owned(f, rc, text, why_len);
        if (call != NULL)
            arpc_future_drop(f); /* the call's hold (call_new), after the caller's share is safe */
        return f;
    }
    call_set_request(call, method, method_len, req, req_len);
    atomic_fetch_add(&c->cl_npending, 1); /* the caller's count in cl_live is the call's now */
    if (!client_direct_try(c, call) && client_post(c, &call->cc_job) != ARPC_OK) {
        atomic_fetch_sub(&c->cl_npending, 1);
        call_discard(call);
        client_leave(c);
        arpc_future_complete_owned(f, ARPC_ESHUTDOWN, NULL, 0);
        arpc_future_drop(f); /* the call's hold */
    }
    return f;
}

arpc_future *arpc_call_async_opts_v(arpc_client *c, const char *method, const void *req, size_t req_len,
                                    const arpc_call_options *o, size_t o_size)
{
    int refused;
    const char *why;
    c = client_enter(c, "arpc_call_async_opts", &refused, &why);
    return call_start(c, refused, why, method, req, req_len, o, o_size, NULL, NULL, NULL);
}

arpc_future *arpc_call_async(arpc_client *c, const char *method, const void *req, size_t req_len,
                             int64_t deadline_ms)
{
    arpc_call_options o = {.deadline_ms = deadline_ms};
    int refused;
    const char *why;
    c = client_enter(c, __func__, &refused, &why);
    return call_start(c, refused, why, method, req, req_len, &o, sizeof(o), NULL, NULL, NULL);
}

/* arpc_call and arpc_call_opts; fn: the public name the application called, for its log lines. */
static int call_blocking(arpc_client *c, const char *fn, const char *method, const void *req, size_t req_len,
                         void **reply, size_t *reply_len, const arpc_call_options *o, size_t o_size)
{
    if (reply != NULL)
        *reply = NULL;
    if (reply_len != NULL)
        *reply_len = 0;
    int refused;
    const char *why;
    c = client_enter(c, fn, &refused, &why); /* refused: its words come as the result */
    if (c != NULL && arpc_loop_on_thread(c->cl_loop)) {
        client_leave(c);
        /* Blocking on the loop that must deliver the reply. */
        arpc_log(ARPC_LOG_WARN, "%s refused: called on the client's own loop thread, it would wait "
                 "for itself (use arpc_call_async with a callback there)", fn);
        return ARPC_EBUSY;
    }
    /* Chosen before the hand-over: from then on another thread's arpc_client_close may end
     * the call and free the client (and its own loop) while this thread is on its way. */
    arpc_loop *drive = c != NULL && !c->cl_owns_loop ? c->cl_loop : NULL;
    arpc_future *f = call_start(c, refused, why, method, req, req_len, o, o_size, NULL, NULL, NULL);
    if (f == NULL)
        return ARPC_ENOMEM;
    int status = arpc_loop_wait(drive, f); /* drives the application's loop, or sleeps */
    if (reply != NULL) {
        size_t len = 0;
        *reply = arpc_future_take(f, &len);
        if (reply_len != NULL)
            *reply_len = len;
    }
    arpc_future_release(f);
    return status;
}

int arpc_call_opts_v(arpc_client *c, const char *method, const void *req, size_t req_len, void **reply,
                     size_t *reply_len, const arpc_call_options *o, size_t o_size)
{
    return call_blocking(c, "arpc_call_opts", method, req, req_len, reply, reply_len, o, o_size);
}

int arpc_call(arpc_client *c, const char *method, const void *req, size_t req_len, void **reply,
              size_t *reply_len, int64_t deadline_ms)
{
    arpc_call_options o = {.deadline_ms = deadline_ms};
    return call_blocking(c, __func__, method, req, req_len, reply, reply_len, &o, sizeof(o));
}

struct go_attach {
    arpc_cq *ga_cq;
    void *ga_tag;
};

static int go_attach(arpc_future *f, void *arg)
{
    struct go_attach *ga = arg;
    return arpc_cq_attach(ga->ga_cq, f, ga->ga_tag);
}

/* arpc_go and arpc_go_opts; fn as for call_blocking. */
static int go_start(arpc_client *c, const char *fn, const char *method, const void *req, size_t req_len,
                    const arpc_call_options *o, size_t o_size, arpc_cq *cq, void *tag)
{
    if (cq == NULL)
        return ARPC_EINVAL;
    int refused;
    const char *why;
    c = client_enter(c, fn, &refused, &why);
    struct go_attach ga = {cq, tag};
    int attach_rc = ARPC_ENOMEM;
    /* Attached before the call is sent: if attaching fails, nothing runs on the server. */
    arpc_future *f = call_start(c, refused, why, method, req, req_len, o, o_size, go_attach, &ga, &attach_rc);
    if (f == NULL)
        return ARPC_ENOMEM;
    arpc_future_release(f); /* the caller's USER reference: the queue keeps one of its own */
    return attach_rc;
}

int arpc_go_opts_v(arpc_client *c, const char *method, const void *req, size_t req_len, const arpc_call_options *o,
                   size_t o_size, arpc_cq *cq, void *tag)
{
    return go_start(c, "arpc_go_opts", method, req, req_len, o, o_size, cq, tag);
}

int arpc_go(arpc_client *c, const char *method, const void *req, size_t req_len, int64_t deadline_ms,
            arpc_cq *cq, void *tag)
{
    arpc_call_options o = {.deadline_ms = deadline_ms};
    return go_start(c, __func__, method, req, req_len, &o, sizeof(o), cq, tag);
}

/* ---- one-way ---- */

void client_oneway_release(void *msg) { arpc_free(msg); }

void client_oneway_queue(arpc_client *c, struct client_oneway *m)
{
    /* Freed once written; its release tells on_unwritten (client_linger_unwritten) that it
     * was one-way. Refused (no memory for the queue), it was freed at once: dropped. */
    if (arpc_conn_send_shared(&c->cl_conn, m, m->om_frame, m->om_len, client_oneway_release) != ARPC_OK)
        arpc_stat_inc(&c->cl_stats.cst_oneways_dropped);
    else
        c->cl_oneways_on_conn++;
}

void client_oneway_drop(arpc_client *c, struct client_oneway *m)
{
    arpc_stat_inc(&c->cl_stats.cst_oneways_dropped);
    arpc_free(m); /* at most once, never again */
}

/* A one-way message dropped for want of a connection is said, sparingly: counted only, an
 * application that sent it while its client reconnected could not tell (an integrator's
 * trial). The first of a stretch at once, then a line every CLIENT_ATTEMPTS_LOG_NS. */
static void oneway_dropped_say(arpc_client *c, int state, bool backlog)
{
    uint64_t unlogged = 0;
    if (!arpc_log_throttle_due(&c->cl_dropped_log, arpc_now_coarse_ns(), CLIENT_ATTEMPTS_LOG_NS, 1, &unlogged))
        return;
    char more[96];
    const char *why = backlog               ? "the server is not reading: over 64 MiB wait unwritten on the connection"
                      : state == CL_LOST    ? "the client is down for good"
                      : c->cl_nheld != 0    ? "more than the one-way messages held for the next connection"
                                            : "no connection";
    arpc_log(ARPC_LOG_WARN, "client of %s: one-way message dropped unsent: %s (arpc_client_stats: oneways_dropped)%s",
             c->cl_target.t_addr, why, arpc_log_throttle_more(more, sizeof(more), unlogged, "more dropped"));
}

static void oneway_send(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    struct client_oneway *m = (struct client_oneway *)job;
    arpc_client *c = m->om_client;
    arpc_stat_inc(&c->cl_stats.cst_oneways);
    int state = atomic_load(&c->cl_state);
    bool connected = state == CL_READY && c->cl_conn.c_open;
    /* A server that reads nothing would otherwise make messages queue without bound (a
     * review's trial: 1,000 of 1 MiB, all ARPC_OK, 1 GB): the bound of those held for a
     * connection, on what it finds waiting unwritten on this one (not counting itself: a
     * message over the bound, which a large max_frame allows, still goes on an idle one). */
    bool backlog = connected && c->cl_conn.c_out.q_bytes > CLIENT_HELD_ONEWAY_BYTES;
    if (connected && !backlog)
        client_oneway_queue(c, m);
    else if (backlog || !client_hold_oneway(c, m)) {
        if (state == CL_CLOSED) /* its thread was inside as the close began: the close says it */
            c->cl_dropped_closing++;
        else
            oneway_dropped_say(c, state, backlog);
        client_oneway_drop(c, m); /* no connection now (or no room on it), no message */
    }
    client_leave(c); /* the notifier's count (client_enter), held by the message until here */
}

int arpc_notify(arpc_client *c, const char *method, const void *req, size_t req_len)
{
    int refused;
    const char *refused_why; /* (a return code is all arpc_notify has: the misuse was logged) */
    if ((c = client_enter(c, __func__, &refused, &refused_why)) == NULL)
        return refused;
    size_t method_len = 0, total = 0;
    const char *why = NULL;
    char too_large[TOO_LARGE_WHY_MAX];
    int rc = request_check(c, method, req, req_len, &method_len, &total, &why, too_large);
    if (rc == ARPC_EINVAL && why != NULL) /* no result to carry it: said once per call, as misuse is */
        arpc_log(ARPC_LOG_WARN, "arpc_notify refused: %s", why);
    struct client_oneway *m = rc == ARPC_OK ? arpc_malloc(sizeof(*m) + total) : NULL;
    if (m == NULL) {
        client_leave(c);
        return rc != ARPC_OK ? rc : ARPC_ENOMEM;
    }
    arpc_loop_job_init(&m->om_job, oneway_send);
    m->om_client = c;
    m->om_len = total;
    request_encode(m->om_frame, ARPC_FRAME_ONEWAY, method, method_len, req, req_len);
    rc = client_post(c, &m->om_job);
    if (rc != ARPC_OK) {
        arpc_free(m);
        client_leave(c);
    }
    return rc;
}
