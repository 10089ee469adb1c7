/*
 * The server's request, shared by the files that handle it (loop thread unless a function
 * says otherwise):
 *   request.c           the object's life, the reply that leaves it
 *   request_access.c    what a handler reads of it, and its cancellation
 *   request_deadline.c  the answers the server gives in a handler's place (deadline, stop)
 *   request_tomb.c      what is left of a request the server answered: the late reply's path
 *   request_dispatch.c  running handlers on their actors, and flow control at a full mailbox
 */
#ifndef ARPC_CORE_REQUEST_INTERNAL_H
#define ARPC_CORE_REQUEST_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "async/actor_internal.h"
#include "async/loop_internal.h"
#include "core/server_internal.h"

enum {
    RQ_IN_HANDLER = 1u << 0, /* holder: the handler has not returned yet */
    RQ_REPLY_DONE = 1u << 1, /* holder let go: the reply was delivered (or dropped), or the
                              * server answered in the handler's place and booked the call */
    RQ_REPLIED = 1u << 2,    /* marker: a reply began (a second one is refused) */
    RQ_CANCELLED = 1u << 3,  /* a CANCEL frame arrived for it */
    RQ_CANCEL_CB = 1u << 4,  /* rq_cancel_fn is set */
    RQ_STARTED = 1u << 5,    /* the handler was called */
    RQ_SERVER_ANSWERED = 1u << 6, /* the server answered the caller itself (rq_late_code) */
    RQ_STATE_GONE = 1u << 7, /* the server's part was freed: the handle is a tombstone */
    RQ_LATE_DONE = 1u << 8,  /* the late reply to a call the server answered is done with the handle */
    RQ_DETACHED = 1u << 9,   /* a stop unlisted the tombstone (its late reply, not begun, is dropped) */
    RQ_QUEUED = 1u << 10,    /* delivered to a completion queue (core/request_queue.c): its
                              * "handler" is the application, which returns with its reply */
    RQ_CANCEL_KEPT = 1u << 11, /* cancelled by a CANCEL naming its seq: its ARPC_ECANCELLED,
                                * should it not start, is kept as the call's result (loop thread) */
    RQ_REFUSED_QUEUED = 1u << 12, /* the loop refused it while it waited in its actor's mailbox
                                   * (core/request_deadline.c): it keeps counting (calls in flight,
                                   * the connection's bytes) until its actor lets it go */
    RQ_REFUSING = 1u << 13,  /* its actor took its start to refuse it (expired, or discarded by a
                              * stop): the loop's deadline leaves the answer to that refusal */
    RQ_HAND_FAILED = 1u << 14, /* its late reply could not reach the loop (stopped): the
                                * tombstone stays listed until a stop's detach, which lets go of it */
};

/*
 * A request is two objects (core/request.c says why): the handle the handler holds, and the
 * server's part, which the handle points at until it is freed.
 *
 * The handle: small, from the server's handle pool (sv_handles and the loop's own list
 * sv_handles_free, taken on the loop thread only: request_handle_take). Once the server has
 * answered the call in the handler's place and the handler has returned, it is all that is
 * left (a tombstone) until the handler's late reply frees it. A free handle's rq_state links
 * the next free one.
 */
