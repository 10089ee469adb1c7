/*
 * arpc/server.h: serving methods.
 *
 * A server owns a loop thread (or uses one given to it) that accepts connections, reads and
 * splits frames, and writes replies, and runs handlers on worker actors (arpc/actor.h):
 * by default on the server's pool (an actor group, one actor per core but one: see workers), or on an actor or
 * group of the method's own (a single actor runs its calls one at a time, so the handler's
 * state needs no lock), or, opted in for trivial non-blocking handlers, inline on the loop.
 *
 * Handlers receive an arpc_request and must finish it exactly once with arpc_reply() or
 * arpc_reply_error(), before returning or later from any thread. A request stays valid until
 * it is finished, even after arpc_server_stop/destroy (the reply is then dropped), whichever
 * loop the server ran on: a reply after destroy touches no loop, so the user may destroy its
 * own loop first. If the handler has not replied by the call's deadline (from the wire), the
 * server answers the caller ARPC_ETIMEDOUT itself (and an at-most-once retry waiting for the
 * running call, at the retry's own deadline); a stop answers calls still unanswered after
 * its grace ARPC_EABANDONED (both: the call may have run; ARPC_EABANDONED also answers a call
 * whose reply the server could not make, docs/SEMANTICS.md). Once the server has so answered and
 * the handler has returned, the server frees what the request held (its data, its share of
 * the flow limits, its connection's record, its hold on the server): the request stays valid
 * only for the handler's late reply, which is dropped and frees the rest, a few words. So an
 * asynchronous handler (one that replies after returning) must copy what it needs of the
 * request (arpc_request_data, _peer, ...) before returning: what the accessors give is lent
 * until the request is finished, or answered by the server after the handler returned (they
 * then return NULL or 0). A request never finished keeps only those few words, even after
 * arpc_server_destroy. Replies are written as soon as they are ready, in any order. One-way
 * requests are finished the same way; no reply is sent for them (and the server never
 * answers them: one never finished keeps its request and the server's shell).
 *
 * Bad input never takes the server down: an unknown method gets an ARPC_ENOMETHOD error
 * reply naming it; a request larger than max_frame gets an ARPC_ETOOLARGE error reply (its body
 * is skipped, not buffered) and the connection goes on; a malformed frame (or one announcing
 * over 1 GiB) closes that one connection with a log line on stderr, and every other connection
 * goes on being served. Connections that stall (no
 * HELLO, a frame sent too slowly), idle ones (if asked) and those past a count are closed
 * too: see the options' connection limits and docs/SECURITY.md.
 *
 * Built with jansson, every listener also answers JSON-RPC 1.0 (Go's net/rpc/jsonrpc) with
 * the same methods: arpc/jsonrpc.h says what a handler sees then.
 */
#ifndef ARPC_SERVER_H
#define ARPC_SERVER_H

#include "arpc/actor.h"
#include "arpc/auth.h"
#include "arpc/common.h"
#include "arpc/cq.h"
#include "arpc/loop.h"
#include "arpc/tls.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct arpc_server arpc_server;
typedef struct arpc_request arpc_request;

/* Runs on the method's actor (or the loop, if inline). ctx is the registration's ctx. */
typedef void (*arpc_handler_fn)(arpc_request *req, void *ctx);

/* When a finished at-most-once call's log record must be on disk (see log_dir). Any other
 * value fails arpc_server_create with ARPC_EINVAL, with or without a log_dir. */
enum arpc_fsync {
    ARPC_FSYNC_ALWAYS = 0, /* the reply leaves once its record is written and fdatasync'ed
                            * (group commit: one fdatasync covers every record queued
                            * meanwhile). Survives a power loss. The default. */
    ARPC_FSYNC_BATCH = 1,  /* the reply leaves once its record is written (a crash of the
                            * process no longer loses it); fdatasync every fsync_batch_ms or
                            * fsync_batch_records. A power loss may lose that last stretch. */
    ARPC_FSYNC_OFF = 2,    /* the reply leaves at once; the record follows. A crash, or a
                            * write the log cannot make (a full disk), loses recent records:
                            * a retry may then run a call again, and an answered call's
                            * durable effect is gone (docs/SEMANTICS.md, "Durability"). */
};

/* What the reply log hands back at start-up, in log order (see recover in the options). */
enum arpc_recover_kind {
    ARPC_RECOVER_STATE = 1,  /* the latest checkpoint (arpc_server_checkpoint), at most once, first */
    ARPC_RECOVER_EFFECT = 2, /* an effect (arpc_reply_durable) logged after it */
};
/* Called on the thread creating the server, before arpc_server_create returns; data is
 * valid during the call only. */
typedef void (*arpc_recover_fn)(void *ctx, enum arpc_recover_kind kind, const void *data, size_t len);

/* The most arpc_server_options.workers may ask for; more fails arpc_server_create with
 * ARPC_EINVAL (said in errbuf). The pool is an actor group, bounded as any is (1,024: why in
 * arpc/actor.h). Handlers that block belong on a group of their own
 * (arpc_method_options.group). */
#define ARPC_SERVER_WORKERS_MAX ARPC_ACTOR_GROUP_MAX
/* The least arpc_server_options.max_conn_bytes other than 0, whatever max_frame: a connection's
 * read buffer alone is 64 KiB. Less fails arpc_server_create with ARPC_EINVAL (said in errbuf);
 * so does less than max_frame. */
#define ARPC_SERVER_CONN_BYTES_MIN (128u * 1024u)
/* The least arpc_server_options.reply_cache_bytes other than 0: a client's half holds its
 * bookkeeping (~2 KiB) and a few replies. Less fails arpc_server_create with ARPC_EINVAL (said
 * in errbuf): under it no reply fitted and every numbered call was refused ARPC_EOVERLOADED. */
#define ARPC_SERVER_REPLY_CACHE_MIN (64u * 1024u)
/* arpc_server_options.worker_poll_us when left 0. */
#define ARPC_WORKER_POLL_US_DEFAULT 50
/* arpc_server_options.max_fault_rate when left 0. */
#define ARPC_FAULT_RATE_DEFAULT 1000

