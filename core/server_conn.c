/*
 * One server connection's protocol, on the loop thread: the HELLO exchange, the frames a client
 * may send, looking up methods and handing requests to their handlers, and the last words
 * (ERROR, GOAWAY) before a connection closes for bad input or at stop.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "core/frame.h"
#include "core/jsonrpc_scan.h"
#include "core/jsonrpc_server.h"
#include "core/peer_log.h"
#include "core/server_internal.h"
#include "transport/tls.h"
#include "transport/transport.h"

void sconn_retain(struct server_conn *sc) { arpc_refcount_get(&sc->sc_refs); }

static void sconn_release_n(struct server_conn *sc, unsigned n)
{
    if (arpc_refcount_put_n(&sc->sc_refs, n)) {
        arpc_server *s = sc->sc_server;
        arpc_u64_map_fini(&sc->sc_calls); /* empty: each request in it held a reference */
        arpc_free(sc->sc_peer_subject);
        arpc_free(sc);
        server_release(s); /* the connection's (sconn_open) */
    }
}

void sconn_release(struct server_conn *sc) { sconn_release_n(sc, 1); }

/* The longest error message the client accepts (it announced its frame limit in HELLO). */
size_t sconn_error_msg_cap(const struct server_conn *sc, size_t mlen) { return error_msg_cap(sc->sc_client_max, mlen); }

size_t error_msg_cap(uint32_t client_max, size_t mlen)
{
    size_t cap = client_max > ARPC_ERROR_FIXED_SIZE ? client_max - ARPC_ERROR_FIXED_SIZE : 0;
    if (cap > UINT16_MAX)
        cap = UINT16_MAX;
    return mlen < cap ? mlen : cap;
}

static void send_flagged_error(struct server_conn *sc, uint64_t xid, int code, uint16_t flags, const char *msg,
                               size_t mlen)
{
    mlen = sconn_error_msg_cap(sc, mlen);
    if (jsonrpc_sconn_send_error(sc, xid, code, msg, mlen))
        return;
    if (arpc_conn_send_error(&sc->sc_conn, ARPC_FRAME_ERROR, xid, code, flags, msg, (uint16_t)mlen) == ARPC_ENOMEM)
        /* The client would wait for this answer forever: fail the whole connection instead. */
        arpc_conn_close(&sc->sc_conn, ARPC_ENOMEM);
}

void sconn_send_error(struct server_conn *sc, uint64_t xid, int code, const char *msg, size_t mlen)
{
    send_flagged_error(sc, xid, code, 0, msg, mlen);
}

uint64_t sconn_call_deadline(const struct arpc_frame *f, uint64_t arrival_ns)
{
    return f->f_deadline_ms ? arpc_deadline_after(arrival_ns, f->f_deadline_ms) : ARPC_NEVER;
}

uint64_t sconn_call_seq(const struct server_conn *sc, const struct arpc_frame *f)
{
    return f->f_kind == ARPC_FRAME_ONEWAY || sc->sc_client_id == 0 ? 0 : f->f_seq;
}

static void refuse(struct server_conn *sc, uint64_t xid, int code, uint16_t flags, const char *msg, size_t mlen)
{
    if (code >= 0 && code < ARPC_STATS_CODES)
        arpc_stat_inc(&sc->sc_server->sv_stats.ss_refused[code]);
    send_flagged_error(sc, xid, code, flags, msg, mlen);
}

void sconn_refuse_call(struct server_conn *sc, uint64_t xid, int code, const char *msg, size_t mlen)
{
    refuse(sc, xid, code, 0, msg, mlen);
}

void sconn_refuse_unkept(struct server_conn *sc, uint64_t xid, int code, const char *msg, size_t mlen)
{
    refuse(sc, xid, code, ARPC_ERROR_UNKEPT, msg, mlen);
}

/* Tells the client why before the connection closes (docs/PROTOCOL.md, GOAWAY). */
void sconn_send_goaway(struct arpc_conn *conn, int code, const char *msg)
{
    if (jsonrpc_sconn_is(conn->c_owner))
        return; /* JSON-RPC has no such message: the close says it */
    arpc_conn_send_error(conn, ARPC_FRAME_GOAWAY, 0, code, 0, msg, (uint16_t)strlen(msg));
}

void sconn_send_idle_goaway(struct arpc_conn *conn, const char *msg)
{
    if (jsonrpc_sconn_is(conn->c_owner))
        return;
    /* LAST too: idle means no call in flight and no frame begun, and the server reads nothing
     * more, so a request the client wrote meanwhile was never read (it is sent again). Without
     * memory for it the client reconnects at once, as after a stop. */
    (void)arpc_conn_send_error(conn, ARPC_FRAME_GOAWAY, 0, ARPC_ESHUTDOWN, ARPC_GOAWAY_IDLE | ARPC_GOAWAY_LAST, msg,
                               (uint16_t)strlen(msg));
}

