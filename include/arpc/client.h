/*
 * arpc/client.h: calling remote methods.
 *
 * A client holds one connection to one server address and may be used by any number of
 * threads at once. Calls are pipelined: many may be outstanding, replies arrive in any
 * order and are matched to their calls by call id (xid) on the client's loop thread.
 *
 * Four ways to call (all copy the request bytes before returning; the caller keeps them):
 *   arpc_call        blocking: z = fn(x, y)
 *   arpc_call_async  returns an arpc_future (wait, poll, then-callback, cancel)
 *   arpc_go          delivers the completed future to an arpc_cq (Go's Client.Go)
 *   arpc_notify      one-way: no reply, no completion
 * The *_opts variants take an arpc_call_options (deadline and semantics).
 *
 * Failures and retries. When the connection breaks, the client reconnects by itself
 * (exponential back-off with jitter, see the options) under the same client id, and sends
 * again every call that may still succeed, according to its semantics:
 *   ARPC_AT_MOST_ONCE  (the default) the call carries a sequence number that survives
 *                      reconnects; it is sent again with the same number, and the server runs
 *                      it at most once: a duplicate waits for, or is answered from, the
 *                      server's reply cache. Safe for anything, money included. One such call
 *                      left unanswered for long (a long poll without a deadline) holds the
 *                      acknowledgement's floor; the client acknowledges the calls finished
 *                      beyond it in ACK frames, so the server keeps few of their replies. A
 *                      server that predates them keeps them all and in time refuses this
 *                      client's new numbered calls ARPC_EOVERLOADED (docs/SEMANTICS.md).
 *   ARPC_AT_LEAST_ONCE sent again without a number: it may run more than once. For
 *                      idempotent methods (reads, puts of a whole value); cheaper on the server.
 *   ARPC_NO_RETRY      never sent again: if the connection breaks after it was sent, the call
 *                      ends with ARPC_ECONNLOST.
 * Calls started while there is no connection wait for one (bounded by their deadline and by
 * reconnect_give_up_ms); they are not failed at once. A one-way message is sent at most once
 * and never again: if there is no connection when it reaches the loop, it is dropped (but
 * after the server closed an idle connection, it waits for the connection it starts, and
 * reaches the server in its place among the calls made meanwhile).
 *
 * Outcomes of a call (the future's status), and what the caller can conclude:
 *   ARPC_OK           the handler's reply bytes are the result: it ran, once while the server
 *                     lived (a server that crashed before this reply was on its disk, or had
 *                     no reply log, ran the call's retry again: what the first run did outside
 *                     arpc_reply_durable's effect may have happened too; docs/SEMANTICS.md;
 *                     and a method the server registered read_only, arpc/server.h, runs a
 *                     retry again whatever the semantics: it changes nothing)
 *   ARPC_EHANDLER     the handler ran and failed; the result holds its message (once, as for
 *                     ARPC_OK)
 *   ARPC_ENOMETHOD    no such method on the server (did not run); the result holds its message
 *   ARPC_ETIMEDOUT    the deadline passed after the call was sent: it may still run (at most
 *                     once, for an at-most-once call to a method not read_only). The result says whose clock ended it:
 *                     the server's answer at the deadline, or the client's own timer
 *   ARPC_EUNREACHABLE the call was never sent (or, sent, never read by a server that stopped
 *                     and said so, docs/SEMANTICS.md): no connection to the server could be made
 *                     before the deadline (or within reconnect_give_up_ms), or its deadline
 *                     had passed when it was made (arpc_call_options.deadline_at_ns) or
 *                     passed before the client's loop took it up, or while its request
 *                     still waited unwritten behind a server that was not reading (taken
 *                     back out: never sent), or the client is down for
 *                     good (no_reconnect, its connection lost before the call left whole,
 *                     or before it was made), or it had no memory to arm its next reconnect
 *                     attempt (the next call tries again): it did not run. Without a
 *                     connection the result holds why the last attempt failed ("no connection
 *                     to the server: " and arpc_client_last_error's words: a refused
 *                     connect, a server certificate not trusted, ...)
 *   ARPC_ECONNLOST    the outcome is unknown: the call was sent, the connection broke, and it
 *                     could not be settled: it was ARPC_NO_RETRY; or the server came back
 *                     without its memory of the call (a restart with no reply log, or after
 *                     forgetting this client for being idle); or no connection came back
 *                     within reconnect_give_up_ms; or reconnecting is turned off (a call
 *                     not yet sent whole then ends ARPC_EUNREACHABLE). The result says which
 *                     ("sent, then its connection was lost, and ...") and, in parentheses,
 *                     how the connection was lost. Also a call sent before that the client
 *                     had no memory to send again or await ("sent, then the client had no
 *                     memory ..."; ARPC_ENOMEM if no send of it may have reached a server)
 *   ARPC_EEXPIRED     its budget ran out on the server before a handler started it (it
 *                     arrived late, or waited for a busy actor): did not run. The server
 *                     refuses it a little before the deadline (an eighth of the budget, at
 *                     most 5 ms), so the refusal normally arrives before this client's own
 *                     timer; if it does not (a slow network, a late server), the call ends
 *                     ARPC_ETIMEDOUT
 *   ARPC_EOVERLOADED  the server had no room (its reply cache is full): did not run
 *   ARPC_ETOOLARGE    request larger than the server's or the client's frame limit (not sent),
 *                     or the reply larger than the client's limit (the handler ran; the
 *                     reply was not sent)
 *   ARPC_ESHUTDOWN    the client was closed before the call was sent, or the server is
 *                     shutting down (did not run: it read the call and refused it, its
 *                     grace over); a call already sent when the client closes ends
 *                     ARPC_ECANCELLED (it may run). A call made after the server said it
 *                     is going (GOAWAY) waits for a server at the address, as any call
 *                     while the client reconnects: ARPC_EUNREACHABLE at its deadline if none
 *                     comes (did not run)
 *   ARPC_EREJECTED    the server refused the call (did not run)
 *   ARPC_EAUTH        a reconnect was refused: the server no longer takes the client's
 *                     credentials (did not run; a call sent on an earlier connection ends
 *                     ARPC_ECONNLOST instead); every later call ends so too
 *   ARPC_ECANCELLED   the caller cancelled it (a server that started it may finish it)
 *   ARPC_EABANDONED   the server gave up on the call: it stopped before the handler replied,
 *                     or could not make the reply (no memory), or its reply log failed, or
 *                     (to a retry) it had not kept the reply, over its reply cache's bound; or
 *                     this client had no memory to take the reply: it may have run (at most
 *                     once for an at-most-once call, whose retries get this too)
 *   ARPC_ESYSTEM      the server's reply log failed earlier: it runs no at-most-once call
 *                     until restarted (this send did not run; an earlier send of the same
 *                     call may have)
 *   ARPC_EPROTO       the server ended the connection for a protocol break, or sent an
 *                     answer this client could not read: as ARPC_EAUTH, every later call
 *                     ends so too (one sent on that connection ends ARPC_ECONNLOST). So does
 *                     a connection the server ended with ARPC_ETOOLARGE (a frame over its
 *                     limit) or ARPC_EREJECTED, and, with no_reconnect, ARPC_EOVERLOADED:
 *                     every later call (and arpc_notify) ends with that code, and
 *                     arpc_client_last_error has the server's words
 *   ARPC_ENOMEM       the client had no memory to start or send the call (not sent)
 *   ARPC_EINVAL       an argument was refused (not sent); the result holds which and why
 *                     ("the method name is empty", ...)
 *   ARPC_EBUSY        (the blocking arpc_call and arpc_call_opts return it, no future has
 *                     it) called on the client's own loop thread, where it would wait for
 *                     itself: not sent
 * docs/SEMANTICS.md's table says the same, with what to do about each.
 * Every call completes: with a deadline it completes by then; without one, it completes when
 * the server answers, or when no connection could be had for reconnect_give_up_ms. (Each new
 * connection starts that wait over: a path that lets the HELLO through and then breaks, again
 * and again before the answer comes, holds a call without a deadline for as long as it does
 * so. Only a deadline bounds every case.)
 *
 * After fork, a client made in the parent is refused in the child (its calls end
 * ARPC_EINVAL, arpc_go's through its queue; its close returns it; a cancel sends nothing; an
 * ERROR line says why): its connection and call numbers are the parent's, and its loop thread
 * is not in the child. A child makes its own clients (docs/SEMANTICS.md, "API misuse").
 */
