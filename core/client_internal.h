/*
 * The client's insides, shared by the files that implement it:
 *   core/client.c          life cycle: connect, close, options, last error
 *   core/client_connect.c  getting a connection: non-blocking connect attempts, back-off
 *   core/client_conn.c     the connection: HELLO, frames from the server, GOAWAY, loss
 *   core/client_call.c     the call object: start, send, re-send, finish, deadline, cancel
 *   core/client_cancel_seq.c calls cancelled between connections, named on the next one
 *   core/client_api.c      the call functions of arpc/client.h
 *   core/client_direct.c   requests written by their callers' threads
 *   core/client_deadlines.c the calls' deadlines: a timing wheel under one loop deadline
 *   core/client_linger.c   the close's last words: the goodbye, and what is queued, leave
 *   core/waiting_calls.c   the calls waiting for a connection, with their give-up times
 *
 * Threads: callers encode a request on their own thread and hand the call to the loop on the
 * loop's job lane (a job embedded in the call: no allocation, no lock, no waiting), or, while
 * the loop sleeps, write it themselves and leave it on a stack the loop takes without being
 * woken for it (core/client_direct.c). Everything
 * else -- the connection, the pending table, the waiting list, sequence numbers and the ack,
 * the deadline wheel -- is touched by the loop thread only; the shared state is a handful of
 * atomics (state, counts, refs) and the last-error text (a mutex: a cold path).
 *
 * The life of a call on the loop (client_call.c):
 *   arrives -> numbered (at-most-once: seq) -> connected? sent (pending[xid]) : waiting
 *   connection lost -> pending calls that may be sent again go back to waiting (in order);
 *                      others end (ARPC_ECONNLOST)
 *   connected (server's HELLO) -> every waiting call is sent, with a new xid (a numbered one
 *                      keeps its own: its seq with ARPC_XID_SEQ_BIT), the current ack
 *                      and what is left of its budget (or ended, when the server lost its memory
 *                      of it: another epoch, or it forgot the client)
 *   reply / deadline / give-up / cancel / close -> finished, exactly once; its seq counts
 *                      towards the ack (the contiguous prefix of finished seqs)
 *
 * Lifetime: the client is refcounted (base/refcount.h): the user's handle, a cancel on its
 * way to the loop, and the loop's stop hook while registered each hold a reference. Calls
 * need none: they are posted before close is called (the contract forbids starting calls once
 * close has begun), and the lane runs jobs in order, so close runs after them.
 */
#ifndef ARPC_CORE_CLIENT_INTERNAL_H
#define ARPC_CORE_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include "arpc/client.h"
#include "async/future_internal.h"
#include "async/loop_internal.h"
#include "async/timer_wheel.h"
#include "base/backoff.h"
#include "base/buf_cache.h"
#include "base/clock.h"
#include "base/dlist.h"
#include "base/fork_gen.h"
#include "base/handle.h"
#include "base/log_throttle.h"
#include "base/refcount.h"
#include "base/u64_map.h"
#include "core/block_pool.h"
#include "core/conn.h"
#include "core/ack_claim.h"
#include "core/frame.h"
#include "core/method_names.h"
#include "core/pending_calls.h"
#include "core/waiting_calls.h"
#include "core/stats.h"
#include "transport/transport.h"

/* Finished seqs kept without memory (cl_done_spill). */
#define CLIENT_DONE_SPILL 64
/* Finished seqs gathered above a call left unanswered before they are folded into a claim
 * beyond the ack and told to the server (an ACK frame): until then the server keeps their
 * replies. */
#define CLIENT_ACK_BEYOND_EVERY 4096

/* Room for a line naming an address and a cause. */
#define CLIENT_WHY_MAX (ARPC_ADDR_MAX + ARPC_WHY_MAX)

enum client_state {
    CL_CONNECTING, /* no connection yet, or a new one is being made */
    CL_READY,      /* connected: calls are sent at once */
    CL_DRAINING,   /* the server said GOAWAY: calls wait for the next connection */
    CL_LOST,       /* for good (no reconnect, or a fatal protocol error): calls end at once */
    CL_CLOSED,
};

struct client_call;

/* Seqs of numbered calls cancelled while the client had no connection, named in CANCELs on the
 * next one (core/client_cancel_seq.c; loop thread): a ring, allocated at the first seq and
 * freed once the server has read them. And the numbered calls cancelled by xid on the current
 * connection whose answer has not come yet: should it break first, their seqs join the ring. */