void sconn_refuse_unnumbered(struct server_conn *sc, const struct arpc_method *m, uint64_t xid, bool oneway)
{
    char name[ARPC_LOG_FIELD_MAX];
    arpc_log_escape(name, sizeof(name), m->m_name, m->m_name_len);
    if (oneway) {
        peer_log(sc->sc_conn.c_loop, ARPC_LOG_WARN,
                 "one-way message from %s to %s dropped: the method takes at-most-once calls only", sc->sc_conn.c_peer,
                 name);
        return;
    }
    char msg[sizeof(name) + 96];
    int n = snprintf(msg, sizeof(msg), "%s takes at-most-once calls only (numbered_only); this one was not numbered",
                     name);
    sconn_refuse_call(sc, xid, ARPC_EREJECTED, msg, (size_t)n);
}

static void sconn_on_request(struct server_conn *sc, const struct arpc_frame *f)
{
    arpc_server *s = sc->sc_server;
    bool oneway = f->f_kind == ARPC_FRAME_ONEWAY;
    arpc_conn_warm(&sc->sc_conn); /* it calls: served before connections that never did */
    if (atomic_load(&s->sv_state) != SV_RUNNING) {
        /* No call starts; a re-sent copy of one that ran gets its result, not "did not run". */
        static const char shutting_down[] = "server shutting down";
        if (!oneway && !dedup_answer_copy(sc, f))
            sconn_refuse_call(sc, f->f_xid, ARPC_ESHUTDOWN, shutting_down, sizeof(shutting_down) - 1);
        return;
    }
    const struct arpc_method *m = arpc_registry_find_near(&s->sv_registry, f->f_method, f->f_method_len,
                                                          &sc->sc_last_method);
    if (m != NULL && m->m_numbered_only && sconn_call_seq(sc, f) == 0) {
        sconn_refuse_unnumbered(sc, m, f->f_xid, oneway);
        return;
    }
    if (m != NULL) {
        request_dispatch(sc, m, f);
        if (!oneway && !m->m_inline)
            reply_direct_watch(s); /* its reply's job may come lazily (core/reply_direct.c) */
        return;
    }
    /* A copy of a call that ran under a method this server lacks (restarted on its log
     * without it) gets the call's result: "no such method" would say it did not run. */
    if (!oneway && dedup_answer_copy(sc, f))
        return;
    if (f->f_ack != 0 && sc->sc_client_id != 0)
        dedup_ack(sc, f->f_ack); /* what it finished is finished, whatever this call asks for */
    char name[ARPC_LOG_FIELD_MAX];
    arpc_log_escape(name, sizeof(name), f->f_method, f->f_method_len);
    if (oneway) {
        arpc_stat_inc(&sc->sc_server->sv_stats.ss_oneways_dropped); /* (the line may be rated away) */
        peer_log(sc->sc_conn.c_loop, ARPC_LOG_WARN, "one-way message from %s to unknown method %s dropped",
                 sc->sc_conn.c_peer, name);
        return;
    }
    /* The client gets its own bytes back (escaped too: they may reach its log). */
    char msg[sizeof(name) + 32];
    /* Fits any max_frame (ARPC_MAX_FRAME_MIN), the longest name too. */
    _Static_assert(4 + sizeof("no such method: ") + ARPC_METHOD_MAX <= ARPC_MAX_FRAME_MIN, "ARPC_MAX_FRAME_MIN");
    int n = snprintf(msg, sizeof(msg), "no such method: %s", name);
    sconn_refuse_call(sc, f->f_xid, ARPC_ENOMETHOD, msg, (size_t)n);
}

const char sconn_no_memory[] = "server out of memory for the connection";

static void sconn_on_bad_input(struct arpc_conn *conn, int reason, const char *why)
{
    char large[112];
    if (reason == ARPC_ENOMEM) { /* a HELLO unread: refused as sconn_open refuses */
        sconn_send_goaway(conn, ARPC_EOVERLOADED, sconn_no_memory);
        return;
    }
    if (reason == ARPC_ETOOLARGE) { /* the client's side of it: the server's limit */
        const struct server_conn *sc = conn->c_owner;
        uint32_t past = arpc_conn_past_skip(conn);
        if (past != 0)
            snprintf(large, sizeof(large),
                     "request body of %u bytes is over the most the server skips for one call (%u bytes)", past,
                     ARPC_CONN_SKIP_MAX);
        else
            snprintf(large, sizeof(large), "frame larger than the server accepts%s (%u bytes)",
                     sc->sc_hello ? "" : " before a HELLO", conn->c_max_body);
        why = large;
    }
    sconn_send_goaway(conn, reason, why);
}

