/*
 * The server's life: create, register methods, listen, stop, destroy.
 *
 * Graceful stop: refuse new calls (ESHUTDOWN error replies: they did not run), close the
 * listeners, tell clients GOAWAY, wait up to the grace period for calls in flight, then stop
 * the pool discarding what is still queued (answered ESHUTDOWN: did not run; handlers already
 * running are waited for), answer the calls whose handlers have not replied (EABANDONED: may
 * have run; a numbered one's result is logged as that), wait for the replies whose log records
 * are on their way (within what is left of the grace), flush the replies already handed over,
 * close every connection, close the log and run its last records' jobs, and stop the loop if
 * the server owns it. Each step that touches connections runs on the loop
 * (arpc_loop_run_sync); the grace period waits for a future the last finishing call
 * completes (sv_drained), as any wait on the loop does (arpc_loop_wait_foreign_until): asleep
 * while a thread runs the loop, running the loop itself when the caller owns it and nobody runs
 * it (the application's loop, between its steps), since that loop delivers the replies waited
 * for. A second stop waits the same way for the first to complete sv_stopped.
 */
#include <stdio.h>
#include <sys/random.h>
#include <string.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/backoff.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/options.h"
#include "core/frame.h"
#include "core/request_internal.h"
#include "core/server_internal.h"
#include "transport/tls.h"

#define SERVER_HEARTBEAT_MS 15000 /* clients PING every 5 s by default: this only catches dead ones */
#define SERVER_HEARTBEAT_MISSES 3

/* Frees what only a running server uses: the cache, the log, the loop (ours), the pool. Once
 * stopped, nothing touches them: a late reply sees SV_STOPPED first and only frees its request. */
static void server_teardown(arpc_server *s)
{
    if (s->sv_log != NULL)
        journal_close(NULL, s); /* created but never stopped (a failed create) */
    if (s->sv_cache_ready)
        dedup_fini(s);
    s->sv_cache_ready = false;
    if (s->sv_owns_loop && s->sv_loop != NULL)
        arpc_loop_destroy(s->sv_loop);
    else if (s->sv_loop != NULL)
        arpc_loop_users_add(s->sv_loop, -1); /* the user's loop: nothing of ours on it any more */
    s->sv_loop = NULL;
    inflight_fini(s); /* after the loop's last jobs (a reply delivered late still counts down) */
    if (s->sv_pool != NULL)
        arpc_actor_group_destroy(s->sv_pool);
    s->sv_pool = NULL;
}

/* What is left: the shell unanswered requests still point at (registry: their method). */
static void server_free(arpc_server *s)
{
    server_teardown(s);
    if (s->sv_drained != NULL)
        arpc_future_release(s->sv_drained);
    if (s->sv_stopped != NULL)
        arpc_future_release(s->sv_stopped);
    if (s->sv_logged != NULL)
        arpc_future_release(s->sv_logged);
    if (s->sv_due_done != NULL)
        arpc_future_release(s->sv_due_done);
    arpc_registry_fini(&s->sv_registry);
    auth_fini(s);
    arpc_tls_free(s->sv_tls);
    /* Nothing of theirs is out: a request pins the server, and so does a reply (through its
     * request or connection; the reply cache and log let go of theirs at teardown). */
    request_states_fini(s);
    reply_spent_fini(s);
    block_pool_fini(&s->sv_requests);
    block_pool_fini(&s->sv_replies);
    request_handles_fini(s); /* handles still out are tombstones, freed by their late replies */
    arpc_free(s);
}

void server_retain(arpc_server *s) { arpc_refcount_get(&s->sv_refs); }

void server_release(arpc_server *s)
{
    if (arpc_refcount_put(&s->sv_refs))
        server_free(s);
}

/* A random non-zero id for this run of the server (a reply log keeps its own across runs). */
static uint64_t server_new_epoch(void)
{
    uint64_t e = 0;
    while (e == 0)
        if (getrandom(&e, sizeof(e), 0) != (ssize_t)sizeof(e))
            e = arpc_now_ns() ^ ((uint64_t)getpid() << 40);
    return e;
}

