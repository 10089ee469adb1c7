/*
 * The client's connection, on the loop thread: adopting a connected socket, the HELLO
 * exchange, frames from the server (replies matched to calls by xid), GOAWAY, and the loss of
 * the connection, after which the calls that may be sent again wait for the next one
 * (client_resend.c) while client_connect.c makes it.
 */
#include <stdio.h>
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "core/client_internal.h"
#include "core/client_resend.h"
#include "core/frame.h"
#include "core/peer_log.h"
#include "transport/tls.h"

static void *copy_bytes(const void *src, size_t len)
{
    void *p = arpc_malloc(len ? len : 1);
    if (p != NULL && len)
        memcpy(p, src, len);
    return p;
}

static int error_code_from_wire(uint32_t code)
{
    /* Not a local condition's code (ARPC_ENOMEM, ARPC_EUNREACHABLE: "not sent", for a call
     * that was), nor ARPC_EPENDING, a future's "not yet" (the future would refuse it and the
     * caller see ARPC_EINVAL). */
    return arpc_frame_error_code_answers(code) ? (int)code : ARPC_EPROTO;
}

/* The server's "did not run" (docs/SEMANTICS.md, "Outcomes") speaks for the send it answers.
 * An unnumbered call sent again after a loss may have run at an earlier send, left whole on the
 * connection since lost: its caller must hear "may have run" (ARPC_ECONNLOST). A numbered
 * (at-most-once) call's answer covers its earlier sends (the server looked its seq up first,
 * and keeps its refusal as it would a reply), except a refusal the server kept no record of
 * (ARPC_ERROR_UNKEPT: its cache was full, ...): an earlier send reaching it later may still
 * run the call. */
static bool resend_refused(const struct client_call *call, int code, uint16_t flags)
{
    bool did_not_run = code == ARPC_ESHUTDOWN || code == ARPC_EREJECTED || code == ARPC_EOVERLOADED ||
                       code == ARPC_EEXPIRED || code == ARPC_ENOMETHOD || code == ARPC_ETOOLARGE ||
                       code == ARPC_ECANCELLED;
    return did_not_run && call->cc_reached &&
           (call->cc_semantics != ARPC_AT_MOST_ONCE || (flags & ARPC_ERROR_UNKEPT));
}

/* A resend_refused call's result: the server's words and what they mean for it. NULL without
 * memory (the caller still hears ARPC_ECONNLOST, without words). */
static char *resend_refused_why(int code, const struct arpc_frame *f, size_t *len)
{
    enum { WORDS_MAX = 200 }; /* of the server's: its refusals are short */
    char why[WORDS_MAX + 128];
    int n = snprintf(why, sizeof(why), "%s (%.*s) for this send; an earlier send, on a connection since lost, may have run",
                     arpc_errname(code), f->f_msg_len < WORDS_MAX ? (int)f->f_msg_len : WORDS_MAX, f->f_msg);
    char *text = arpc_text_copy(why, n < (int)sizeof(why) ? (size_t)n : sizeof(why) - 1);
    if (text != NULL)
        *len = strlen(text);
    return text;
}

static void client_on_reply(arpc_client *c, const struct arpc_frame *f)
{
    if (c->cl_cancelled.cs_told && f->f_xid != 0)
        cancel_seq_confirmed(c); /* an answer on this connection: it read the CANCELs told first */
    struct client_call *call = pending_take(&c->cl_pending, f->f_xid);
    if (call == NULL && (f->f_xid & (CD_XID_BIT | ARPC_XID_SEQ_BIT))) {
        client_direct_catch_up(c); /* its caller wrote it; the loop may not have seen it yet */
        call = pending_take(&c->cl_pending, f->f_xid);
        if (call != NULL)
            arpc_stat_inc(&c->cl_direct.cd_by_reply);
    }
    if (call == NULL) {
        cancel_seq_answered(c, f->f_xid); /* a cancelled call's answer: the server heard of it */
        return; /* timed out or cancelled already: the late reply is dropped */
    }
    call->cc_tracked = false; /* taken above */
    bool ok = f->f_kind == ARPC_FRAME_REPLY;
    if (ok && !c->cl_connector.cn_proven) {
        /* The first reply to a call of ours: the server works. Not any REPLY frame: a server
         * that answered each connection with a reply to no call, then closed it, was
         * reconnected to with no back-off (757 times in 8 s in a review's trial). */
        c->cl_connector.cn_proven = true;
        arpc_backoff_reset(&c->cl_connector.cn_backoff);
    }
    int code = ok ? ARPC_OK : error_code_from_wire(f->f_code);
    size_t len = 0;
    void *data;
    if (!ok && resend_refused(call, code, f->f_err_flags)) {
        data = resend_refused_why(code, f, &len);
        code = ARPC_ECONNLOST;
    } else if (ok) {
        /* A large REPLY read into a buffer of its own (which starts at the payload) becomes
         * the caller's as it is: no copy. */
        size_t cap;
        len = f->f_payload_len;
        if ((data = arpc_conn_take_body(&c->cl_conn, &cap)) == NULL)
            data = copy_bytes(f->f_payload, len);
        /* It ran, and its result is lost here: what can be said is "may have run" (never
         * ARPC_ENOMEM, which a call that could not start ends with). */
        if (data == NULL)
            code = ARPC_EABANDONED;
    } else {
        len = f->f_msg_len;
        data = arpc_text_copy(f->f_msg, len); /* a message: printable (client.h); NULL: the code alone */
    }
    call_finish(call, code, data, data != NULL ? len : 0);
}