struct client_cancelled {
    uint64_t *cs_seqs;
    uint32_t cs_first, cs_count;
    bool cs_warned; /* the oldest were dropped (said once until they are told) */
    bool cs_told;   /* the ring went out on the current connection; no answer since proves it read */
    bool cs_unanswered_warned; /* cs_unanswered was full (said once per connection) */
    struct arpc_u64_map cs_unanswered; /* xid -> seq (cast); p_slots NULL until the first */
};

/* Calls whose callers write their requests themselves (core/client_direct.c). */
struct client_direct {
    _Atomic uint32_t cd_gate;      /* CD_GATE_OPEN while writers may enter, + the writers inside */
    _Atomic uint64_t cd_next_xid;  /* the callers' xids (CD_XID_BIT set: never the loop's) */
    _Atomic uint64_t cd_ack;       /* cl_ack, for the callers' frames (relaxed: a stale ack is lower) */
    ck_stack_t cd_calls;           /* calls written (or being written), for the loop */
    atomic_bool cd_posted;         /* cd_job is posted and has not run yet */
    struct arpc_loop_job cd_job;   /* takes cd_calls on the loop */
    _Atomic uint64_t cd_sweep_at;  /* when cd_sweep fires (ARPC_NEVER: not armed) */
    /* loop thread */
    struct arpc_deadline cd_sweep; /* takes cd_calls in time for their deadlines */
    bool cd_active;                /* a caller's call with a deadline arrived since cd_sweep fired */
    bool cd_stopped;               /* closing: the sweep is not armed again */
    /* loop-written counters (tests, measurements; core/stats.h's one-writer rule) */
    arpc_stat cd_written;          /* calls their callers wrote, whole or in part */
    arpc_stat cd_partial;          /* of those, the ones whose rest the loop queued */
    arpc_stat cd_waited;           /* arrivals that met their caller still writing */
    arpc_stat cd_by_reply;         /* calls a reply's lookup found on cd_calls (it overtook them) */
    /* The header and fixed fields of a request whose caller's write ended inside them, for the
     * loop to queue the rest of: written by that caller before it publishes the outcome
     * (cc_direct), read by the loop as the call arrives. One at a time: after a partial write
     * nobody writes the socket until the loop has queued the rest (core/conn_write.h). */
    uint8_t cd_head[ARPC_OUTQ_HEAD_MAX];
};


/* Getting a connection (client_connect.c; loop thread). */
struct client_connector {
    int cn_fd;            /* a connect in progress, or -1 */
    size_t cn_index;      /* which of the target's addresses */
    ev_io cn_io;          /* the connect finished (writable) */
    struct arpc_deadline cn_timer; /* the attempt's time limit, or the back-off before the next one */
    bool cn_waiting;      /* cn_timer is a back-off */
    /* A unix listener's full backlog: the pause before its address is tried again, within the
     * attempt (client_connect.c); its own growing pauses, from 1 ms to 50 ms. */
    struct arpc_deadline cn_backlog_retry;
    struct arpc_backoff cn_backlog_backoff;
    bool cn_backlog_said; /* this attempt logged its first wait */
    bool cn_attempting;   /* an attempt is under way (up to the server's HELLO) */
    int cn_abort_code;    /* the attempt is being ended for this reason (0: it is not) */
    struct arpc_backoff cn_backoff;
    /* The back-off starts over only once a connection proved itself (a reply came on it, or
     * it lasted reconnect_max_ms): a server that says HELLO and closes at once is retried
     * ever more slowly, not a hundred times a second with every call re-sent each time. */
    bool cn_proven;
    uint64_t cn_hello_ns; /* arpc_now_coarse_ns of the current connection's HELLO */
    /* The server closed the last connection for being idle (ARPC_GOAWAY_IDLE) and nothing
     * waited: no attempt until a call or a one-way message needs one (client_connect_unpark). */
    bool cn_parked;
};

