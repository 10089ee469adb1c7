/*
 * The client's life: connect, close, options, the last error.
 *
 * Connecting resolves the address on the caller's thread (a name lookup may block; the loop
 * must never), then makes one attempt on the loop (client_connect.c) and waits for it: the
 * server's HELLO carries its frame limit, so a request it would refuse fails locally with
 * ARPC_ETOOLARGE instead of costing the connection, and a peer that is not an arpc server is
 * reported here, not at the first call. After that first success the client reconnects by
 * itself whenever the connection breaks (to a name's new addresses, if it moved:
 * client_lookup.c).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "arpc/auth.h"
#include "arpc/error.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/options.h"
#include "core/client_internal.h"
#include "core/client_resend.h"
#include "transport/tls.h"
#include "core/frame.h"

#define CLIENT_CONNECT_TIMEOUT_MS 5000
#define CLIENT_PENDING_INITIAL 64 /* ck_rhs: only the calls that do not fit a ring (core/pending_calls.h) */
#define CLIENT_RECONNECT_MIN_MS 10
#define CLIENT_RECONNECT_MAX_MS 1000
#define CLIENT_GIVE_UP_MS 30000
#define CLIENT_HEARTBEAT_MS 5000
#define CLIENT_HEARTBEAT_MISSES 3
#define CLIENT_CLOSE_LINGER_MS 1000

void client_retain(arpc_client *c) { arpc_refcount_get(&c->cl_refs); }

void client_release(arpc_client *c)
{
    if (!arpc_refcount_put(&c->cl_refs))
        return;
    arpc_future_release(c->cl_first); /* the client's USER reference, its only one */
    if (c->cl_lingered != NULL)
        arpc_future_release(c->cl_lingered);
    calls_unwritten_forget(c); /* filled by a close that came after the cleanup's */
    client_lookup_drop(c);
    arpc_tls_free(c->cl_tls);
    arpc_buf_cache_close(&c->cl_bufs); /* every call is freed by now (close waited for them) */
    block_pool_fini(&c->cl_blocks);
    method_names_fini(&c->cl_names);
    pthread_mutex_destroy(&c->cl_err_mtx);
    arpc_free(c->cl_token);
    arpc_free(c);
}

int client_unavailable_reason(arpc_client *c)
{
    if (atomic_load(&c->cl_state) == CL_CLOSED)
        return ARPC_ESHUTDOWN;
    return atomic_load(&c->cl_lost_reason);
}

void client_set_error(arpc_client *c, int code, const char *why)
{
    pthread_mutex_lock(&c->cl_err_mtx);
    c->cl_err_code = code;
    snprintf(c->cl_err_text, sizeof(c->cl_err_text), "%s", why);
    pthread_mutex_unlock(&c->cl_err_mtx);
}

void client_set_loss(arpc_client *c, const char *why)
{
    pthread_mutex_lock(&c->cl_err_mtx);
    c->cl_err_code = ARPC_ECONNLOST;
    snprintf(c->cl_err_text, sizeof(c->cl_err_text), "%s", why);
    snprintf(c->cl_loss_text, sizeof(c->cl_loss_text), "%s", why);
    pthread_mutex_unlock(&c->cl_err_mtx);
}

void client_note_reconnecting(arpc_client *c)
{
    char text[CLIENT_WHY_MAX];
    int n = snprintf(text, sizeof(text), "connected to %s again, waiting for its %s (before: ", c->cl_target.t_addr,
                     c->cl_tls != NULL ? "TLS handshake and HELLO" : "HELLO");
    if (n <= 0 || (size_t)n + 2 > sizeof(text))
        return;
    pthread_mutex_lock(&c->cl_err_mtx); /* once per attempt, off the per-call path */
    if (c->cl_err_code != ARPC_OK) {
        int room = (int)(sizeof(text) - (size_t)n - 2); /* ")" and the NUL */
        snprintf(text + n, sizeof(text) - (size_t)n, "%.*s)", room, c->cl_err_text);
        memcpy(c->cl_err_text, text, sizeof(text));
    }
    pthread_mutex_unlock(&c->cl_err_mtx);
}

/* "lead: the last error" (fmt's two %s; the loss's words instead with loss), copied for a
 * call's result; NULL with nothing recorded (unless always) or no memory. */