struct arpc_request {
    /* First (base/handle.h): live from request_handle_take until the handle is let go of (back
     * to the server's pool, or a tombstone freed), so a handle used after its request was
     * finished is reported, not acted on, while no new request has it. */
    arpc_magic rq_magic;
    atomic_uint rq_flags;
    int rq_late_code;        /* RQ_SERVER_ANSWERED: what a late reply returns */
    unsigned rq_fork_gen;    /* its server's process (base/fork_gen.h): request_replyable */
    struct request_state *rq_state; /* the server's part; freed once RQ_STATE_GONE */
    uint64_t rq_xid;
    uint64_t rq_seq;         /* numbered (at-most-once) call: its seq; 0 otherwise */
    uint64_t rq_ack;         /* the ack the request carried */
    bool rq_oneway;
    bool rq_listed;          /* in the server's sv_tombs (loop thread) */
    /* arpc_request_on_cancel's callback: in the handle, not the server's part, because it may
     * be set from any thread while the server answers the call and frees that part. */
    arpc_request_cancel_fn rq_cancel_fn;
    void *rq_cancel_arg;
    /* A call answered at its deadline while the server runs: what its late reply needs
     * without the server's part, to finish a numbered call in the reply cache, to log an
     * effect, and to teach its method's reply size (set on the loop before RQ_SERVER_ANSWERED
     * publishes them). rq_server holds a reference on the server until the late reply is
     * delivered or a stop detaches the handle (RQ_DETACHED). */
    uint32_t rq_client_max;
    arpc_server *rq_server;  /* NULL: the late reply needs no server */
    uint64_t rq_cache_key;
    const struct arpc_method *rq_method; /* its method, whose reply size the late reply teaches */
    size_t rq_late_len;      /* the late reply's frame, as the handler made it (its replier
                              * writes it before the loop job that reads it) */
    bool rq_keeps_result;    /* its late reply finishes the call (numbered) or logs (a log):
                              * after a stop detached it, that reply returns ARPC_ESHUTDOWN */
    struct arpc_dlink rq_tomb_link; /* sv_tombs */
    struct arpc_loop_job rq_tomb_job; /* its late reply's hand-over when no result could be encoded */
};

/* The server's part: one block from the server's request pool (core/block_pool.h), with a
 * copy of the payload unless it stays where it was read (rs_buf, rs_pin). Freed once the handler has returned and the reply was delivered, or
 * the server answered in the handler's place. */
struct request_state {
    /* The loop's (and rarely another thread's) */
    struct arpc_loop_job rs_job; /* lets go of the reply's holder on the loop, when no reply can */
    bool rs_tracked;         /* in its connection's table (a call that may be cancelled) */
    bool rs_awaiting;        /* in the server's sv_awaiting list (loop thread) */
    bool rs_due;             /* its reply was on its way when the stop answered the unreplied:
                              * the stop waits for it (sv_due) before closing connections */
    bool rs_counted;         /* counts toward its connection's flow limits (core/server_inflight.c) */
    bool rs_answered_early;  /* counted, and answered by the server while its handler runs (sc_answered_early) */
    bool rs_guessed;         /* counted, its reply at the first-reply guess (its method had none yet) */
    bool rs_lost_ran;        /* its reply could not be made: did the call run? (request_drop_on_loop) */
    signed char rs_pool_class; /* its block's class in the server's request pool (core/block_pool.h) */
    size_t rs_charge;        /* the bytes it owes its connection until its reply is queued */
    struct arpc_deadline rs_deadline; /* the wire's deadline, armed on the loop */
    struct arpc_dlink rs_link;        /* sv_awaiting */
    uint64_t rs_dispatched_ns; /* the latency histogram's start (arpc_now_ns) */
    uint8_t *rs_buf;         /* a large frame's body buffer, kept as it was read (core/conn.h); NULL: none */
    size_t rs_buf_cap;
    struct conn_rbuf_head *rs_pin; /* the connection's read buffer, lent for the payload (arpc_conn_pin); NULL: none */
    struct journal_rec *rs_effect; /* a one-way handler's arpc_reply_durable effect, as a log record:
                                    * appended on the loop in lane order (journal_effect_append); NULL: none */
    /* What the handler's thread reads, next to a small payload: the lines a call brings to
     * its worker are as few as they can be (docs/PERFORMANCE.md, the pool's hand-offs). */
    arpc_request *rs_req;        /* its handle */
    struct arpc_actor_job rs_actor_job; /* its post to its actor */
    struct server_conn *rs_conn;
    const struct arpc_method *rs_method;
    uint64_t rs_deadline_ns; /* from the wire's budget, counted from arrival; ARPC_NEVER: none */
    const uint8_t *rs_data;  /* the payload: rs_inline, inside rs_buf, or in the read buffer rs_pin holds */
    uint32_t rs_len;
    uint8_t rs_inline[];     /* a small payload's copy */
};

