/*
 * The server's insides, shared by the files that implement it:
 *   core/server.c        life cycle: create, register, listen, stop, destroy
 *   core/listener.c      accepting connections: the accept loop, pausing on errors, peer names
 *   core/server_conn.c   one connection's protocol: HELLO, frames, dispatch to handlers
 *   core/server_departure.c  a closed connection's calls nobody can get an answer to: cancelled
 *   core/request.c       the request object handlers see, and the reply that leaves it
 *   core/server_limits.c connection limits: handshake, frame and idle timeouts, max connections
 *
 * Threads: the loop thread owns listeners and connections (their sockets, buffers, the list of
 * open connections). Handlers run on actors (or inline on the loop) and reply from any thread:
 * the reply is encoded on the replying thread and handed to the loop through the loop's job
 * lane (async/loop_internal.h), which never makes the replier wait.
 *
 * Lifetimes (all counts are base/refcount.h): a server_conn is held by the loop while open and
 * by each of its requests and replies on their way; the server by the user's handle and by
 * each request in flight. So a handler may reply long after its client left, or after the
 * server was stopped: the reply is dropped, never written to freed memory. A request the
 * server answered in its handler's place (deadline, stop) lets go of both once its handler
 * has returned; only its handle stays for the late reply (core/request_tomb.c).
 */
#ifndef ARPC_CORE_SERVER_INTERNAL_H
#define ARPC_CORE_SERVER_INTERNAL_H

#include <stdatomic.h>

#include "arpc/server.h"
#include "async/actor_internal.h"
#include "async/loop_internal.h"
#include "base/cacheline.h"
#include "base/fork_gen.h"
#include "base/handle.h"
#include "base/log_throttle.h"
#include "base/refcount.h"
#include "base/u64_map.h"
#include "base/dlist.h"
#include "base/siphash.h"
#include "base/token_bucket.h"
#include "core/conn.h"
#include "core/listener_gate.h"
#include "core/registry.h"
#include "core/block_pool.h"
#include "core/reply_cache.h"
#include "core/reply_log.h"
#include "core/stats.h"

enum server_state { SV_IDLE, SV_RUNNING, SV_STOPPING, SV_STOPPED };

struct server_listener; /* core/listener.c */
struct arpc_peer_creds; /* transport/transport.h */

struct arpc_tls; /* transport/tls.h */

struct server_conn {
    struct arpc_conn sc_conn;
    /* Taken by the loop for its requests (64 at a time, sc_refs_ahead), let go by whichever
     * thread finishes a request last (on the loop: back to the stash): a line of its own
     * (sc_conn ends with a gap). */
    arpc_refcount sc_refs;  /* the loop's (while open) + one per request or reply on its way; holds one of sc_server's */
    ARPC_CACHELINE_GAP(sc_gap_refs);
    /* What a handler's thread reads for every reply, written before the connection's first
     * request: a line the loop does not write per call (a worker's reply found it taken by the
     * loop's dispatches, a miss per reply; docs/PERFORMANCE.md). */
    arpc_server *sc_server;
    uint32_t sc_client_max; /* largest reply body the client accepts, from its HELLO */
    bool sc_speaks_json;    /* it was adopted as JSON-RPC: fixed before its first request, never
                             * cleared (a handler's thread reads it; sc_json goes at close) */
    ARPC_CACHELINE_GAP(sc_gap_read);
    /* References the loop took ahead, in one add, for the requests it dispatches (loop thread:
     * sconn_retain_loop), and those it let go of on its own thread: while it holds its own
     * reference (sc_refs_loop, until the close), a request's reference comes from and goes
     * back to this stash with no atomic; the close gives the stash back with its own. */
    unsigned sc_refs_ahead;
    bool sc_refs_loop;
    uint64_t sc_client_id;
    uint64_t sc_incarnation; /* from its HELLO; 0: an older client's, or none */
    uint64_t sc_cache_key;  /* what the reply cache knows the client by (core/server_namespace.c) */
    arpc_peer_info sc_peer; /* fixed at accept, but identity: at HELLO (core/server_auth.c) */
    uint64_t sc_key_identity; /* what keys its at-most-once state with its client id: its
                               * identity, joined with what the transport proved of it where
                               * the callback named it too (core/server_auth.c) */
    bool sc_refused;        /* its HELLO failed the checks: nothing more is read */
    bool sc_hello;
    bool sc_counted;        /* counts toward max_connections (not one refused for it) */
    double sc_opened;       /* loop time (arpc_loop_now) of the accept (handshake timeout) */
    double sc_last_busy;    /* loop time of the last frame, or of a sweep that saw a call in
                             * flight (idle timeout) */
    /* xid -> request waiting for or in its handler (CANCEL): kept until sc is freed, so that a
     * duplicate on another connection can still cancel the call once this one closed. */
    struct arpc_u64_map sc_calls;
    struct arpc_dlist sc_copies;  /* its duplicates waiting for a running call (their
                                   * waiters' w_copy_link: a CANCEL naming one; loop thread) */
    struct arpc_dlink sc_link;    /* sv_conns */
    bool sc_goodbye;              /* the client said goodbye (GOAWAY): it re-sends nothing, so
                                   * every call of it dies with the connection (server_departure.c) */
    bool sc_forgot;               /* the goodbye's forgetting of the client's kept replies is
                                   * done (sconn_forget_client) */
    /* Flow control (loop thread; core/request.c): a request its actor had no room for waits
     * here, with the connection's input held, until the actor makes room (sc_room, armed
     * while sc_room_armed, holding a reference on sc and on the server), then is posted
     * again on the loop (sc_room_job). At most one: nothing is read behind it. */
    arpc_request *sc_parked;
    arpc_actor *sc_parked_on;
    /* The connection closed with a request parked that outlives it (request_park_on_close):
     * listed on sv_parked_closed until it is posted or refused. */
    bool sc_parked_closed;
    struct arpc_dlink sc_parked_link;
    struct arpc_actor_room sc_room;
    struct arpc_loop_job sc_room_job;
    struct jsonrpc_sconn *sc_json; /* a JSON-RPC connection's state (core/jsonrpc_server.c); NULL: arpc frames */
    char *sc_peer_subject;  /* TLS: the client certificate's subject, set at HELLO (before any
                             * request, so workers read it without a lock); NULL: none */
    uint8_t sc_peer_holder[16]; /* with sc_peer_subject: its holder's digest (transport/tls.h) */
    /* Flow limits (loop thread; core/server_inflight.c): calls read and not yet answered,
     * and the client id's entry they count toward too (NULL for client id 0). */
    unsigned sc_ncalls;
    /* Of those, calls the server answered in their handlers' place (a deadline, a stop) while
     * the handlers run on: still counted (they hold their payloads), no longer owed an answer. */
    unsigned sc_answered_early;
    unsigned sc_attached; /* duplicates waiting for a running call's result (not calls in flight) */
    size_t sc_owed_est;   /* of what its calls owe (arpc_conn_owe), the estimates of their replies */
    size_t sc_guess_est;  /* of those, the first-reply guesses (methods never answered before) */
    unsigned sc_guess_calls; /* the calls counted at a guess */
    bool sc_hold_unsaid;  /* held for bytes that guesses made, not logged (core/server_inflight.c) */
    double sc_hold_unsaid_at; /* since then (loop time) */
    struct inflight_client *sc_client;
    struct arpc_dlink sc_client_link; /* the entry's connections */
    const struct arpc_method *sc_last_method; /* loop thread: the method its last call named (core/registry.c) */
    bool sc_codec_chosen;   /* its first byte was seen: arpc frames or JSON-RPC, for good */
};