#ifndef ARPC_CLIENT_H
#define ARPC_CLIENT_H

#include "arpc/auth.h"
#include "arpc/common.h"
#include "arpc/cq.h"
#include "arpc/future.h"
#include "arpc/loop.h"
#include "arpc/tls.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct arpc_client arpc_client;

enum arpc_call_semantics {
    ARPC_SEMANTICS_DEFAULT = 0, /* in arpc_call_options: the client's; in the client's options: at-most-once */
    ARPC_AT_MOST_ONCE = 1,
    ARPC_AT_LEAST_ONCE = 2,
    ARPC_NO_RETRY = 3,
};

typedef struct arpc_client_options {
    /* The loop that owns the connection. NULL: the client starts and owns a loop thread. If
     * this loop is stopped first, the client's calls end then as at arpc_client_close, and
     * later ones ARPC_ESHUTDOWN; the client must still be closed. While the server has closed
     * an idle connection and nothing needs a new one, the client keeps no watcher active: a
     * wrapped libev loop run until it has nothing to do (ev_run(ev, 0)) may return then. */
    arpc_loop *loop;
    int64_t connect_timeout_ms;  /* one connection attempt, through the server's HELLO; 0: 5000.
                                  * The heartbeat starts at the HELLO: it does not cut this short.
                                  * Negative (ARPC_FOREVER): no bound but the heartbeat's, from
                                  * the connect, for a server that accepts and never answers
                                  * (ARPC_ETIMEDOUT after heartbeat_ms x (misses + 1)), or
                                  * from the first try, for a unix server's full backlog */
    int64_t default_deadline_ms; /* for calls passing deadline 0; 0 here: no deadline */
    uint32_t max_frame;          /* largest frame body sent or taken: a request's counts its
                                  * bytes + its method name + 24, a reply's its bytes alone
                                  * (docs/PROTOCOL.md); 0: 16 MiB (as the server's); at
                                  * least ARPC_MAX_FRAME_MIN (1 KiB: arpc/common.h). The
                                  * server's HELLO is read whatever it says */
    uint64_t client_id;          /* 0: random. At-most-once holds across the client's reconnects
                                  * either way; a chosen id used again by another client object
                                  * (the next process) names a new client to the server (the
                                  * HELLO's incarnation), never the old one's cached replies */
    enum arpc_call_semantics semantics; /* for calls that do not say; 0: at-most-once; a value
                                         * not in the enum: connect fails ARPC_EINVAL (said in
                                         * errbuf) */
    uint32_t reconnect_min_ms;   /* first delay before reconnecting; 0: 10, or
                                  * reconnect_max_ms if smaller. Over a reconnect_max_ms
                                  * set (not 0): connect fails with ARPC_EINVAL (said in
                                  * errbuf) */
    uint32_t reconnect_max_ms;   /* longest delay between attempts; 0: 1000, or
                                  * reconnect_min_ms if larger. The delays start
                                  * over once a connection proved itself (a reply came on it,
                                  * or it lasted this long), not at its HELLO */
    int64_t reconnect_give_up_ms; /* a call waits this long at most for a connection, from when
                                   * its own broke (or from its start, if none was up); 0: 30000;
                                   * ARPC_FOREVER: only its deadline bounds it */
    bool no_reconnect;           /* connection loss ends the client: a call sent on it ends
                                  * ARPC_ECONNLOST (may have run), one not yet sent whole, and
                                  * every later call, ARPC_EUNREACHABLE (did not run) */
    uint32_t heartbeat_ms;       /* PING after this long without input from the server (and free the
                                  * blocks kept for large requests); 0: 5000 */
    unsigned heartbeat_misses;   /* the connection is dead after this many unanswered; 0: 3 */
    /* If not NULL, a failed arpc_client_connect writes why into errbuf (one line a user can act
     * on: "connection refused by 127.0.0.1:7000", "name resolution failed for db.example: ...",
     * "peer at tcp://... is not an arpc server"). ARPC_ERRBUF_SIZE is a good size. */
    char *errbuf;
    size_t errbuf_len;
    /* A credential sent in every HELLO, for a server that checks one (arpc/auth.h); copied at
     * connect. At most ARPC_AUTH_TOKEN_MAX_BYTES (else ARPC_EINVAL). Clear text unless the
     * transport encrypts. A server refusing it makes connect fail with ARPC_EAUTH. */
    const void *auth_token;
    size_t auth_token_len;
    /* TLS for a tls:// address (arpc/tls.h): CAs, the name to check, a certificate for mutual
     * TLS. NULL: the system's CAs and the address's host name. Read during connect only. */
    const arpc_tls_options *tls;
    /* true: arpc_client_connect returns once the address is resolved and the first attempt
     * started, without waiting for it (an application whose own loop drives a pollable or
     * caller-driven client loop is never blocked by a server that is slow to answer); a failed
     * first attempt is retried as a reconnect is (back-off), and calls wait for the connection
     * meanwhile, bounded by their deadlines and reconnect_give_up_ms (ARPC_EUNREACHABLE: not
     * sent), and so do one-way messages (arpc_notify: at most 1024 and 64 MiB, and within
     * reconnect_give_up_ms too). arpc_client_last_error says what is in the way. With no_reconnect, a failed
     * first attempt ends the client: its calls end ARPC_EUNREACHABLE. */
    bool connect_in_background;
    /* How long arpc_client_close may wait for the server to read what is queued for it
     * (one-way messages, requests, the goodbye) when its socket is full. 0: 1000; negative:
     * no wait (what the socket takes at once is written, the rest dropped).
     * There is no wait for ever: close is bounded by this. The heartbeat stops while close
     * waits (a PING could meet a write side already shut), so a server that stops answering
     * then (a stopped process, a path gone dead) holds close this long: a huge value is a
     * close that may not return for as long. See arpc_client_close. */
    int64_t close_linger_ms;
    /* A host name (tcp://, tls://) is resolved at connect; when an attempt to connect after
     * that fails (refused, timed out, no HELLO), the name is looked up again on a thread of
     * arpc's (a lookup may block), at most once per this many ms, counting connect's lookup,
     * and the attempts after its answer go to the addresses it gives: a server that moved is
     * found. Only a failure asks: a client that reconnects to an old address that still
     * answers stays there. A lookup that fails keeps the addresses there were; one still
     * under way when a connection is made is dropped; one that never returns (a resolver that
     * hangs) keeps its thread, which is never joined, and no other is started for this
     * client. At most 4 lookups run in the process at once (a failed attempt that finds them
     * busy starts none; a later one asks again, and a WARN at most once a minute says so), so
     * clients made over and over against a hung resolver do not pile up threads; 4 lookups
     * that never return hold up every client's. A lookup's thread may outlive every arpc object:
     * libarpc.so is linked -z nodelete (dlclose leaves it mapped), and a plugin that links
     * libarpc.a into itself must be linked -Wl,-z,nodelete too (docs/ABI.md).
     * 0: 30000 (gRPC's least time between DNS lookups); negative: never (the
     * addresses found at connect are the client's for its life). Numeric addresses, unix://
     * and inproc:// are never looked up again. arpc_client_stats counts the lookups. */
    int64_t re_resolve_ms;
} arpc_client_options;