struct arpc_client {
    arpc_magic cl_magic; /* first: base/handle.h; dead from arpc_client_close on */
    arpc_refcount cl_refs;
    atomic_int cl_state;        /* enum client_state */
    atomic_int cl_lost_reason;  /* in CL_LOST: why calls end */
    atomic_size_t cl_npending;  /* calls started and not yet completed */
    unsigned cl_fork_gen;       /* the process it was made in (base/fork_gen.h): client_in_its_process */
    atomic_size_t cl_live;      /* callers on their way in (client_enter), call objects not yet
                                 * freed, one-way messages on the lane: close waits for 0 */
    atomic_uint cl_server_max;  /* the server's frame limit, from its HELLO */
    _Atomic uint64_t cl_connections;
    arpc_loop *cl_loop;
    arpc_loop *cl_call_home;    /* cl_loop when only waiters run it (caller-driven or lent): a
                                 * wait on a call's future drives it (arpc_future_set_home) */
    bool cl_owns_loop;
    uint64_t cl_id;
    uint64_t cl_incarnation;          /* sent in HELLO with a chosen id (client.c); 0: none */
    /* options, fixed at connect */
    int64_t cl_default_deadline_ms;
    uint32_t cl_max_frame;
    enum arpc_call_semantics cl_semantics;
    int64_t cl_connect_timeout_ms;
    int64_t cl_give_up_ms;
    bool cl_reconnect;
    bool cl_background;         /* connect_in_background: nobody waits for the first attempt */
    uint32_t cl_heartbeat_ms;
    unsigned cl_heartbeat_misses;
    uint8_t *cl_token;          /* auth_token, sent in every HELLO; NULL: none */
    uint32_t cl_token_len;
    struct arpc_target cl_target; /* resolved at connect; its addresses (loop thread) again
                                   * when reconnects fail (client_lookup.c) */
    int64_t cl_re_resolve_ms;      /* re_resolve_ms, the default filled in; < 0: never */
    _Atomic uint64_t cl_lookups;   /* lookups started since connect's (stats) */
    /* the last failure, for arpc_client_last_error */
    pthread_mutex_t cl_err_mtx;
    int cl_err_code;
    char cl_err_text[CLIENT_WHY_MAX];
    char cl_loss_text[CLIENT_WHY_MAX]; /* how the last connection was lost: kept across the
                                        * reconnect, which clears cl_err_text (client_lost_why) */
    /* loop thread only */
    struct arpc_conn cl_conn;
    struct client_connector cl_connector;
    struct arpc_log_throttle cl_attempts_log; /* failed attempts, said (client_connect.c); reset
                                               * by a connection */
    struct client_lookup *cl_lookup; /* a lookup of the name under way or not yet taken */
    uint64_t cl_lookup_ns;           /* when the last lookup began (arpc_now_coarse_ns) */
    struct pending_calls cl_pending; /* xid -> call sent on the current connection */
    struct waiting_calls cl_waiting; /* calls waiting for a connection, in the order they began
                                      * to (so of their give-up times: client_give_up.c) */
    struct arpc_deadline cl_give_up_timer; /* at the first waiting call's give-up time, or before */
    bool cl_give_up_stalled; /* loop thread: the give-up came late, an attempt was started for it
                              * (client_give_up.c); cleared at the next firing or a HELLO */
    struct arpc_u64_map cl_done;    /* finished seqs above cl_ack */
    /* Finished seqs above cl_ack that cl_done had no memory for (client_resend.c): a seq noted
     * nowhere would stop the ack below it for good, and the server would keep every later
     * reply. Past CLIENT_DONE_SPILL, said once, the ack stops there as it would have. */
    uint64_t cl_done_spill[CLIENT_DONE_SPILL];
    uint32_t cl_done_nspill;
    bool cl_done_spill_warned;
    /* Finished beyond cl_ack, as told to the server in ACK frames (client_resend.c); cl_done
     * then holds finished seqs above the claim's high, or among its waiting ones. */
    struct arpc_ack_claim cl_claim;
    uint64_t cl_done_high;  /* the highest seq put in cl_done */
    size_t cl_beyond_next;  /* cl_done's count that makes the next claim (CLIENT_ACK_BEYOND_EVERY) */
    struct client_cancelled cl_cancelled; /* calls cancelled between connections */
    struct arpc_u64_map cl_unwritten; /* at a loss: request blocks its queue never wrote whole
                                       * (client_call.c; p_slots NULL until the first) */
    bool cl_idle_goaway;              /* loop thread: the current connection's server closes it
                                       * for being idle (ARPC_GOAWAY_IDLE); cleared at adopt */
    /* One-way messages that came while parked, or before the first connection of a client
     * connecting in the background (loop thread): sent at the next HELLO, in order; dropped
     * (counted, and said in a WARN line) if that connection does not come: a failed attempt
     * after a park; the client lost for good or closed before its first connection. At most
     * CLIENT_HELD_ONEWAYS. */
    struct client_oneway *cl_held_first, *cl_held_last;
    size_t cl_nheld, cl_held_bytes;
    bool cl_hold_oneways;             /* from a park until the next HELLO or failed attempt; from
                                       * a background connect's start until its first HELLO */
    struct arpc_log_throttle cl_dropped_log; /* one-way messages dropped with no connection */
    bool cl_unread;                   /* loop thread: the current connection's server said its
                                       * last word (ARPC_GOAWAY_LAST): a call it has not answered
                                       * was never read (call_settle_sent); cleared at adopt */
    uint64_t cl_next_xid, cl_ack;
    _Atomic uint64_t cl_next_seq;   /* any thread: callers writing their calls number them too */
    uint32_t cl_next_order;
    uint16_t cl_epoch_gen;          /* bumped whenever a HELLO brings another epoch */
    uint64_t cl_epoch;              /* the current server's, from its HELLO */
    uint32_t cl_server_flags;       /* idem (enum arpc_hello_flag) */
    uint32_t cl_server_expiry_s;    /* idem: the server forgets clients idle this long (the
                                     * shortest said in the epoch: core/client_conn.c) */
    arpc_future *cl_first;          /* completed by the first connection, or its failure */
    bool cl_cleaned;                /* calls failed and the connection closed, for good */
    bool cl_hook;                   /* the loop stop hook is registered (and holds a reference) */
    struct client_stats cl_stats;   /* written by the loop thread only (core/stats.h) */
    struct arpc_tls *cl_tls;        /* tls:// addresses: the context every connection's stream
                                     * is made from (transport/tls.h); NULL otherwise */
    /* Large calls' memory kept for reuse (base/buf_cache.h; any thread; emptied when the
     * client is freed). Not the connection's: that one is reset at each reconnect. */
    struct arpc_buf_cache cl_bufs;
    /* Requests over CALL_INLINE_MAX and under ARPC_CONN_BODY_MIN, kept for reuse in size
     * classes (core/block_pool.h; any thread; freed with the client). */
    struct block_pool cl_blocks;
    struct client_direct cl_direct; /* calls written by their callers (core/client_direct.c) */
    struct method_names cl_names;   /* the methods called, kept once (any thread; freed with the client) */
    /* Jobs the loop thread posts for this client (calls, cancels, one-way messages started in
     * its callbacks, core/client_api.c: client_post): queued here in order, one job
     * (cl_local_job) runs them all, so a pipelined call started from a reply's callback costs
     * no post (three locked operations) of its own. Loop thread only. */
    ck_stack_entry_t *cl_local_head, **cl_local_tail; /* j_link of the jobs */
    bool cl_local_posted;             /* cl_local_job is posted and has not finished */
    struct arpc_loop_job cl_local_job;
    /* Calls' deadlines (core/client_deadlines.c; loop thread): one wheel node per call, one
     * loop deadline for the wheel. */
    struct arpc_wheel cl_wheel;
    struct arpc_deadline cl_wheel_timer;
    bool cl_wheel_stopped;
    /* The close's linger (core/client_linger.c; loop thread, but cl_lingering, which the
     * closer reads after the close step returned). */
    int64_t cl_linger_ms;           /* the option, resolved: <= 0 none */
    struct arpc_deadline cl_linger_timer;
    arpc_future *cl_lingered;       /* completed once the lingering connection closed */
    bool cl_lingering;              /* the close step left the connection lingering */
    bool cl_closed_in_handshake;    /* the close came before the HELLO: only the handshake's frames were queued */
    uint64_t cl_unsent_oneway;      /* one-way messages the close dropped unwritten */
    uint64_t cl_unsent_frames;      /* frames of any kind (the goodbye: queued last) */
    uint64_t cl_oneways_on_conn;    /* one-way messages queued on this connection (from its HELLO) */
    uint64_t cl_dropped_closing;    /* arpc_notify's messages whose job came after the close's
                                     * step (their threads were inside as it began): dropped,
                                     * said by the closer once they have all come */
    /* Cancels that found no memory for their job (core/client_cancel_sweep.c): one job of the
     * client's, on the lane while cl_sweep_posted (any thread). */
    struct arpc_loop_job cl_cancel_sweep;
    atomic_bool cl_sweep_posted;
    /* The owner of every call's future while the call is alive (client_call.c): the hooks of
     * call_future_owner, at the client's own address, so a call finds its client from its
     * future (call_client) and keeps no pointer of its own. */
    struct arpc_future_owner cl_call_owner;
};