/* A request over max_frame: that call alone is answered ARPC_ETOOLARGE (it did not run) and
 * its body is skipped; the connection goes on. A copy of a numbered call that ran (or runs)
 * gets that call's result instead (a server restarted on its log with a smaller max_frame): it
 * must not be told "did not run". Anything else that large is bad input. */
static bool sconn_on_oversized(struct arpc_conn *conn, const struct arpc_frame *f, uint32_t body_len)
{
    struct server_conn *sc = conn->c_owner;
    uint8_t kind = f->f_kind;
    if (!sc->sc_hello || (kind != ARPC_FRAME_REQUEST && kind != ARPC_FRAME_ONEWAY))
        return false;
    sc->sc_last_busy = arpc_loop_now(conn->c_loop);
    if (kind == ARPC_FRAME_REQUEST && dedup_answer_copy(sc, f))
        return true;
    char msg[96];
    int n = snprintf(msg, sizeof(msg), "request body of %u bytes is over the server's max_frame (%u)", body_len,
                     conn->c_max_body);
    if (kind == ARPC_FRAME_REQUEST)
        sconn_refuse_call(sc, f->f_xid, ARPC_ETOOLARGE, msg, (size_t)n);
    else
        peer_log(conn->c_loop, ARPC_LOG_WARN, "one-way message from %s dropped: %s", conn->c_peer, msg);
    return true;
}

static void sconn_refuse(struct arpc_conn *conn, const char *why)
{
    peer_log(conn->c_loop, ARPC_LOG_WARN, "closing the connection from %s: %s", conn->c_peer, why);
    sconn_send_goaway(conn, ARPC_EPROTO, why);
    arpc_conn_close_after_flush(conn, ARPC_EPROTO);
}

void sconn_refuse_overloaded(struct server_conn *sc, const char *why, const char *detail, int reason)
{
    sc->sc_refused = true;
    arpc_log(ARPC_LOG_WARN, "closing the connection from %s: %s (%s)", sc->sc_conn.c_peer, why, detail);
    sconn_send_goaway(&sc->sc_conn, ARPC_EOVERLOADED, why);
    arpc_conn_close_after_flush(&sc->sc_conn, reason);
}

bool sconn_learn_peer(struct server_conn *sc)
{
    char *subject = NULL;
    _Static_assert(sizeof(sc->sc_peer_holder) == ARPC_TLS_HOLDER_DIGEST, "the holder's digest fits");
    int rc = arpc_tls_peer_subject(sc->sc_conn.c_stream, &subject, sc->sc_peer_holder);
    if (rc == ARPC_OK) {
        sc->sc_peer_subject = subject;
        sc->sc_peer.cert_subject = subject;
        return true;
    }
    /* Out of memory for a verified client's subject. Let in without it, the client would
     * pass for nobody in particular: its at-most-once replies kept under an anonymous key
     * (core/server_namespace.c), the authenticate callback and its handlers seeing no
     * certificate. It is refused instead. */
    sconn_refuse_overloaded(sc, "the server is out of memory for the client certificate's subject",
                            "a verified client is not let in without it", rc);
    return false;
}

/* Queued output over ARPC_CONN_OUTPUT_HARD_FACTOR x max_conn_bytes closes the connection,
 * and the retry of a call whose reply alone is that large met the same close, until its
 * deadline: such a reply is answered ARPC_ETOOLARGE, as one larger than the client accepts
 * (one under it, with the connection's other output, may still meet the close, as before).
 * Once the codec's bound is known (an arpc HELLO's max_frame; JSON-RPC's default). */
static void sconn_bound_replies(struct server_conn *sc)
{
    size_t bytes = sc->sc_conn.c_max_bytes;
    if (bytes != 0 && bytes <= UINT32_MAX / ARPC_CONN_OUTPUT_HARD_FACTOR &&
        sc->sc_client_max > bytes * ARPC_CONN_OUTPUT_HARD_FACTOR)
        sc->sc_client_max = (uint32_t)(bytes * ARPC_CONN_OUTPUT_HARD_FACTOR);
}

