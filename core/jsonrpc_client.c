/*
 * A JSON-RPC 1.0 client (include/arpc/jsonrpc.h): calls pipelined on one connection.
 *
 * Design notes. The pieces are the arpc client's: a call's request line is encoded on the
 * calling thread, reaches the loop on the job lane embedded in the call (never waits), and is
 * queued on an arpc_conn (batched writes, the framer of core/jsonrpc_scan.h on reads through
 * the conn's parse hook); the loop keeps calls by id in a single-owner map (base/u64_map.h)
 * and their deadlines on the loop's deadline heap; the caller holds a future. Ids are
 * numbers from 1, as Go's client sends them. A request still queued whole at its call's
 * deadline is taken back out of the queue (arpc_conn_withdraw, by the call's address: the
 * record stays until the queue lets its line go, so the address names no other call's line).
 *
 * What it leaves out, against the arpc client: no reconnect (JSON-RPC has no way to say
 * whether a call ran, so the caller decides), no at-most-once, no heartbeat. A cancel reaches
 * the loop in a job of its own (call_on_cancel): a request still on its way to the loop is
 * dropped, and one queued whole is taken back where a deadline's would be (arpc_conn_withdraw:
 * not the first in the queue, and near one of its ends); JSON-RPC has no way to cancel one
 * written, which leaves the client's map as at its deadline (its late answer is skipped as
 * one to no call); its record stays only while the queue still holds its line.
 *
 * Lifetimes: a call's record is shared (jq_refs) by the loop until the call ends (answered,
 * deadline, connection lost, close; or on its caller's thread when the loop refuses it,
 * stopped), by the connection's queue while its line is queued, and by its cancel hook until
 * the cancel has been heard on the loop (a call that ends first can no longer be cancelled:
 * its end lets go of the hook's share too). The client is freed by close once no one else
 * touches it: jc_live counts the callers between their entry and their hand-over to the loop
 * (client_enter) and the call records not yet freed (the count passes from the caller to its
 * record, whose last share gives it back). Close kills the handle, closes the connection in a job on
 * the loop (run_sync; the lane is FIFO, so every call posted before has been handled by then,
 * and the pending ones end), then waits for jc_live to reach 0: calls handed over after that
 * job end in their own (the connection is gone: ARPC_ESHUTDOWN), and on a stopped loop the
 * hand-over fails and the caller ends its call itself. A caller waiting for its future holds
 * no count, so the wait always ends.
 */
#include "arpc/jsonrpc.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "arpc/client.h"
#include "arpc/error.h"
#include "async/future_internal.h"
#include "async/loop_internal.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/fork_gen.h"
#include "base/handle.h"
#include "base/log.h"
#include "base/options.h"
#include "base/u64_map.h"
#include "core/conn.h"
#include "core/jsonrpc_codec.h"
#include "core/jsonrpc_member.h"
#include "core/jsonrpc_scan.h"
#include "transport/transport.h"

#define JSONRPC_CONNECT_TIMEOUT_MS 5000

struct arpc_jsonrpc_client {
    arpc_magic jc_magic; /* first: base/handle.h; dead from arpc_jsonrpc_close on */
    unsigned jc_fork_gen;  /* the process it was made in (base/fork_gen.h) */
    atomic_size_t jc_live; /* callers on their way in (client_enter), call records not yet
                            * freed: close frees the client once it is 0 */
    arpc_loop *jc_loop;
    bool jc_owns_loop;
    bool jc_on_user_loop; /* counted in the user's loop (arpc_loop_users_add) until freed */
    uint32_t jc_max_frame;
    int64_t jc_default_deadline_ms;
    _Atomic uint64_t jc_next_id;
    /* loop thread only */
    struct arpc_conn jc_conn;
    bool jc_open;                /* the connection is up: calls may be sent */
    int jc_end_code;             /* why calls end once it is not (ECONNLOST, ESHUTDOWN) */
    char jc_broke[ARPC_LOG_FIELD_MAX + 96]; /* how the server broke the protocol, or "" */
    char jc_refused[ARPC_LOG_FIELD_MAX + 96]; /* the server refused the connection before it read
                                               * a call (jc_end_code says how): the words of every
                                               * call from then on; "" while it did not */
    char jc_loss[sizeof(((struct arpc_conn *)0)->c_peer) + ARPC_LOG_FIELD_MAX + ARPC_WHY_MAX];
                                 /* how the connection was lost ("" while it was not): the
                                  * words of the calls that end ARPC_ECONNLOST */
    struct jsonrpc_scan jc_scan;
    struct arpc_u64_map jc_calls; /* id -> struct jsonrpc_call */
};