static void client_on_hello(arpc_client *c, const struct arpc_frame *f)
{
    struct client_connector *cn = &c->cl_connector;
    if (!cn->cn_attempting)
        return; /* one HELLO per connection; a second is ignored */
    /* From the HELLO on, where connect_timeout_ms bounded the wait before it (a heartbeat
     * armed at the connect ended a longer one at heartbeat_ms x (misses + 1), as "refused");
     * without one it runs from the connect (client_conn_adopt). A connection that cannot have
     * one is not used: a call on it would wait for ever for a peer gone silent. */
    if (c->cl_connect_timeout_ms >= 0 &&
        arpc_conn_heartbeat(&c->cl_conn, c->cl_heartbeat_ms, c->cl_heartbeat_misses) != ARPC_OK) {
        arpc_conn_close(&c->cl_conn, ARPC_ENOMEM); /* a failed attempt: "out of memory for the connection" */
        return;
    }
    if (f->f_max_frame != 0)
        atomic_store(&c->cl_server_max, f->f_max_frame);
    c->cl_server_flags = f->f_flags;
    bool new_epoch = f->f_client_id != c->cl_epoch;
    if (new_epoch)
        c->cl_epoch_gen++; /* another server instance: calls sent before it are not its */
    /* Within one epoch (one reply log, maybe restarted) the shortest expiry any of its
     * instances said (0: none): an instance restarted with a longer one has replayed what an
     * earlier one forgot under the shorter (its log's records), and a call sent to that one
     * and judged by the new figure was sent again and ran twice (helper 242). */
    uint32_t expiry = f->f_expiry_s;
    if (new_epoch || (expiry != 0 && (c->cl_server_expiry_s == 0 || expiry < c->cl_server_expiry_s)))
        c->cl_server_expiry_s = expiry;
    c->cl_epoch = f->f_client_id; /* a server's HELLO carries its epoch there */
    c->cl_conn.c_max_body = c->cl_max_frame; /* the handshake's bound is over */
    client_connect_stop(c);
    c->cl_give_up_stalled = false;
    c->cl_conn.c_owner_tells = false; /* from now on nobody waits to be told */
    cn->cn_proven = false;
    cn->cn_hello_ns = arpc_now_coarse_ns();
    uint64_t n = atomic_fetch_add(&c->cl_connections, 1);
    c->cl_oneways_on_conn = 0;
    memset(&c->cl_attempts_log, 0, sizeof(c->cl_attempts_log)); /* the next outage is said at once */
    atomic_store(&c->cl_state, CL_READY);
    if (n > 0)
        arpc_log(ARPC_LOG_INFO, "reconnected to %s", c->cl_target.t_addr);
    if (n > 0 || c->cl_background)
        client_set_error(c, ARPC_OK, ""); /* what was in the way is gone (arpc_client_last_error) */
    client_lookup_drop(c); /* the addresses worked: a lookup's later answer must not replace them */
    arpc_future_complete(c->cl_first, ARPC_OK, NULL, 0);
    calls_on_connected(c); /* (with the one-way messages that came while parked) */
    client_direct_resume(c);
}