/* Room for any error line arpc writes into an errbuf: a reply log's refusal names its path,
 * an offset and the operator's ways out (256 cut the last of them off). */
#define ARPC_ERRBUF_SIZE 512

typedef struct arpc_call_options {
    int64_t deadline_ms; /* 0: the client's default; ARPC_FOREVER: none; otherwise ms from now */
    enum arpc_call_semantics semantics; /* 0: the client's; another value: the call ends ARPC_EINVAL */
    /* Unused, and never read: the tail padding of the struct as it ended at semantics. */
    uint32_t reserved_after_semantics;
    /* The deadline as a time on arpc_now_ns's clock (arpc/common.h); 0: none given here
     * (deadline_ms says). For a deadline that is a time, not a span: one passed on from a
     * handler's caller (arpc_request_deadline_ns, arpc/server.h) or the end of an overall
     * budget. A time already past ends the call at once ARPC_EUNREACHABLE (not sent: it did
     * not run), where a budget computed by subtraction and passed as deadline_ms would be 0
     * (the client's default) or negative (none) just then. Set with deadline_ms: the call
     * ends ARPC_EINVAL. */
    uint64_t deadline_at_ns;
} arpc_call_options;

/* Connects to "tcp://host:port", "tls://host:port" (arpc/tls.h: opts->tls), "unix:///path"
 * ("unix://rel/path": from the working directory) or "inproc://name", blocking up to
 * connect_timeout_ms (which covers the server's HELLO answer; ARPC_FOREVER waits without
 * limit for a server that answers, and gives up on one that accepts and never says HELLO
 * after the heartbeat's misses: ARPC_ETIMEDOUT). One attempt (every address a name resolves to, in turn): a server that is not there
 * now is reported now (a unix server whose listen backlog is full is there: it is tried again,
 * 1 to 50 ms apart, within connect_timeout_ms, or the heartbeat's bound without one); once
 * connected, the client reconnects by itself, to the addresses the name resolved to at connect, and looks the name up again when those keep failing
 * (opts->re_resolve_ms) (or, with
 * opts->connect_in_background, returns at once and keeps trying: see there). Not from a task on
 * opts->loop (ARPC_EBUSY: connecting waits for that loop). opts may be NULL. Errors:
 * ARPC_EADDR (malformed address, or a name that does not resolve), ARPC_ECONNREFUSED,
 * ARPC_ETIMEDOUT, ARPC_EPROTO (the peer is not an arpc server), ARPC_EAUTH (the server refused
 * the client's credentials: its token, or its uid), ARPC_EREJECTED or ARPC_ETOOLARGE (the
 * server refused the connection so, e.g. a HELLO over its limit), ARPC_EOVERLOADED (the server has
 * max_connections open, arpc/server.h, or no descriptor or memory for the connection; once
 * connected, a client refused so at a reconnect tries again after its back-off, its calls
 * waiting), ARPC_ETLS (tls://: the handshake failed,
 * e.g. a certificate not trusted; or a certificate or key that does not load), ARPC_ENOMEM,
 * ARPC_ESYSTEM, ARPC_EINVAL (out or addr NULL, an options field this library lacks set, an
 * auth_token over ARPC_AUTH_TOKEN_MAX_BYTES, a semantics not in the enum), ARPC_EBUSY (from a
 * task on opts->loop),
 * ARPC_ESHUTDOWN (opts->loop was stopped: before the connect, which then makes no attempt, or
 * while it ran);
 * opts->errbuf says why in words, and *out is NULL (out not NULL) after any failure. */