struct arpc_server {
    arpc_magic sv_magic;            /* first: base/handle.h; dead from arpc_server_destroy on */
    atomic_int sv_state;            /* enum server_state */
    unsigned sv_fork_gen;           /* the process it was made in (base/fork_gen.h): server_live */
    /* Written for every call, by threads that differ: each group on lines of its own, so that
     * the workers' replies and the loop's dispatches do not take a line from each other (and
     * from sv_state, which both read per call). Measured in docs/PERFORMANCE.md. */
    ARPC_CACHELINE_GAP(sv_gap_refs);
    arpc_refcount sv_refs;          /* the user's handle + one per connection (which requests pin) and per reply being made */
    atomic_uint sv_replying;        /* replies between their state check and their hand-over */
    ARPC_CACHELINE_GAP(sv_gap_inflight);
    _Atomic uint32_t sv_inflight;   /* requests handed to handlers and not yet finished, plus the
                                     * loop's stash (sv_inflight_ahead) until a stop gives it back
                                     * (the last one during a stop completes sv_drained) */
    ARPC_CACHELINE_GAP(sv_gap_rest);
    arpc_loop *sv_loop;
    const arpc_loop *sv_loop_id;    /* sv_loop as created, never written after (the teardown clears
                                     * sv_loop): identity only, for a replier (server_loop_hand) */
    arpc_future *sv_drained;        /* completed when a stop finds no call in flight any more: its
                                     * grace waits on it through the loop (arpc_loop_wait_foreign_until) */
    arpc_future *sv_stopped;        /* completed when the stop is done: a second stop waits on it */
    atomic_uint sv_logging;         /* replies waiting for their log records (core/server_journal.c) */
    atomic_bool sv_logs_awaited;    /* a stop waits for sv_logging to reach 0, on sv_logged */
    arpc_future *sv_logged;
    atomic_uint sv_due;             /* replies on their way to the loop when the stop answered the
                                     * unreplied (rs_due); the last completes sv_due_done */
    arpc_future *sv_due_done;
    ck_stack_t sv_stop_jobs;        /* jobs the loop refused (the application stopped it under
                                     * the server), newest first: the stop's steps run them
                                     * (server_job_for_stop) */
    bool sv_had_due;                /* (loop thread, read by the stop after its step) some was due */
    bool sv_owns_loop;
    arpc_actor_group *sv_pool;
    uint32_t sv_max_frame;
    uint32_t sv_jsonrpc_max;        /* a JSON-RPC request's largest object (core/jsonrpc_server.c) */
    bool sv_no_jsonrpc;             /* arpc frames only (arpc_server_options.no_jsonrpc) */
    struct arpc_registry sv_registry;
    uint64_t sv_epoch;              /* this server's identity for at-most-once (HELLO) */
    bool sv_has_log;                /* a reply log was opened (fixed at create) */
    enum arpc_fsync sv_fsync;
    atomic_bool sv_log_failed;      /* a record could not be written: no more numbered calls */
    uint32_t sv_expiry_s;           /* idle clients' replies are forgotten after this */
    uint32_t sv_heartbeat_ms;       /* PING a client silent this long; 0: never */
    unsigned sv_heartbeat_misses;
    /* From here on the loop writes for every call: on lines of their own, apart from the
     * fields above, which every reply reads on its worker's thread (sv_loop, sv_has_log). */
    ARPC_CACHELINE_GAP(sv_gap_loop);
    /* sv_inflight counts the loop took ahead, SERVER_INFLIGHT_AHEAD in one add, for the requests
     * it dispatches and back from those it lets go of on its own thread (server_inflight_take,
     * server_inflight_put_loop): a call costs no locked operation on sv_inflight. Written by the
     * loop only (a relaxed store, for the stats' gauge); the stop's first step gives the stash
     * back (server_inflight_stash_close), so its wait sees the exact count. */
    _Atomic uint32_t sv_inflight_ahead;
    bool sv_inflight_stash;           /* loop thread: the stash is in use (until the stop) */
    /* loop thread only */
    struct arpc_reply_cache sv_cache; /* at-most-once: (client id, seq) -> the call's state */
    struct reply_msg *sv_lost_reply;  /* the result of a call whose reply could not be made
                                       * (ARPC_EABANDONED, SERVER_LOST_REPLY_MSG) */
    struct reply_msg *sv_stop_reply;  /* ... or that a stop answered (SERVER_STOP_REPLY_MSG) */
    struct reply_msg *sv_log_lost_reply; /* ... or whose record the reply log could not take
                                          * (SERVER_LOG_LOST_MSG) */
    struct reply_msg *sv_unkept_reply;   /* what a retry of a call gets whose reply was over the
                                          * cache's bounds when it finished (SERVER_UNKEPT_REPLY_MSG) */
    struct server_conn *sv_admitting; /* the connection whose call the cache is admitting: large
                                       * replies its ack discards go to its buffer cache
                                       * (core/server_dedup.c); else NULL */
    struct arpc_reply_log *sv_log;    /* durability; NULL once closed (at stop) */
    bool sv_cache_ready;
    struct arpc_deadline sv_sweep;    /* idle-client expiry */
    struct arpc_deadline sv_limits;   /* connection limits' sweep (core/server_limits.c) */
    double sv_limits_every_s;
    unsigned sv_limits_left;          /* connections the sweep under way has still to check */
    double sv_handshake_s, sv_frame_s, sv_idle_s; /* 0: off (idle only) */
    double sv_shed_idle_s;             /* out of descriptors: idle this long may be closed */
    double sv_write_s;                 /* output waiting this long unread closes */
    unsigned sv_max_conns;
    /* Gates on the listeners (core/listener_gate.h), loop thread: */
    struct listener_gate sv_accept_gate; /* the rate of new connections (core/accept_rate.c) */
    /* Faulty connections' (core/fault_rate.c), by where their peers are: [FAULT_NETWORK] tcp
     * and tls, [FAULT_LOCAL] unix (a stranger's faults never pause the local socket). */
    struct listener_gate sv_fault_gates[2];
    uint32_t sv_unix_mode;            /* unix:// socket files' permissions; 0: the umask's */
    unsigned sv_nconns;               /* open connections that count toward sv_max_conns */
    struct server_listener *sv_listeners;
    struct arpc_dlist sv_conns;        /* open connections (loop thread) */
    struct arpc_dlist sv_parked_closed; /* closed ones whose parked request waits for room (loop thread) */
    struct arpc_dlist sv_awaiting;    /* calls dispatched and not yet replied to (core/request_deadline.c) */
    struct server_stats sv_stats;     /* written by the loop thread only (core/stats.h) */
    /* Authentication (core/server_auth.c), fixed at create */
    arpc_authenticate_fn sv_authenticate;
    void *sv_authenticate_ctx;
    uint32_t *sv_allow_uids, *sv_allow_gids; /* copies */
    size_t sv_allow_uids_count, sv_allow_gids_count;
    uint8_t sv_ns_secret[ARPC_SIPHASH_KEY_SIZE]; /* at-most-once namespaces (core/server_namespace.c) */
    struct arpc_tls *sv_tls;          /* from options.tls: tls:// listeners' context; NULL: none */
    /* Flow limits (core/server_inflight.c), loop thread */
    unsigned sv_max_calls, sv_max_client_calls;
    size_t sv_max_conn_bytes;
    struct arpc_u64_map sv_clients;   /* client id -> struct inflight_client */
    bool sv_clients_ready;
    struct arpc_log_throttle sv_hold_log; /* holds for a flow limit, logged (on loop time, in ns) */
    struct arpc_log_throttle sv_full_log; /* refusals for a full reply cache, logged (loop thread) */
    struct arpc_log_throttle sv_unkept_log; /* replies over its bounds not kept, logged (loop thread) */
    struct block_pool sv_requests;    /* request objects for reuse (core/block_pool.h) */
    void *sv_states_free;             /* ... of its smallest class, let go of on the loop, for it
                                       * to take first (loop thread; core/request.c) */
    struct block_pool sv_replies;     /* reply messages for reuse, but for large ones (core/request.c) */
    struct arpc_node_chain sv_replies_spent; /* ... of the smallest class, freed on the loop's
                                       * thread, given back in runs (loop thread; core/request.c) */
    /* Replies written by their workers (core/reply_direct.c), loop thread */
    struct arpc_deadline sv_lazy;     /* turns the loop while calls are out at workers */
    struct arpc_deadline sv_take_turn; /* turns the loop soon while a worker holds replies (core/reply_take.c) */
    double sv_lazy_s;                 /* its current interval */
    arpc_stat sv_direct_replies;      /* replies their workers wrote, whole or in part (tests) */
    /* Requests' handles (struct arpc_request, core/request_internal.h): taken on the loop
     * thread only; one the server answered in its handler's place leaves the pool (its late
     * reply frees it, core/request_tomb.c) */
    struct arpc_node_pool sv_handles;
    arpc_request *sv_handles_free;    /* handles let go of on the loop, for it to take first
                                       * (loop thread; core/request.c) */
    /* The requests of one parse bound for one actor, posted together (core/request_dispatch.c,
     * "Runs of posts"); loop thread */
    struct post_batch {
        unsigned pb_depth;                /* parses under way (nested: a release hands up frames) */
        arpc_actor *pb_actor;             /* the actor whose places are reserved; NULL: none */
        struct arpc_actor_job *pb_first; /* the jobs, linked oldest first; NULL: none yet */
        struct arpc_actor_job *pb_last;
        unsigned pb_credit;               /* places reserved and not used yet */
    } sv_batch;
    struct arpc_dlist sv_tombs;       /* calls answered at their deadlines whose late replies
                                       * may still finish them, log an effect or teach their
                                       * method's reply size (loop thread) */
};