static void sconn_on_hello(struct server_conn *sc, const struct arpc_frame *f)
{
    if (sc->sc_hello) {
        /* Workers read sc_client_max: it is fixed by the first HELLO. */
        sconn_refuse(&sc->sc_conn, "a second HELLO on one connection");
        return;
    }
    /* The TLS handshake is over (HELLO came through it): the client's certificate, if any, is
     * known and may name it (core/server_auth.c). */
    if (!sconn_learn_peer(sc) || !auth_admit(sc, f))
        return;
    arpc_server *s = sc->sc_server;
    sc->sc_hello = true;
    arpc_conn_let_in(&sc->sc_conn); /* its PINGs are answered from now on */
    if (atomic_load(&s->sv_state) == SV_RUNNING)
        dedup_start(s); /* armed since the listen, unless there was no memory then */
    sc->sc_client_id = f->f_client_id;
    sc->sc_incarnation = f->f_incarnation;
    sc->sc_cache_key = namespace_key(s, sc->sc_key_identity, f->f_client_id, f->f_incarnation);
    sc->sc_conn.c_max_body = s->sv_max_frame; /* the handshake's bound is over */
    if (f->f_max_frame != 0)
        sc->sc_client_max = f->f_max_frame;
    /* With a reply log every numbered reply is logged, and one record holds ARPC_DURABLE_MAX:
     * a larger reply is answered ARPC_ETOOLARGE (it ran), as one the client could not take,
     * where the log would refuse its record and stop. */
    if (s->sv_has_log && sc->sc_client_max > ARPC_DURABLE_MAX)
        sc->sc_client_max = (uint32_t)ARPC_DURABLE_MAX;
    sconn_bound_replies(sc);
    /* Speaking arpc frames (not JSON-RPC): workers may write their replies themselves
     * (core/reply_direct.c) on a plain socket. Before the HELLO is queued, which then leaves
     * first; before any request, whose post to its worker publishes the flag. */
    arpc_conn_allow_direct(&sc->sc_conn);
    /* Its cancels and PINGs pass a hold (JSON-RPC has neither: its connections never get
     * here): a hold waiting for a long poll's reply must not keep out the cancel that ends it. */
    arpc_conn_pass_control(&sc->sc_conn);
    uint32_t flags = ARPC_HELLO_CANCEL | ARPC_HELLO_DEDUP | ARPC_HELLO_ACKS | (s->sv_has_log ? ARPC_HELLO_DURABLE : 0);
    if (arpc_conn_send_hello(&sc->sc_conn, s->sv_epoch, flags, s->sv_max_frame, s->sv_expiry_s) != ARPC_OK) {
        /* Left open without its HELLO, the client would wait for it until its connect timeout
         * (for ever without one: its PINGs are answered). */
        sconn_refuse_overloaded(sc, "the server is out of memory for the connection", "its HELLO could not be answered",
                                ARPC_ENOMEM);
        return;
    }
    inflight_on_hello(sc);
}

/* The client said goodbye (GOAWAY): it will re-send nothing and waits for no answer. Its
 * calls running now are cancelled, and so is any started after (at the close). Loop
 * thread; callbacks may reply inside. */
static void sconn_on_goodbye(struct server_conn *sc)
{
    sc->sc_goodbye = true;
    sconn_cancel_departed(sc);
}

/* The goodbye read in order (or its connection closed after a hold's look-through saw it):
 * the client's kept replies go. Not at the look-through itself: a copy of an answered call
 * still buffered ahead of the goodbye must be answered from them. A call still running, or a
 * reply its worker wrote and the loop has not booked yet, keeps the client until it is
 * (arpc_reply_cache_settle, server_dedup.c), whichever connection or late reply books it. */
static void sconn_forget_client(struct server_conn *sc)
{
    sc->sc_forgot = true;
    if (sc->sc_cache_key != 0)
        /* An incarnation makes the key this client object's alone: its highest seq may be
         * kept against late copies. Without one (an older client) the key may come back in
         * its next process, numbering from 1: it must then start afresh. */
        arpc_reply_cache_forget(&sc->sc_server->sv_cache, sc->sc_cache_key, sc->sc_incarnation != 0);
}