ARPC_API int arpc_client_connect_v(arpc_client **out, const char *addr, const arpc_client_options *opts,
                                   size_t opts_size);
#define arpc_client_connect(out, addr, ...) \
    arpc_client_connect_v((out), (addr), (__VA_ARGS__), sizeof(arpc_client_options))

/*
 * Closes the client: ends every pending call, tells the server, waits a bounded time for it
 * to read what was queued, waits for the client's loop to let go of it, and frees it (and its
 * loop, if the client owns one).
 *
 * In short:
 *   - A call never sent ends ARPC_ESHUTDOWN (it did not run); a call sent ends
 *     ARPC_ECANCELLED (the server may have run it, or may still).
 *   - One-way messages already accepted are written as the server reads them; close waits
 *     at most opts->close_linger_ms (1 s by default) for that, so it never hangs.
 *   - Returns ARPC_OK; ARPC_EBUSY, doing nothing, on the client's own loop thread (e.g. in a
 *     then-callback: it would wait for itself); ARPC_EINVAL for NULL. A second close is
 *     misuse (it aborts in debug builds: arpc/common.h, "API misuse"); so is any use of c
 *     after close returned.
 *   - Threads: do not start calls from other threads that may race with close (c may be
 *     freed under them). Calls other threads are already inside (arpc_call, arpc_go,
 *     arpc_notify, ...) are waited for and ended as above; those threads never touch the
 *     freed client. A blocking call on a client on an application's loop drives that loop
 *     while it waits: the loop must outlive it (destroy the loop after such calls returned).
 *
 * In detail:
 *   - Never sent (ARPC_ESHUTDOWN) includes a call waiting for a connection, and one whose
 *     request still waited whole in the client's output queue and was taken back out (a look
 *     at the 64 frames behind the one being written and the 64 newest, for each call: a
 *     request further in is sent as before). Sent (ARPC_ECANCELLED) includes a call waiting to
 *     be sent again after its connection broke; as for a cancel, a started handler may
 *     finish, and the server cancels it when it reads the close's goodbye.
 *   - A call started on c while close runs (a then-callback that close's completions run, on
 *     the client's loop thread, retrying, say) is not sent: it ends ARPC_ESHUTDOWN ("the
 *     client is closing"), arpc_notify returns ARPC_ESHUTDOWN, and arpc_client_last_error and
 *     the other queries still answer.
 *   - The goodbye: before closing, the client tells the server it will re-send nothing (when
 *     it has a connection), so the server drops its cached replies at once and cancels the
 *     client's calls still running (their handlers' on_cancel runs).
 *   - Last words: what is queued for the server when close begins (one-way messages
 *     arpc_notify accepted, requests of calls that have just ended ARPC_ECANCELLED, the
 *     goodbye last) leaves as the server reads it. Close waits, on the calling thread (the
 *     loop goes on serving whatever else it serves), until the server has read all of it and
 *     closed its end: one round trip for a server that reads promptly, and for one that holds
 *     this connection's input (its calls over the server's bounds) unless a one-way message
 *     waits behind the hold (then until the server reads it); close_linger_ms at most (over
 *     TLS too: its close says close_notify and waits the same).
 *   - After the linger the connection is closed; what never left whole is dropped and named
 *     in one WARN line, with the count of one-way messages among it. As the server had not
 *     ended its stream, what it had not read is lost too, which the client cannot know: a
 *     second WARN line says how many one-way messages were written on that connection (an
 *     upper bound: all since its HELLO). A message whose arpc_notify another thread was inside
 *     as the close began may reach the loop after the close's step: dropped, and counted in a
 *     WARN line of the close's own. So a one-way message accepted is read by the server, or
 *     counted in those lines, or among those the linger's line says may be lost.
 *   - A close that does not wait (a negative close_linger_ms: the socket takes what it takes;
 *     a loop stopping, opts->loop, ends the wait at once), or whose connection ended first,
 *     says what never left whole, but not what the server had not read of what did.
 */