/* A reply on its way to the loop; the whole allocation is then the output buffer (or, for a
 * numbered call, what the reply cache keeps). */
struct reply_msg {
    struct arpc_loop_job rm_job;
    arpc_request *rm_req;
    uint32_t rm_refs;      /* once on the loop: the reply cache's and the output queues' holds */
    bool rm_ran;           /* false: the call was refused without running */
    size_t rm_len;
    const uint8_t *rm_effect; /* arpc_reply_durable's effect, after the frame; NULL: none */
    size_t rm_effect_len;
    int rm_code;           /* the outcome it tells the caller: ARPC_OK for a REPLY (stats) */
    uint64_t rm_made_ns;   /* when its replier made it (arpc_now_ns): the method's latency ends
                            * there, read on the replier's thread, not the loop's */
    struct server_conn *rm_home; /* a large reply: the connection whose buffer cache the
                                  * allocation came from and goes back to (a reference); else NULL */
    size_t rm_cap;               /* a large reply's allocation's capacity (kept when the reply
                                  * cache lets go of rm_home); else 0 */
    struct block_pool *rm_pool;  /* else: the server's reply pool it came from (and its class); NULL: arpc_malloc */
    signed char rm_pool_class;
    size_t rm_direct;      /* bytes of the frame its replier wrote to the socket itself, to its
                            * request's connection (core/reply_direct.c); 0: none */
    struct server_conn *rm_direct_to; /* with rm_direct: that connection */
    struct take_batch *rm_batch;      /* the first held reply of a worker's take: its batch
                                       * (core/reply_take.c) */
    struct reply_msg *rm_take_next;   /* a later one: the one held before it */
    uint8_t rm_frame[];
};

/* A reply_msg holding a copy of an encoded frame (a reply from the log). NULL without memory. */
struct reply_msg *reply_msg_from_frame(const void *frame, size_t len);
/* Loop thread: lets go of one hold on rm (the last frees it). */
void reply_msg_put(struct reply_msg *rm);
/* The memory rm holds, as a reply cache counts it: its allocation (the message, frame and
 * effect, or a large reply's capacity), not its frame alone. */