/* The server takes no new calls on this connection; the ones in flight still get replies. */
static void client_on_goaway(arpc_client *c, const struct arpc_frame *f)
{
    char msg[ARPC_LOG_FIELD_MAX];
    arpc_log_escape(msg, sizeof(msg), f->f_msg, f->f_msg_len);
    if (f->f_code == ARPC_ESHUTDOWN && c->cl_connector.cn_attempting) {
        /* Instead of its HELLO: a stopping server refuses the connection, as its closed
         * listener refuses the next. Said in its words, and ended now (before, the words were
         * lost: "is it an arpc server?", or a wait for the connect timeout if it stayed open). */
        char refused[CLIENT_WHY_MAX];
        snprintf(refused, sizeof(refused), "server %s refused the connection: it is stopping (%s)",
                 c->cl_target.t_addr, msg);
        client_set_error(c, ARPC_ECONNREFUSED, refused);
        atomic_store(&c->cl_lost_reason, ARPC_ECONNREFUSED);
        arpc_conn_close(&c->cl_conn, ARPC_ECONNREFUSED);
        return;
    }
    if (f->f_code == ARPC_ESHUTDOWN) {
        /* A stopping (perhaps restarting) server: new calls wait for the next connection. Its
         * last word says that it read none of the calls still pending: they did not run. */
        if (f->f_err_flags & ARPC_GOAWAY_LAST)
            c->cl_unread = true;
        if (f->f_err_flags & ARPC_GOAWAY_IDLE)
            c->cl_idle_goaway = true; /* reconnect when next needed (client_park.c) */
        client_direct_pause(c); /* callers' calls too wait */
        int expected = CL_READY;
        atomic_compare_exchange_strong(&c->cl_state, &expected, CL_DRAINING);
        return;
    }
    /* Anything else means this server will not take us: no point reconnecting (but see
     * ARPC_EOVERLOADED below). */
    int why = f->f_code == ARPC_EPROTO || f->f_code == ARPC_ETOOLARGE || f->f_code == ARPC_EREJECTED ||
                      f->f_code == ARPC_EOVERLOADED /* too many connections */ || f->f_code == ARPC_EAUTH
                  ? (int)f->f_code
                  : ARPC_EPROTO;
    char text[CLIENT_WHY_MAX];
    /* Before its HELLO the server refuses the connection; after it, it ends one in use. */
    snprintf(text, sizeof(text), "server %s %s the connection: %s", c->cl_target.t_addr,
             c->cl_connector.cn_attempting ? "refused" : "ended", msg);
    client_set_error(c, why, text);
    atomic_store(&c->cl_lost_reason, why);
    /* arpc_client_connect tells its caller. A server with no room now (max_connections, out
     * of descriptors or memory) may have room later: a client that reconnects tries again
     * after its back-off, as after any loss, its calls waiting within their deadlines and
     * reconnect_give_up_ms (arpc_client_last_error says what is in the way). Ending it for
     * good would let one busy moment of the server (a restart's herd of reconnects) end its
     * long-lived clients. */
    if (!client_first_awaited(c) && !(why == ARPC_EOVERLOADED && c->cl_reconnect)) {
        atomic_store(&c->cl_state, CL_LOST);
        arpc_log(ARPC_LOG_WARN, "%s", text);
    }
    /* Refused before its HELLO, nothing more can come on this connection: it ends now, not
     * when (or if) the server closes it (the close reports the GOAWAY's words). */
    if (c->cl_connector.cn_attempting)
        arpc_conn_close(&c->cl_conn, why);
}

static void client_on_frame(struct arpc_conn *conn, const struct arpc_frame *f)
{
    arpc_client *c = conn->c_owner;
    if (atomic_load(&c->cl_state) == CL_CLOSED)
        return; /* a lingering close (client_linger.c): every call has ended */
    switch (f->f_kind) {
    case ARPC_FRAME_REPLY:
    case ARPC_FRAME_ERROR:
        client_on_reply(c, f);
        return;
    case ARPC_FRAME_HELLO:
        client_on_hello(c, f);
        return;
    case ARPC_FRAME_GOAWAY:
        client_on_goaway(c, f);
        return;
    default:
        peer_log(conn->c_loop, ARPC_LOG_WARN, "closing the connection to %s: unexpected frame kind %u",
                 c->cl_target.t_addr, f->f_kind);
        arpc_conn_close(conn, ARPC_EPROTO);
        return;
    }
}