/* arpc_server_options.worker_poll_us: 0 is the default, negative is none. */
static unsigned server_worker_poll_us(int32_t us)
{
    return us == 0 ? ARPC_WORKER_POLL_US_DEFAULT : us < 0 ? 0u : (unsigned)us;
}

/* One per online CPU but one, which is left to the loop thread (at least 1, at most
 * ARPC_SERVER_WORKERS_MAX). */
static unsigned default_workers(void)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    return ncpu <= 2 ? 1 : ncpu - 1 > ARPC_SERVER_WORKERS_MAX ? ARPC_SERVER_WORKERS_MAX : (unsigned)ncpu - 1;
}

/* The least max_conn_bytes a server with this (effective) max_frame takes, and what 0 means:
 * one request of max_frame, and a reply as large, must fit in what a connection may hold.
 * Under it the bound held a connection's input before its first byte (the read buffer alone is
 * 64 KiB) and closed it for its first large reply (queued output over 4 x max_conn_bytes), and
 * the client's retry met the same close: a reconnect loop. */
static size_t server_conn_bytes_min(uint32_t max_frame)
{
    return max_frame > ARPC_SERVER_CONN_BYTES_MIN ? max_frame : ARPC_SERVER_CONN_BYTES_MIN;
}

/* Why the options cannot make a server (written into why), or ARPC_OK. */
static int server_options_refusal(const arpc_server_options *o, char *why, size_t whylen)
{
    if (arpc_options_max_frame_check(o->max_frame, why, whylen) != ARPC_OK)
        return ARPC_EINVAL;
    if (o->workers > ARPC_SERVER_WORKERS_MAX) {
        snprintf(why, whylen, "workers %u: at most %u (ARPC_SERVER_WORKERS_MAX)", o->workers,
                 ARPC_SERVER_WORKERS_MAX);
        return ARPC_EINVAL;
    }
    uint32_t max_frame = o->max_frame ? o->max_frame : ARPC_DEFAULT_MAX_FRAME;
    size_t least = server_conn_bytes_min(max_frame);
    if (o->max_conn_bytes != 0 && o->max_conn_bytes < least) {
        snprintf(why, whylen,
                 "max_conn_bytes %zu: at least %zu (max_frame %u%s, or ARPC_SERVER_CONN_BYTES_MIN %u: a request "
                 "the server accepts, and its reply, must fit in what one connection may hold), or 0 for the "
                 "default",
                 o->max_conn_bytes, least, max_frame, o->max_frame ? "" : " by default",
                 ARPC_SERVER_CONN_BYTES_MIN);
        return ARPC_EINVAL;
    }
    if (o->authenticate == arpc_auth_fixed_tokens && auth_fixed_tokens_refusal(o->authenticate_ctx, why, whylen) != ARPC_OK)
        return ARPC_EINVAL;
    if (o->reply_cache_bytes != 0 && o->reply_cache_bytes < ARPC_SERVER_REPLY_CACHE_MIN) {
        snprintf(why, whylen,
                 "reply_cache_bytes %zu: at least %u (ARPC_SERVER_REPLY_CACHE_MIN: a client's half must hold "
                 "its bookkeeping and a few replies, else every numbered call is refused), or 0 for the default",
                 o->reply_cache_bytes, ARPC_SERVER_REPLY_CACHE_MIN);
        return ARPC_EINVAL;
    }
    /* With or without a log_dir: a policy set for a log to come must not pass unread. */
    if ((unsigned)o->fsync > ARPC_FSYNC_OFF) {
        snprintf(why, whylen, "unknown fsync policy %d", (int)o->fsync);
        return ARPC_EINVAL;
    }
    return ARPC_OK;
}

static void server_say_why(const arpc_server_options *o, const char *why)
{
    if (o->errbuf != NULL && o->errbuf_len > 0)
        snprintf(o->errbuf, o->errbuf_len, "%s", why);
}