size_t reply_msg_cost(const struct reply_msg *rm);
/* reply_msg_put as an output queue's release function (the queue's frame holds one hold). */
void reply_msg_release(void *rm);
/* Loop thread: as reply_msg_put, but the last hold on a large reply that no longer has a
 * connection (one the reply cache kept) gives its block to near's buffer cache (near may be
 * NULL: freed). */
void reply_msg_put_near(struct reply_msg *rm, struct server_conn *near);
/* Frees rm whatever its holds (a large one goes back to its connection's cache). Any thread. */
void reply_msg_free(struct reply_msg *rm);

/* server.c */
/* The user's handle check on entry: false for NULL (EINVAL) and, after reporting misuse,
 * for a destroyed server (base/handle.h) or one made in the parent of this child of a fork
 * (base/fork_gen.h: its threads are not here, and its sockets are the parent's). */
static inline bool server_live(const arpc_server *s, const char *fn)
{
    return arpc_handle_check(s, ARPC_MAGIC_SERVER, "server", fn) &&
           arpc_fork_gen_here(s->sv_fork_gen, s, "server", fn);
}

void server_retain(arpc_server *s);
void server_release(arpc_server *s);

/* server_limits.c: connections a sweep closes per loop turn at most (fewer when they hold
 * input or output: each MiB counts as one more). A close costs ~20-40 us (the GOAWAY, the
 * epoll_ctl, the close): 1,000 slowloris connections timing out together made one turn of
 * 8-16 ms, which a good client's call waited behind; 16 take ~0.5 ms. */
#define SERVER_LIMITS_CLOSES_PER_TURN 16

/* fault_rate.c (loop thread): max_fault_rate, fault_burst */
enum { FAULT_NETWORK = 0, FAULT_LOCAL = 1 };
void fault_rate_init(arpc_server *s, const arpc_server_options *o);
/* The fault gate of a transport's connections (scheme: "tcp", ...); NULL for inproc://, whose
 * peer is this process (its faults are its own bugs). */
struct listener_gate *fault_gate(arpc_server *s, const char *scheme);
/* Whether a connection closed for reason was closed for its peer's fault (besides the
 * timeouts server_limits.c charges itself). */
bool fault_is_peers(int reason);
/* sc is closed for its peer's fault: counted, charged by its cost (into debt if need be; not
 * for an inproc:// peer). */
void fault_rate_charge(struct server_conn *sc);

/* accept_rate.c (loop thread): max_accept_rate, accept_burst */
void accept_rate_init(arpc_server *s, const arpc_server_options *o);
/* One connection accepted (or shed: it cost the same) at now_ns. */
void accept_rate_took(arpc_server *s, uint64_t now_ns);

/* listener.c (loop thread) */
/* A listening socket for addr, not accepting yet; NULL with *rc and a WARN line on failure
 * (ARPC_ETOOLARGE when the bound address will not fit boundlen bytes, boundlen > 0). */
struct server_listener *listener_new(arpc_server *s, const char *addr, size_t boundlen, int *rc);
/* The address l is bound to (the port chosen for ":0"). */
const char *listener_addr(const struct server_listener *l);
/* Accepts from now on; false (l discarded) when a stop overtook the listen. */
bool listener_start(struct server_listener *l);
/* Stops accepting on l, started, and frees it; nothing if a stop closed it already. */
void listener_close(arpc_server *s, struct server_listener *l);
void listener_close_all(arpc_server *s);
void listener_discard(struct server_listener *l); /* never started */
/* Tells a connection just accepted, before its close, that the server cannot take it
 * (a GOAWAY ARPC_EOVERLOADED with msg, at most LISTENER_REFUSE_MSG_MAX bytes), from the stack:
 * for when no memory or descriptor is left for it. Not on TLS (tls), whose client would take
 * clear bytes for a broken handshake. Best effort: a new socket has room. */
#define LISTENER_REFUSE_MSG_MAX 64
void listener_refuse_raw(int fd, bool tls, const char *msg);

/* server_conn.c (loop thread) */
/* A connection accepted by a listener of scheme ("tcp", ...); creds NULL where unknown; tls:
 * the listener's TLS context (the connection gets a TLS stream), or NULL. */
void sconn_open(arpc_server *s, int fd, const char *peer, const char *scheme, const struct arpc_peer_creds *creds,
                struct arpc_tls *tls);
void sconn_retain(struct server_conn *sc);
void sconn_release(struct server_conn *sc);
/* The same, on the loop's thread (or in a job of its final drain) only: a reference from the
 * loop's stash (sc_refs_ahead), taken SCONN_REFS_AHEAD at a time and given back to it, so a
 * pipelined call costs no locked read-modify-write on the line its workers write. A reference
 * taken here may be let go of by sconn_release on any thread. */
#define SCONN_REFS_AHEAD 64u /* a window's worth of calls in a few adds */

static inline void sconn_retain_loop(struct server_conn *sc)
{
    if (!sc->sc_refs_loop) {
        sconn_retain(sc); /* closed: no stash */
        return;
    }
    if (sc->sc_refs_ahead == 0) {
        arpc_refcount_get_n(&sc->sc_refs, SCONN_REFS_AHEAD);
        sc->sc_refs_ahead = SCONN_REFS_AHEAD;
    }
    sc->sc_refs_ahead--;
}

static inline void sconn_release_loop(struct server_conn *sc)
{
    if (sc->sc_refs_loop)
        sc->sc_refs_ahead++; /* not the last: the loop's own reference is still held */
    else
        sconn_release(sc);
}
/* The server's in-flight count (sv_inflight) for one request, on the loop's thread: from the
 * stash while it is open, else one add. */
#define SERVER_INFLIGHT_AHEAD 64u

static inline void server_inflight_take(arpc_server *s)
{
    uint32_t ahead = atomic_load_explicit(&s->sv_inflight_ahead, memory_order_relaxed);
    if (!s->sv_inflight_stash) {
        atomic_fetch_add(&s->sv_inflight, 1); /* stopping: the count is exact */
        return;
    }
    if (ahead == 0) {
        atomic_fetch_add(&s->sv_inflight, SERVER_INFLIGHT_AHEAD);
        ahead = SERVER_INFLIGHT_AHEAD;
    }
    atomic_store_explicit(&s->sv_inflight_ahead, ahead - 1, memory_order_relaxed);
}

/* A request let go of on the loop's thread (or in a job of its final drain): its count goes
 * back to the stash (true) while it is open; false: the caller subtracts it from sv_inflight.
 * Never the last count while the stash is open: the stash's own are in sv_inflight. */