#define SHUTTING_DOWN "server shutting down"

/* The entry points' handle check: false for NULL (ARPC_EINVAL, without a word) and, after
 * reporting misuse (base/handle.h: an abort in debug builds), for a handle let go of. A
 * handle a new request has taken since cannot be told apart (docs/SEMANTICS.md). */
static inline bool request_live(const arpc_request *req, const char *fn)
{
    return arpc_handle_check(req, ARPC_MAGIC_REQUEST, "request", fn);
}

/* request_live for a reply: also false, after an ERROR line, in a child of a fork for a
 * request of the parent's server (base/fork_gen.h): a reply is a write on the parent's
 * connection, where the parent writes its own frames. */
static inline bool request_replyable(const arpc_request *req, const char *fn)
{
    return request_live(req, fn) && arpc_fork_gen_here(req->rq_fork_gen, req, "request's server", fn);
}

/* The handler returned / the reply was handed over: whichever comes last frees the server's
 * part, and the handle with it unless the server answered the call (any thread; on_loop: on
 * the loop's thread, or in a job of its final drain). */
void request_handler_done(arpc_request *req, bool on_loop);
void request_reply_done(arpc_request *req, bool on_loop);
/* A handle for a new request (loop thread only: request_dispatch), and one given back
 * (on_loop: from the loop's thread, or a job of its final drain; else any thread). */
arpc_request *request_handle_take(arpc_server *s);
void request_handle_put(arpc_server *s, arpc_request *req, bool on_loop);
/* The handle pool is made with the server / freed with it (handles still out are tombstones:
 * their late replies free them). */
void request_handles_init(arpc_server *s);
void request_handles_fini(arpc_server *s);
/* The request leaves its connection's table: a CANCEL can no longer find it. */
void request_untrack(arpc_request *req);
/* The request came from a JSON-RPC peer (its reply must be JSON: core/jsonrpc_server.h). Any
 * thread while its handler runs; false once the server let go of its part. */
bool request_from_jsonrpc(const arpc_request *req);
/* Answers a call that will not run, with why (any thread). */
void request_refuse(arpc_request *req, int code, const char *why);
/* Answers a call that ran but whose reply could not be made (no memory for it): ARPC_EABANDONED,
 * "may have run", with why; a numbered call keeps it as its result (any thread, as a reply). */
void request_answer_lost(arpc_request *req, const char *why);
/* Refuses a call whose handler never started (flags: its rq_flags as the start was taken):
 * ARPC_ECANCELLED if a CANCEL came for it, else ARPC_EEXPIRED. Its actor's run (request_run) or
 * the loop at its deadline (core/request_deadline.c), whichever set RQ_STARTED. */
void request_refuse_unstarted(arpc_request *req, unsigned flags);
/* Its actor's thread: lets go of a call the loop refused while it waited in the actor's
 * mailbox (RQ_REFUSED_QUEUED): it stops counting on the loop, and is freed. */
void request_let_go(arpc_request *req);
/* Loop thread: a one-way message whose start the loop took while it waited in its actor's
 * mailbox (a stop) is let go of at once, as its handler's end would: not through its rs_job,
 * which its actor's let-go (request_let_go) may be filling in meanwhile. */
void request_drop_queued_oneway(arpc_request *req);

/* The call was answered with code (the handler's reply, or the server's in its place):
 * counted once in its method's stats with its latency (loop thread). */
void request_count_answer(arpc_request *req, int code, uint64_t done_ns);