/*
 * One allocation per call (client_call.c): the caller's future, this record, then what the
 * call keeps of its request for a re-send: the method and the payload (the frame's body after
 * its fixed fields) and their lengths (one over 1 KiB lives in a block of its own, whose
 * address follows instead). The frame's header and fixed fields are made at each send and
 * gathered with them (core/outq.h's heads; a caller's own write: core/client_direct.c): they
 * hold nothing a send cannot make again but the xid and the seq, kept here.
 * The block is shared by the future's user, the call (until call_free) and the output queue
 * (while a small request waits to be written): all counted as the future's references (the
 * call's and the queue's are holds), so the block goes with the future's last one.
 *
 * Fields are sized for a window of 65,536 calls (docs/PERFORMANCE.md): what can be 32 bits
 * is. Loop-thread fields unless said otherwise.
 */
struct client_call {
    arpc_future cc_future;            /* the caller's (async/future_internal.h) */
    union {
        /* Until the call reaches the loop: how. A call posted to the loop is a job on its lane
         * (or the client's local queue, client_post); a call its caller wrote is on cd_calls
         * through j_link, its xid stamped over j_fn (core/client_direct.c). */
        struct arpc_loop_job cc_job;
        struct {
            /* From its arrival on the loop (call_land: the job's link is done with by then;
             * the loop's fields, but cc_xid, stamped before by a caller that wrote the call): */
            uint32_t cc_order;        /* arrival order on the loop, wrapping (call_order_before) */
            uint16_t cc_epoch_gen;    /* cl_epoch_gen when last sent (wraps after 65,536 server
                                       * instances: far more than one call waits through) */
            bool cc_sent : 1;         /* handed to a connection once (else it cannot have run);
                                       * cleared at a loss that left its only send unwritten */
            bool cc_reached : 1;      /* a send of it left whole on a connection since lost */
            bool cc_waiting : 1;      /* in cl_waiting, at cc_wait_pos */
            bool cc_finished : 1;
            bool cc_tracked : 1;      /* in cl_pending, under its xid (call_xid) */
            /* The xid it was last sent with, the pending table's key while cc_tracked (0: not
             * numbered or sent yet). A numbered (at-most-once) call's is its seq with
             * ARPC_XID_SEQ_BIT, the same on every send (call_seq; one field for both); any
             * other call takes a new one at each send. Over j_fn (a call that has reached the
             * loop, or that its caller wrote, has no use for it). */
            uint64_t cc_xid;
        };
    };
    union {
        _Atomic uint32_t cc_direct;   /* until the call reaches the loop: how its caller's write
                                       * went (client_direct.c), read by the loop as it arrives */
        uint32_t cc_wait_pos;         /* then, while cc_waiting: its slot (core/waiting_calls.h) */
    };
    /* (The latch of call_release_shared is a bit of the future's state word:
     * arpc_future_owner_latch.) Set by call_new, never changed: read by any thread. */
    uint16_t cc_inline_len : 11;      /* an inline request's body length (a frame of
                                       * CALL_INLINE_MAX at most; a large request's block keeps
                                       * its own) */
    uint16_t cc_semantics : 2;        /* enum arpc_call_semantics, resolved (call_start checks it) */
    uint16_t cc_timed : 1;            /* it has a deadline: a struct call_timed follows */
    uint16_t cc_bulk : 1;             /* its request is in a block of its own (client_call.c) */
    uint16_t cc_named : 1;            /* its method is in cl_names: the request keeps its index
                                       * instead of the name (client_call.c) */
    /* The request kept for a re-send, right after the fields (in what would be the record's
     * tail padding): its bytes, or a large request's block (client_call.c). */
    uint8_t cc_req[];
};