int arpc_server_create_v(arpc_server **out, const arpc_server_options *opts, size_t opts_size)
{
    arpc_server_options o;
    int opts_rc = arpc_options_copy(&o, sizeof(o), opts, opts_size);
    if (out != NULL)
        *out = NULL;
    if (opts_rc != ARPC_OK) {
        server_say_why(&o, ARPC_OPTIONS_NEWER_WHY);
        return opts_rc;
    }
    if (out == NULL) { /* (said: a line left in errbuf by an earlier failure is not this one's) */
        server_say_why(&o, "out is NULL");
        return ARPC_EINVAL;
    }
    char why[512] = "";
    if ((opts_rc = server_options_refusal(&o, why, sizeof(why))) != ARPC_OK) {
        server_say_why(&o, why);
        return opts_rc;
    }
    arpc_server *s = arpc_calloc(1, sizeof(*s));
    if (s == NULL) {
        server_say_why(&o, "out of memory for the server");
        return ARPC_ENOMEM;
    }
    atomic_init(&s->sv_magic, ARPC_MAGIC_SERVER);
    s->sv_fork_gen = arpc_fork_gen_start();
    arpc_refcount_init(&s->sv_refs, 1);
    atomic_init(&s->sv_state, SV_IDLE);
    atomic_init(&s->sv_inflight, 0);
    atomic_init(&s->sv_inflight_ahead, 0);
    s->sv_inflight_stash = true;
    atomic_init(&s->sv_replying, 0);
    atomic_init(&s->sv_due, 0);
    ck_stack_init(&s->sv_stop_jobs);
    atomic_init(&s->sv_logging, 0);
    atomic_init(&s->sv_logs_awaited, false);
    block_pool_init(&s->sv_requests);
    block_pool_init(&s->sv_replies);
    request_handles_init(s);
    arpc_deadline_init(&s->sv_sweep, NULL, NULL); /* unarmed; the sweeps set their callbacks when they start */
    arpc_deadline_init(&s->sv_limits, NULL, NULL);
    arpc_deadline_init(&s->sv_lazy, NULL, NULL); /* core/reply_direct.c */
    arpc_deadline_init(&s->sv_take_turn, NULL, NULL); /* core/reply_take.c */
    s->sv_max_frame = o.max_frame ? o.max_frame : ARPC_DEFAULT_MAX_FRAME;
    s->sv_jsonrpc_max = o.jsonrpc_max_request ? o.jsonrpc_max_request : ARPC_JSONRPC_MAX_REQUEST_DEFAULT;
    if (s->sv_jsonrpc_max < ARPC_MAX_FRAME_MIN)
        s->sv_jsonrpc_max = ARPC_MAX_FRAME_MIN;
    if (s->sv_jsonrpc_max > s->sv_max_frame)
        s->sv_jsonrpc_max = s->sv_max_frame;
    s->sv_no_jsonrpc = o.no_jsonrpc;
    arpc_registry_init(&s->sv_registry);
    s->sv_epoch = server_new_epoch();
    s->sv_heartbeat_ms = o.heartbeat_ms ? o.heartbeat_ms : SERVER_HEARTBEAT_MS;
    s->sv_heartbeat_misses = o.heartbeat_misses ? o.heartbeat_misses : SERVER_HEARTBEAT_MISSES;
    /* max_conn_bytes left 0 is 16 MiB, or max_frame if larger (server_conn_bytes_min). */
    if (o.max_conn_bytes == 0 && s->sv_max_frame > ARPC_DEFAULT_MAX_FRAME)
        o.max_conn_bytes = server_conn_bytes_min(s->sv_max_frame);
    limits_init(s, &o);
    accept_rate_init(s, &o);
    fault_rate_init(s, &o);
    int crc = arpc_future_create(&s->sv_drained);
    if (crc == ARPC_OK)
        crc = arpc_future_create(&s->sv_stopped);
    if (crc == ARPC_OK)
        crc = arpc_future_create(&s->sv_logged);
    if (crc == ARPC_OK)
        crc = arpc_future_create(&s->sv_due_done);
    if (crc == ARPC_OK)
        crc = auth_init(s, &o);
    if (crc == ARPC_OK)
        crc = inflight_init(s, &o);
    if (crc == ARPC_OK)
        crc = dedup_init(s, o.reply_cache_bytes, o.client_expiry_s);
    if (crc != ARPC_OK) {
        snprintf(why, sizeof(why), "cannot make the server's books (reply cache, limits, auth): %s",
                 arpc_strerror(crc));
        server_say_why(&o, why);
        server_free(s);
        return crc;
    }
    s->sv_cache_ready = true;
    if (!o.no_builtin_methods && (crc = builtin_register(s)) != ARPC_OK) {
        snprintf(why, sizeof(why), "cannot register the built-in methods: %s", arpc_strerror(crc));
        server_say_why(&o, why);
        server_free(s);
        return crc;
    }
    if (o.tls != NULL)
        crc = arpc_tls_server_new(&s->sv_tls, o.tls, why, sizeof(why));
    if (crc == ARPC_OK && o.log_dir != NULL)
        crc = journal_open(s, &o, why, sizeof(why)); /* replays the log into the cache */
    if (crc == ARPC_OK) /* with a log, under its lock */
        crc = namespace_init(s, o.log_dir, why, sizeof(why));
    if (crc != ARPC_OK) {
        server_say_why(&o, why);
        server_free(s);
        return crc;
    }
    arpc_actor_options ao = {.name = "arpc-worker", .poll_us = server_worker_poll_us(o.worker_poll_us)};
    unsigned workers = o.workers ? o.workers : default_workers();
    int rc = arpc_actor_group_create(&s->sv_pool, workers, &ao);
    if (rc != ARPC_OK) {
        snprintf(why, sizeof(why), "cannot start the pool's %u worker threads: %s", workers, arpc_strerror(rc));
        server_say_why(&o, why);
        s->sv_pool = NULL;
        server_free(s);
        return rc;
    }
    if (o.loop != NULL) {
        s->sv_loop = o.loop;
        arpc_loop_users_add(o.loop, 1); /* until server_teardown */
    } else {
        rc = arpc_loop_create(&s->sv_loop, NULL);
        if (rc == ARPC_OK) {
            s->sv_owns_loop = true;
            rc = arpc_loop_start(s->sv_loop);
        }
        if (rc != ARPC_OK) {
            snprintf(why, sizeof(why), "cannot start the server's loop thread: %s", arpc_strerror(rc));
            server_say_why(&o, why);
            server_free(s);
            return rc;
        }
    }
    s->sv_loop_id = s->sv_loop; /* never written again: replies compare it while a destroy runs */
    *out = s;
    return ARPC_OK;
}