/* Lists the call as waiting for a reply and arms its deadline / the reverse (request_deadline.c). */
void request_list(arpc_server *s, arpc_request *req);
void request_unlist(arpc_request *req);
/* Loop thread (or a drop with no loop): a reply the stop waits for (rs_due) is delivered, its
 * bookkeeping done -- its log record appended, its frame queued --, or dropped. */
void request_due_done(arpc_request *req);

/* The server answered req in its handler's place and the handler returned (loop thread, or
 * NULL loop: no loop runs any more): the call stops counting, and the server's part is freed. */
void request_abandon(arpc_loop *loop, arpc_request *req);
/* The late reply to a call the server answered is done with the handle (any thread): frees it
 * if the server's part is gone already. */
void request_late_done(arpc_request *req);

/* Runs job on the server's loop: at once when called on its thread, else posted, never
 * waiting; direct: a reply its replier may write first (core/reply_direct.c), or NULL.
 * ARPC_ESHUTDOWN (job not run): the server is stopped -- its loop may be destroyed by now
 * (the user's, or ours at arpc_server_destroy), so it is not even looked at -- or the loop
 * refused it (a loop the application stopped before the server: see server_job_for_stop).
 * The state check and every use of the loop are counted in sv_replying, which a stop waits out after it stored SV_STOPPED (a Dekker pair, seq_cst); not on the thread
 * running the loop, where the stop's later steps wait for the job anyway. Any thread. stopped
 * (may be NULL): set to true (never cleared) when the server was seen stopped, before the
 * hand-over or once the job is posted, still inside sv_replying: the caller learns it without
 * touching s again (the hand-over may let go of what pins s, and a stopped server may then
 * be destroyed). */
int server_loop_hand(arpc_server *s, struct arpc_loop_job *job, struct reply_msg *direct, bool *stopped);
/* A job for the server's loop that the loop refused (it has stopped): when the server has not
 * stopped yet (the application stopped its loop first), keeps it for the stop's steps to run
 * (server_run_stop_jobs) and returns true; false (job not kept) once the server has stopped,
 * its lists emptied: the caller lets the request go as no loop runs. Counted in sv_replying.
 * Any thread but the loop's; never waits. (A tombstone's late reply has its own way:
 * core/request_tomb.c.) */
bool server_job_for_stop(arpc_server *s, struct arpc_loop_job *job);
/* The stop's steps (as the loop): runs the jobs kept for the stop, oldest first. */
void server_run_stop_jobs(arpc_loop *loop, arpc_server *s);

/* A reply frame for call xid in one allocation (home: the connection whose caches may lend
 * it, or NULL: a plain allocation); rm_req is left NULL. NULL without memory. Any thread. */
struct reply_msg *reply_encode(struct server_conn *home, uint64_t xid, uint8_t kind, int code, const void *data,
                               size_t len, bool ran, const void *effect, size_t effect_len);
/* False, with a warning once, when s has no reply log: an effect is dropped. */
bool reply_effect_kept(const arpc_server *s);

/* request_tomb.c: the late reply to a call the server answered (any thread; flags: rq_flags
 * before its RQ_REPLIED), which frees the handle or hands it to the loop to. */
int request_tomb_reply(arpc_request *req, unsigned flags, uint8_t kind, int code, const void *data, size_t len,
                       const void *effect, size_t effect_len);
/* Loop thread: lists a numbered call answered at its deadline (rq_server set), so that a stop
 * can let go of its server / a stop lets go of every one listed (their late replies are then
 * dropped). */
void request_tomb_list(arpc_server *s, arpc_request *req);
void request_tomb_detach_all(arpc_server *s);

/* A reply larger than the client accepts (client_max) becomes ERROR ARPC_ETOOLARGE, saying
 * why; an error's message is cut to what the client accepts. Returns ARPC_ETOOLARGE when the
 * reply was replaced, else ARPC_OK. */
int reply_fit_client(uint32_t client_max, uint8_t *kind, int *code, const void **data, size_t *len);

#endif