_Static_assert(offsetof(struct client_call, cc_order) == offsetof(struct client_call, cc_job),
               "the loop's fields begin where the job does");
_Static_assert(offsetof(struct client_call, cc_xid) == offsetof(struct client_call, cc_job.j_fn),
               "the loop's fields overlay the job's link only: the xid a caller stamps is kept");
_Static_assert(offsetof(struct client_call, cc_xid) - offsetof(struct client_call, cc_order) == sizeof(ck_stack_entry_t),
               "call_land clears the job's link, the loop's fields");

/* The call reaches the loop (loop thread; the job's link is read already): the loop's fields
 * cleared in one store, and the xid too for a call posted to the loop (its j_fn was there;
 * 0: not numbered yet). A call its caller wrote keeps the xid it was stamped with. */
static inline void call_land(struct client_call *call, bool stamped)
{
    memset(&call->cc_order, 0, stamped ? offsetof(struct client_call, cc_xid) - offsetof(struct client_call, cc_order)
                                       : sizeof(call->cc_job));
}

/* A call's deadline and its node in the client's timing wheel (client_deadlines.c): in the
 * block of a call that has a deadline only (24 bytes a call less for the others), just before
 * its struct client_call, so that every part of every call is at a constant offset from it. */
struct call_timed {
    uint64_t ct_when;                 /* its deadline (ns) */
    struct arpc_wheel_node ct_node;   /* in cl_wheel at its deadline */
};

/* The call's deadline part (it has one: cc_timed). */
static inline struct call_timed *call_timed(const struct client_call *call)
{
    return (struct call_timed *)(void *)((char *)call - sizeof(struct call_timed));
}

/* The call's deadline (ns), ARPC_NEVER when it has none. Any thread that may read the call. */
static inline uint64_t call_when(const struct client_call *call)
{
    return call->cc_timed ? call_timed(call)->ct_when : ARPC_NEVER;
}