/* Why an attempt ended before the server's HELLO, in words. */
static int client_hello_failure(arpc_client *c, int reason, char *why, size_t len)
{
    int goaway = atomic_load(&c->cl_lost_reason);
    int aborted = c->cl_connector.cn_abort_code;
    if (goaway != ARPC_ECONNLOST || aborted != 0) {
        pthread_mutex_lock(&c->cl_err_mtx);
        snprintf(why, len, "%s", c->cl_err_text); /* what the GOAWAY or the abort said */
        pthread_mutex_unlock(&c->cl_err_mtx);
        return aborted != 0 ? aborted : goaway;
    }
    if (reason == ARPC_ENOMEM) { /* this side's trouble (its HELLO, its read buffer): not the peer's */
        snprintf(why, len, "out of memory for the connection to %.250s", c->cl_target.t_addr);
        return ARPC_ENOMEM;
    }
    if (reason == ARPC_ETLS) { /* the stream's words: OpenSSL's reason */
        snprintf(why, len, "%.250s: %.250s", c->cl_target.t_addr, c->cl_conn.c_why);
        return ARPC_ETLS;
    }
    const struct arpc_conn *conn = &c->cl_conn;
    if (reason == ARPC_ECONNLOST && arpc_conn_heartbeat_gave_up(conn)) {
        snprintf(why, len, "%.250s accepted the connection but sent no HELLO, nor answered %u PINGs", c->cl_target.t_addr,
                 conn->c_hb_sent);
        return ARPC_ETIMEDOUT;
    }
    /* A tls:// server answers a clear-text client with an alert, or closes without a word:
     * a tcp:// client is told that it may be one. */
    const char *tls_hint = strncmp(c->cl_target.t_addr, "tcp://", 6) == 0 ? "; a tls:// server?" : "";
    if (reason == ARPC_EPROTO || reason == ARPC_ETOOLARGE) {
        /* The bytes' own words (core/frame_fault.c: TLS, HTTP, another version, ...). */
        const char *said = c->cl_conn.c_why; /* empty: a frame of the wrong kind */
        if (said[0] != '\0' && strncmp(said, "not an arpc frame", 17) != 0) {
            /* arpc's magic: an arpc server this client cannot take (another version, a HELLO
             * it cannot read), not a stranger, and not a tls:// one. */
            snprintf(why, len, "peer at %.250s speaks arpc, but its HELLO cannot be taken: %.200s", c->cl_target.t_addr,
                     said);
            return ARPC_EPROTO;
        }
        snprintf(why, len, "peer at %.250s is not an arpc server (its first bytes are not an arpc HELLO%s%.160s%s)",
                 c->cl_target.t_addr, said[0] != '\0' ? ": " : "", said, strstr(said, "TLS") != NULL ? "" : tls_hint);
        return ARPC_EPROTO;
    }
    snprintf(why, len, "%s closed the connection before its HELLO (is it an arpc server%s?)", c->cl_target.t_addr,
             tls_hint[0] != '\0' ? ", or a tls:// one" : "");
    return ARPC_ECONNREFUSED;
}

/* The words of a client whose application loop stopped (its stop hook, and the loss it made). */
#define CLIENT_LOOP_STOPPED "the application's loop the client runs on stopped"

/* Why the connection went, in words: what the client knows of it (a GOAWAY said the server
 * is stopping; its heartbeat went unanswered), else the reason's. */
static const char *loss_cause(const struct arpc_conn *conn, int state, int reason)
{
    if (reason == ARPC_ECONNLOST && state == CL_DRAINING)
        return ((const arpc_client *)conn->c_owner)->cl_idle_goaway
                   ? "closed by the server for idleness (its GOAWAY said so); the next call reconnects"
                   : "closed by the server, which said it is stopping (GOAWAY)";
    if (reason == ARPC_ECONNLOST && arpc_conn_heartbeat_gave_up(conn))
        return "the server answered none of the heartbeat PINGs (it, or the network, is silent)";
    switch (reason) {
    case ARPC_ECONNLOST:
        return "closed by the server, or the network failed";
    case ARPC_EPROTO:
        return "malformed frame from the server";
    case ARPC_ETOOLARGE:
        return "a frame larger than this client accepts";
    case ARPC_ENOMEM:
        return "out of memory";
    case ARPC_ESHUTDOWN: /* (a close is CL_CLOSED, and says nothing here) */
        return CLIENT_LOOP_STOPPED;
    default:
        return arpc_strerror(reason);
    }
}