struct jsonrpc_call {
    struct arpc_loop_job jq_job;    /* its hand-over to the loop (call_send) */
    struct arpc_loop_job jq_cancel; /* its cancel's (call_cancel_run) */
    _Atomic uint32_t jq_refs;       /* shares of the record: see "Lifetimes" above */
    struct arpc_deadline jq_deadline;
    arpc_jsonrpc_client *jq_client;
    arpc_future *jq_future; /* the call's hold (async/future_internal.h) */
    uint64_t jq_id;
    uint64_t jq_deadline_ns;
    uint8_t *jq_line;       /* the request, until written (or dropped unwritten) */
    size_t jq_len;
    bool jq_queued;         /* the line is in the connection's queue, under the call's address:
                             * the queue's share keeps the record until it lets the line go,
                             * so that address names no other call's line meanwhile */
    bool jq_over;           /* ended (call_end): a cancel heard later has nothing to do */
    bool jq_unsent;         /* its line was not wholly written when the connection closed: no
                             * server can have run it (half a JSON object is no request) */
};

/* A caller that entered (client_enter) and hands nothing over: its last touch of c. */
static void client_leave(arpc_jsonrpc_client *c)
{
    if (c != NULL)
        atomic_fetch_sub(&c->jc_live, 1);
}

/* Any thread: lets go of n shares of the record; the last frees it and gives back the count
 * its caller handed over. */
static void call_put(struct jsonrpc_call *call, uint32_t n)
{
    if (atomic_fetch_sub_explicit(&call->jq_refs, n, memory_order_acq_rel) != n)
        return;
    arpc_jsonrpc_client *c = call->jq_client;
    arpc_free(call->jq_line);
    arpc_free(call);
    client_leave(c); /* last: close may free the client from here on */
}

/* Any thread: the call is done with. */
static void call_end(struct jsonrpc_call *call, int code, void *data, size_t len)
{
    call->jq_over = true;
    /* Completed here, it can no longer be cancelled: the hook's share goes with the loop's.
     * Lost to a cancel, the hook has run or is about to: its job lets go of its share. */
    bool completed = arpc_future_complete_drop(call->jq_future, code, data, len); /* the caller may be gone */
    call_put(call, completed ? 2 : 1);
}

/* Loop thread: the queue lets the call's line go (written, taken back, or dropped). */
static void call_line_released(void *base)
{
    struct jsonrpc_call *call = base;
    arpc_free(call->jq_line);
    call->jq_line = NULL;
    call->jq_queued = false;
    call_put(call, 1);
}

/* Loop thread: call left the map (answered, or its deadline, or the connection's end). */
static void call_finish(struct jsonrpc_call *call, int code, void *data, size_t len)
{
    arpc_deadline_cancel(call->jq_client->jc_loop, &call->jq_deadline);
    call_end(call, code, data, len);
}

static void call_on_deadline(struct arpc_deadline *d, void *arg)
{
    (void)d;
    struct jsonrpc_call *call = arg;
    arpc_jsonrpc_client *c = call->jq_client;
    static const char timed_out[] = "no answer came by the call's deadline: it may or may not have run";
    static const char unwritten[] = ARPC_CONN_WITHDRAWN_WHY;
    arpc_u64_map_take(&c->jc_calls, call->jq_id);
    /* Still queued whole (a server that stopped reading): taken back, so a server that catches
     * up later does not run a call whose caller gave up (as the arpc client does). */
    bool taken = call->jq_queued && arpc_conn_withdraw(&c->jc_conn, call);
    const char *why = taken ? unwritten : timed_out;
    size_t why_len = taken ? sizeof(unwritten) - 1 : sizeof(timed_out) - 1;
    char *words = arpc_text_copy(why, why_len);
    call_end(call, taken ? ARPC_EUNREACHABLE : ARPC_ETIMEDOUT, words, words != NULL ? why_len : 0);
}

/* The words of a call ending ARPC_ECONNLOST: whether it was sent, and how the connection
 * was lost (a copy for its future; NULL without memory: the code alone). */
static char *call_lost_words(const arpc_jsonrpc_client *c, bool sent, size_t *len)
{
    char text[sizeof(c->jc_loss) + 96];
    int n = snprintf(text, sizeof(text), "%s (%s)",
                     sent ? "sent, then the connection was lost: it may or may not have run"
                          : "not sent: the connection was lost before (no reconnect: connect a new client)",
                     c->jc_loss);
    n = n < 0 ? 0 : n >= (int)sizeof(text) ? (int)sizeof(text) - 1 : n;
    char *copy = arpc_text_copy(text, (size_t)n);
    *len = copy != NULL ? (size_t)n : 0;
    return copy;
}

/* The words of a call that ends as the connection did (code), or NULL: the code alone. */
static char *call_end_words(const arpc_jsonrpc_client *c, int code, bool sent, size_t *len)
{
    *len = 0;
    if (code == ARPC_ECONNLOST && c->jc_loss[0] != '\0')
        return call_lost_words(c, sent, len);
    if (c->jc_refused[0] == '\0' || code != c->jc_end_code)
        return NULL;
    size_t n = strlen(c->jc_refused);
    char *copy = arpc_text_copy(c->jc_refused, n);
    *len = copy != NULL ? n : 0;
    return copy;
}

static void call_fail_pending(void *val, void *arg)
{
    struct jsonrpc_call *call = val;
    arpc_jsonrpc_client *c = call->jq_client;
    int code = call->jq_unsent ? c->jc_end_code : *(const int *)arg;
    size_t len = 0;
    char *words = call_end_words(c, code, !call->jq_unsent, &len);
    call_finish(call, code, words, len);
}