static inline bool server_inflight_put_loop(arpc_server *s)
{
    if (!s->sv_inflight_stash)
        return false;
    uint32_t ahead = atomic_load_explicit(&s->sv_inflight_ahead, memory_order_relaxed);
    atomic_store_explicit(&s->sv_inflight_ahead, ahead + 1, memory_order_relaxed);
    return true;
}

/* The stop's first step, on the loop's thread, after SV_STOPPING was stored: gives the stash
 * back, so sv_inflight is exact from now on (server.c). */
void server_inflight_stash_close(arpc_server *s);

void sconn_send_error(struct server_conn *sc, uint64_t xid, int code, const char *msg, size_t mlen);
void sconn_send_goaway(struct arpc_conn *conn, int code, const char *msg);
/* As sconn_send_goaway(conn, ARPC_ESHUTDOWN, msg), marked ARPC_GOAWAY_IDLE (closed for being
 * idle, the server runs on) and ARPC_GOAWAY_LAST (nothing more is read: the connection has no
 * call in flight, and the caller closes it). */
void sconn_send_idle_goaway(struct arpc_conn *conn, const char *msg);
/* Refuses a connection the server lacks the memory to let in as it should (its HELLO's
 * answer, a certificate's subject, the timers that guard it): as overloaded, GOAWAY(
 * ARPC_EOVERLOADED, why) (the server's trouble, not the peer's fault: it may retry, and a
 * client that was connected does), in a WARN line with detail; nothing more it sends runs,
 * and it closes with reason once the GOAWAY is sent. */
void sconn_refuse_overloaded(struct server_conn *sc, const char *why, const char *detail, int reason);
/* What a connection refused for want of memory hears (sconn_refuse_overloaded's why). */
extern const char sconn_no_memory[];
/* Answers a call that never reached a method's handler (no such method, stopping, too large,
 * refused at the at-most-once gate), counting it in the server's stats. */
void sconn_refuse_call(struct server_conn *sc, uint64_t xid, int code, const char *msg, size_t mlen);
/* sconn_refuse_call for a numbered call refused before it was taken in, of which the server
 * keeps no record (ARPC_ERROR_UNKEPT, core/frame.h): it speaks for this send only. */
void sconn_refuse_unkept(struct server_conn *sc, uint64_t xid, int code, const char *msg, size_t mlen);
/* A call to a numbered_only method that is not numbered: refused ARPC_EREJECTED (a one-way
 * message: dropped, logged). */
void sconn_refuse_unnumbered(struct server_conn *sc, const struct arpc_method *m, uint64_t xid, bool oneway);
/* The client's input is over: its end of stream (a half-close), or bad input on a JSON-RPC
 * connection (nothing after it is parsed). */
bool sconn_input_ended(const struct server_conn *sc);
/* Input over (sconn_input_ended): closes once written if nothing is owed (or with a reply log),
 * and returns true; false: it closes when the last answer is queued (core/server_inflight.c). */
bool sconn_end_input(struct server_conn *sc);
/* server_json_refusal.c, loop thread: answers a JSON peer (its first byte '{', '[' or
 * whitespace) at a server that takes arpc frames only, drops its bytes unread and closes the
 * connection once that is written, charged as a fault. */
void sconn_refuse_json(struct server_conn *sc);
/* Input over and every answer queued: the JSON-RPC connection's last words (why its input
 * ended) go last, then it closes once all is written. */
void sconn_close_answered(struct server_conn *sc);
/* The peer's identity the transport gives, before the checks judge it (arpc/auth.h): over
 * TLS the verified client certificate's subject (sc_peer_subject, sc_peer.cert_subject).
 * Loop thread, once per connection, once the handshake is over (its first bytes came
 * through it): at HELLO, or at a JSON-RPC connection's first byte. False: no memory for a
 * verified certificate's subject; the connection is refused (logged, GOAWAY
 * ARPC_EOVERLOADED to an arpc client, closed) and must run nothing. */
bool sconn_learn_peer(struct server_conn *sc);
/* A call's deadline: its frame's wire budget (f_deadline_ms; 0: none) counted from the frame's
 * arrival (arpc_conn_arrival_ns), as for every call the server answers. */
uint64_t sconn_call_deadline(const struct arpc_frame *f, uint64_t arrival_ns);
/* The seq an at-most-once call is numbered with on sc, or 0 for a call that is not numbered
 * (a one-way message, a client without an id, seq 0 on the wire). */
uint64_t sconn_call_seq(const struct server_conn *sc, const struct arpc_frame *f);
/* The open connections, oldest first or as the limits' sweep last reordered them (loop thread). */
static inline struct server_conn *sconn_first(const arpc_server *s)
{
    return ARPC_DLIST_ENTRY(s->sv_conns.dl_head, struct server_conn, sc_link);
}
static inline struct server_conn *sconn_next(const struct server_conn *sc)
{
    return ARPC_DLIST_ENTRY(sc->sc_link.dl_next, struct server_conn, sc_link);
}
/* A call in flight, a retry attached to a running call, a request parked, a reply leaving,
 * or input held (e.g. for its client's calls on other connections): the connection is not
 * idle (the idle timeout) and gives no place up (core/server_shed.c). A frame arriving is
 * the caller's to add. */
static inline bool sconn_has_work(const struct server_conn *sc)
{
    return arpc_u64_map_count(&sc->sc_calls) > 0 || sc->sc_attached > 0 || sc->sc_parked != NULL ||
           !arpc_outq_empty(&sc->sc_conn.c_out) || sc->sc_conn.c_hold != 0;
}
/* Answers still owed to what the client sent: its calls in flight not yet answered (those the
 * server answered in their handlers' place are not), and its duplicates attached to calls
 * running (a half-closed connection stays until none is left). */
static inline bool sconn_owes_answers(const struct server_conn *sc)
{
    return sc->sc_ncalls > sc->sc_answered_early || sc->sc_attached > 0;
}
/* Moves an open connection to the back of sv_conns (the limits' sweep: least recently checked
 * first; new connections join at the back). */
static inline void sconn_move_to_tail(arpc_server *s, struct server_conn *sc)
{
    arpc_dlist_remove(&s->sv_conns, &sc->sc_link);
    arpc_dlist_insert_after(&s->sv_conns, s->sv_conns.dl_tail, &sc->sc_link);
}

void sconn_goaway_all(arpc_server *s);
/* server_departure.c: sc's client said goodbye, or sc closed (loop thread): cancels the calls whose
 * answer nobody can get any more -- after the client's goodbye all of them and the originals
 * its copies wait for, else its unnumbered ones (a numbered one may be re-sent and waited
 * for). Callbacks run inside; sc must be held. */