/* The call's client: its future's owner is the client's until the call is done with (then a
 * constant's: the future may outlive the client). Any thread holding the call (before
 * call_free or call_discard). */
static inline arpc_client *call_client(const struct client_call *call)
{
    return (arpc_client *)(void *)((char *)call->cc_future.f_owner - offsetof(arpc_client, cl_call_owner));
}

/* The xid the call was last sent with. Loop thread, or a thread that owns the call before the
 * loop sees it. */
static inline uint64_t call_xid(const struct client_call *call) { return call->cc_xid; }

/* A numbered call's seq (its xid without ARPC_XID_SEQ_BIT), 0 for any other call or one not
 * numbered yet. As call_xid. */
static inline uint64_t call_seq(const struct client_call *call)
{
    return call->cc_xid & ARPC_XID_SEQ_BIT ? call->cc_xid & ~ARPC_XID_SEQ_BIT : 0;
}

/* When the call was first sent (call_tick), with cc_sent: in its future's owner word, 4 bytes
 * the record does not pay for. Stamped by its caller for a call it wrote (before the loop sees
 * it), else by the loop. As call_xid. */
static inline uint32_t call_sent_tick(const struct client_call *call) { return call->cc_future.f_owner_word; }
static inline void call_stamp_sent(struct client_call *call, uint32_t tick) { call->cc_future.f_owner_word = tick; }

/* Arrival order of two calls whose orders are less than 2^31 apart (the calls alive at once). */
static inline bool call_order_before(uint32_t a, uint32_t b) { return (int32_t)(a - b) < 0; }

/* A coarse clock for how long ago a call was first sent: 2^24 ns (~16.8 ms) a tick, wrapping
 * every ~2.3 years (ages are differences, right for calls younger than that). Read from the
 * boot clock, which counts a suspend of this host: the age is judged against the server's
 * idle expiry, and the server's clock runs on while this host sleeps (with the monotonic
 * clock a call sent before a suspend longer than the expiry was sent again, to a server that
 * had forgotten it, and ran twice). */
#define CALL_TICK_SHIFT 24
static inline uint32_t call_tick(uint64_t now_ns) { return (uint32_t)(now_ns >> CALL_TICK_SHIFT); }
/* A call's first send is stamped with call_tick_stamp (the boot clock at the coarse clock's
 * cost: never later than the send, early by a kernel tick or a suspend), and its age judged
 * with call_tick_now (the boot clock read then): call_age_ticks. */
static inline uint32_t call_tick_stamp(void) { return call_tick(arpc_now_boot_coarse_ns(1ull << CALL_TICK_SHIFT)); }
static inline uint32_t call_tick_now(void) { return call_tick(arpc_now_boot_ns()); }
/* The ticks since a stamp: 0 for a stamp ahead of now (never, from call_tick_stamp; a wrapped
 * difference would read as ~2.3 years). */
static inline uint32_t call_age_ticks(uint32_t stamp)
{
    int32_t age = (int32_t)(call_tick_now() - stamp);
    return age > 0 ? (uint32_t)age : 0;
}

/* client.c */
/* The user's handle check on entry: false for NULL (EINVAL) and, after reporting misuse,
 * for a closed client (base/handle.h). A client whose close has begun still answers what is
 * asked of it (a failure callback the close's completions run may well ask
 * arpc_client_last_error); calls it refuses (core/client_api.c: client_enter), a second close
 * is misuse. client_closing: its close has begun and not returned (base/handle.h). */
static inline bool client_closing(const arpc_client *c)
{
    return arpc_handle_in_state(c, ARPC_MAGIC_CLIENT_CLOSING);
}

static inline bool client_live(const arpc_client *c, const char *fn)
{
    return client_closing(c) || arpc_handle_check(c, ARPC_MAGIC_CLIENT, "client", fn);
}

/* Loop thread: arpc_client_connect is waiting for the first connection (its outcome goes to
 * the caller, not to a reconnect). */
static inline bool client_first_awaited(arpc_client *c)
{
    return !c->cl_background && arpc_future_poll(c->cl_first) == ARPC_EPENDING;
}

void client_retain(arpc_client *c);
void client_release(arpc_client *c);
int client_unavailable_reason(arpc_client *c);
/* Records why the latest connection attempt failed or the connection broke. Any thread. */
void client_set_error(arpc_client *c, int code, const char *why);
/* The connection was lost (why): the last error, and the loss that client_lost_why names. */
void client_set_loss(arpc_client *c, const char *why);
/* A reconnect's socket is up and waits for the server's HELLO (and TLS handshake): the last
 * error says so, before the failure it follows, so a call ending meanwhile is not told only
 * of a loss long past. The code stays. Loop thread. */