struct listen_start {
    arpc_server *s;
    struct server_listener *l;
    bool started;
};

static void step_start_listener(arpc_loop *loop, void *arg)
{
    (void)loop;
    struct listen_start *a = arg;
    a->started = listener_start(a->l);
}

/* The loop had stopped (an application's, arpc_server_options.loop): the step runs on this
 * thread, nothing else touches the loop any more, and nobody would ever accept. A server that
 * never listened is not listening now either: it goes back to taking registrations (nothing
 * reads its registry), so that a register says what is so instead of "already listens". */
static void step_close_listener(arpc_loop *loop, void *arg)
{
    (void)loop;
    struct listen_start *a = arg;
    if (a->started)
        listener_close(a->s, a->l);
    int state = SV_RUNNING;
    if (a->s->sv_listeners == NULL)
        atomic_compare_exchange_strong(&a->s->sv_state, &state, SV_IDLE);
}

int arpc_server_listen(arpc_server *s, const char *addr, char *bound, size_t boundlen)
{
    if (!server_live(s, __func__) || addr == NULL)
        return ARPC_EINVAL;
    int state = atomic_load(&s->sv_state);
    if (state == SV_STOPPING || state == SV_STOPPED)
        return ARPC_ESHUTDOWN;
    int rc;
    struct server_listener *l = listener_new(s, addr, bound != NULL ? boundlen : 0, &rc);
    if (l == NULL)
        return rc;
    char where[ARPC_ADDR_MAX];
    snprintf(where, sizeof(where), "%s", listener_addr(l)); /* l is the loop's once started */
    /* From now on the registry is read by the loop: no more registrations. */
    state = SV_IDLE;
    atomic_compare_exchange_strong(&s->sv_state, &state, SV_RUNNING);
    struct listen_start a = {s, l, false};
    if (arpc_loop_run_sync(s->sv_loop, step_start_listener, &a) != ARPC_OK) {
        arpc_loop_run_sync(s->sv_loop, step_close_listener, &a);
        a.started = false;
    }
    if (!a.started) {
        arpc_log(ARPC_LOG_WARN, "cannot listen: %s: the server is stopping, or its loop stopped", where);
        return ARPC_ESHUTDOWN;
    }
    if (bound != NULL && boundlen > 0)
        snprintf(bound, boundlen, "%s", where);
    return ARPC_OK;
}