ARPC_API int arpc_client_close(arpc_client *c);

/* deadline_ms: 0 = the client's default, ARPC_FOREVER = none (any negative value too),
 * otherwise ms from now: so 0 and negatives never mean "already passed". A deadline computed
 * as what is left of a budget, or passed on from a handler's caller, goes in
 * arpc_call_options.deadline_at_ns as a time instead. One past
 * what the clock holds (about 584 years from the clock's start, ~1.8e13 ms) is none. The wire
 * carries a budget of at most 2^32-1 ms (~49.7 days): a longer one reaches the server as that
 * (arpc_request_budget_ms), while the client's own timer keeps the whole deadline. */

/*
 * Blocking call: z = fn(x, y). Returns the call's outcome (the codes above).
 *
 * In short:
 *   - method: "Service.Method", 1 to 255 bytes; req is copied before the call returns.
 *   - *reply and *reply_len are set on every outcome (NULL / 0 unless data came back). Free
 *     *reply with arpc_free whenever it is not NULL, whatever the outcome (arpc_free(NULL)
 *     does nothing). reply may be NULL to discard it, reply_len NULL when the size is not
 *     wanted.
 *   - Any thread but the client's own loop thread: there it returns ARPC_EBUSY without
 *     calling (it would wait for itself: use arpc_call_async there).
 *
 * In detail:
 *   - Data comes back with ARPC_OK, and as a message with ARPC_EHANDLER, ARPC_ENOMETHOD,
 *     ARPC_EINVAL and ARPC_EUNREACHABLE without a connection; other errors may carry one too
 *     (e.g. ARPC_ETOOLARGE or a server's ARPC_EREJECTED). A message is followed by a NUL byte
 *     not counted in *reply_len (it may be printed with %s; the same holds for a future's
 *     data after an error). An empty ARPC_OK reply may still be a buffer, with *reply_len 0.
 *   - From a handler, it blocks the handler's thread: a call back to the handler's own
 *     server needs another thread there to run it, so from an inline_on_loop handler (the
 *     loop cannot read the request), or one whose pool has one worker or whose method runs
 *     on one actor (nothing else can run it), it waits until its deadline (for ever without
 *     one). There, use arpc_call_async with arpc_future_then and reply from the callback.
 */