static void client_on_close(struct arpc_conn *conn, int reason)
{
    arpc_client *c = conn->c_owner;
    client_direct_pause(c); /* no caller touches the connection until the next HELLO */
    if (!c->cl_connector.cn_attempting) /* a connection that was opened (HELLO) */
        arpc_stat_inc(&c->cl_stats.cst_closed);
    int state = atomic_load(&c->cl_state);
    if (state == CL_CLOSED) {
        client_linger_done(c, reason, loss_cause(conn, state, reason)); /* client_cleanup ended every call */
        return;
    }
    char why[2 * CLIENT_WHY_MAX]; /* room for the address and a GOAWAY's words (kept: CLIENT_WHY_MAX) */
    if (c->cl_connector.cn_attempting) {
        calls_on_conn_lost(c);
        int code = client_hello_failure(c, reason, why, sizeof(why));
        client_connect_failed(c, code, why);
        return;
    }
    struct client_connector *cn = &c->cl_connector;
    if (!cn->cn_proven && arpc_now_coarse_ns() - cn->cn_hello_ns >= (uint64_t)cn->cn_backoff.b_max_ms * 1000000u)
        arpc_backoff_reset(&cn->cn_backoff); /* it lasted: a server that restarts is retried at once */
    /* A server that ended the connection with a GOAWAY (not a stop) said why: its words, not
     * "closed by the server, or the network failed". */
    int said = atomic_load(&c->cl_lost_reason);
    char goaway[CLIENT_WHY_MAX] = "";
    if (state == CL_LOST && reason == ARPC_ECONNLOST && said != ARPC_ECONNLOST && said != ARPC_EUNREACHABLE &&
        said != ARPC_ESHUTDOWN) {
        pthread_mutex_lock(&c->cl_err_mtx);
        snprintf(goaway, sizeof(goaway), "%s", c->cl_err_text);
        pthread_mutex_unlock(&c->cl_err_mtx);
    }
    const char *cause = goaway[0] != '\0' ? goaway : loss_cause(conn, state, reason);
    snprintf(why, sizeof(why), "connection to %s lost: %s", c->cl_target.t_addr, cause);
    client_set_loss(c, why);
    bool for_good = state == CL_LOST || !c->cl_reconnect;
    if (for_good) {
        /* No connection will come: calls not sent whole, and later ones, did not run
         * (call_ended_code); set first, so that their results say why. */
        if (state != CL_LOST)
            atomic_store(&c->cl_lost_reason, ARPC_EUNREACHABLE);
        atomic_store(&c->cl_state, CL_LOST);
    }
    calls_on_conn_lost(c);
    if (for_good) {
        calls_fail_all(c, ARPC_ECONNLOST);
        return;
    }
    atomic_store(&c->cl_state, CL_CONNECTING);
    if (client_park(c))
        return;
    arpc_log(ARPC_LOG_INFO, "%s; reconnecting", why);
    client_connect_later(c);
}

/* A heartbeat interval without a reply: the blocks kept for large requests (up to
 * ARPC_BUF_CACHE_SLOTS of them, ARPC_CONN_BUF_CACHE_BYTES at most) are freed, so that an idle
 * client does not hold its last burst's. Callers' threads keep putting and getting meanwhile:
 * the trim is lock-free, and the cache stays open. */
static void client_on_quiet(struct arpc_conn *conn)
{
    arpc_client *c = conn->c_owner;
    arpc_buf_cache_trim(&c->cl_bufs);
}

static const struct arpc_conn_ops client_conn_ops = {
    .on_frame = client_on_frame,
    .on_close = client_on_close,
    .on_unwritten = call_on_unwritten,
    .on_quiet = client_on_quiet,
};

/* HELLO, with the client's incarnation and its token when it has one (an older server
 * ignores both). */
static int client_send_hello(arpc_client *c)
{
    size_t len = c->cl_token == NULL ? ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT
                                     : arpc_frame_hello_token_size(c->cl_token_len);
    uint8_t *buf = arpc_malloc(len);
    if (buf == NULL)
        return ARPC_ENOMEM;
    if (c->cl_token == NULL)
        arpc_frame_encode_hello(buf, c->cl_id, 0, c->cl_max_frame, 0);
    else
        arpc_frame_encode_hello_token(buf, c->cl_id, 0, c->cl_max_frame, c->cl_token, c->cl_token_len);
    arpc_frame_stamp_hello_incarnation(buf, c->cl_incarnation);
    return arpc_conn_send(&c->cl_conn, buf, buf, len);
}