/* arpc_server_options.jsonrpc_max_request's default: 1 MiB. */
#define ARPC_JSONRPC_MAX_REQUEST_DEFAULT (1u << 20)

typedef struct arpc_server_options {
    arpc_loop *loop;          /* NULL: the server starts and owns a loop thread. Else the
                               * application's (arpc/loop.h), which it must run: started
                               * (arpc_loop_start), run by a thread of its own, or driven;
                               * a loop nobody runs serves nobody (a peer's connect times
                               * out waiting for the HELLO), and nothing warns of it */
    unsigned workers;         /* actors in the default pool; 0: one per online CPU but one, which
                               * is left to the loop thread (at least 1; measured: on 2 cores,
                               * 2 workers + the loop halve pipelined throughput vs 1 worker);
                               * at most ARPC_SERVER_WORKERS_MAX. A worker thread that cannot be
                               * started fails create with ARPC_ESYSTEM (said in errbuf) */
    uint32_t max_frame;       /* largest request body accepted: the request's bytes + its
                               * method name + 24 (docs/PROTOCOL.md); 0: 16 MiB; at least
                               * ARPC_MAX_FRAME_MIN (1 KiB: arpc/common.h). A larger call
                               * is answered ARPC_ETOOLARGE alone */
    /* At-most-once: numbered calls (the client's default) are remembered by (client id, seq)
     * until the client acknowledges their replies or goes idle; a duplicate never runs. */
    size_t reply_cache_bytes; /* bound on remembered replies; 0: 128 MiB; else at least
                               * ARPC_SERVER_REPLY_CACHE_MIN (64 KiB). When full, new numbered
                               * calls are refused (ARPC_EOVERLOADED); nothing unacknowledged is
                               * ever dropped to make room. One client may hold half of it: over
                               * that its new numbered calls are refused (ARPC_EOVERLOADED) until
                               * it acknowledges replies, while other clients still get in. The
                               * clients of one identity (arpc/auth.h) share one such half.
                               * Replies are counted with their allocation. Calls admitted
                               * under the bounds that finish together would go past them: a
                               * reply that would is answered but not kept, and a retry of that
                               * call gets ARPC_EABANDONED (it ran; it never runs again); an
                               * ERROR answer is kept whatever it costs. With a reply log,
                               * replies waiting for their record count too, and are checked
                               * when they are kept, and again when a restart restores them.
                               * Size it for a client's pipelined window: a client's half must
                               * hold the replies of the calls it has in flight (64 KiB refuses
                               * most of a burst of 8 KiB replies; a read-only method's replies,
                               * arpc_method_options.read_only, are never kept) */
    uint32_t client_expiry_s; /* a client idle this long is forgotten; 0: 600 */
    uint32_t heartbeat_ms;    /* PING a client silent this long; 0: 15000 */
    unsigned heartbeat_misses; /* then close it after this many PINGs unanswered; 0: 3 */
    /* Durability. With a directory, every finished at-most-once call is appended to a reply
     * log there (client id, seq, reply, effect; CRC32C per record) before its reply leaves
     * (per fsync), and a server created again on the same directory (after kill -9, a crash,
     * a restart) replays it: a client retrying such a call gets the same reply and the
     * handler does not run again. The log compacts itself (a snapshot of what is live). One
     * server per directory (a lock). */
    const char *log_dir;          /* NULL: no log (a restart forgets every call) */
    enum arpc_fsync fsync;
    uint32_t fsync_batch_ms;      /* ARPC_FSYNC_BATCH: 0: 10 */
    uint32_t fsync_batch_records; /* ARPC_FSYNC_BATCH: 0: 1024 */
    uint64_t log_compact_bytes;   /* compact when a segment passes this; 0: 64 MiB */
    /* Exactly-once for state built from effects: at create, recover gets the latest
     * checkpoint and then every non-empty effect logged after it, in order (see
     * arpc_reply_durable; an empty effect changed nothing and is not handed back). */
    arpc_recover_fn recover;
    void *recover_ctx;
    /* If not NULL, a failed arpc_server_create writes why into errbuf (e.g. "reply log DIR is
     * corrupt at offset N: ..."). ARPC_ERRBUF_SIZE (arpc/client.h) holds any of them. */
    char *errbuf;
    size_t errbuf_len;
    /* Connection limits (docs/SECURITY.md). Each is checked by one sweep per server loop
     * (every second, or a quarter of the shortest timeout if that is sooner), so a timeout
     * fires up to that much late. Each close is logged with the limit's name and the peer,
     * within the loop's rate for lines about what peers did (docs/SECURITY.md: beyond it, the
     * next such line says how many were not logged). */
    uint32_t handshake_timeout_ms; /* a connection that has sent no HELLO this long is closed;
                                    * 0: 10000 */
    uint32_t frame_timeout_ms;     /* a frame whose first byte arrived must be whole within this,
                                    * else the connection is closed (slowloris); 0: 30000 */
    uint32_t idle_timeout_ms;      /* a connection with no call in flight and no frame but
                                    * PING/PONG this long is sent GOAWAY(ARPC_ESHUTDOWN, marked
                                    * idle) and closed (its client reconnects when a call or a
                                    * one-way message next needs it); 0: never (the
                                    * heartbeat already finds dead peers; an idle connection costs
                                    * a few KiB, and closing it costs the next call a reconnect) */
    unsigned max_connections;      /* a connection accepted while this many are open first
                                    * makes room as on EMFILE (shed_idle_ms: a silent, slow or
                                    * idle one is closed); if none qualifies it is sent
                                    * GOAWAY(ARPC_EOVERLOADED) and closed (its client's connect
                                    * fails with ARPC_EOVERLOADED; on tls://, refused before any
                                    * handshake: ARPC_ETLS or ARPC_ECONNREFUSED); 0: 10000 */
    bool no_builtin_methods;       /* true: do not register the built-in methods (see
                                    * arpc_server_register: arpc.methods, arpc.stats) */
    /* Authentication (arpc/auth.h, docs/SECURITY.md), checked at each client's HELLO. */
    arpc_authenticate_fn authenticate; /* judges the client's token; NULL: no token check (a
                                        * token sent anyway is ignored) */
    void *authenticate_ctx;
    /* Peers with credentials (unix://) are let in only when their uid is in allow_uids or
     * their gid in allow_gids (copied at create). With either list set, a peer without
     * credentials (tcp://) is refused unless authenticate let it in. Both empty: no check. */
    const uint32_t *allow_uids;
    size_t allow_uids_count;
    const uint32_t *allow_gids;
    size_t allow_gids_count;
    /* TLS for tls:// listeners (arpc/tls.h): cert_file and key_file at least. NULL: a
     * tls:// listen fails with ARPC_EINVAL. Read during create only. */
    const arpc_tls_options *tls;
    /* Flow limits (docs/SECURITY.md): at a limit the server stops reading from the
     * connection (its calls wait in the socket, none is refused, the loop never waits) and
     * reads again once replies have gone out. Each hold is counted and logged (at most one
     * line per second), but for one of max_conn_bytes that only the guesses of methods not yet
     * replied make (below): a fresh server's first burst of pipelined calls makes one, which
     * its first replies end; it is logged once those replies show the guessed calls keep it,
     * or once no reply ends it (a CANCEL passes it, or it lasts a second: long polls). */
    unsigned max_calls_per_conn;   /* calls and one-way messages read from one connection and
                                    * not yet answered; replies from the at-most-once cache do
                                    * not count; 0: 1024 */
    unsigned max_calls_per_client; /* the same across every connection of one client id (client
                                    * id 0 is not limited); 0: 4096 */
    size_t max_conn_bytes;         /* what one connection may make the server hold: its read
                                    * buffer, its queued replies and the replies still owed to its
                                    * calls in flight (each counted at its method's recent largest
                                    * reply, or max_conn_bytes/16 until its first); 0: 16 MiB,
                                    * or max_frame if larger. Else at least max_frame (16 MiB
                                    * when 0) and ARPC_SERVER_CONN_BYTES_MIN (128 KiB): one
                                    * request the server accepts, and a reply as large, must
                                    * fit (queued output over 4 x this closes the connection,
                                    * and the client's retry met the same close; a reply over
                                    * 4 x this is answered ARPC_ETOOLARGE); less fails
                                    * create with ARPC_EINVAL (said in errbuf). To bound a
                                    * connection under 16 MiB, lower max_frame too */
    /* Out of file descriptors (EMFILE/ENFILE on accept), or at max_connections, an open
     * connection worth less than the new one is closed to make room before the new one is turned away: one that has not
     * said HELLO, or whose frame has been arriving, for 1 s; else one idle this long (no call in
     * flight, nothing queued), sent GOAWAY(ARPC_ESHUTDOWN, marked idle) so its client reconnects
     * when next needed. A connection with calls in flight or replies queued is never chosen. Logged with
     * the errno's name. 0: 5000 */
    uint32_t shed_idle_ms;
    /* Output waiting this long without a byte taken by the peer closes the connection, with a
     * reset (a peer that never reads, or reads nothing more; logged). Taken: 64 KiB handed
     * on by the kernel (so a slow reader is not cut while its socket's buffer drains, and one
     * reading a trickle is: docs/SECURITY.md). Also: queued output over 4 x
     * max_conn_bytes closes it at once. 0: 30000 */
    uint32_t write_timeout_ms;
    /* unix:// listeners: the socket file's permission bits (e.g. 0660: the group may connect;
     * 0666: anyone, leaving the choice to allow_uids / allow_gids), set right after bind.
     * Connecting needs write permission on the file, so without this only what the process's
     * umask leaves may connect (the owner alone under the usual 022). 0: the umask's. Bits
     * beyond 0777 fail arpc_server_listen with ARPC_EINVAL. */
    uint32_t unix_mode;
    /* Unused, and never read: the tail padding of the struct as it ended at unix_mode, which
     * programs built then pass (in their sizeof) without ever writing it. */
    uint32_t reserved_after_unix_mode;
    /* The rate of new connections (docs/SECURITY.md, "Connection rate"), as HAProxy's
     * maxconnrate: a token bucket per server of accept_burst tokens, refilled at
     * max_accept_rate a second, full at create, one taken per connection accepted (also one
     * then refused for max_connections or shed out of descriptors: it cost as much). Empty,
     * the server's tcp://, tls:// and unix:// listeners stop accepting (their sockets are not
     * even polled) until a few tokens are due again: new connections wait in the kernel's
     * backlog (1,024 on tcp),
     * and once it is full the kernel drops their SYNs (a client's connect retries them, 1 s,
     * 3 s, ... later); the server spends nothing on them and established connections go on.
     * inproc:// is never limited (its peers are this process). Each pause is counted
     * (arpc_server_stats: accept_rate_pauses, accept_rate_paused_ns) and logged, at most one
     * line a second. 0: no limit, the default (as HAProxy and nginx, which have none by
     * default): the rate a machine can take spans orders of magnitude with its cores, so no
     * one figure fits; on the 2-core machine of docs/SECURITY.md ~20,000 connections a second
     * saturate a core. Setting it, allow the reconnect storm after a restart within the burst
     * and the client's connect_timeout_ms (5 s): 10,000 clients pass in about
     * (10,000 - accept_burst) / max_accept_rate seconds, plus SYN retransmits. Measured there
     * at 2,000 a second: a connect-and-close attacker's cost to the server fell to a quarter,
     * a good client's p99 with it (not with the attacker SCHED_IDLE, nor for a flood of idle
     * connections), and 10,000 clients took 4-5.6 s to connect (1.6-3 s
     * without); a burst the storm's size spares it but lets each attack start at full speed. */
    uint32_t max_accept_rate; /* connections accepted a second, on average; 0: unlimited */
    uint32_t accept_burst;    /* at most this many at once (the bucket's size); 0: one second's
                               * worth (max_accept_rate), as HAProxy counts over a second */
    /* The pool's workers poll for their next request this long before sleeping, while a CPU
     * is spare (arpc_actor_options.poll_us says how and what it costs); 0: 50; < 0: never,
     * they sleep at once. Measured on 2 vCPUs (docs/PERFORMANCE.md, "Workers that poll before
     * they sleep"): a pool call's p50 from 1.52x a raw socket round trip to 1.23x (caller-
     * driven client) and from 2.05x to 1.64x (the client's own loop thread); pipelined 16-byte
     * calls unchanged, pipelined 4 KiB bulk 0-15% slower. Set < 0 for a bulk server. */
    int32_t worker_poll_us; /* 0: ARPC_WORKER_POLL_US_DEFAULT */
    /* Unused, and never read: the tail padding of the struct as it ended at worker_poll_us. */
    uint32_t reserved_after_worker_poll_us;
    /* Faulty connections (docs/SECURITY.md, "Faulty connections"). A connection the server
     * closes for its peer's fault (a malformed frame, a frame header past max_frame that
     * cannot be skipped, a second HELLO, a refused token or credentials, a failed TLS
     * handshake or record, a HELLO or TLS handshake begun but not whole within
     * handshake_timeout_ms (a peer that sent nothing is closed, not charged: it may connect
     * early to call later), a tls:// peer gone before its HELLO once its TLS handshake began
     * (a TLS health check too: one a second costs a few tokens, so a max_fault_rate set low
     * wants such probes on tcp://, or none), a frame
     * not whole within frame_timeout_ms) is counted (arpc_server_stats.connections_faulted) and charged to a
     * token bucket of fault_burst, refilled at max_fault_rate a second, one bucket for network
     * peers (tcp://, tls://) and one for local ones (unix://); while a bucket owes (faults are
     * charged even when it is empty), its listeners stop accepting (a stranger's faults never
     * pause the unix:// socket), as for max_accept_rate, and new connections wait in the kernel's backlog,
     * good ones too. A well-behaved client never faults, so a reconnect storm of good clients
     * is never slowed; a peer that opens connections only to have them closed (each costs the
     * server ~40 us of a core on the 2 vCPUs of docs/SECURITY.md) gets max_fault_rate of them
     * a second. A fault after a TLS handshake is charged its cost: one more fault for every
     * 40 us of CPU the handshake took the server (its key exchange and signature, a client
     * chain's parsing: up to ~10 ms). Each pause is counted (fault_rate_pauses,
     * fault_rate_paused_ns) and logged, at most one line a second. inproc:// is never paused. */
    int32_t max_fault_rate; /* faulty connections a second, on average; 0: ARPC_FAULT_RATE_DEFAULT;
                             * < 0: no limit (still counted) */
    uint32_t fault_burst;   /* at most this many at once; 0: one second's worth (max_fault_rate) */
    /* JSON-RPC (built with jansson, every listener answers it: arpc/jsonrpc.h). A request is
     * parsed whole on the server's loop thread, which serves no other connection meanwhile:
     * ~20-45 ms a MiB on the 2 vCPUs of docs/SECURITY.md (jansson builds its tree before the
     * method is known). A request object larger than jsonrpc_max_request is dropped as it
     * arrives and answered ARPC_ETOOLARGE by its id, the connection going on. 0:
     * ARPC_JSONRPC_MAX_REQUEST_DEFAULT (1 MiB); never more than max_frame; at least
     * ARPC_MAX_FRAME_MIN. */
    uint32_t jsonrpc_max_request;
    /* true: this server's listeners speak arpc frames only; a peer whose first byte is a JSON
     * object's or array's is told so once in JSON (id null, "ARPC_EREJECTED: this server
     * takes arpc frames only, not JSON-RPC": none of its calls ran) and closed, charged as a
     * fault. For a server that strangers can reach and no JSON-RPC peer needs. */
    bool no_jsonrpc;
    /* A field appended here starts past the struct's tail padding (8-aligned: after a 4-byte
     * unused field if need be), for the reason of reserved_after_unix_mode. */
} arpc_server_options;