static char *client_why(arpc_client *c, const char *fmt, const char *lead, bool loss, size_t *len)
{
    char why[CLIENT_WHY_MAX + 320];
    int n = 0;
    *len = 0;
    pthread_mutex_lock(&c->cl_err_mtx); /* a failure's path, off the per-call one */
    const char *words = loss ? c->cl_loss_text : c->cl_err_code != ARPC_OK ? c->cl_err_text : "";
    if (words[0] != '\0')
        n = snprintf(why, sizeof(why), fmt, lead, words);
    else if (loss)
        n = snprintf(why, sizeof(why), "%s", lead);
    pthread_mutex_unlock(&c->cl_err_mtx);
    if (n >= (int)sizeof(why))
        n = (int)sizeof(why) - 1;
    char *text = n > 0 ? arpc_text_copy(why, (size_t)n) : NULL;
    if (text != NULL)
        *len = (size_t)n;
    return text;
}

char *client_unreachable_why(arpc_client *c, size_t *len)
{
    *len = 0;
    int state = atomic_load(&c->cl_state);
    if (state == CL_READY)
        return NULL;
    /* Lost for good: its loop stopped, or a server refused it (a GOAWAY) -- not a connection
     * that failed, which it may try again. */
    int reason = atomic_load(&c->cl_lost_reason);
    const char *lead = state != CL_LOST || reason == ARPC_EUNREACHABLE ? "no connection to the server"
                       : reason == ARPC_ESHUTDOWN                      ? "this client's loop has stopped"
                                                                       : "this client will not connect again";
    return client_why(c, "%s: %s", lead, false, len);
}

char *client_lost_why(arpc_client *c, const char *why, size_t *len)
{
    return client_why(c, "%s (%s)", why, true, len);
}

int arpc_client_last_error(arpc_client *c, char *buf, size_t len)
{
    if (!client_live(c, __func__))
        return ARPC_EINVAL;
    pthread_mutex_lock(&c->cl_err_mtx);
    int code = c->cl_err_code;
    if (buf != NULL && len > 0)
        snprintf(buf, len, "%s", c->cl_err_text);
    pthread_mutex_unlock(&c->cl_err_mtx);
    return code;
}

static uint64_t random_id(void)
{
    uint64_t id = 0;
    while (id == 0) {
        if (getrandom(&id, sizeof(id), 0) != (ssize_t)sizeof(id))
            id = arpc_now_ns() ^ ((uint64_t)getpid() << 32);
    }
    return id;
}

static void client_options(arpc_client *c, const arpc_client_options *o)
{
    c->cl_max_frame = o->max_frame ? o->max_frame : ARPC_DEFAULT_MAX_FRAME;
    atomic_init(&c->cl_server_max, c->cl_max_frame);
    c->cl_id = o->client_id ? o->client_id : random_id();
    /* A chosen id may be chosen again by the next process, whose calls are numbered from 1
     * again: the incarnation keeps the server from taking them for this client's (and
     * answering them with its cached replies). Sent with a random id too: it tells the server
     * the key is this client object's alone, so its goodbye may leave its highest seq behind
     * against late copies of its calls (core/reply_cache_gone.h). */
    c->cl_incarnation = random_id();
    c->cl_default_deadline_ms = o->default_deadline_ms;
    c->cl_semantics = o->semantics ? o->semantics : ARPC_AT_MOST_ONCE;
    c->cl_connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : CLIENT_CONNECT_TIMEOUT_MS;
    c->cl_give_up_ms = o->reconnect_give_up_ms ? o->reconnect_give_up_ms : CLIENT_GIVE_UP_MS;
    c->cl_reconnect = !o->no_reconnect;
    c->cl_re_resolve_ms = client_lookup_interval_ms(o->re_resolve_ms);
    c->cl_lookup_ns = arpc_now_coarse_ns(); /* the connect's own lookup counts */
    c->cl_background = o->connect_in_background;
    /* One-way messages sent before the first connection wait for it, as calls do. */
    c->cl_hold_oneways = c->cl_background;
    c->cl_heartbeat_ms = o->heartbeat_ms ? o->heartbeat_ms : CLIENT_HEARTBEAT_MS;
    c->cl_heartbeat_misses = o->heartbeat_misses ? o->heartbeat_misses : CLIENT_HEARTBEAT_MISSES;
    c->cl_linger_ms = o->close_linger_ms ? o->close_linger_ms : CLIENT_CLOSE_LINGER_MS;
    /* A default bends to the other delay when that one is set (both set, min <= max:
     * client_options_refusal): a first delay over 1000 is also the longest, a longest under 10
     * also the first. */
    uint32_t min_ms = o->reconnect_min_ms, max_ms = o->reconnect_max_ms;
    if (min_ms == 0)
        min_ms = max_ms != 0 && max_ms < CLIENT_RECONNECT_MIN_MS ? max_ms : CLIENT_RECONNECT_MIN_MS;
    if (max_ms == 0)
        max_ms = min_ms > CLIENT_RECONNECT_MAX_MS ? min_ms : CLIENT_RECONNECT_MAX_MS;
    arpc_backoff_init(&c->cl_connector.cn_backoff, min_ms, max_ms, c->cl_id);
}