ARPC_API int arpc_call(arpc_client *c, const char *method, const void *req, size_t req_len,
                       void **reply, size_t *reply_len, int64_t deadline_ms);

/* Starts a call and returns its future (the caller owns one reference). Every outcome,
 * including immediate failures such as a closed client, arrives through the future. req is
 * copied into the call on the caller's thread (the call keeps it to send it again after a
 * reconnect), so req may be reused at once; a large one costs its copy there (a few ms for
 * 4 MiB).
 * The call holds its own reference until it completes, so releasing yours does not cancel
 * the call (fire and forget); use arpc_future_cancel for that.
 * Returns NULL only when memory for the future itself cannot be had. */
ARPC_API arpc_future *arpc_call_async(arpc_client *c, const char *method, const void *req,
                                      size_t req_len, int64_t deadline_ms);

/* Starts a call whose completed future is delivered to cq with tag. Returns ARPC_OK (the
 * outcome will reach cq, failures included, a closed or NULL client's too), ARPC_ENOMEM,
 * ARPC_ESHUTDOWN for a queue shut down (arpc_cq_shutdown), or ARPC_EINVAL for a NULL cq or
 * one destroyed (misuse, arpc/common.h); on an error nothing will reach cq and nothing was
 * sent. It hands
 * out no future, so the call cannot be cancelled: for one you may cancel, start it with
 * arpc_call_async, attach the future with arpc_cq_attach (arpc/cq.h), keep it, and cancel it
 * with arpc_future_cancel (it then reaches cq as ARPC_ECANCELLED). */