/* A call's routing key, from its request bytes (see arpc_method_options.key). Runs on the
 * server's loop thread before the handler: it must be quick and must not block. ctx is the
 * registration's ctx. */
typedef uint64_t (*arpc_key_fn)(const void *data, size_t len, void *ctx);

typedef struct arpc_method_options {
    arpc_actor *actor;        /* run every call of the method on this actor, one at a time */
    arpc_actor_group *group;  /* or spread them over this group (default: the server's pool) */
    bool inline_on_loop;      /* or run them on the loop thread: only for handlers that never block
                               * (a blocking arpc_call from one stalls every connection of the
                               * loop, and one to this server waits until its deadline) */
    arpc_key_fn key;          /* with a group (or the pool): calls with equal keys run on the same
                               * actor, in arrival order (arpc_actor_group_post_key), so per-key
                               * state needs no lock; other keys run in parallel. Not with actor
                               * or inline_on_loop. */
    size_t reply_bytes_hint;  /* the size its replies are expected to have, for the bytes bound
                               * (arpc_server_options.max_conn_bytes): each call in flight counts
                               * that much until its reply is queued. 0: learnt from its replies,
                               * max_conn_bytes/16 before the first one (so at most 16 calls per
                               * connection before one is answered, and reading resumes once the
                               * bytes fall under 3/4 of the bound: 4 or 5 answered; give a hint
                               * for methods whose calls wait long, e.g. long polls, or their
                               * connection's other calls wait with them). Learnt from replies
                               * either way, late ones too (a reply after the server answered
                               * the call at its deadline is dropped, but its size counts).
                               * Over the bound the connection is held: no further request is
                               * read until replies go out, but its cancels and PINGs still are
                               * (up to a read buffer, 64 KiB, of requests waiting behind the
                               * hold), so a long poll held there can still be cancelled */
    /* Frees the registration's ctx: called once, with ctx, when the server is freed (at
     * arpc_server_destroy, or, when a handler was still running then, once the last of them
     * returned; listened or not), on that thread. Not called when the registration fails (ctx is still the
     * caller's). NULL: ctx is the caller's to free after destroy. */
    void (*ctx_free)(void *ctx);
    /* Deliver this method's requests to a completion queue instead of calling a handler (register
     * with fn and ctx NULL): each request arrives as an entry whose future is already complete
     * (release it) and whose tag is the arpc_request *; finish it with arpc_reply /
     * arpc_reply_error from any thread, as a handler would. With arpc_cq_fd in the application's
     * own poll loop (and a wrapped or pollable loop, arpc/loop.h), a single-threaded program
     * serves and calls on its one thread, replying when it likes. The application is the
     * request's handler until it replies: what the accessors give stays valid until then, on
     * any thread, even once the server answered the call in its place (its deadline, a stop:
     * the reply then returns what the caller was told) and after arpc_server_destroy. So
     * reply to every request taken, to free it (a request never replied to keeps its data and
     * the server's shell). Until then it also counts as a call in flight on its connection,
     * as a slow handler's does (max_calls_per_conn, the bytes it owes, a stop's grace), even
     * once the server answered it. The queue must outlive the server's stop (a destroy before
     * is refused: arpc/cq.h); a call that arrives once it is shut down (arpc_cq_shutdown) is
     * refused ARPC_EREJECTED (it did not run), and one delivered as the shutdown was made may
     * be queued after the consumers left: take it (arpc_cq_trynext until ARPC_ESHUTDOWN) or
     * the server's stop answers it ARPC_EABANDONED. Not with actor, group,
     * key, inline_on_loop or ctx_free (ARPC_EINVAL). */
    arpc_cq *queue;
    /* Take at-most-once calls only: a call that is not numbered (the client's semantics
     * ARPC_AT_LEAST_ONCE or ARPC_NO_RETRY, a client without an id, any JSON-RPC call) is
     * refused ARPC_EREJECTED (it did not run) with a message naming the method, and such a
     * one-way message is dropped (logged). For methods that must never run twice for one
     * request, e.g. those that log their effect with arpc_reply_durable: the server's reply
     * cache catches a numbered call's retries, nothing catches an unnumbered one's. */
    bool numbered_only;
    /* Unused, and never read: the tail padding of the struct as it ended at numbered_only,
     * which programs built then pass without having written it (docs/ABI.md). */
    uint8_t reserved_after_numbered_only[7];
    /* The method changes nothing (a read, a lookup, a status): a numbered (at-most-once) call
     * to it runs as an unnumbered one, as the built-ins do. Its reply is not kept in the reply
     * cache (nor counted in a client's share of it) and not written to the reply log: no
     * fsync per read on a durable server, and it is answered by a server whose log failed
     * (which refuses numbered calls). The price: a copy of a call (a retry after a lost
     * connection) runs it again, so declare it only where running a call twice is the same as
     * running it once and where a late copy changes nothing either: not for writes, however
     * idempotent (a late copy of put(x=1) that runs after put(x=2) undoes it). The
     * acknowledgements such calls carry still free the client's other replies. An effect given
     * with arpc_reply_durable is logged as for any unnumbered call. Not with numbered_only
     * (ARPC_EINVAL). */
    bool read_only;
} arpc_method_options;