static arpc_client *client_new(const arpc_client_options *o)
{
    arpc_client *c = arpc_calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    atomic_init(&c->cl_magic, ARPC_MAGIC_CLIENT);
    c->cl_fork_gen = arpc_fork_gen_start();
    arpc_refcount_init(&c->cl_refs, 1);
    atomic_init(&c->cl_state, CL_CONNECTING);
    atomic_init(&c->cl_lost_reason, ARPC_ECONNLOST);
    atomic_init(&c->cl_npending, 0);
    atomic_init(&c->cl_live, 0);
    atomic_init(&c->cl_connections, 0);
    pthread_mutex_init(&c->cl_err_mtx, NULL);
    client_options(c, o);
    if (o->auth_token_len > 0) {
        /* Kept for every reconnect's HELLO. */
        if ((c->cl_token = arpc_malloc(o->auth_token_len)) == NULL)
            goto fail;
        memcpy(c->cl_token, o->auth_token, o->auth_token_len);
        c->cl_token_len = (uint32_t)o->auth_token_len;
    }
    c->cl_next_xid = 1;
    atomic_init(&c->cl_next_seq, 1);
    client_direct_init(c);
    client_local_init(c);
    c->cl_call_owner = call_future_owner; /* its calls' futures' owner (call_client) */
    client_deadlines_init(c);
    c->cl_connector.cn_fd = -1;
    arpc_deadline_init(&c->cl_connector.cn_timer, client_connect_on_timer, c);
    arpc_deadline_init(&c->cl_connector.cn_backlog_retry, client_connect_on_backlog_retry, c);
    ev_init(&c->cl_connector.cn_io, NULL);
    arpc_buf_cache_init(&c->cl_bufs, ARPC_CONN_BUF_CACHE_BYTES);
    block_pool_init(&c->cl_blocks);
    if (arpc_future_create(&c->cl_first) != ARPC_OK)
        goto fail;
    if (pending_init(&c->cl_pending, CLIENT_PENDING_INITIAL) != ARPC_OK)
        goto fail_first;
    c->cl_beyond_next = CLIENT_ACK_BEYOND_EVERY;
    if (arpc_u64_map_init(&c->cl_done, 16) != ARPC_OK)
        goto fail_pending;
    return c;
fail_pending:
    pending_fini(&c->cl_pending);
fail_first:
    arpc_future_release(c->cl_first); /* the client's USER reference, its only one */
    calls_unwritten_forget(c); /* filled by a close that came after the cleanup's */
fail:
    pthread_mutex_destroy(&c->cl_err_mtx);
    arpc_free(c->cl_token);
    arpc_free(c);
    return NULL;
}

/* The loop the client runs on: the caller's, or one of its own started now (why says what
 * failed: nothing was tried to connect yet). */
static int client_take_loop(arpc_client *c, arpc_loop *user_loop, char *why, size_t whylen)
{
    if (user_loop != NULL) {
        c->cl_loop = user_loop;
        arpc_loop_users_add(user_loop, 1); /* until arpc_client_close */
        /* Only for a loop its waiters run: a started, wrapped or pollable one has a thread or
         * the application's event loop for it, and its calls' futures keep their callback slot
         * (a then() there allocates nothing). */
        c->cl_call_home = arpc_loop_waiters_run(user_loop) ? user_loop : NULL;
        return ARPC_OK;
    }
    int rc = arpc_loop_create(&c->cl_loop, NULL);
    if (rc != ARPC_OK) {
        snprintf(why, whylen, "cannot create the client's loop: %s", arpc_strerror(rc));
        return rc;
    }
    rc = arpc_loop_start(c->cl_loop);
    if (rc != ARPC_OK) {
        arpc_loop_destroy(c->cl_loop);
        snprintf(why, whylen, "cannot start the client's loop thread: %s", arpc_strerror(rc));
        return rc;
    }
    c->cl_owns_loop = true;
    return ARPC_OK;
}

static void step_connect(arpc_loop *loop, void *arg)
{
    arpc_client *c = arg;
    if (!c->cl_owns_loop && arpc_loop_on_stop(loop, client_on_loop_stop, c) == ARPC_OK) {
        client_retain(c); /* the stop hook's */
        c->cl_hook = true;
    }
    client_connect_start(c);
}