void sconn_cancel_departed(struct server_conn *sc);
/* Stop (loop thread): every connection's parked request is refused ESHUTDOWN (did not run). */
void sconn_refuse_parked_all(arpc_server *s);
/* Stop (loop thread), last: each connection's last words (ARPC_GOAWAY_LAST where nothing is
 * owed: its client then knows that a call still unanswered was not read), what the sockets
 * take without waiting, then the close. */
void sconn_close_all(arpc_server *s);
size_t sconn_error_msg_cap(const struct server_conn *sc, size_t mlen);
/* The most of an error's message a client taking replies of up to client_max bytes gets. */
size_t error_msg_cap(uint32_t client_max, size_t mlen);

/* server_limits.c: timeouts and the connection count (docs/SECURITY.md) */
void limits_init(arpc_server *s, const arpc_server_options *o);
bool limits_start(arpc_server *s); /* loop thread; idempotent; false: no memory to arm the sweep */
void limits_stop(arpc_server *s);  /* loop thread */
/* A connection was opened and linked (loop thread): false when it is one too many, or no
 * memory arms the limits' sweep (it was then sent GOAWAY and is closing). */
bool limits_admit(struct server_conn *sc);
void limits_on_close(struct server_conn *sc);

/* server_shed.c: out of descriptors or at max_connections (loop thread), closes the open
 * connection worth least (silent, slow, then idle; never one with work) to make room; why is
 * for the log line ("out of file descriptors (EMFILE)"). False when none qualifies. */
bool shed_for_room(arpc_server *s, const char *why);

/* request_queue.c: the handler of a method registered with arpc_method_options.queue (its
 * ctx is the arpc_cq). */
void request_to_queue(arpc_request *req, void *cq);

/* server_auth.c: the HELLO's checks (arpc/auth.h) */
int auth_init(arpc_server *s, const arpc_server_options *o); /* ARPC_EINVAL, ARPC_ENOMEM */
void auth_fini(arpc_server *s);
/* Why arpc_auth_fixed_tokens cannot use this list (why filled, ARPC_EINVAL), or ARPC_OK. */
int auth_fixed_tokens_refusal(const arpc_auth_token *list, char *why, size_t whylen);
/* Loop thread: true when the client may in (sc_peer.identity is then set); otherwise it was
 * sent GOAWAY(ARPC_EAUTH), logged, and is closing. */
bool auth_admit(struct server_conn *sc, const struct arpc_frame *f);
/* Loop thread: the same checks for a peer that cannot send a token (JSON-RPC): why it may not
 * in (in buf or a constant), or NULL (sc_peer.identity is then set). Logs nothing. */
const char *auth_judge_tokenless(struct server_conn *sc, char *buf, size_t len);

/* server_namespace.c: the reply cache's key for a client */
/* The server's secret: from log_dir (made there the first time), or fresh without one. */
int namespace_init(arpc_server *s, const char *log_dir, char *why, size_t whylen);
/* Whether log_dir holds a namespace secret, so a reply log must be there too: the secret is
 * written after the log's first segment, and no crash removes every segment. */
bool namespace_expected(const char *log_dir);
/* client_id itself without an identity; else a keyed hash of both. Any thread. */
uint64_t namespace_key(const arpc_server *s, uint64_t identity, uint64_t client_id, uint64_t incarnation);
/* server_inflight.c: calls in flight per connection and per client id, bytes per connection
 * (loop thread but for init/fini) */
int inflight_init(arpc_server *s, const arpc_server_options *o);
void inflight_fini(arpc_server *s); /* once no loop runs */
void inflight_on_hello(struct server_conn *sc);
void inflight_on_close(struct server_conn *sc);
/* A call was admitted (after the at-most-once gate, before its handler can run). */
void inflight_begin(struct server_conn *sc, arpc_request *req);
/* Its reply of reply_len bytes was queued (0: none will be): the call no longer counts. */
void inflight_end(arpc_request *req, size_t reply_len);
/* The server answered it in its handler's place (a deadline, a stop): it counts on until its
 * handler returns (inflight_end), but is owed no answer (sconn_owes_answers). */
void inflight_answered_early(arpc_request *req);
/* A reply of len bytes made for a call of m (its method's expected reply size follows it);
 * also a late one, which the server dropped after answering the call at its deadline. */
void inflight_learn(const struct arpc_method *m, size_t len);
/* A duplicate of a running at-most-once call attached to it (core/server_dedup.c): its
 * connection owes it that call's result (sc_attached) until it is answered or stops waiting;
 * detach (sc held by the caller) closes a half-closed connection then owing nothing more. */
void inflight_attach(struct server_conn *sc);
void inflight_detach(struct server_conn *sc);
/* ops.on_held: the connection held its own input (backlog, bytes). */
void inflight_on_held(struct arpc_conn *conn, unsigned reason);
/* A hold not logged yet (first-reply guesses) is logged now if it still holds: a CANCEL or
 * goodbye passed it (its calls are given up on: long polls) / it has lasted a second (sweep). */
void inflight_hold_passed(struct server_conn *sc);
void inflight_hold_sweep(struct server_conn *sc, double now);

/* What the caller of a call whose reply (or refusal) could not be made is told, with
 * ARPC_EABANDONED, numbered (sv_lost_reply) or not. */
#define SERVER_LOST_REPLY_MSG "the server had no memory for the call's answer; it may have run"
/* What the caller of a call is told, with ARPC_EABANDONED, when the reply log could not make
 * its record durable (a write or sync failed, or one before it did: fail-stop). */
#define SERVER_LOG_LOST_MSG "the server's reply log failed: the call may have run"
/* What a retry of a numbered call is told, with ARPC_EABANDONED, when the call's reply was not
 * kept for it: keeping it would have taken the client's share (or the cache) past its bound. */
#define SERVER_UNKEPT_REPLY_MSG "the call ran, but its reply was over the server's reply cache bound and was not kept for a retry"
/* What a stop answers a call whose handler had not replied, with ARPC_EABANDONED; for a
 * numbered call it is also the call's result, logged (sv_stop_reply), for its retries. */
#define SERVER_STOP_REPLY_MSG "the server stopped before the handler replied; it may have run"