/* opts may be NULL. With a log_dir, replays the log first (recover is called then). Errors:
 * ARPC_ENOMEM, ARPC_ESYSTEM, ARPC_EINVAL; with opts->tls: ARPC_ETLS (a certificate or key
 * that does not load; ARPC_EADDR in a build without TLS: arpc/tls.h); with a log: ARPC_EADDRINUSE (another server holds
 * the directory), ARPC_EPROTO (the log is damaged in a way a crash cannot explain, or it
 * remembers clients but its namespace.key is missing or is not the log's own (namespace.check),
 * or namespace.key is there but the log's segments are not: the server refuses to start
 * rather than forget calls; opts->errbuf says where and what the operator can do). */
ARPC_API int arpc_server_create_v(arpc_server **out, const arpc_server_options *opts, size_t opts_size);
#define arpc_server_create(out, ...) arpc_server_create_v((out), (__VA_ARGS__), sizeof(arpc_server_options))

/* Registers name ("Service.Method", at most 255 bytes) -> fn. mopts may be NULL. Actors and
 * groups named in mopts must outlive the server's stop (arpc_server_stop, or the destroy's):
 * a destroy of one before is refused (arpc/actor.h). All methods are registered before the first
 * arpc_server_listen (the registry is read without locks afterwards).
 * Names beginning "arpc." are the library's: every server (unless no_builtin_methods) answers
 *   arpc.methods  the registered method names, built-ins included, in registration order,
 *                 each followed by a line feed ("arpc.methods\narpc.stats\nkv.Get\n"); to a
 *                 JSON-RPC peer (arpc/jsonrpc.h), a JSON array of those it can call
 *                 (["arpc.methods","arpc.stats","kv.Get"]: not the numbered_only ones);
 *   arpc.stats    arpc_server_stats_json (arpc/stats.h), read while the call itself runs: it
 *                 counts in calls_in_flight and handlers_in_flight (an idle server says 1),
 *                 as a status page counts its own request;
 * both inline on the loop, the request body ignored; read-only, so a numbered (at-most-once)
 * call to either is answered as an unnumbered one: not kept in the reply cache, and answered
 * by a server whose reply log failed too (which refuses every numbered call).
 * Errors: ARPC_EINVAL (bad name, a name under "arpc.", no fn, or bad options), ARPC_EBUSY (name
 * taken, or already listening), ARPC_ESHUTDOWN (the server is stopping or stopped),
 * ARPC_ENOMEM. There is no errbuf: each refusal is logged, one
 * WARN line "cannot register method "NAME": <the rule broken>" (arpc/log.h). */