/* Loop thread: the server broke the protocol (what: its words, escaped). The connection is
 * then closed with ARPC_EPROTO: the loss's log line and the calls' words say what. */
static void client_broke(arpc_jsonrpc_client *c, const char *what)
{
    snprintf(c->jc_broke, sizeof(c->jc_broke), "%s", what);
}

/* Loop thread: no more calls go out (those that would end with code); every pending one,
 * sent, ends with sent_code. */
static void client_end_calls(arpc_jsonrpc_client *c, int code, int sent_code)
{
    c->jc_open = false;
    c->jc_end_code = code;
    arpc_u64_map_drain(&c->jc_calls, call_fail_pending, &sent_code);
}

static void client_on_close(struct arpc_conn *conn, int reason)
{
    arpc_jsonrpc_client *c = conn->c_owner;
    if (reason != ARPC_ESHUTDOWN) {
        const char *cause = c->jc_broke[0] != '\0'    ? c->jc_broke
                            : conn->c_why[0] != '\0'  ? conn->c_why
                            : reason == ARPC_ECONNLOST ? "closed by the server, or the network failed"
                                                       : arpc_strerror(reason);
        snprintf(c->jc_loss, sizeof(c->jc_loss), "connection to %s lost: %s", conn->c_peer, cause);
        arpc_log(ARPC_LOG_WARN, "JSON-RPC %s", c->jc_loss);
    }
    /* A call the server may be running is cancelled by a close, not "did not run". */
    if (reason == ARPC_ESHUTDOWN)
        client_end_calls(c, ARPC_ESHUTDOWN, ARPC_ECANCELLED);
    else if (c->jc_refused[0] != '\0') /* the server read none of them */
        client_end_calls(c, c->jc_end_code, c->jc_end_code);
    else
        client_end_calls(c, ARPC_ECONNLOST, ARPC_ECONNLOST);
}

/* A response by id null whose error is named ARPC_EAUTH or ARPC_EREJECTED ("ARPC_EAUTH:
 * ..."): the server refused the connection before it read any call (docs/PROTOCOL.md,
 * "JSON-RPC": a token it requires, arpc frames only), so none ran. Every call ends so, with
 * the server's words, now and from now on; false for any other response. (Other answers by
 * id null -- a malformed request, one not taken -- come after calls that may run: those
 * still end as a lost connection's.) */
static bool client_refused(arpc_jsonrpc_client *c, const json_t *resp)
{
    const json_t *error = json_object_get(resp, "error");
    if (!json_is_null(json_object_get(resp, "id")) || !json_is_string(error))
        return false;
    const char *msg = json_string_value(error);
    size_t mlen = json_string_length(error), at = 0;
    int code = jsonrpc_error_code(msg, mlen, &at);
    if (at == 0 || (code != ARPC_EAUTH && code != ARPC_EREJECTED))
        return false;
    char text[ARPC_LOG_FIELD_MAX];
    arpc_log_escape(text, sizeof(text), msg + at, mlen - at);
    snprintf(c->jc_refused, sizeof(c->jc_refused), "the server refused this connection: %s", text);
    client_broke(c, c->jc_refused);
    c->jc_end_code = code;
    return true;
}

/* JSON-RPC 2.0's error object (a server of that version answering): -32601 is "method not
 * found", any other code a failure of the call, with its "message" as the words. Any other
 * error that is not a string is ARPC_EPROTO (Go's client: "invalid error") with the error's
 * JSON as words. Before, both came without words: a user against a 2.0 server saw
 * ARPC_EPROTO and nothing of the server's "Method not found". */
static void call_finish_odd_error(struct jsonrpc_call *call, const json_t *error)
{
    const json_t *message = json_object_get(error, "message"), *code = json_object_get(error, "code");
    if (json_is_string(message)) {
        char *copy = arpc_text_copy(json_string_value(message), json_string_length(message));
        int rc = json_is_integer(code) && json_integer_value(code) == -32601 ? ARPC_ENOMETHOD : ARPC_EHANDLER;
        call_finish(call, rc, copy, copy == NULL ? 0 : json_string_length(message));
        return;
    }
    char *text = NULL;
    size_t tlen = 0;
    bool worded = jsonrpc_dump(error, &text, &tlen) == ARPC_OK;
    call_finish(call, ARPC_EPROTO, text, worded ? tlen : 0);
}