static void sconn_on_frame(struct arpc_conn *conn, const struct arpc_frame *f)
{
    struct server_conn *sc = conn->c_owner;
    if (sc->sc_refused)
        return; /* nothing from a client that failed the checks runs */
    sc->sc_last_busy = arpc_loop_now(conn->c_loop); /* idle timeout: PING/PONG get here only before HELLO (refused) */
    if (!sc->sc_hello && f->f_kind != ARPC_FRAME_HELLO) {
        sconn_refuse(conn, "the first frame must be HELLO");
        return;
    }
    if (f->f_kind != ARPC_FRAME_REQUEST && f->f_kind != ARPC_FRAME_ONEWAY)
        request_batch_flush(sc->sc_server); /* what it does sees the calls before it posted */
    switch (f->f_kind) {
    case ARPC_FRAME_HELLO:
        sconn_on_hello(sc, f);
        return;
    case ARPC_FRAME_REQUEST:
    case ARPC_FRAME_ONEWAY:
        sconn_on_request(sc, f);
        return;
    case ARPC_FRAME_CANCEL:
        if (f->f_seq != 0) /* it names a numbered call by its seq (its xid is 0) */
            dedup_cancel_seq(sc, f->f_seq);
        else
            request_cancel(sc, f->f_xid);
        return;
    case ARPC_FRAME_ACK:
        dedup_ack_beyond(sc, f);
        return;
    case ARPC_FRAME_GOAWAY:
        /* The client is closing for good: it will re-send nothing, so its replies can go,
         * and its calls still running are cancelled. */
        sconn_on_goodbye(sc);
        sconn_forget_client(sc);
        return;
    default: { /* REPLY, ERROR: a server's frames */
        char why[64];
        snprintf(why, sizeof(why), "a client sent %s %s frame (a server's)",
                 f->f_kind == ARPC_FRAME_ERROR ? "an" : "a", arpc_frame_kind_name(f->f_kind));
        sconn_refuse(conn, why); /* said, not just an EOF */
        return;
    }
    }
}

static void sconn_probe(struct server_conn *sc);

/* While input is held, a CANCEL for a call already running passes (core/conn_held.c), and so
 * do one for a duplicate attached to a running call (it cancels that call), one naming a
 * running numbered call of the client by its seq, and one naming by its xid a copy of such a
 * call still buffered behind the hold (below). One
 * for a call still buffered stays behind that call, so that it cancels it once it is read
 * (a cancel never overtakes its call: request_dispatch looks for it as it reads the call,
 * arpc_conn_cancel_behind); one for a call answered already stays too, and is dropped once
 * read, as ever. Every other frame waits for the hold to end. */
static bool sconn_on_held_frame(struct arpc_conn *conn, const struct arpc_frame *f)
{
    struct server_conn *sc = conn->c_owner;
    if (f->f_kind == ARPC_FRAME_GOAWAY) {
        /* It stays, in order (its replies are forgotten once it is read), but the calls that
         * hold the connection -- long polls -- wait for nobody now: cancelled, their replies
         * may end the hold (else it lasts till the heartbeat drops the connection). */
        sconn_on_goodbye(sc);
        /* The goodbye is a closing client's last frame: all it sent is in the buffer (arpc's
         * client queues it in its close's step on its loop, and that loop's lane is one total
         * order across threads, async/loop_lanes.c: a notify accepted before the close is
         * queued ahead of the goodbye, one after it finds the client closed and is dropped and
         * counted, never written, core/client_api.c oneway_send). With
         * only calls there ahead of it (each ended ARPC_ECANCELLED by the close, so they may
         * as well never run) and no one-way message (which must run), the probe that follows
         * its end of stream (sconn_on_eof) is sent now: its close need not wait for the
         * hold, which may last until the calls that hold it end (a new user's close took
         * all of close_linger_ms behind 16 slow calls). */
        if (!arpc_conn_held_oneway_ahead(conn))
            sconn_probe(sc);
    }
    if (f->f_kind != ARPC_FRAME_CANCEL)
        return false;
    bool here = f->f_seq == 0 && (arpc_u64_map_get(&sc->sc_calls, f->f_xid) != NULL || dedup_copy_waits(sc, f->f_xid));
    /* A CANCEL by xid that names no call here may name a REQUEST still buffered ahead of it,
     * behind the hold: a copy of a numbered call of the client's that runs -- begun on a
     * connection since lost, and maybe what holds this one (a long poll counted against
     * max_calls_per_client). The copy cannot attach until the hold ends, which that call may
     * never let happen: the CANCEL cancels it by its seq, kept as a CANCEL naming the seq is,
     * so the copy gets its result once read (helper review: the long poll and the connection
     * were held for good). Only a request in the buffer counts: a late CANCEL for an answered
     * call names nothing, whatever its xid (a review: bit 62 of an xid is arpc's client's
     * convention, not the protocol's). */
    struct arpc_frame cancel = *f; /* the copy's CANCEL is handled as the CANCEL naming its seq */
    if (!here && cancel.f_seq == 0 && arpc_conn_held_request(conn, f->f_xid, &cancel.f_seq))
        cancel.f_xid = 0;
    if (!here && (cancel.f_seq == 0 || !dedup_seq_runs(sc, cancel.f_seq)))
        return false;
    inflight_hold_passed(sc); /* calls given up on while held: a hold worth a line */
    sconn_on_frame(conn, &cancel);
    return true;
}