/* Stop steps, run on the loop (arpc_loop_run_sync). */

void server_inflight_stash_close(arpc_server *s)
{
    uint32_t ahead = atomic_load_explicit(&s->sv_inflight_ahead, memory_order_relaxed);
    s->sv_inflight_stash = false;
    atomic_store_explicit(&s->sv_inflight_ahead, 0, memory_order_relaxed);
    /* SV_STOPPING is stored: were these the last, no request will complete sv_drained. */
    if (ahead != 0 && atomic_fetch_sub(&s->sv_inflight, ahead) == ahead && atomic_load(&s->sv_state) == SV_STOPPING)
        arpc_future_complete(s->sv_drained, ARPC_OK, NULL, 0);
}

static void step_goaway(arpc_loop *loop, void *s)
{
    (void)loop;
    server_inflight_stash_close(s); /* first: the wait for calls in flight reads sv_inflight next */
    listener_close_all(s);
    sconn_goaway_all(s);
}

static void step_answer_unreplied(arpc_loop *loop, void *s)
{
    server_run_stop_jobs(loop, s); /* replies the stopped loop refused: made, so not unreplied */
    /* Before the connections close, so their callers hear it rather than ARPC_ECONNLOST. A
     * parked call never started: it is refused ESHUTDOWN (did not run) first, so that only
     * calls that may have run are answered ARPC_EABANDONED. */
    sconn_refuse_parked_all(s);
    request_answer_unreplied(s);
}

static void step_close_all(arpc_loop *loop, void *s)
{
    server_run_stop_jobs(loop, s); /* their replies queued before the connections close */
    sconn_close_all(s);
    reply_direct_unwatch(s); /* no call is out any more */
    dedup_stop(s);
    limits_stop(s);
}

struct last_replies {
    arpc_server *lr_server;
    struct arpc_reply_log *lr_log; /* taken off the server on the loop, closed by the stop */
};

/* The stop's last step but one (a fence follows, with a log), after SV_STOPPED and the last
 * replier's hand-over: every reply job handed to the loop before the store runs before this
 * (one lane, drained in push order, and lazy jobs before a drain's lane jobs:
 * async/loop_lanes.c), so once it ran no reply is left
 * to reach the reply cache or the log after arpc_server_destroy freed them. Without it, on an
 * application's threaded loop such a job could run during or after the teardown. The log is
 * only taken off the server here (nothing appends to it after): its close waits for the disk
 * (its last records' syncs, a compaction under way), which the loop, maybe an application's
 * serving other servers and clients, must not (review 238: a 2 s fdatasync held a second
 * server's calls on the same loop for 4 s). */
static void step_last_replies(arpc_loop *loop, void *arg)
{
    struct last_replies *a = arg;
    server_run_stop_jobs(loop, a->lr_server); /* the last: no reply hands over once SV_STOPPED is seen */
    a->lr_log = a->lr_server->sv_log;
    a->lr_server->sv_log = NULL;
}