void client_conn_adopt(arpc_client *c, int fd)
{
    atomic_store(&c->cl_lost_reason, ARPC_ECONNLOST); /* no GOAWAY heard on this connection yet */
    c->cl_unread = false;
    c->cl_idle_goaway = false;
    /* The server's HELLO (or the GOAWAY in its place) is read whatever max_frame says, as the
     * server reads ours: a max_frame under a HELLO's size must not pass for "not an arpc
     * server". client_on_hello sets max_frame as the bound. */
    uint32_t first = c->cl_max_frame > ARPC_HELLO_BODY_MAX ? c->cl_max_frame : ARPC_HELLO_BODY_MAX;
    struct arpc_stream *tls = NULL;
    int rc = c->cl_tls == NULL ? arpc_conn_init(&c->cl_conn, c->cl_loop, fd, first, &client_conn_ops, c,
                                                c->cl_target.t_addr)
             : arpc_tls_stream_new(c->cl_tls, fd, &tls) != ARPC_OK
                 ? ARPC_ENOMEM
                 : arpc_conn_init_stream(&c->cl_conn, c->cl_loop, tls, first, &client_conn_ops, c,
                                         c->cl_target.t_addr);
    if (rc != ARPC_OK) {
        client_connect_failed(c, ARPC_ENOMEM, "out of memory for a connection");
        return;
    }
    c->cl_conn.c_stats = &c->cl_stats.cst_io;
    c->cl_conn.c_owner_tells = client_first_awaited(c); /* until its HELLO: the caller's errbuf */
    if (atomic_load(&c->cl_connections) > 0)
        client_note_reconnecting(c); /* (a TLS handshake that stalls said the old loss: review 224) */
    /* With no connect timeout, the heartbeat is what ends a wait for a HELLO that never comes
     * (a server that accepts and says nothing: a stopped process, whose kernel still
     * completes handshakes); with one, the timeout does (client_on_hello arms it then). */
    if ((c->cl_connect_timeout_ms < 0 &&
         arpc_conn_heartbeat(&c->cl_conn, c->cl_heartbeat_ms, c->cl_heartbeat_misses) != ARPC_OK) ||
        client_send_hello(c) == ARPC_ENOMEM)
        arpc_conn_close(&c->cl_conn, ARPC_ENOMEM);
}

void client_cleanup(arpc_client *c)
{
    if (c->cl_cleaned)
        return;
    c->cl_cleaned = true;
    bool hello_done = c->cl_conn.c_open && !c->cl_connector.cn_attempting;
    client_direct_stop(c);
    client_connect_stop(c);
    client_drop_held_oneways(c, "the client closed before the connection they waited for came");
    calls_fail_all(c, ARPC_ESHUTDOWN); /* a call the server may be running: ECANCELLED */
    client_deadlines_stop(c);
    if (c->cl_conn.c_open)
        client_linger_start(c, hello_done); /* the goodbye, then what is queued leaves */
    pending_fini(&c->cl_pending);
    waiting_fini(&c->cl_waiting); /* (empty: calls_fail_all) */
    arpc_u64_map_fini(&c->cl_done);
    arpc_ack_claim_fini(&c->cl_claim);
    cancel_seq_forget(c);
    arpc_future_complete(c->cl_first, ARPC_ESHUTDOWN, NULL, 0);
}

/* The user's loop stopped: end every call, as close would. Holds a client reference from
 * connect until it runs (at the latest when the loop ends). */
void client_on_loop_stop(arpc_loop *loop, void *arg)
{
    (void)loop;
    arpc_client *c = arg;
    if (atomic_load(&c->cl_state) != CL_CLOSED) {
        atomic_store(&c->cl_lost_reason, ARPC_ESHUTDOWN);
        atomic_store(&c->cl_state, CL_LOST);
        /* (a connect waiting for its first connection says so in its errbuf) */
        client_set_error(c, ARPC_ESHUTDOWN, CLIENT_LOOP_STOPPED);
    }
    client_cleanup(c);
    if (c->cl_lingering)
        arpc_conn_close(&c->cl_conn, ARPC_ESHUTDOWN); /* no loop to linger on: ends the closer's wait */
    c->cl_hook = false;
    client_release(c);
}