/* One response object. False: it breaks the protocol (the connection is then closed). */
static bool client_on_response(arpc_jsonrpc_client *c, const uint8_t *p, size_t len)
{
    json_error_t jerr;
    /* \u0000 in a string is JSON (our server answers with it: jsonrpc_server.c). A key twice
     * in one object breaks the protocol: which "id", "error" or "result" counts is the
     * parser's guess (jansson's the last, others' the first), so no call is ended by it. */
    json_t *resp = json_loadb((const char *)p, len, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &jerr);
    /* An integer outside int64 (a Go server's uint64 above 2^63-1) is JSON that jansson holds
     * only as a real: read so, for the id and the error, while the result is handed over as
     * the server wrote it (below). */
    bool big = false;
    if (resp == NULL && json_error_code(&jerr) == json_error_numeric_overflow)
        big = (resp = json_loadb((const char *)p, len, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL,
                                 &jerr)) != NULL;
    if (resp != NULL && client_refused(c, resp)) {
        json_decref(resp);
        return false; /* closed: its calls end as client_refused says */
    }
    const json_t *id = json_object_get(resp, "id");
    uint64_t id_value = 0;
    if (json_is_integer(id))
        id_value = (uint64_t)json_integer_value(id);
    else if (json_is_real(id) && json_real_value(id) >= 0 && json_real_value(id) < 0x1p53 &&
             json_real_value(id) == (double)(uint64_t)json_real_value(id))
        id_value = (uint64_t)json_real_value(id); /* ours are small: exact as a real (1.0, 1e0: JSON
                                                    * has one kind of number; a server may write ours so) */
    else if (json_is_real(id) && json_real_value(id) >= 0x1p53 && big)
        id_value = 0; /* a whole number past int64 (2^64 - 1): none of ours (they start at 1), so
                       * skipped as an unknown id is, not a broken response */
    else
        id = NULL;
    if (resp == NULL || id == NULL) {
        char text[ARPC_LOG_FIELD_MAX]; /* jansson quotes the server's bytes near the error */
        client_broke(c, resp == NULL ? arpc_log_escape(text, sizeof(text), jerr.text, strlen(jerr.text))
                                     : "a response whose id is not a whole number, as this client's are");
        json_decref(resp);
        return false;
    }
    struct jsonrpc_call *call = arpc_u64_map_take(&c->jc_calls, id_value);
    if (call == NULL) { /* ended already (its deadline), or never ours: Go's client skips it too */
        json_decref(resp);
        return true;
    }
    const json_t *error = json_object_get(resp, "error"), *result = json_object_get(resp, "result");
    if (error != NULL && !json_is_null(error)) {
        if (!json_is_string(error)) {
            call_finish_odd_error(call, error);
        } else {
            /* Which outcome the text says (did the call run?), and its words: without memory
             * for them, the code alone (as an arpc call's). */
            const char *msg = json_string_value(error);
            size_t mlen = json_string_length(error), at;
            int code = jsonrpc_error_code(msg, mlen, &at);
            char *copy = arpc_text_copy(msg + at, mlen - at);
            call_finish(call, code, copy, copy == NULL ? 0 : mlen - at);
        }
    } else {
        char *text = NULL;
        size_t tlen = 0, at;
        int rc = ARPC_OK;
        if (big && result != NULL && jsonrpc_member_text(p, len, "result", &at, &tlen))
            rc = (text = arpc_text_copy((const char *)p + at, tlen)) != NULL ? ARPC_OK : ARPC_ENOMEM;
        else
            rc = jsonrpc_dump(result != NULL ? result : json_null(), &text, &tlen);
        /* No memory to hand the result over: the call ran all the same, so "may have run"
         * (ARPC_EABANDONED, as an arpc client says), never ARPC_ENOMEM, which says "not sent". */
        call_finish(call, rc == ARPC_OK ? ARPC_OK : ARPC_EABANDONED, text, rc == ARPC_OK ? tlen : 0);
    }
    json_decref(resp);
    return true;
}

static size_t client_parse(struct arpc_conn *conn)
{
    arpc_jsonrpc_client *c = conn->c_owner;
    while (conn->c_open && !conn->c_close_pending) {
        size_t len;
        int rc = jsonrpc_next(&c->jc_scan, conn->c_rbuf, &conn->c_rstart, conn->c_rend, conn->c_max_body, &len);
        if (rc == ARPC_EAGAIN)
            return len + 1;
        if (rc != ARPC_OK) {
            client_broke(c, rc == ARPC_EPROTO      ? "sent something that is not a JSON object"
                            : c->jc_scan.js_costly ? "a response that would take too much memory to parse (too many "
                                                     "values for its size; core/jsonrpc_scan.h)"
                                                   : "response over max_frame");
            arpc_conn_close(conn, ARPC_EPROTO);
            return 0;
        }
        const uint8_t *p = conn->c_rbuf + conn->c_rstart;
        conn->c_rstart += len;
        if (!client_on_response(c, p, len)) {
            arpc_conn_close(conn, ARPC_EPROTO);
            return 0;
        }
    }
    return 0;
}

/* At the close, before client_on_close: a line not wholly written (the call's record is
 * alive: its line is queued). */
static void client_on_unwritten(struct arpc_conn *conn, void *base, arpc_outq_release_fn release, size_t left,
                                bool offered)
{
    (void)conn;
    struct jsonrpc_call *call = base;
    /* Not a byte of it written: a line cut after its '}' (before its newline) is a whole
     * request; nor offered to a TLS stream, whose records already sent may hold it all. */
    if (release == call_line_released && left == call->jq_len && !offered)
        call->jq_unsent = true;
}