static void write_why(const arpc_client_options *o, const char *why)
{
    if (o->errbuf != NULL && o->errbuf_len > 0)
        snprintf(o->errbuf, o->errbuf_len, "%s", why);
}

/* Why the options cannot make a client (written into why), or ARPC_OK. */
static int client_options_refusal(const arpc_client_options *o, char *why, size_t whylen)
{
    if (arpc_options_max_frame_check(o->max_frame, why, whylen) != ARPC_OK)
        return ARPC_EINVAL;
    if (o->auth_token_len > ARPC_AUTH_TOKEN_MAX_BYTES || (o->auth_token == NULL && o->auth_token_len > 0)) {
        snprintf(why, whylen, "auth_token of %zu bytes: at most %u, and not NULL", o->auth_token_len,
                 ARPC_AUTH_TOKEN_MAX_BYTES);
        return ARPC_EINVAL;
    }
    if ((unsigned)o->semantics > ARPC_NO_RETRY) { /* else every call that does not say fails */
        snprintf(why, whylen, "semantics %u is not one of enum arpc_call_semantics (0 for at-most-once)",
                 (unsigned)o->semantics);
        return ARPC_EINVAL;
    }
    /* The header calls the max the longest delay: a larger first delay is a contradiction
     * (the backoff silently took the min as the max). A default bends instead (client_options). */
    if (o->reconnect_min_ms != 0 && o->reconnect_max_ms != 0 && o->reconnect_min_ms > o->reconnect_max_ms) {
        snprintf(why, whylen,
                 "reconnect_min_ms %u above reconnect_max_ms %u: the first delay cannot be longer than the "
                 "longest; at most %u, or 0 for the default",
                 o->reconnect_min_ms, o->reconnect_max_ms, o->reconnect_max_ms);
        return ARPC_EINVAL;
    }
    return ARPC_OK;
}

int arpc_client_connect_v(arpc_client **out, const char *addr, const arpc_client_options *opts, size_t opts_size)
{
    arpc_client_options o;
    int opts_rc = arpc_options_copy(&o, sizeof(o), opts, opts_size);
    if (out != NULL)
        *out = NULL; /* on every failure, this one too */
    if (opts_rc != ARPC_OK) {
        write_why(&o, ARPC_OPTIONS_NEWER_WHY);
        return opts_rc;
    }
    /* Every failure says why in errbuf: a line left there by an earlier failure must not pass
     * for this one's. */
    if (out == NULL || addr == NULL) {
        write_why(&o, out == NULL ? "out is NULL" : "addr is NULL");
        return ARPC_EINVAL;
    }
    if (o.loop != NULL && arpc_loop_on_thread(o.loop)) {
        write_why(&o, "called on the thread of options.loop, which connecting waits for (connect from "
                      "another thread, or with connect_in_background)");
        return ARPC_EBUSY;
    }
    char refusal[192];
    if ((opts_rc = client_options_refusal(&o, refusal, sizeof(refusal))) != ARPC_OK) {
        write_why(&o, refusal);
        return opts_rc;
    }
    arpc_client *c = client_new(&o);
    if (c == NULL) {
        write_why(&o, "out of memory for the client");
        return ARPC_ENOMEM;
    }
    char why[CLIENT_WHY_MAX] = "";
    int rc = arpc_transport_resolve(addr, &c->cl_target, why, sizeof(why));
    if (rc == ARPC_OK && c->cl_target.t_ops == &arpc_transport_tls)
        rc = arpc_tls_client_new(&c->cl_tls, &c->cl_target, o.tls, why, sizeof(why));
    if (rc == ARPC_OK)
        rc = client_take_loop(c, o.loop, why, sizeof(why));
    if (rc == ARPC_OK && c->cl_background) {
        /* Until the first attempt ends, this is what is in the way (arpc_client_last_error,
         * and the words of a call that ends waiting): never ARPC_OK with no connection. */
        char pending[CLIENT_WHY_MAX];
        snprintf(pending, sizeof(pending), "the first attempt to connect to %s has not finished", c->cl_target.t_addr);
        client_set_error(c, ARPC_EUNREACHABLE, pending);
    }
    if (rc != ARPC_OK) {
        write_why(&o, why[0] ? why : arpc_strerror(rc));
        pending_fini(&c->cl_pending);
        arpc_u64_map_fini(&c->cl_done);
        client_release(c);
        return rc;
    }
    /* An application's loop that stopped would run the step on this thread (arpc_loop_run_sync):
     * an attempt for nothing, a connection the server sees come and go. */
    rc = !c->cl_owns_loop && arpc_loop_fence(c->cl_loop) != ARPC_OK ? ARPC_ESHUTDOWN
                                                                     : arpc_loop_run_sync(c->cl_loop, step_connect, c);
    if (rc != ARPC_OK)
        client_set_error(c, rc, "the application's loop the client runs on is stopped");
    else if (!c->cl_background)
        rc = arpc_loop_wait(c->cl_loop, c->cl_first);
    if (rc != ARPC_OK) {
        arpc_client_last_error(c, why, sizeof(why));
        write_why(&o, why);
        arpc_client_close(c);
        return rc;
    }
    *out = c;
    return ARPC_OK;
}