/* Why the server closed the connection: the reason it decided (bad input or a refusal, said
 * in a GOAWAY or a JSON-RPC error), even when the stream broke before those last words left
 * (the peer reset it, the write timeout) and the close came with that reason instead; else a
 * peer that resets at once would never be charged for its faults. */
static int sconn_close_cause(const struct server_conn *sc, int reason)
{
    const struct arpc_conn *conn = &sc->sc_conn;
    if (conn->c_close_after_flush)
        return conn->c_close_reason;
    int ended = jsonrpc_sconn_end_code(sc); /* its last words wait for the answers before them */
    return ended != 0 ? ended : reason;
}

/* A peer that began a TLS handshake (finished it, often) and went before its HELLO: it cost
 * the server the key exchange and a signature (~0.5 ms, against ~40 us for a plain fault),
 * and an arpc client says HELLO in its first record. Uncharged, a loop of such handshakes
 * took a quarter of a core without the listeners ever pausing (an attacker's trial); the
 * handshake timeout charged only those that stayed. One that sent nothing is no fault. */
static bool sconn_left_after_handshake(const struct server_conn *sc, int cause)
{
    /* The peer's leaving (cause: sconn_close_cause), not a close of the server's own (a
     * refusal at HELLO, say) that the stream's breaking overtook. */
    return cause == ARPC_ECONNLOST && !sc->sc_refused && !sc->sc_hello &&
           arpc_conn_handshake(&sc->sc_conn) != ARPC_STREAM_NO_HANDSHAKE;
}

static void sconn_on_close(struct arpc_conn *conn, int reason)
{
    struct server_conn *sc = conn->c_owner;
    arpc_server *s = sc->sc_server;
    int cause = sconn_close_cause(sc, reason);
    if (fault_is_peers(cause) || sconn_left_after_handshake(sc, cause))
        fault_rate_charge(sc); /* may pause the listeners: core/fault_rate.c */
    limits_on_close(sc);
    arpc_stat_inc(&s->sv_stats.ss_closed);
    inflight_on_close(sc);
    arpc_dlist_remove(&s->sv_conns, &sc->sc_link);
    request_park_on_close(sc); /* refused, or left for its actor's room */
    /* Before the JSON-RPC state goes: a cancel callback may reply at once. */
    sconn_cancel_departed(sc);
    /* A goodbye the hold's look-through saw, never read in order (a reset dropped it with the
     * buffer, after the early probe let the client close): the copies ahead of it died with
     * the buffer, so the client's replies can go now, as they would have then. */
    if (sc->sc_goodbye && !sc->sc_forgot)
        sconn_forget_client(sc);
    /* Requests still in handlers keep sc alive, and their entries in sc_calls: a copy of a
     * numbered call on another connection may still cancel one (request_cancel_call). The
     * table goes with sc (sconn_release). */
    jsonrpc_sconn_close(sc);
    /* The loop's reference and its stash: from here on each request lets go of its own. */
    unsigned ahead = sc->sc_refs_ahead;
    sc->sc_refs_ahead = 0;
    sc->sc_refs_loop = false;
    sconn_release_n(sc, 1 + ahead); /* the loop's reference, with its stash */
}

/* The connection's first byte chooses the codec, once: an arpc frame starts with its magic,
 * JSON-RPC with '{'. Not again later: a PING answered before HELLO, then '{', must not turn
 * a connection that spoke arpc into a JSON-RPC one (the fuzzer's find: two codecs on one
 * stream). */
static size_t sconn_parse_codec(struct server_conn *sc)
{
    struct arpc_conn *conn = &sc->sc_conn;
    if (jsonrpc_sconn_is(sc))
        return jsonrpc_sconn_parse(sc);
    if (!sc->sc_codec_chosen && conn->c_rend > conn->c_rstart) {
        sc->sc_codec_chosen = true;
        if (!sc->sc_server->sv_no_jsonrpc && jsonrpc_sconn_adopt(sc)) {
            sconn_bound_replies(sc);
            return jsonrpc_sconn_parse(sc);
        }
        if (conn->c_open && !conn->c_close_after_flush && jsonrpc_peer_first(conn->c_rbuf[conn->c_rstart])) {
            sconn_refuse_json(sc);
            return 0;
        }
    }
    return arpc_conn_parse_frames(conn);
}

/* The requests a parse dispatches go to their workers in runs (core/request_dispatch.c). */
static size_t sconn_parse(struct arpc_conn *conn)
{
    struct server_conn *sc = conn->c_owner;
    arpc_server *s = sc->sc_server;
    request_batch_open(s);
    size_t need = sconn_parse_codec(sc);
    request_batch_close(s);
    return need;
}