ARPC_API int arpc_go(arpc_client *c, const char *method, const void *req, size_t req_len,
                     int64_t deadline_ms, arpc_cq *cq, void *tag);

/* The same calls with per-call options (o may be NULL: the client's defaults; copied, so it
 * may be reused at once): each behaves as the call without options, threads, ownership and
 * errors alike, plus ARPC_EINVAL (through the future or queue for the asynchronous ones)
 * for an option the call refuses (a semantics not in the enum, a field this library lacks
 * set). */
ARPC_API int arpc_call_opts_v(arpc_client *c, const char *method, const void *req, size_t req_len,
                              void **reply, size_t *reply_len, const arpc_call_options *o, size_t o_size);
ARPC_API arpc_future *arpc_call_async_opts_v(arpc_client *c, const char *method, const void *req,
                                             size_t req_len, const arpc_call_options *o, size_t o_size);
ARPC_API int arpc_go_opts_v(arpc_client *c, const char *method, const void *req, size_t req_len,
                            const arpc_call_options *o, size_t o_size, arpc_cq *cq, void *tag);
#define arpc_call_opts(c, method, req, req_len, reply, reply_len, ...) \
    arpc_call_opts_v((c), (method), (req), (req_len), (reply), (reply_len), (__VA_ARGS__), sizeof(arpc_call_options))