void client_note_reconnecting(arpc_client *c);
/* A call ending ARPC_EUNREACHABLE, or refused by a client that stopped for good (a GOAWAY
 * refusing it: CL_LOST): while there is no connection, "no connection to the server: " (or
 * "this client will not connect again: ") and the last failure, as the call's result
 * (arpc_malloc'd, NUL after *len); NULL with a connection, nothing recorded, or no memory
 * (the code alone). Any thread. */
char *client_unreachable_why(arpc_client *c, size_t *len);
/* A call ending ARPC_ECONNLOST: why its outcome could not be settled (why: which of the
 * causes client.h lists), then how the connection was lost (client_set_loss), in parentheses;
 * as client_unreachable_why's (NULL without memory). Any thread. */
char *client_lost_why(arpc_client *c, const char *why, size_t *len);

/* client_api.c */
/* Hands job to the client's loop as arpc_loop_post does (the same outcome and errors), in
 * order with the client's other jobs from the same thread. Any thread. */
int client_post(arpc_client *c, struct arpc_loop_job *job);
void client_local_init(arpc_client *c); /* before the loop sees c */

/* client_linger.c (loop thread) */
/* The close's last words: the goodbye (to a server that understands it), then the connection
 * lingers until the server read what was queued, for cl_linger_ms at most (without a linger,
 * or without memory for its future: what the socket takes now, then closed). */
void client_linger_start(arpc_client *c, bool hello_done);
/* The connection closed (client_on_close, in CL_CLOSED) for reason (ARPC_ETIMEDOUT: the
 * linger ran out), in words cause: the linger is over; says what it could not send, and why. */
void client_linger_done(arpc_client *c, int reason, const char *cause);
/* A buffer the closing connection never wrote whole (conn_ops.on_unwritten). */
void client_linger_unwritten(arpc_client *c, arpc_outq_release_fn release);
/* False (an ERROR line naming fn) for a client made in another process: the parent of this
 * child of a fork. Its socket and call numbers are the parent's, and it has no loop thread
 * here: used, it would corrupt the parent's calls (base/fork_gen.h). */
static inline bool client_in_its_process(const arpc_client *c, const char *fn)
{
    return arpc_fork_gen_here(c->cl_fork_gen, c, "client", fn);
}
/* Frees a one-way message queued on the connection (its release: how the close tells them). */
void client_oneway_release(void *msg);

/* A one-way message: its job to the loop (client_api.c), then queued on the connection, or
 * held while the client is parked (client_park.c). */
struct client_oneway {
    struct arpc_loop_job om_job;
    arpc_client *om_client;
    struct client_oneway *om_next; /* in cl_held_first's list */
    uint32_t om_order;             /* held: arrival order among the calls (cc_order) */
    uint64_t om_give_up;           /* held: dropped once this passes (reconnect_give_up_ms) */
    size_t om_len;
    uint8_t om_frame[];
};

/* Loop thread: m is queued on the connection (it must be open), or dropped and counted if the
 * queue has no memory for it. */
void client_oneway_queue(arpc_client *c, struct client_oneway *m);
/* Loop thread: m is dropped unsent, and counted (oneways_dropped). */
void client_oneway_drop(arpc_client *c, struct client_oneway *m);

/* client_park.c (loop thread): a connection the server closed for being idle is opened again
 * when next needed, not at once. */
#define CLIENT_HELD_ONEWAYS 1024
#define CLIENT_HELD_ONEWAY_BYTES ((size_t)64 << 20) /* and their frames' bytes, at most */
#define CLIENT_ATTEMPTS_LOG_NS (10 * 1000000000ull) /* an outage's line, then one every 10 s (and drops') */
/* The connection is lost: true if the client parks (the server said idle, nothing waits). */
bool client_park(arpc_client *c);
/* A call or a one-way message needs a connection: a parked client starts its attempt. */
void client_connect_unpark(arpc_client *c);
/* A one-way message while parked or reconnecting from a park: held (true), or not (false:
 * the caller drops it as without a connection). */
bool client_hold_oneway(arpc_client *c, struct client_oneway *m);
/* The connection is up: the held messages that came before call `next` (every one: NULL)
 * are queued on it, in order; calls_on_connected interleaves them with the calls that
 * waited, so both reach the server in the order they came. */
void client_send_held_oneways(arpc_client *c, const struct client_call *next);
/* No connection came (or the client closes): the held messages are dropped, counted, and
 * named in a WARN line saying why. */
void client_drop_held_oneways(arpc_client *c, const char *why);
/* The held messages whose reconnect_give_up_ms passed by now (as a call waiting for a
 * connection gives up: client_give_up.c) are dropped, counted and named in a WARN line. */