/* Waits until no call is in flight or deadline_ns passes. SV_STOPPING is stored first, so
 * either the count is seen at 0 here or its last call completes sv_drained (core/request.c). */
static void server_wait_inflight(arpc_server *s, uint64_t deadline_ns)
{
    if (atomic_load(&s->sv_inflight) != 0)
        (void)arpc_loop_wait_foreign_until(s->sv_loop, s->sv_drained, deadline_ns); /* EPENDING: grace over */
}

/* A reply is at most a post away once its handler has claimed its request, and a record a
 * sync away: this long is a replier's thread descheduled on a loaded machine, or a slow disk,
 * not a reply that will not come (a loop stopped meanwhile, which no wait can outlast). */
#define SERVER_DUE_WAIT_MS 5000

unsigned server_stop_logged_ms = SERVER_DUE_WAIT_MS;

/* Waits until the replies that were on their way when the stop answered the unreplied have
 * been delivered on the loop (request_answer_unreplied): their connections are still open.
 * Not when the step ran here because the loop had stopped (nothing will deliver them).
 * Returns when the wait for them ends (0: none was due): with a reply log, such a reply leaves
 * once its record is durable, which the stop then waits for as long (server_wait_logged). */
static uint64_t server_wait_due(arpc_server *s, int step_rc)
{
    if (step_rc != ARPC_OK || !s->sv_had_due)
        return 0;
    uint64_t end = arpc_deadline_from_ms(SERVER_DUE_WAIT_MS);
    if (arpc_loop_wait_foreign_until(s->sv_loop, s->sv_due_done, end) == ARPC_EPENDING)
        arpc_log(ARPC_LOG_WARN, "server stop: replies on their way from handlers did not come within %d ms: the "
                 "connections close without them (their callers end the calls at their deadlines)", SERVER_DUE_WAIT_MS);
    return end;
}

/* Waits until every reply waiting for its log record has been answered, or deadline_ns passes
 * (then their records, durable, answer a retry sent to this log's next server). */
static void server_wait_logged(arpc_server *s, uint64_t deadline_ns)
{
    if (journal_await_all(s))
        (void)arpc_loop_wait_foreign_until(s->sv_loop, s->sv_logged, deadline_ns); /* EPENDING: grace over */
}

static bool server_is_own_thread(const arpc_server *s)
{
    if (arpc_loop_on_thread(s->sv_loop))
        return true;
    for (unsigned i = 0; i < arpc_actor_group_size(s->sv_pool); i++)
        if (arpc_actor_on_thread(arpc_actor_group_member(s->sv_pool, i)))
            return true;
    return false;
}

/* Moves the server to SV_STOPPING: true for the one stop that does (it runs the stop), false
 * when another stop began first. */
static bool server_begin_stop(arpc_server *s)
{
    int state = atomic_load(&s->sv_state);
    while (state == SV_IDLE || state == SV_RUNNING)
        if (atomic_compare_exchange_weak(&s->sv_state, &state, SV_STOPPING))
            return true;
    return false;
}

/* A second stop waits for the first through the loop: from the owner of a loop nobody runs, it
 * runs the loop for the first (on another thread), which would wait for it otherwise. */
static void server_wait_stopped(arpc_server *s)
{
    (void)arpc_loop_wait_foreign_until(s->sv_loop, s->sv_stopped, ARPC_NEVER); /* the first stop's thread completes it */
}

/* The stop's last touch of s: a second stop woken here may destroy the server at once, so the
 * future is held over its completion. */
static void server_end_stop(arpc_server *s)
{
    arpc_future *stopped = s->sv_stopped;
    arpc_future_retain(stopped);
    arpc_future_complete(stopped, ARPC_OK, NULL, 0);
    arpc_future_release(stopped);
}

/* A stop waits for the loop and the pool: not from inside them. Refused, and said: a refused
 * destroy leaves the server serving, and its return is easily dropped (a "quit" method). */