/* The end of stream cannot tell a half-close from a close for good: something harmless is
 * written at once, which a peer that closed answers with a reset, and the socket's hangup
 * then closes the connection (core/conn.c) instead of its calls keeping it until they end.
 * An arpc client gets a PING (the heartbeat sends them too), a JSON-RPC one a blank line
 * (whitespace between responses; docs/PROTOCOL.md). */
static void sconn_probe(struct server_conn *sc)
{
    struct arpc_conn *conn = &sc->sc_conn;
    if (!jsonrpc_sconn_is(sc)) {
        (void)arpc_conn_send_ping(conn, 0); /* without memory: the heartbeat's PING finds it */
        return;
    }
    uint8_t *nl = arpc_malloc(1);
    if (nl == NULL)
        return; /* found when the answer is written */
    nl[0] = '\n';
    (void)arpc_conn_send(conn, nl, nl, 1);
}

void sconn_close_answered(struct server_conn *sc)
{
    int code = jsonrpc_sconn_last_words(sc); /* after every answer: queued last */
    arpc_conn_close_after_flush(&sc->sc_conn, code != 0 ? code : ARPC_ECONNLOST);
}

bool sconn_input_ended(const struct server_conn *sc) { return sc->sc_conn.c_eof || jsonrpc_sconn_ended(sc); }

/* The calls it sent are answered, then the connection closes (core/server_inflight.c:
 * inflight_end). With a reply log some replies leave only once their records are durable,
 * after their calls stopped counting, so there it closes once what is queued is written, as it
 * did for every end of stream before: a numbered call's result stays in the reply cache for
 * its retry. */
bool sconn_end_input(struct server_conn *sc)
{
    if (sconn_owes_answers(sc) && sc->sc_server->sv_log == NULL)
        return false;
    sconn_close_answered(sc);
    return true;
}

/* The client sent all it will (a half-close, e.g. a pipe into nc): what it sent is answered
 * (sconn_end_input). Part of an arpc frame left in can never end: a lost connection; part of
 * a JSON-RPC request is bad input, said after the answers (as Go's server answers the calls
 * it read before an unexpected end of stream). */
static void sconn_on_eof(struct arpc_conn *conn)
{
    struct server_conn *sc = conn->c_owner;
    if (arpc_conn_partial_frame(conn) && !jsonrpc_sconn_cut_short(sc)) {
        arpc_conn_close(conn, ARPC_ECONNLOST);
        return;
    }
    if (!conn->c_open || conn->c_close_pending)
        return; /* no memory for its last words */
    arpc_stat_inc(&sc->sc_server->sv_stats.ss_half_closed);
    if (!sconn_end_input(sc))
        sconn_probe(sc);
}

static const struct arpc_conn_ops server_conn_ops = {
    .on_frame = sconn_on_frame,
    .on_close = sconn_on_close,
    .on_bad_input = sconn_on_bad_input,
    .on_oversized = sconn_on_oversized,
    .parse = sconn_parse,
    .on_held = inflight_on_held,
    .on_eof = sconn_on_eof,
    .on_held_frame = sconn_on_held_frame,
};