ARPC_API int arpc_server_register_v(arpc_server *s, const char *name, arpc_handler_fn fn, void *ctx,
                                    const arpc_method_options *mopts, size_t mopts_size);
#define arpc_server_register(s, name, fn, ctx, ...) \
    arpc_server_register_v((s), (name), (fn), (ctx), (__VA_ARGS__), sizeof(arpc_method_options))

/* Starts listening on addr (see arpc/client.h for the forms); may be called for several
 * addresses. bound (may be NULL) receives the address actually bound, e.g. with the port chosen
 * for "tcp://127.0.0.1:0", NUL-terminated (an address has at most 255 bytes: 256 always hold
 * it); untouched on failure. bound may be addr's own buffer. One too small for the address
 * fails the listen, ARPC_ETOOLARGE, nothing listening (a cut address would name another port).
 * boundlen 0 is as NULL. Errors: ARPC_EADDR (no or an
 * unknown scheme, a malformed or too long address, a host not of this machine), ARPC_EADDRINUSE
 * (the port is taken; a unix path that exists and is not a stale socket), ARPC_EINVAL (NULL, a
 * tls:// address on a server without arpc_server_options.tls, unix_mode beyond 0777),
 * ARPC_ESHUTDOWN (the server is stopping or stopped, or the application's loop it was
 * created on, arpc_server_options.loop, has stopped: nothing listens, and a server that
 * never listened still takes registrations), ARPC_ESYSTEM,
 * ARPC_ENOMEM. There is no errbuf: each failure's reason is logged, one WARN
 * line "cannot listen: ..." (arpc/log.h). */