static void step_close(arpc_loop *loop, void *arg)
{
    arpc_client *c = arg;
    atomic_store(&c->cl_state, CL_CLOSED);
    client_cleanup(c);
    /* A lingering connection keeps the stop hook: a loop stopping meanwhile ends the linger. */
    if (c->cl_hook && !c->cl_lingering && arpc_loop_off_stop(loop, client_on_loop_stop, c)) {
        c->cl_hook = false;
        client_release(c); /* the hook's reference (the user's is still held by close) */
    }
}

int arpc_client_close(arpc_client *c)
{
    if (!client_live(c, __func__) || !client_in_its_process(c, __func__))
        return ARPC_EINVAL; /* (a child's close would say goodbye on its parent's connection) */
    if (arpc_loop_on_thread(c->cl_loop)) {
        /* Closing waits for the loop: on the loop itself it never returns. Said, since a close
         * refused inside a callback would otherwise leak the client without a word. */
        arpc_log(ARPC_LOG_WARN, "arpc_client_close refused: called on the client's own loop thread (a "
                 "callback or task of its loop), it would wait for itself (close from another thread)");
        return ARPC_EBUSY;
    }
    /* From here the handle is closing: a second close, even a racing one, is caught, and a call
     * started meanwhile (a callback the close's completions run) is refused ARPC_ESHUTDOWN. */
    if (!arpc_handle_kill_to(c, ARPC_MAGIC_CLIENT, ARPC_MAGIC_CLIENT_CLOSING, "client", __func__))
        return ARPC_EINVAL;
    /* On the loop, after every call posted before it (the lane is FIFO); or here, once no
     * thread runs a loop that was stopped. */
    arpc_loop_run_sync(c->cl_loop, step_close, c);
    /* The connection's last words leave as the server reads them, for close_linger_ms at most
     * (core/client_linger.c): waited for here, not on the loop, which serves others meanwhile. */
    if (c->cl_lingering) {
        (void)arpc_loop_wait(c->cl_loop, c->cl_lingered);
        /* It completes inside the connection's close: the loop is out of it after a fence. */
        (void)arpc_loop_fence(c->cl_loop);
    }
    /* Cancels still on their way to the loop hold their calls: let the lane run them (it is
     * FIFO, so a no-op run after them means they ran). On a stopped loop the final drain ran
     * them: what is left is callers between their entry and their hand-over (client_enter,
     * core/client_api.c), which the stopped loop refuses, so they leave at once. */
    arpc_loop_fence_until_zero(c->cl_loop, &c->cl_live);
    /* Their jobs have all run: the loop's count is ours to read (after the fence). */
    if (c->cl_dropped_closing > 0)
        arpc_log(ARPC_LOG_WARN,
                 "closing the client of %s: %" PRIu64 " one-way message(s) arpc_notify accepted as the "
                 "close began dropped unsent",
                 c->cl_target.t_addr, c->cl_dropped_closing);
    arpc_handle_poison(c); /* closed: any use from now on is misuse */
    if (c->cl_owns_loop)
        arpc_loop_destroy(c->cl_loop);
    else
        arpc_loop_users_add(c->cl_loop, -1); /* the user's loop may go now */
    client_release(c);
    return ARPC_OK;
}

size_t arpc_client_pending(const arpc_client *c)
{
    return client_live(c, __func__) ? atomic_load(&((arpc_client *)c)->cl_npending) : 0;
}

uint64_t arpc_client_id(const arpc_client *c) { return client_live(c, __func__) ? c->cl_id : 0; }

uint64_t arpc_client_connections(const arpc_client *c)
{
    return client_live(c, __func__) ? atomic_load(&((arpc_client *)c)->cl_connections) : 0;
}