static const struct arpc_conn_ops client_conn_ops = {
    .on_close = client_on_close,
    .on_unwritten = client_on_unwritten,
    .parse = client_parse,
};

/* Loop thread: the call's request goes out (or the call ends at once). */
static void call_send(arpc_loop *loop, struct arpc_loop_job *job)
{
    struct jsonrpc_call *call = (struct jsonrpc_call *)job;
    arpc_jsonrpc_client *c = call->jq_client;
    if (arpc_future_done(call->jq_future) || arpc_future_settling(call->jq_future)) { /* cancelled on its way here */
        call_end(call, ARPC_ECANCELLED, NULL, 0);
        return;
    }
    if (!c->jc_open) {
        size_t len = 0;
        char *words = call_end_words(c, c->jc_end_code, false, &len);
        call_end(call, c->jc_end_code, words, len);
        return;
    }
    if (arpc_u64_map_put(&c->jc_calls, call->jq_id, call) != ARPC_OK) {
        call_end(call, ARPC_ENOMEM, NULL, 0);
        return;
    }
    if (call->jq_deadline_ns != ARPC_NEVER && arpc_deadline_arm(loop, &call->jq_deadline, call->jq_deadline_ns) != ARPC_OK) {
        arpc_u64_map_take(&c->jc_calls, call->jq_id);
        call_end(call, ARPC_ENOMEM, NULL, 0);
        return;
    }
    /* The line is the connection's now, whatever happens (refused, it was released). */
    call->jq_queued = true;
    atomic_fetch_add_explicit(&call->jq_refs, 1, memory_order_relaxed); /* the queue's share */
    if (arpc_conn_send_shared(&c->jc_conn, call, call->jq_line, call->jq_len, call_line_released) != ARPC_OK) {
        arpc_u64_map_take(&c->jc_calls, call->jq_id);
        call_finish(call, ARPC_ENOMEM, NULL, 0);
    }
}

/* Loop thread: the cancel's job lets go of its share once the canceller has published
 * ARPC_ECANCELLED (the loop turns until then: arpc_future_repost_while_settling). */
static void call_cancel_heard(arpc_loop *loop, struct arpc_loop_job *job)
{
    struct jsonrpc_call *call = (struct jsonrpc_call *)((char *)job - offsetof(struct jsonrpc_call, jq_cancel));
    if (arpc_future_repost_while_settling(call->jq_future, loop, job, call_cancel_heard))
        return;
    arpc_future_drop(call->jq_future); /* the hook's hold: the call's may be gone (call_end) */
    call_put(call, 1);
}

/* Loop thread: a cancel is heard, in the lane's order (before a close posted after it). A
 * request still queued whole is taken back, so the server never reads it (as the arpc client
 * does, core/client_call.c); one on its way to the loop was not sent (call_send). One written
 * (or being written: the queue's share keeps its line) leaves the map too, as at its
 * deadline: its late answer is skipped as one to no call. Before, it stayed until its
 * answer, its deadline or the close: without a deadline, a server that never answered kept
 * every cancelled call for good (~240 bytes each, a review's trial). */
static void call_cancel_run(arpc_loop *loop, struct arpc_loop_job *job)
{
    struct jsonrpc_call *call = (struct jsonrpc_call *)((char *)job - offsetof(struct jsonrpc_call, jq_cancel));
    arpc_jsonrpc_client *c = call->jq_client;
    if (!call->jq_over) {
        if (call->jq_queued)
            (void)arpc_conn_withdraw(&c->jc_conn, call); /* false: (partly) written already */
        arpc_u64_map_take(&c->jc_calls, call->jq_id);
        call_finish(call, ARPC_ECANCELLED, NULL, 0); /* its future is cancelled already */
    }
    call_cancel_heard(loop, job);
}

/* The cancelling thread, once it won the future (arpc_future_on_cancel): the record is alive
 * by the hook's share, wherever the call is (on the lane, queued, written, ending). */
static void call_on_cancel(arpc_future *f, void *arg)
{
    struct jsonrpc_call *call = arg;
    /* The job looks at f after the call may have ended, its hold dropped and every user gone:
     * a hold of its own keeps f until then. */
    arpc_future_hold(f);
    arpc_loop_job_init(&call->jq_cancel, call_cancel_run);
    if (arpc_loop_post(call->jq_client->jc_loop, &call->jq_cancel) != ARPC_OK) {
        arpc_future_drop(f);
        call_put(call, 1); /* a stopped loop: its stop ended, or ends, the call */
    }
}

/* A method name jansson can write: UTF-8 (json_string checks it). */
static bool method_ok(const char *method)
{
    json_t *m = method != NULL ? json_string(method) : NULL;
    json_decref(m);
    return m != NULL;
}

/* close's handle check: NULL, a dead handle (misuse, reported), or one made in the parent of
 * this child of a fork (base/fork_gen.h) is refused. */
static bool client_live(const arpc_jsonrpc_client *c, const char *fn)
{
    return arpc_handle_check(c, ARPC_MAGIC_JSONRPC, "JSON-RPC client", fn) &&
           arpc_fork_gen_here(c->jc_fork_gen, c, "JSON-RPC client", fn);
}