ARPC_API int arpc_server_listen(arpc_server *s, const char *addr, char *bound, size_t boundlen);

/* Certificate rotation: replaces the certificate, key and CAs that the server's tls://
 * listeners present and check, for the connections accepted from now on (those open keep
 * theirs). tls is read as arpc_server_options.tls is (the files are loaded here, on the
 * caller's thread; the strings need not outlive the call); the listeners switch on the
 * server's loop before this returns. Any thread, the server's loop and handlers included, but
 * not concurrently with arpc_server_destroy (misuse, as any call racing it).
 * Errors, the server going on with what it had (errbuf, may be NULL, says why): ARPC_EINVAL
 * (NULL, a server created without tls options, no cert_file or key_file, require_client_cert
 * without CAs), ARPC_ETLS (a file that does not load, a key that does not match), ARPC_ENOMEM,
 * ARPC_ESHUTDOWN (stopping or stopped); ARPC_EADDR when built without TLS. */
ARPC_API int arpc_server_tls_reload(arpc_server *s, const arpc_tls_options *tls, char *errbuf, size_t errbuf_len);

/* Graceful stop: stops accepting, tells clients (GOAWAY), lets in-flight calls finish for up to
 * timeout_ms (ARPC_FOREVER: until they all have; 0: no grace), then answers calls still queued with ARPC_ESHUTDOWN (they did not run:
 * also those in an application's actor's mailbox, whose jobs then only let them go), waits for
 * handlers already running to return (a handler that never returns blocks stop: replying
 * later from another thread is fine), answers calls whose handlers have not replied
 * ARPC_EABANDONED (a reply made just before, still on its way to the loop, goes instead: the
 * stop waits for it, and with a reply log for its record, up to 5 s past the grace, before the
 * connections close) (they may have run; for an at-most-once call that is its result, which its
 * retries get too, and with a reply log it is logged, so a server restarted on the log answers
 * a re-sent copy with it and never runs the call again), and closes every connection, telling
 * the client of one that is owed nothing that calls it has not had answered were not read
 * (they did not run: docs/SEMANTICS.md). A one-way message whose handler has not started by
 * the end of the grace (queued on the pool, parked behind a full mailbox, or in an
 * application actor's mailbox) does not run: counted in oneways_dropped (arpc/stats.h), and
 * logged for an application actor's; one still running after the pool's handlers returned is
 * let go (its arpc_reply returns ARPC_ESHUTDOWN). With a
 * reply log, replies whose records are still being made durable keep their connections open
 * until they are, past the grace too (a reply made after it included: its handler ran past
 * it, and the stop waited for it), for up to 5 s after the handlers returned (the log's close
 * waits for the same disk anyway); a record slower than that is still written before stop
 * returns, but its reply is not sent: its caller gets it by sending the call again to a server
 * restarted on the log, or ends ARPC_ETIMEDOUT / ARPC_ECONNLOST ("may have run") if none
 * comes. Once stop returns, the log is closed and nothing of the
 * server runs on its loop any more. The grace ends as soon as no call is in flight. On a loop the application runs (arpc/loop.h: wrapped, pollable, or run
 * by its callers), a stop from a thread that may run it (the owner of a wrapped or pollable
 * loop, outside a step; any thread for the others) runs the loop itself while it waits and
 * nobody else runs it, so replies and the GOAWAY go out; from any other thread it waits for
 * the owner's steps (so an application whose loop thread must not block, e.g. for requests its
 * own events answer during the grace, calls stop from another thread and goes on stepping the
 * loop until stop returns there; on a loop any thread may run, the stop runs it meanwhile and the
 * owner's steps may return ARPC_EBUSY). Blocks; idempotent (a concurrent second stop waits for the first, running
 * the loop meanwhile in the same way); ARPC_EBUSY, doing nothing, from the server's loop thread
 * (inside a step or callback of its loop) or a pool handler (logged, one WARN line: a handler
 * that should end the server hands the stop to another thread).
 * Replies given after this are dropped. Returns ARPC_OK, ARPC_EBUSY, ARPC_EINVAL. */
ARPC_API int arpc_server_stop(arpc_server *s, int64_t timeout_ms);