#define arpc_call_async_opts(c, method, req, req_len, ...) \
    arpc_call_async_opts_v((c), (method), (req), (req_len), (__VA_ARGS__), sizeof(arpc_call_options))
#define arpc_go_opts(c, method, req, req_len, o, cq, tag) \
    arpc_go_opts_v((c), (method), (req), (req_len), (o), sizeof(arpc_call_options), (cq), (tag))

/* Sends a one-way message: no reply, no completion, never re-sent. ARPC_OK means queued for
 * sending, not delivered. It is dropped if there is no connection when it reaches the loop
 * (said in a WARN line, at most one every 10 s), except in two cases where it waits for the
 * next connection: the server had closed an idle one, or the client is making its first
 * connection in the background (connect_in_background: through failed attempts, as calls
 * wait). A waiting message is dropped, and named in a WARN line, only if that connection does
 * not come (after an idle close, a failed attempt; before the first, the client ending for
 * good, or reconnect_give_up_ms passing, as for a call) or the client closes first; at most
 * 1024 wait, and 64 MiB of them, the rest are dropped as without a connection. It is also dropped if it is not yet written when the connection breaks,
 * and on a connection where it finds over 64 MiB of the client's output waiting unwritten
 * (a server that does not read: else messages would queue without bound).
 * arpc_client_stats counts every drop: oneways_dropped. arpc_client_close writes it as
 * the server reads it, within close_linger_ms, and names in a WARN line the messages the
 * server did not read by then. Once the server has read it, it runs, whatever becomes of the
 * connection (docs/SEMANTICS.md).
 * Errors: ARPC_ESHUTDOWN (closing, or the application's loop the client runs on stopped),
 * ARPC_ETOOLARGE, ARPC_ENOMEM, ARPC_EINVAL; on a client down
 * for good, why it is: ARPC_EUNREACHABLE (no_reconnect, its connection lost; or never
 * connected), or the server's refusal (ARPC_EAUTH, ARPC_EPROTO, ARPC_EREJECTED, ...;
 * arpc_client_last_error has its words). */
ARPC_API int arpc_notify(arpc_client *c, const char *method, const void *req, size_t req_len);

/* Calls currently waiting for a reply (a snapshot). Any thread; 0 for NULL. */
ARPC_API size_t arpc_client_pending(const arpc_client *c);

/* The client's 64-bit id (random unless set in the options). Any thread; 0 for NULL. */
ARPC_API uint64_t arpc_client_id(const arpc_client *c);

/* Why the client's latest connection attempt failed, or its connection broke: the arpc_error
 * code, and, if buf is not NULL, one line of text in buf (empty with ARPC_OK). ARPC_OK once a
 * connection is up: at connect, and again at each reconnect, which clears what was in the
 * way. So for a client that is reconnecting this says what is in the way now, and ARPC_OK
 * means its latest connection was made and has not broken since. Any thread. */
ARPC_API int arpc_client_last_error(arpc_client *c, char *buf, size_t len);

/* Connections made so far (1 after connect, or 0 until the first is made with
 * connect_in_background; each reconnect adds one). A snapshot. Any thread; 0 for NULL. */
ARPC_API uint64_t arpc_client_connections(const arpc_client *c);

#ifdef __cplusplus
}
#endif

#endif