/* server_dedup.c (loop thread but for init/fini) */
int dedup_init(arpc_server *s, size_t max_bytes, uint32_t expiry_s);
void dedup_fini(arpc_server *s);
void dedup_start(arpc_server *s);
void dedup_stop(arpc_server *s);
/* A numbered request arrived: true when it is new and must be dispatched; otherwise it was
 * answered (replayed, refused) or attached to the running call, for no longer than its own
 * deadline_ns (ARPC_NEVER: none), then answered ARPC_ETIMEDOUT. */
bool dedup_admit(struct server_conn *sc, const struct arpc_frame *f, uint64_t deadline_ns);
/* A numbered request the server will not start (it is stopping, has no memory for the
 * request, lacks its method, or the request is over max_frame): true when it is a copy of a call the server has seen,
 * answered as any copy is (its result replayed, or attached to the running call, or refused as
 * acknowledged), never "did not run" for a call that ran; false for a call the server never
 * saw (the caller refuses it: ARPC_ESHUTDOWN, ARPC_EREJECTED, ARPC_ENOMETHOD, ARPC_ETOOLARGE). */
bool dedup_answer_copy(struct server_conn *sc, const struct arpc_frame *f);
/* A request on sc waiting for numbered call seq was answered by the server in its handler's
 * place: it stops waiting for the call's result (which its other waiters still get), and lets
 * go of sc. w: a duplicate's waiter; NULL: the request that runs the call. */
void dedup_leave(struct server_conn *sc, uint64_t seq, struct arpc_rc_waiter *w);
/* Whether xid names a duplicate waiting on sc for a running call (a CANCEL for it passes a
 * held connection, as one for a call of sc's own does). */
bool dedup_copy_waits(const struct server_conn *sc, uint64_t xid);
/* A CANCEL on sc names xid, a duplicate waiting on sc: the call it waits for is cancelled, as
 * a CANCEL on its own connection would (request_cancel_call); nothing if none runs. */
void dedup_cancel(struct server_conn *sc, uint64_t xid);
/* A CANCEL on sc names seq, a numbered call of sc's client (docs/PROTOCOL.md, CANCEL): the
 * request that runs it, on whichever connection, is cancelled as a CANCEL on its own connection
 * would, and should it not have started, its ARPC_ECANCELLED is kept as the call's result
 * (request_cancel_call with keep). Nothing for a seq that does not run, or a client that
 * numbers nothing. */
void dedup_cancel_seq(struct server_conn *sc, uint64_t seq);
/* Whether seq names a running call of sc's client (a CANCEL for it passes a held connection). */
bool dedup_seq_runs(struct server_conn *sc, uint64_t seq);
/* sc's client said goodbye: every numbered call of its still running is cancelled as by
 * dedup_cancel_seq, whichever connection began it (one lost before: its copy may wait unread
 * behind a hold, or was never sent). Nothing for a client that numbers nothing. */
void dedup_cancel_client(struct server_conn *sc);
/* The log made a numbered call's reply durable: answer its waiters. */
void dedup_durable(arpc_server *s, uint64_t client_id, uint64_t seq);
/* The log could not make it durable: its waiters are told the call may have run
 * (ARPC_EABANDONED), never its reply. Retries are refused from then on (sv_log_failed). */
void dedup_log_failed(arpc_server *s, uint64_t client_id, uint64_t seq);
/* An unnumbered request carried ack. */
void dedup_ack(struct server_conn *sc, uint64_t ack);
/* An ACK frame (checked by core/frame.c): what sc's client finished beyond its ack, added to
 * what it said before (arpc_reply_cache_ack_beyond). Nothing for a client that numbers nothing. */
void dedup_ack_beyond(struct server_conn *sc, const struct arpc_frame *f);
/* A numbered call's reply reached the loop: it goes to every waiter (but the request whose
 * replier wrote it already, rm_direct); rm is kept (ran: the call's result, a refusal's
 * included) or freed and the call forgotten. Once the log failed, a call that
 * ran ends with the lost reply (ARPC_EABANDONED) instead: rm is freed, its effect not logged. */
void dedup_complete(arpc_server *s, uint64_t client_id, uint64_t seq, uint64_t ack, struct reply_msg *rm, bool ran);
/* A numbered call's reply could not be made (no memory): its waiters get an ARPC_EABANDONED
 * error made in advance ("may have run"); kept for its retries if the call ran, forgotten if
 * it was refused without running (a later copy may then run it: the caller was told it may
 * have run). */
void dedup_lost(arpc_server *s, uint64_t client_id, uint64_t seq, uint64_t ack, bool ran);
/* A stop answered a numbered call that had started and whose handler had not replied: its
 * result is the stop's ARPC_EABANDONED, kept and logged like any result, so that a copy
 * attached to it, or re-sent to this log's next server, is told "may have run" and never
 * runs it again. */
void dedup_stopped(arpc_server *s, uint64_t client_id, uint64_t seq, uint64_t ack);

/* server_builtin.c: the methods every server answers (arpc/server.h), named under this
 * prefix, which applications may not register. */
#define ARPC_BUILTIN_PREFIX "arpc."
int builtin_register(arpc_server *s);

/* server_journal.c */
int journal_open(arpc_server *s, const arpc_server_options *o, char *why, size_t whylen);
void journal_close(arpc_loop *loop, void *s); /* a server never stopped (a failed create) */
/* A stop from here on waits (on sv_logged) for the replies waiting for their records; false
 * when none waits. */
bool journal_await_all(arpc_server *s);
bool journal_waits(const arpc_server *s);
/* No memory for a record, or for a reply whose effect it would carry: as a record that failed
 * (fail-stop: no more at-most-once calls, logged once). Any thread. */
void journal_fail_enomem(arpc_server *s);
/* Appends a numbered call's reply; false when no record could be made (the log is then
 * failed, and waited_for waiters are the caller's to answer: dedup_log_failed). */
bool journal_reply(arpc_server *s, uint64_t client_id, uint64_t seq, uint64_t ack, const struct reply_msg *rm,
                   bool waited_for);
/* An unnumbered durable reply: true when rm is taken (its sending waits for the record, or
 * the call was refused because no record could be made). */
bool journal_send_durable(arpc_server *s, struct server_conn *sc, struct reply_msg *rm);
/* A one-way message's durable effect (nobody waits for it): a record made on the handler's
 * thread (NULL: no memory; the caller fails the log, journal_fail_enomem), appended on the loop
 * where its reply would have been (lane order: the handler's order), or let go of when no loop
 * runs any more. Once the log failed it is dropped: it must not follow a record the log lost. */