/* Stops (with a 1 s grace) if needed, frees the server's loop (its own), pool and reply
 * cache, and releases the caller's handle. As the stop does, it waits for every handler
 * running on the server's worker pool to return: one that never returns (blocked on something
 * only the caller would release after destroy) blocks it for ever. A request the stop answered for its handler keeps
 * only its handle (freed by its late reply, see the top); what a handler still running then
 * (on the application's actors) refers to is freed when that handler is done with it (their
 * count is logged). A one-way message not finished by then is let go of as an unanswered call
 * (the stop logs their count): its handler's arpc_reply returns ARPC_ESHUTDOWN. Returns ARPC_OK;
 * ARPC_EBUSY, doing nothing, from the server's loop thread or a pool handler (it would wait
 * for itself; logged, as for arpc_server_stop); ARPC_EINVAL for NULL; a second destroy aborts
 * in debug builds (arpc/common.h, "API misuse"). */
ARPC_API int arpc_server_destroy(arpc_server *s);

/* ---- inside a handler ---- */

/* The arpc_request_* accessors below, given a NULL req (misuse), return NULL, false or 0 (and
 * arpc_request_data sets *len to 0); arpc_request_budget_ms returns 0. So do all but
 * arpc_request_seq, _is_oneway and _cancelled for a request the server answered in its
 * handler's place after the handler returned (see the top): what they return is lent until
 * then, so copy it before returning from a handler that replies later. Any thread, while the
 * request is not finished (a handler that replies later may hand it to another thread). */
/* The request's bytes and their count in *len (len may be NULL). Check *len before reading:
 * the bytes are whatever the caller sent. No alignment is promised (they may sit anywhere in
 * a read buffer): memcpy a multi-byte field out rather than cast the pointer. */
ARPC_API const void *arpc_request_data(const arpc_request *req, size_t *len);
ARPC_API const char *arpc_request_method(const arpc_request *req); /* NUL-terminated */
ARPC_API bool arpc_request_is_oneway(const arpc_request *req);
ARPC_API uint64_t arpc_request_client_id(const arpc_request *req);
/* Who sent the call: the transport, the peer's address, its uid/gid/pid where known and the
 * identity the server's checks gave it (arpc/auth.h). Valid until req is finished. */
ARPC_API const arpc_peer_info *arpc_request_peer(const arpc_request *req);
/* The subject of the client's certificate, verified by the server's CAs (tls:// with a client
 * certificate, see arpc/tls.h), as one line in RFC 2253's order, last name part first (a
 * certificate made with `openssl req -subj "/O=Example/CN=alice"` gives "CN=alice,O=Example";
 * "/CN=alice/O=Example" gives "O=Example,CN=alice"), control and non-ASCII bytes escaped as
 * \XX (a newline is "\0A"), so it is one line of printable ASCII; NULL for any other
 * connection (a verified client whose subject the server could not copy is refused, never
 * served without it). Valid until the request is finished; any thread. */
ARPC_API const char *arpc_request_peer_subject(const arpc_request *req);
/* The call's at-most-once sequence number, 0 for a call that is not numbered. */
ARPC_API uint64_t arpc_request_seq(const arpc_request *req);

/* What is left of the caller's budget, in ms (rounded up): the deadline_ms the request
 * carried, counted from when it arrived (clocks are never compared across machines).
 * ARPC_FOREVER when the caller set none; 0 once it has passed. A handler with slow work can
 * give up early: the caller stops waiting at that point anyway, and the server answers it
 * ARPC_ETIMEDOUT then if the handler has not replied. (A call whose budget ran out before its
 * handler started is not run: the server refuses it ARPC_EEXPIRED, even while it still waits
 * for a busy actor, and does so an eighth of the budget (at most 5 ms) before the deadline, so
 * that the refusal reaches the caller before its own timer ends the call ARPC_ETIMEDOUT. A
 * handler that started has the whole budget.) */
ARPC_API int64_t arpc_request_budget_ms(const arpc_request *req);

/* The same deadline as a time on arpc_now_ns's clock; 0 when the caller set none. To pass the
 * caller's deadline on to a call the handler makes, set it as that call's
 * arpc_call_options.deadline_at_ns: once it has passed the call ends at once, not sent. (Not
 * arpc_request_budget_ms as the call's deadline_ms: its 0 once passed means the client's
 * default deadline there, none unless set.) */
ARPC_API uint64_t arpc_request_deadline_ns(const arpc_request *req);

/* True once the caller cancelled the call (arpc_future_cancel sends a CANCEL frame to a server
 * that understands it: on the call's connection, or, for an at-most-once call whose connection
 * broke, naming it by its seq on the client's next one), or the caller went away (its goodbye: arpc_client_close; or, for a
 * call that is not at-most-once, its connection closed: nobody can get the answer), or the
 * server answered it in the handler's place (its deadline passed, or a stop's grace ended: the
 * caller no longer waits). A call cancelled before its handler started does not run. An
 * at-most-once call whose connection was lost without a goodbye is not cancelled: its client
 * may send it again, and that copy waits for this run's result (or its caller's cancel comes
 * on the client's next connection). A one-way message is never cancelled by its client; at the
 * end of a stop's grace one not yet started does not run, and one whose handler runs on an
 * application's actor (or replies later) is cancelled (a handler still running on the worker
 * pool is waited for, not cancelled). docs/SEMANTICS.md,
 * "The client goes away", "A call cancelled while disconnected". Any thread. */
ARPC_API bool arpc_request_cancelled(const arpc_request *req);

/* Calls fn(req, arg) once when the call is cancelled (arpc_request_cancelled): by the caller
 * (on the server's loop thread when the first CANCEL arrives, or when the caller went away:
 * its goodbye is read, or its connection closes), or by the server answering it in the
 * handler's place (ARPC_ETIMEDOUT at its deadline, ARPC_EABANDONED at a stop's grace; on the
 * loop thread then), or at once on the calling thread if it was cancelled already. fn must not
 * block; it may reply, which is how a handler that waits for something (a long poll) finishes
 * its request when nobody waits any more (to a caller gone, the reply is dropped and returns
 * ARPC_OK; after the server's answer it is dropped and returns ARPC_ETIMEDOUT or
 * ARPC_ESHUTDOWN, as any late reply). Not called once the handler
 * has replied: a callback set after the reply (still inside the handler) is accepted, ARPC_OK,
 * and never called, unless the call was cancelled before (then at once, as above). At most one callback per request (ARPC_EBUSY). From the thread that holds the
 * request (its handler, or the thread it handed the request to), never from two threads at
 * once for one request (the second's refusal is promised only to calls one after the other).
 * Errors: ARPC_EINVAL (req or fn NULL), ARPC_EBUSY. */