void sconn_open(arpc_server *s, int fd, const char *peer, const char *scheme, const struct arpc_peer_creds *creds,
                struct arpc_tls *tls)
{
    struct server_conn *sc = arpc_calloc(1, sizeof(*sc));
    if (sc == NULL) {
        arpc_log(ARPC_LOG_WARN, "out of memory: connection from %s closed", peer);
        listener_refuse_raw(fd, tls != NULL, sconn_no_memory); /* else the client blames the peer */
        close(fd);
        return;
    }
    arpc_refcount_init(&sc->sc_refs, 1);
    sc->sc_refs_loop = true;
    sc->sc_server = s;
    sc->sc_client_max = ARPC_DEFAULT_MAX_FRAME;
    if (arpc_u64_map_init(&sc->sc_calls, 16) != ARPC_OK) {
        arpc_log(ARPC_LOG_WARN, "out of memory: connection from %s closed", peer);
        listener_refuse_raw(fd, tls != NULL, sconn_no_memory);
        close(fd);
        arpc_free(sc);
        return;
    }
    /* Until its HELLO is accepted a connection may send only a HELLO: its frames are bounded by
     * the largest HELLO (a token at its cap), whatever max_frame says; sconn_on_hello lifts it. */
    struct arpc_stream *stream = NULL;
    int rc = tls == NULL ? arpc_conn_init(&sc->sc_conn, s->sv_loop, fd, ARPC_HELLO_BODY_MAX, &server_conn_ops, sc, peer)
             : arpc_tls_stream_new(tls, fd, &stream) != ARPC_OK
                 ? ARPC_ENOMEM
                 : arpc_conn_init_stream(&sc->sc_conn, s->sv_loop, stream, ARPC_HELLO_BODY_MAX, &server_conn_ops,
                                         sc, peer);
    if (rc != ARPC_OK) {
        arpc_log(ARPC_LOG_WARN, "out of memory: connection from %s closed", peer);
        arpc_u64_map_fini(&sc->sc_calls);
        arpc_free(sc);
        return;
    }
    /* A connection pins its server, so whatever pins the connection (a request, a waiting
     * duplicate, a reply on its way) may use the server without a reference of its own. */
    server_retain(s);
    sc->sc_conn.c_stranger = true; /* nothing answered, PINGs included, before its HELLO is let in */
    sc->sc_conn.c_stats = &s->sv_stats.ss_io;
    arpc_stat_inc(&s->sv_stats.ss_accepted);
    sc->sc_peer = (arpc_peer_info){.transport = scheme, .address = sc->sc_conn.c_peer};
    if (creds != NULL) {
        sc->sc_peer.has_creds = true;
        sc->sc_peer.uid = creds->pc_uid;
        sc->sc_peer.gid = creds->pc_gid;
        sc->sc_peer.pid = creds->pc_pid;
    }
    /* Linked first: a close (even the refusal's) unlinks it. */
    arpc_dlist_insert_after(&s->sv_conns, s->sv_conns.dl_tail, &sc->sc_link);
    if (!limits_admit(sc))
        return;
    arpc_conn_cool(&sc->sc_conn); /* until its first request: see arpc_conn_cool */
    arpc_conn_limit_backlog(&sc->sc_conn);
    arpc_conn_limit_bytes(&sc->sc_conn, s->sv_max_conn_bytes);
    if (arpc_conn_heartbeat(&sc->sc_conn, s->sv_heartbeat_ms, s->sv_heartbeat_misses) != ARPC_OK)
        sconn_refuse_overloaded(sc, sconn_no_memory, "no memory to arm its heartbeat: nothing would notice its "
                                "client gone silent", ARPC_ENOMEM);
}

void sconn_goaway_all(arpc_server *s)
{
    for (struct server_conn *sc = sconn_first(s); sc != NULL; sc = sconn_next(sc))
        sconn_send_goaway(&sc->sc_conn, ARPC_ESHUTDOWN, "server shutting down");
}

void sconn_refuse_parked_all(arpc_server *s)
{
    for (struct server_conn *sc = sconn_first(s); sc != NULL; sc = sconn_next(sc))
        request_refuse_parked(sc);
    while (s->sv_parked_closed.dl_head != NULL) /* closed, their parked requests outliving them */
        request_refuse_parked(ARPC_DLIST_ENTRY(s->sv_parked_closed.dl_head, struct server_conn, sc_parked_link));
}

/* The stop's last frame on an arpc connection that is owed nothing: every request read on it
 * was answered ahead of it, and nothing more is read (docs/PROTOCOL.md, GOAWAY). With a reply
 * log, answers waiting for their records count as owed (they left sc_ncalls already). Without
 * memory for it the client is told nothing more: its calls stay "may have run". */
static void sconn_send_last_word(struct server_conn *sc)
{
    static const char msg[] = "server stopped: a call not answered was not read";
    arpc_server *s = sc->sc_server;
    if (jsonrpc_sconn_is(sc) || sconn_owes_answers(sc) || (s->sv_has_log && atomic_load(&s->sv_logging) != 0))
        return;
    (void)arpc_conn_send_error(&sc->sc_conn, ARPC_FRAME_GOAWAY, 0, ARPC_ESHUTDOWN, ARPC_GOAWAY_LAST, msg,
                               sizeof(msg) - 1); /* without memory: the close says the rest */
}

void sconn_close_all(arpc_server *s)
{
    /* Replies already handed over went out before this ran (the job lane is FIFO), and so did
     * the stop's refusals of parked calls (sconn_refuse_parked_all, called first); the last
     * word goes behind them; write what the sockets take without waiting, then close. */
    for (struct server_conn *sc = sconn_first(s), *next; sc != NULL; sc = next) {
        next = sconn_next(sc); /* a failed flush closes (and may free) sc */
        sconn_send_last_word(sc);
        arpc_conn_flush_now(&sc->sc_conn);
    }
    while (sconn_first(s) != NULL)
        arpc_conn_close(&sconn_first(s)->sc_conn, ARPC_ESHUTDOWN); /* on_close unlinks it */
}