void client_expire_held_oneways(arpc_client *c, uint64_t now);

/* client_deadlines.c */
void client_deadlines_init(arpc_client *c); /* any thread, before the loop sees c */
void client_deadlines_stop(arpc_client *c); /* loop thread, at close: the loop deadline goes */

/* client_connect.c (loop thread) */
void client_connect_start(arpc_client *c);  /* an attempt now */
void client_connect_later(arpc_client *c);  /* an attempt after the back-off */
void client_connect_on_timer(struct arpc_deadline *d, void *arg); /* cn_timer: time limit or back-off over */
void client_connect_on_backlog_retry(struct arpc_deadline *d, void *arg); /* cn_backlog_retry */
void client_connect_stop(arpc_client *c);   /* no more attempts */
void client_connect_failed(arpc_client *c, int code, const char *why); /* this attempt failed */

/* client_lookup.c: the server's name looked up again when reconnects fail (loop thread) */
int64_t client_lookup_interval_ms(int64_t re_resolve_ms); /* the option's 0 made the default */
void client_lookup_maybe_start(arpc_client *c); /* after a failed attempt: a lookup, if due */
void client_lookup_take(arpc_client *c);        /* before an attempt: a finished lookup's answer */
void client_lookup_drop(arpc_client *c);        /* a connection came, or the client's free (any thread) */

/* client_conn.c (loop thread) */
void client_conn_adopt(arpc_client *c, int fd); /* a connected socket: HELLO exchange next */
void client_cleanup(arpc_client *c);            /* once: fails every call, closes the connection */
void client_on_loop_stop(arpc_loop *loop, void *c);

/* client_call.c (loop thread) */
void call_job_start(arpc_loop *loop, struct arpc_loop_job *job); /* a call reaches the loop */
void call_finish(struct client_call *call, int status, void *data, size_t len);
/* The call's request still waits in the output queue, wholly unwritten: taken back out, so it
 * is never sent. True only if no earlier send may have reached a server (then the call did
 * not run). */
bool call_withdraw(struct client_call *call);
void calls_on_connected(arpc_client *c);        /* the server's HELLO came: send what waits */
void calls_on_conn_lost(arpc_client *c);        /* back to waiting, or ended */
/* Ends every call for reason (call_ended_code: a call that was sent says it may have run). */
void calls_fail_all(arpc_client *c, int reason);
/* The server refused the client for good (a GOAWAY on a reconnect, e.g. ARPC_EAUTH): the calls
 * waiting for a connection end, with reason if never sent, else ARPC_ECONNLOST. */
void calls_refused(arpc_client *c, int reason);
void calls_cancel(struct client_call *call);    /* a cancel reached the loop */
/* calls_cancel without letting go of the cancel's share: a cancelled call not yet finished
 * is told to the server and finished (ECANCELLED); nothing for a finished one. */
void calls_cancel_settle(struct client_call *call);
void calls_unwritten_forget(arpc_client *c);    /* cl_unwritten emptied (any thread once no loop runs) */

/* client_cancel_sweep.c: a cancel that had no memory for its job (any thread) has the loop
 * settle every cancelled call not yet finished, through the client's one sweep job. */
void cancel_sweep_post(arpc_client *c);

/* client_cancel_seq.c (loop thread) */
/* A numbered call that may run on the server was cancelled while no connection could carry a
 * CANCEL for it: its seq is named on the next connection (the oldest dropped past a bound). */
void cancel_seq_remember(arpc_client *c, uint64_t seq);
/* The server's HELLO came: a CANCEL naming each seq remembered goes out (to a server with the
 * CANCEL and DEDUP flags; an older one's are forgotten). Before the re-sends. */
void cancel_seq_tell(arpc_client *c);
/* The server answered a frame sent on the current connection (after the CANCELs told on it,
 * cs_told): it has read them, and they are forgotten. */
void cancel_seq_confirmed(arpc_client *c);
/* Forgets them all, unsaid (the client closes). */
void cancel_seq_forget(arpc_client *c);
/* A CANCEL by xid went out on the current connection for numbered call seq: until the server
 * answers that xid, the connection may have broken unnoticed and carried nothing. */
void cancel_seq_sent(arpc_client *c, uint64_t xid, uint64_t seq);
/* A frame answered xid, for which no call waits any more: a cancelled call's answer, if it was
 * one (the server heard its CANCEL, or the call had finished). */
void cancel_seq_answered(arpc_client *c, uint64_t xid);
/* The connection is lost: the calls cancelled on it and never answered are named by seq on the
 * next one, as those cancelled while disconnected. */
void cancel_seq_unanswered(arpc_client *c);

#endif