typedef void (*arpc_request_cancel_fn)(arpc_request *req, void *arg);
ARPC_API int arpc_request_on_cancel(arpc_request *req, arpc_request_cancel_fn fn, void *arg);

/*
 * Sends data (copied) as the reply and finishes req.
 *
 * In short:
 *   - Exactly once per request (arpc_reply or arpc_reply_error), from any thread; afterwards
 *     req belongs to arpc again: in every case below req is finished.
 *   - A NULL data is an empty reply, whatever len says (so for arpc_reply_durable).
 *   - Returns ARPC_OK when the reply is queued (if the client's connection is gone by then it
 *     is dropped); the other returns say the reply was not sent, and why (below). For a
 *     one-way request it only finishes req.
 *
 * Returns:
 *   ARPC_OK         queued (or dropped for a connection gone)
 *   ARPC_ESHUTDOWN  the server has stopped: dropped (for a one-way request: once a stop let
 *                   go of it, see arpc_server_destroy)
 *   ARPC_ETIMEDOUT  the server already answered the caller at its deadline: dropped, even if
 *                   the server has stopped since. An at-most-once call's result is still kept
 *                   for the caller's retries, and an arpc_reply_durable effect, any call's, is
 *                   still logged; ARPC_ESHUTDOWN instead once the server has stopped, when
 *                   nothing can be kept (an at-most-once call's, or any call's on a server with
 *                   a log_dir)
 *   ARPC_ETOOLARGE  larger than the client accepts, or than ARPC_DURABLE_MAX with a reply
 *                   log: the caller gets ARPC_ETOOLARGE instead
 *   ARPC_ENOMEM     the reply could not be encoded: the caller is answered ARPC_EABANDONED,
 *                   and so are an at-most-once call's retries
 *   ARPC_EINVAL     a NULL req (nothing done); or a second reply for the same request while
 *                   its handler is still running (refused, and logged)
 *
 * After the handler returned and the request was answered, req is gone and must not be used,
 * as after free(): until a new request takes its handle (the server reuses handles) such a use
 * of any arpc_request_* function or reply is reported as misuse (arpc/common.h: an abort in
 * debug builds, else ARPC_EINVAL / NULL / 0); once one has, it acts on that request.
 */
ARPC_API int arpc_reply(arpc_request *req, const void *data, size_t len);

/* Fails the call with ARPC_EHANDLER and msg (may be NULL) and finishes req. As arpc_reply. */
ARPC_API int arpc_reply_error(arpc_request *req, const char *msg);

/* The most one reply log record holds: an effect and its reply together, or a checkpoint. */
#define ARPC_DURABLE_MAX ((size_t)(1u << 30) - 65536u)

/* Exactly-once: replies with data, and logs effect (what the call changed, in the
 * application's own encoding) in the same record as the reply. The reply leaves only once the
 * record is durable (per the fsync policy), and after a restart the server's recover callback
 * gets every logged effect again, in order (every non-empty one: an effect of 0 bytes, a call
 * that changed nothing, is logged as a plain reply and not handed back, so state must not
 * count calls through empty effects): an application that applies each effect to its
 * state once, and rebuilds its state from them, reflects every call exactly once across
 * crashes -- a call whose record did not make it to disk has no effect and was never answered,
 * so its client's retry runs it. Call it from the thread that applies the effects to the
 * state (e.g. the state's single actor), so that log order is application order. For a
 * one-way request the effect is logged all the same (in that order; nothing waits for it),
 * and so it is for a call the server already answered at its deadline (ARPC_ETIMEDOUT, the
 * reply dropped), numbered or not: the state holds the effect, so the log must too.
 * Without a log_dir it is arpc_reply (the effect is dropped, with a warning once), but for
 * the size bound below, checked either way. Returns as arpc_reply,
 * and ARPC_EINVAL for a NULL req or a NULL effect with effect_len > 0. ARPC_ENOMEM means the
 * effect was not logged (its caller is answered ARPC_EABANDONED, it may have run): a state
 * that applied it is now ahead of the log, so the server stops taking at-most-once calls, as
 * after a record that failed (logged; ARPC_ESYSTEM to every numbered call) until it is
 * restarted, when the state is rebuilt from the log without it.
 * ARPC_ETOOLARGE when effect_len + len is over ARPC_DURABLE_MAX (one log record holds both):
 * nothing is done, req is still the handler's to answer another way. */
ARPC_API int arpc_reply_durable(arpc_request *req, const void *effect, size_t effect_len, const void *data,
                                size_t len);

/* Logs the application's state as a checkpoint: it must reflect every effect passed to
 * arpc_reply_durable before this call, from the same thread, and no other: an effect already
 * in the state but passed after this call (or on another thread, whose order against this
 * call the log does not know) is recovered on top of a state that holds it, or not at all.
 * So call it from the thread that applies the effects, between two of them (the loop's own
 * thread, for an inline handler, included: there it takes its place in the log at once, as a
 * reply made there does). At the next
 * start, recover gets this state and then only the effects logged after it, and the log can
 * drop older ones.
 * state is copied. Errors: ARPC_EINVAL (s NULL, state NULL with len > 0, or no log_dir), ARPC_ETOOLARGE (len over
 * ARPC_DURABLE_MAX: nothing logged), ARPC_ESHUTDOWN, ARPC_ENOMEM. */
ARPC_API int arpc_server_checkpoint(arpc_server *s, const void *state, size_t len);

#ifdef __cplusplus
}
#endif

#endif