/* A caller's way in, as the arpc client's (core/client_api.c): callers are counted in
 * jc_live, which close waits for (base/handle.h: arpc_handle_enter). The count passes to the
 * call record at the hand-over (its last share gives it back: call_put) or goes back by
 * client_leave. From the hand-over on the caller touches nothing of the client's. Returns c,
 * or NULL with *closing set when its close has begun (a then-callback that the close's
 * completions run, calling again: ARPC_ESHUTDOWN, not misuse), else clear (ARPC_EINVAL). */
static arpc_jsonrpc_client *client_enter(arpc_jsonrpc_client *c, const char *fn, bool *closing)
{
    *closing = false;
    if (c == NULL)
        return NULL;
    switch (arpc_handle_enter_unless(c, &c->jc_live, ARPC_MAGIC_JSONRPC, ARPC_MAGIC_JSONRPC_CLOSING, "JSON-RPC client",
                                     fn)) {
    case ARPC_HANDLE_IN:
        if (arpc_fork_gen_here(c->jc_fork_gen, c, "JSON-RPC client", fn))
            return c;
        atomic_fetch_sub(&c->jc_live, 1); /* made in the parent of this child of a fork: refused */
        return NULL;
    case ARPC_HANDLE_CLOSING:
        *closing = true;
        return NULL;
    default:
        return NULL;
    }
}

/* Why a call's arguments are refused (ARPC_EINVAL), in words for its result as the arpc
 * client gives them (core/client_api.c), so the caller learns which; NULL if they are fine. */
static const char *call_refusal(const arpc_jsonrpc_client *c, const char *method, const char *params_json,
                                size_t params_len)
{
    if (c == NULL)
        return "no JSON-RPC client (NULL, or closed)";
    if (method == NULL)
        return "the method name is NULL";
    if (!method_ok(method))
        return "the method name is not UTF-8";
    if (params_json == NULL && params_len > 0)
        return "params_json is NULL with a length other than 0";
    if (!jsonrpc_valid(params_json != NULL ? params_json : "", params_len))
        return "params_json is not one JSON value";
    return NULL;
}

/* Starts a call on a client the caller entered (NULL: it fails ARPC_EINVAL), and leaves it,
 * its deadline deadline_at_ns (a time on arpc_now_ns's clock) or, if 0, deadline_ms from now.
 * Returns the call's future (NULL only without memory for it). */
static arpc_future *call_start(arpc_jsonrpc_client *c, bool closing, const char *method, const char *params_json,
                               size_t params_len, int64_t deadline_ms, uint64_t deadline_at_ns)
{
    arpc_future *f;
    if (arpc_future_create(&f) != ARPC_OK) {
        client_leave(c);
        return NULL;
    }
    if (c != NULL && !c->jc_owns_loop && arpc_loop_waiters_run(c->jc_loop))
        arpc_future_set_home(f, c->jc_loop); /* a wait on it drives the loop, as arpc_jsonrpc_call */
    else if (c != NULL)
        arpc_future_set_completer(f, c->jc_loop); /* a wait inside that loop is refused */
    int rc = ARPC_OK;
    struct jsonrpc_call *call = NULL;
    const char *why = closing ? "the JSON-RPC client is closing" : call_refusal(c, method, params_json, params_len);
    if (why != NULL)
        rc = closing ? ARPC_ESHUTDOWN : ARPC_EINVAL;
    else if (deadline_at_ns != 0 && deadline_at_ns <= arpc_now_ns()) {
        why = "the call's deadline had passed when it was made: not sent, it did not run";
        rc = ARPC_EUNREACHABLE;
    } else if ((call = arpc_calloc(1, sizeof(*call))) == NULL)
        rc = ARPC_ENOMEM;
    if (call != NULL) {
        call->jq_id = atomic_fetch_add_explicit(&c->jc_next_id, 1, memory_order_relaxed);
        call->jq_line = jsonrpc_encode_request(method, call->jq_id, params_json, params_len, &call->jq_len);
        if (call->jq_line == NULL || call->jq_len > c->jc_max_frame) {
            rc = call->jq_line == NULL ? ARPC_ENOMEM : ARPC_ETOOLARGE;
            arpc_free(call->jq_line);
            arpc_free(call);
        }
    }
    if (rc != ARPC_OK) {
        client_leave(c);
        size_t why_len;
        char *text = arpc_text_dup(why, &why_len);
        arpc_future_complete(f, rc, text, why_len);
        return f;
    }
    if (deadline_ms == 0)
        deadline_ms = c->jc_default_deadline_ms;
    call->jq_deadline_ns = deadline_at_ns != 0 ? deadline_at_ns
                           : deadline_ms == 0  ? ARPC_NEVER
                                               : arpc_deadline_from_ms(deadline_ms);
    call->jq_client = c; /* the caller's count in jc_live is the call's now: call_put gives it back */
    atomic_init(&call->jq_refs, 2); /* the loop's and the cancel hook's */
    arpc_future_hold(f); /* the call's, dropped by call_end: not the caller's to release */
    call->jq_future = f;
    arpc_future_make_arpcs(f, call_on_cancel, call); /* call_end counts on the hook: the user may not complete f */
    arpc_deadline_init(&call->jq_deadline, call_on_deadline, call);
    arpc_loop_job_init(&call->jq_job, call_send);
    if (arpc_loop_post(c->jc_loop, &call->jq_job) != ARPC_OK)
        call_end(call, ARPC_ESHUTDOWN, NULL, 0); /* a stopped loop: ends here */
    return f;
}