struct journal_rec;
struct journal_rec *journal_effect_new(arpc_server *s, const void *effect, size_t len);
void journal_effect_append(arpc_server *s, struct journal_rec *r);
void journal_effect_free(struct journal_rec *r);
/* Loop thread: the effect of a late reply to an unnumbered call the server answered at its
 * deadline (core/request_tomb.c), logged where its reply would have been (effect NULL:
 * nothing). Its state holds it: without memory for the record the log fails (fail-stop). */
void journal_late_effect(arpc_server *s, const void *effect, size_t len);
/* The cache forgot a client (its expiry, or its goodbye: floor 0, or its highest seq, which
 * a restart keeps refusing, held against owner's share, its identity or 0): a record, so a
 * restart forgets it too. */
void journal_forget(arpc_server *s, uint64_t client_id, uint64_t floor, uint64_t owner);
/* Logs a client's acknowledgement beyond its ack (an ACK frame's ack, high and its list of
 * waiting seqs as the frame holds them: little-endian u64s). Nothing without a log. */
void journal_ack_beyond(arpc_server *s, uint64_t client_id, uint64_t ack, uint64_t high, const void *waiting,
                        size_t waiting_len);

/* server_dedup.c, for replies: queues rm's frame as it is (rm is freed once written). */
void sconn_send_frame(struct server_conn *sc, struct reply_msg *rm);

/* reply_direct.c: a worker's reply written by the worker itself (core/conn_write.h) */
/* Replier's thread, not the loop's, between the stop check and the hand-over (sv_replying):
 * writes rm's frame if nobody else is writing its connection; rm->rm_direct says how much.
 * True when all of it left and the loop need not be woken for its job (a lazy post). */
bool reply_direct_write(struct reply_msg *rm);
/* Loop thread: a call went to a worker, whose reply's job may be posted lazily: the loop
 * turns at least every few ms until no call is out (or the server stops: unwatch). */
void reply_direct_watch(arpc_server *s);
void reply_direct_unwatch(arpc_server *s);
/* Loop thread, delivering rm (rm->rm_direct != 0): counts the bytes written, queues what its
 * replier could not write first, and restarts the flush of frames queued meanwhile. */
void reply_direct_finish(struct server_conn *sc, struct reply_msg *rm);

/* reply_take.c: a pool worker's replies of one take, written together */
/* Replier's thread, rm encoded for a request that may be written by its replier
 * (reply_direct.c's conditions) and its job initialised: true when rm is held, to leave with
 * the replies of the rest of this actor's take (its hand-over, and a drop if the server stopped,
 * then happen there); false: hand it over now, as before. */
bool reply_take_hold(arpc_server *s, struct reply_msg *rm);
/* How long a held batch may wait before the loop takes it over (the anchor's age, ns); tests
 * raise it to make a take's batch certain to leave from its worker. Set before any server runs. */
extern uint64_t reply_take_hold_ns;
/* How long past its grace a stop keeps the connections open for records still being made
 * durable (core/server.c; 5000 ms). A variable for tests whose syncs end only at the log's
 * close (tests/stop_log_drain_test.c): 0 gives them the grace alone. */
extern unsigned server_stop_logged_ms;
extern const size_t reply_take_batch_size; /* a take's allocation (tests fail it by its size) */
/* Loop thread, while the server runs: the loop turns within reply_take_hold_ns (sv_take_turn),
 * so that a held batch is looked at in time without a wake-up of its own. False when it runs
 * and no timer will turn the loop (no memory to arm one): the caller wakes the loop instead.
 * True when it does not run: a batch is then held only while its worker writes it, and the
 * worker wakes the loop (a kick for it would spin the loop meanwhile: review 237). */
bool reply_take_turn_soon(arpc_server *s);

/* Loop thread (or any thread once no loop runs): rm's job, its delivery (request.c). */
void reply_deliver(arpc_loop *loop, struct arpc_loop_job *job);

/* request.c */
/* Runs or queues the handler for a request frame (loop thread): the frame's bytes are copied. */
void request_dispatch(struct server_conn *sc, const struct arpc_method *m, const struct arpc_frame *f);
/* Loop thread: the requests dispatched between open and close go to their actors in runs
 * (one reservation of places and one push per run, docs/PERFORMANCE.md); flush posts the run
 * so far, before anything that must see it posted. Nestable; close flushes. */
void request_batch_open(arpc_server *s);
void request_batch_close(arpc_server *s);
void request_batch_flush(arpc_server *s);
/* A request's block (request_state_take: loop thread; *cls for request_state_put, any thread,
 * on_loop when on the loop's). The fini functions give back what the loop kept (server_free). */
struct request_state *request_state_take(arpc_server *s, size_t size, int *cls);
void request_state_put(arpc_server *s, struct request_state *st, int cls, bool on_loop);
void request_states_fini(arpc_server *s);
void reply_spent_fini(arpc_server *s);
/* A CANCEL frame for call xid arrived on sc (loop thread): a call of sc's own, or one a
 * duplicate on sc waits for (dedup_cancel). */
void request_cancel(struct server_conn *sc, uint64_t xid);
/* Loop thread: cancels the numbered call seq that sc runs under xid, if it is still in sc's
 * table (sc may be closed); nothing otherwise. keep: its client gave the seq up for good (a
 * CANCEL naming the seq), so should the call not start, its ARPC_ECANCELLED is kept as its
 * result (a late copy gets that, never a run); else it is forgotten ("cancelled" says it may
 * run), and a late copy may run it. */
void request_cancel_call(struct server_conn *sc, uint64_t xid, uint64_t seq, bool keep);
/* Loop thread: req is cancelled (a CANCEL frame, or the server answered in its handler's
 * place); its on_cancel callback runs if this is the first cancel. req's state is whole. */
void request_cancel_now(arpc_request *req);
/* sc's parked request (if any) will never be posted (its connection closes, the server
 * stops): it is answered ESHUTDOWN ("did not run") and let go (loop thread). */
void request_refuse_parked(struct server_conn *sc);
/* sc closes: its parked request is refused, unless it outlives the connection (a one-way
 * message; a numbered call of a client that said no goodbye): that one stays parked, to be
 * posted when its actor has room, or refused by a stop (docs/SEMANTICS.md). */
void request_park_on_close(struct server_conn *sc);
/* Stop (loop thread), after the pool stopped: answers every call whose handler has not
 * replied ARPC_EABANDONED (their late replies are dropped), disarms their deadlines and
 * empties sv_awaiting; the tombstones of numbered calls answered at their deadlines let go
 * of the server (their late replies are dropped too). */
void request_answer_unreplied(arpc_server *s);

#endif