static int server_refuse_own_thread(const char *fn)
{
    arpc_log(ARPC_LOG_WARN, "%s refused: called on the server's own loop thread or pool worker, it "
             "would wait for itself (call it from another thread)", fn);
    return ARPC_EBUSY;
}

int arpc_server_stop(arpc_server *s, int64_t timeout_ms)
{
    if (!server_live(s, __func__))
        return ARPC_EINVAL;
    if (server_is_own_thread(s))
        return server_refuse_own_thread(__func__);
    uint64_t grace_end = arpc_deadline_from_ms(timeout_ms); /* ARPC_FOREVER: every call finishes */
    if (!server_begin_stop(s)) {
        server_wait_stopped(s);
        return ARPC_OK;
    }
    arpc_loop_run_sync(s->sv_loop, step_goaway, s);
    server_wait_inflight(s, grace_end);
    /* Past the grace period: calls still queued on the pool do not run; their callers get
     * ESHUTDOWN ("did not run") before the connections close. Handlers already running
     * finish, waited for here, and their replies are sent (with a log, once their records
     * are durable: server_wait_logged below). */
    arpc_actor_group_stop(s->sv_pool, ARPC_ACTOR_DISCARD);
    uint64_t due_end = server_wait_due(s, arpc_loop_run_sync(s->sv_loop, step_answer_unreplied, s));
    /* Replies (and the stop's answers of numbered calls) whose records are on their way: the
     * connections stay open for them, past the grace too (up to server_stop_logged_ms from here,
     * or the end of the wait for replies on their way): the log's close below waits for the
     * same syncs anyway, and a pool handler the stop waited for past its grace has its reply
     * sent instead of left to a retry against a restarted server (before 2026-12-08 its
     * caller waited for its deadline). */
    uint64_t logged_end = arpc_deadline_from_ms(server_stop_logged_ms);
    if (logged_end < due_end)
        logged_end = due_end;
    server_wait_logged(s, logged_end > grace_end ? logged_end : grace_end);
    arpc_loop_run_sync(s->sv_loop, step_close_all, s);
    atomic_store(&s->sv_state, SV_STOPPED);
    /* Replies that checked the state before the store are still handing over: wait them out,
     * so that once stop returns no reply touches the loop (the user may destroy it). */
    unsigned attempt = 0;
    while (atomic_load(&s->sv_replying) != 0)
        arpc_backoff_spin(&attempt);
    struct last_replies last = {s, NULL};
    arpc_loop_run_sync(s->sv_loop, step_last_replies, &last);
    /* Closed here, then the fence, behind the jobs of the log's last records (the close queued
     * them): once it ran, none is left to touch the reply cache, which arpc_server_destroy
     * frees, or the loop, which its owner may destroy. Their waiters' connections are closed:
     * nothing is sent. */
    if (s->sv_has_log) {
        arpc_reply_log_close(last.lr_log);
        (void)arpc_loop_fence(s->sv_loop);
    }
    if (s->sv_owns_loop)
        arpc_loop_stop(s->sv_loop);
    arpc_registry_routes_done(&s->sv_registry); /* no request is dispatched after the stop */
    server_end_stop(s);
    return ARPC_OK;
}

int arpc_server_destroy(arpc_server *s)
{
    if (!server_live(s, __func__))
        return ARPC_EINVAL;
    if (server_is_own_thread(s))
        return server_refuse_own_thread(__func__);
    int rc = arpc_server_stop(s, 1000);
    if (rc != ARPC_OK)
        return rc;
    /* From here the handle is dead: a second destroy, even a racing one, is caught. */
    if (!arpc_handle_kill(s, ARPC_MAGIC_SERVER, "server", __func__))
        return ARPC_EINVAL;
    uint32_t held = atomic_load(&s->sv_inflight);
    if (held != 0)
        arpc_log(ARPC_LOG_WARN, "server destroyed with %u request(s) still in their handlers (on the "
                 "application's actors, or taken from a completion queue and not replied to): each is "
                 "freed (with what is left of the server) when its handler returns or replies", held);
    server_teardown(s);
    server_release(s);
    return ARPC_OK;
}