arpc_future *arpc_jsonrpc_call_async(arpc_jsonrpc_client *c, const char *method, const char *params_json,
                                     size_t params_len, int64_t deadline_ms)
{
    bool closing;
    c = client_enter(c, __func__, &closing);
    return call_start(c, closing, method, params_json, params_len, deadline_ms, 0);
}

arpc_future *arpc_jsonrpc_call_async_at(arpc_jsonrpc_client *c, const char *method, const char *params_json,
                                        size_t params_len, uint64_t deadline_at_ns)
{
    bool closing;
    c = client_enter(c, __func__, &closing);
    return call_start(c, closing, method, params_json, params_len, 0, deadline_at_ns);
}

int arpc_jsonrpc_call(arpc_jsonrpc_client *c, const char *method, const char *params_json, size_t params_len,
                      char **result, size_t *result_len, int64_t deadline_ms)
{
    if (result != NULL)
        *result = NULL;
    if (result_len != NULL)
        *result_len = 0;
    bool closing;
    c = client_enter(c, __func__, &closing);
    if (c != NULL && arpc_loop_on_thread(c->jc_loop)) {
        client_leave(c);
        /* Blocking on the loop that must deliver the answer: said as arpc_call says it. */
        arpc_log(ARPC_LOG_WARN, "arpc_jsonrpc_call refused: called on the client's own loop thread, it would "
                 "wait for itself (use arpc_jsonrpc_call_async with a callback there)");
        return ARPC_EBUSY;
    }
    /* Read before the hand-over: from then on another thread's close may free the client. */
    arpc_loop *drive = c != NULL && !c->jc_owns_loop ? c->jc_loop : NULL;
    arpc_future *f = call_start(c, closing, method, params_json, params_len, deadline_ms, 0);
    if (f == NULL)
        return ARPC_ENOMEM;
    int status = arpc_loop_wait(drive, f); /* drives the application's loop, or sleeps */
    size_t len = 0;
    char *data = arpc_future_take(f, &len);
    if (result != NULL) {
        *result = data;
        if (result_len != NULL)
            *result_len = len;
    } else {
        arpc_free(data);
    }
    arpc_future_release(f);
    return status;
}

/* ---- life cycle ---- */

/* Only sockets this client speaks on as they are: tcp://, unix:// and inproc://. A tls://
 * socket is tcp's (transport/tls_transport.c): the arpc client puts TLS on it, this client
 * has none, and sending in the clear where the caller asked for TLS would give away what it
 * meant to protect. So would any scheme added later that this client was not taught. An
 * unknown or malformed address is the transport's to refuse, with its own words. */
static int client_scheme_check(const char *addr, char *why, size_t len)
{
    const struct arpc_transport_ops *t = arpc_transport_find(addr, NULL);
    if (t == NULL || t == &arpc_transport_tcp || t == &arpc_transport_unix || t == &arpc_transport_inproc)
        return ARPC_OK;
    if (t == &arpc_transport_tls)
        snprintf(why, len, "JSON-RPC over TLS is not supported by the client (it speaks tcp://, unix:// and "
                 "inproc:// only): nothing was sent to %s", addr);
    else
        snprintf(why, len, "the JSON-RPC client speaks tcp://, unix:// and inproc:// only: nothing was sent to %s",
                 addr);
    return ARPC_EADDR;
}

struct client_setup {
    arpc_jsonrpc_client *cs_client;
    int cs_fd;
    const char *cs_peer;
    int cs_rc;
};

static void client_on_loop_stop(arpc_loop *loop, void *arg)
{
    (void)loop;
    arpc_jsonrpc_client *c = arg;
    arpc_conn_close(&c->jc_conn, ARPC_ESHUTDOWN); /* ends the calls, once */
}

static void client_start_on_loop(arpc_loop *loop, void *arg)
{
    struct client_setup *cs = arg;
    arpc_jsonrpc_client *c = cs->cs_client;
    cs->cs_rc = arpc_conn_init(&c->jc_conn, loop, cs->cs_fd, c->jc_max_frame, &client_conn_ops, c, cs->cs_peer);
    if (cs->cs_rc != ARPC_OK)
        return; /* the fd was closed */
    cs->cs_rc = arpc_loop_on_stop(loop, client_on_loop_stop, c);
    if (cs->cs_rc != ARPC_OK) {
        arpc_conn_close(&c->jc_conn, ARPC_ESHUTDOWN);
        return;
    }
    c->jc_open = true;
}

static void client_free(arpc_jsonrpc_client *c)
{
    arpc_u64_map_fini(&c->jc_calls);
    if (c->jc_owns_loop)
        arpc_loop_destroy(c->jc_loop);
    else if (c->jc_on_user_loop)
        arpc_loop_users_add(c->jc_loop, -1); /* the user's loop may go now */
    arpc_handle_poison(c);
    arpc_free(c);
}

int arpc_jsonrpc_connect_v(arpc_jsonrpc_client **out, const char *addr, const arpc_jsonrpc_options *opts,
                           size_t opts_size)
{
    arpc_jsonrpc_options o;
    if (out != NULL)
        *out = NULL; /* on every failure, this one too */
    if (out == NULL || addr == NULL || arpc_options_copy(&o, sizeof(o), opts, opts_size) != ARPC_OK)
        return ARPC_EINVAL;
    char why[ARPC_ERRBUF_SIZE] = "";
    if (arpc_options_max_frame_check(o.max_frame, why, sizeof(why)) != ARPC_OK) {
        if (o.errbuf != NULL && o.errbuf_len > 0)
            snprintf(o.errbuf, o.errbuf_len, "%s", why);
        return ARPC_EINVAL;
    }
    arpc_jsonrpc_client *c = arpc_calloc(1, sizeof(*c));
    if (c == NULL)
        return ARPC_ENOMEM;
    atomic_init(&c->jc_magic, ARPC_MAGIC_JSONRPC);
    c->jc_fork_gen = arpc_fork_gen_start();
    atomic_init(&c->jc_live, 0);
    atomic_init(&c->jc_next_id, 1);
    c->jc_max_frame = o.max_frame ? o.max_frame : ARPC_DEFAULT_MAX_FRAME;
    c->jc_default_deadline_ms = o.default_deadline_ms;
    c->jc_end_code = ARPC_ECONNLOST;
    int rc = arpc_u64_map_init(&c->jc_calls, 64);
    if (rc == ARPC_OK && o.loop != NULL) {
        c->jc_loop = o.loop;
        c->jc_on_user_loop = true;
        arpc_loop_users_add(o.loop, 1); /* until client_free: arpc_loop_destroy refuses meanwhile */
    } else if (rc == ARPC_OK && (rc = arpc_loop_create(&c->jc_loop, NULL)) == ARPC_OK) {
        c->jc_owns_loop = true;
        rc = arpc_loop_start(c->jc_loop);
    }
    int fd = -1;
    if (rc == ARPC_OK)
        rc = client_scheme_check(addr, why, sizeof(why));
    if (rc == ARPC_OK)
        rc = arpc_transport_connect(addr, o.connect_timeout_ms ? o.connect_timeout_ms : JSONRPC_CONNECT_TIMEOUT_MS,
                                    &fd, why, sizeof(why));
    if (rc == ARPC_OK) {
        struct client_setup cs = {.cs_client = c, .cs_fd = fd, .cs_peer = addr, .cs_rc = ARPC_OK};
        arpc_loop_run_sync(c->jc_loop, client_start_on_loop, &cs);
        rc = cs.cs_rc;
        if (rc != ARPC_OK)
            snprintf(why, sizeof(why), "could not start the connection to %s: %s", addr, arpc_strerror(rc));
    }
    if (rc != ARPC_OK) {
        if (o.errbuf != NULL && o.errbuf_len > 0)
            snprintf(o.errbuf, o.errbuf_len, "%s", why[0] ? why : arpc_strerror(rc));
        client_free(c);
        return rc;
    }
    *out = c;
    return ARPC_OK;
}

static void client_close_on_loop(arpc_loop *loop, void *arg)
{
    arpc_jsonrpc_client *c = arg;
    arpc_loop_off_stop(loop, client_on_loop_stop, c);
    arpc_conn_close(&c->jc_conn, ARPC_ESHUTDOWN); /* ends every call in the map */
}

int arpc_jsonrpc_close(arpc_jsonrpc_client *c)
{
    if (!client_live(c, __func__))
        return ARPC_EINVAL;
    if (arpc_loop_on_thread(c->jc_loop))
        return ARPC_EBUSY;
    /* From here the handle is closing: a second close, even a racing one, is caught, and a
     * call started meanwhile (a then-callback the close's completions run) is refused
     * ARPC_ESHUTDOWN, as the arpc client's. */
    if (!arpc_handle_kill_to(c, ARPC_MAGIC_JSONRPC, ARPC_MAGIC_JSONRPC_CLOSING, "JSON-RPC client", "arpc_jsonrpc_close"))
        return ARPC_EINVAL;
    /* On the loop, after every call posted before it (the lane is FIFO); or here, once no
     * thread runs a loop that was stopped. */
    arpc_loop_run_sync(c->jc_loop, client_close_on_loop, c);
    /* Calls handed over since then end in their own job (call_send: the connection is gone):
     * a no-op run after them means they ran. On a stopped loop what is left is callers
     * between their entry and their hand-over, which the loop refuses: they leave at once.
     * A caller waiting for its call holds nothing here: its record holds the count. */
    arpc_loop_fence_until_zero(c->jc_loop, &c->jc_live);
    client_free(c);
    return ARPC_OK;
}
