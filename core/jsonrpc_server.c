/*
 * JSON-RPC 1.0 on a server connection, as Go's net/rpc/jsonrpc client speaks it
 * (include/arpc/jsonrpc.h has the contract, docs/PROTOCOL.md the wire).
 *
 * Design notes. A JSON-RPC call becomes an ordinary arpc request: it gets a connection-local
 * xid, its params[0] is the request's bytes, and it goes through request_dispatch like a
 * frame (actors, flow control, the server's deadline and stop answers). The answer comes back
 * as an encoded REPLY or ERROR frame, as for any connection; the hooks here write it as a
 * JSON-RPC response instead, with the call's id, which waits in js_ids (xid -> id text) until
 * then. Calls are never numbered (no client id): JSON-RPC has no retries to deduplicate.
 *
 * Malformed input: an object that is not JSON, a stream that is not objects, or an end of
 * stream inside an object ends the input (nothing after it can be trusted), as Go's server
 * stops reading at a decoding error: the calls read before it are answered, then it is
 * answered with id null, and the connection closes once that is written (jsonrpc_end; the
 * close when the last answer is queued is a half-close's, core/server_inflight.c). An object
 * that is JSON but not a good
 * request (no method, params not an array, unknown method) gets an error response with its
 * id, and the connection goes on. So does one larger than max_frame, as an oversized arpc
 * frame does: its bytes are dropped as they arrive, keeping only its id
 * (core/jsonrpc_skim.h), and it is answered ARPC_ETOOLARGE by that id once its end is read.
 */
#include "core/jsonrpc_server.h"

#include <stdio.h>
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/log.h"
#include "base/text_buf.h"
#include "core/jsonrpc_codec.h"
#include "core/jsonrpc_scan.h"
#include "core/jsonrpc_skim.h"
#include "core/peer_log.h"
#include "core/server_internal.h"

struct jsonrpc_sconn {
    struct jsonrpc_scan js_scan;
    struct jsonrpc_skim js_skim; /* an oversized request being dropped (js_skimming) */
    bool js_skimming;
    bool js_skim_costly; /* it is dropped for what parsing it would cost, not its length */
    struct arpc_u64_map js_ids; /* xid -> the call's id as JSON text (arpc_malloc, NUL-terminated) */
    uint64_t js_next_xid;
    /* Bad input (or a failed check) ended the input: nothing more is parsed, and this response
     * (id null) goes out once the calls read before it are answered (jsonrpc_sconn_last_words). */
    bool js_ended;
    uint8_t *js_last_line; /* NULL once queued */
    size_t js_last_len;
    int js_last_code;
};

bool jsonrpc_sconn_is(const struct server_conn *sc) { return sc->sc_json != NULL; }

static void jsonrpc_refuse_code(struct server_conn *sc, int code, const char *why);

/* Out of memory: the connection closes, so no caller waits for an answer that cannot come. */
static void jsonrpc_close_nomem(struct arpc_conn *conn)
{
    arpc_log(ARPC_LOG_WARN, "out of memory: JSON-RPC connection from %s closed", conn->c_peer);
    arpc_conn_close(conn, ARPC_ENOMEM);
}

bool jsonrpc_sconn_adopt(struct server_conn *sc)
{
    struct arpc_conn *conn = &sc->sc_conn;
    if (conn->c_rend == conn->c_rstart)
        return false;
    if (!jsonrpc_peer_first(conn->c_rbuf[conn->c_rstart]))
        return false;
    struct jsonrpc_sconn *js = arpc_calloc(1, sizeof(*js));
    if (js == NULL || arpc_u64_map_init(&js->js_ids, 16) != ARPC_OK) {
        arpc_free(js);
        jsonrpc_close_nomem(conn);
        return false; /* the frame parser sees a closed connection and does nothing */
    }
    sc->sc_json = js;
    sc->sc_speaks_json = true;
    sc->sc_hello = true;             /* JSON-RPC has no HELLO: the handshake timeout is met */
    conn->c_stranger = false;        /* (its bytes never reach the frame parser anyway) */
    /* And the handshake's bound is over: its own, which bounds how long one request's parse
     * holds the loop (arpc_server_options.jsonrpc_max_request). */
    conn->c_max_body = sc->sc_server->sv_jsonrpc_max;
    (void)arpc_conn_heartbeat(conn, 0, 0); /* nor PING: its peer could not answer one (off: no memory) */
    /* Nor can anything pass its holds, which stop reading at once: a reset would be heard of
     * only when a hold ends, its calls running meanwhile. */
    arpc_conn_hangup_when_held(conn);
    /* Its first byte came through the TLS handshake, as a HELLO would: the same identity as
     * an arpc client's on this listener (its certificate's subject), for the checks below and
     * its handlers (arpc_request_peer_subject). Without its subject it is refused (closed,
     * logged: JSON-RPC has no GOAWAY). */
    if (!sconn_learn_peer(sc))
        return true;
    /* A peer without a HELLO has no token: a server that checks who may in lets it in only
     * where what the transport says of it alone passes (a unix peer on the allow-list, a
     * callback admitting a verified certificate without a token). */
    char buf[128];
    const char *why = auth_judge_tokenless(sc, buf, sizeof(buf));
    if (why != NULL) {
        /* With the error's name: before any request was read, so its client may tell its
         * callers that nothing ran (as a refused HELLO does; docs/PROTOCOL.md). */
        char said[sizeof(buf) + 16];
        snprintf(said, sizeof(said), "%s: %s", arpc_errname(ARPC_EAUTH), why);
        sc->sc_refused = true;
        jsonrpc_refuse_code(sc, ARPC_EAUTH, said);
    } else {
        arpc_conn_let_in(conn);
    }
    return true;
}

static void jsonrpc_free_id(void *id, void *arg)
{
    (void)arg;
    arpc_free(id);
}

void jsonrpc_sconn_close(struct server_conn *sc)
{
    struct jsonrpc_sconn *js = sc->sc_json;
    if (js == NULL)
        return;
    arpc_u64_map_drain(&js->js_ids, jsonrpc_free_id, NULL);
    arpc_u64_map_fini(&js->js_ids);
    arpc_free(js->js_last_line);
    arpc_free(js);
    sc->sc_json = NULL;
}

/* A response line for id (taken: freed here; NULL: no memory), *len its length. error: a
 * plain message, or NULL for result. NULL without memory. */
static uint8_t *jsonrpc_response_line(char *id, const void *result, size_t result_len, const char *error,
                                      size_t error_len, size_t *len)
{
    size_t qlen = 0;
    char *quoted = error != NULL ? jsonrpc_quote(error, error_len, &qlen) : NULL;
    uint8_t *line = NULL;
    if (id != NULL && (error == NULL || quoted != NULL))
        line = jsonrpc_encode_response(id, strlen(id), result, result_len, quoted, qlen, len);
    arpc_free(quoted);
    arpc_free(id);
    return line;
}

/* Queues a response line for id (taken), as jsonrpc_response_line makes it. */
static void jsonrpc_respond(struct server_conn *sc, char *id, const void *result, size_t result_len,
                            const char *error, size_t error_len)
{
    struct arpc_conn *conn = &sc->sc_conn;
    size_t len = 0;
    uint8_t *line = jsonrpc_response_line(id, result, result_len, error, error_len, &len);
    if (line == NULL || arpc_conn_send(conn, line, line, len) == ARPC_ENOMEM)
        arpc_conn_close(conn, ARPC_ENOMEM); /* never leave a caller waiting */
}

static char *jsonrpc_null_id(void)
{
    char *id = arpc_malloc(sizeof("null"));
    if (id != NULL)
        memcpy(id, "null", sizeof("null"));
    return id;
}

/* How requests are read. \u0000 is a JSON string's character like any other: kept
 * (json_string_length). A key twice in one object, at any depth, is refused: parsers disagree
 * on which of the two counts (jansson and Go keep the last, others the first), so a proxy or
 * filter in front of the server could check one method, id or parameter while the handler
 * runs with the other (RFC 8259 leaves it to the parser; I-JSON, RFC 7493, forbids it). */
#define JSONRPC_REQUEST_FLAGS (JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES)

#define JSONRPC_MALFORMED_MAX (ARPC_LOG_FIELD_MAX + 64)

/* "jsonrpc: malformed request at byte N: jansson's words" into why (JSONRPC_MALFORMED_MAX). */
static void jsonrpc_why_malformed(const json_error_t *jerr, char *why)
{
    /* jansson quotes the bytes near the error: the peer's, so escaped (found by fuzzing). */
    char text[ARPC_LOG_FIELD_MAX];
    arpc_log_escape(text, sizeof(text), jerr->text, strlen(jerr->text));
    snprintf(why, JSONRPC_MALFORMED_MAX, "jsonrpc: malformed request at byte %d: %s", jerr->position, text);
}

/* Bad input (ARPC_EPROTO; ARPC_ECONNLOST for a request cut by the end of stream) or a
 * failed authentication (ARPC_EAUTH) ends the input, as Go's ServeCodec stops reading at a
 * request it cannot decode: nothing after it is parsed (what follows is dropped as it comes,
 * until the end of stream or the close), the calls read before it are answered, and then it
 * is said once with id null (as a GOAWAY would say it), last: a Go client reads id null as 0
 * and gives it to its call numbered 0, so the answers before must not wait behind it. The
 * owner closes the connection once that is
 * written (sconn_end_input). False: no memory (closed). */
static bool jsonrpc_end(struct server_conn *sc, int code, const char *why)
{
    struct arpc_conn *conn = &sc->sc_conn;
    struct jsonrpc_sconn *js = sc->sc_json;
    peer_log(conn->c_loop, ARPC_LOG_WARN, "closing the JSON-RPC connection from %s%s: %s%s", conn->c_peer,
             sconn_owes_answers(sc) ? " once its calls are answered" : "",
             code == ARPC_EAUTH ? "authentication failed: " : "", why);
    js->js_last_line = jsonrpc_response_line(jsonrpc_null_id(), NULL, 0, why, strlen(why), &js->js_last_len);
    if (js->js_last_line == NULL) {
        jsonrpc_close_nomem(conn);
        return false;
    }
    js->js_last_code = code;
    js->js_ended = true;
    js->js_skimming = false;
    conn->c_skip = 0;
    conn->c_rstart = conn->c_rend; /* after bad input nothing can be trusted */
    conn->c_frame_since = 0;       /* no request is partly read any more: the frame timeout is off */
    return true;
}

static void jsonrpc_refuse_code(struct server_conn *sc, int code, const char *why)
{
    if (jsonrpc_end(sc, code, why))
        (void)sconn_end_input(sc);
}

bool jsonrpc_sconn_ended(const struct server_conn *sc) { return sc->sc_json != NULL && sc->sc_json->js_ended; }

int jsonrpc_sconn_end_code(const struct server_conn *sc) { return jsonrpc_sconn_ended(sc) ? sc->sc_json->js_last_code : 0; }

bool jsonrpc_sconn_cut_short(struct server_conn *sc)
{
    if (sc->sc_json == NULL)
        return false;
    struct jsonrpc_sconn *js = sc->sc_json;
    if (js->js_ended)
        return true;
    /* The part read may be malformed already: jansson tells that from an early end, and it is
     * said as such (the part is in the read buffer from its first byte, unless it is an
     * oversized one being dropped). */
    if (!js->js_skimming) {
        struct arpc_conn *conn = &sc->sc_conn;
        size_t held = conn->c_rend - conn->c_rstart;
        json_error_t jerr;
        json_t *v = json_loadb((const char *)conn->c_rbuf + conn->c_rstart, held, JSONRPC_REQUEST_FLAGS, &jerr);
        json_decref(v);
        /* An error at the end of the part may be a token cut short ("tr" of true): not told. */
        if (v == NULL && json_error_code(&jerr) == json_error_invalid_syntax && jerr.position >= 0 &&
            (size_t)jerr.position < held) {
            char why[JSONRPC_MALFORMED_MAX];
            jsonrpc_why_malformed(&jerr, why);
            (void)jsonrpc_end(sc, ARPC_EPROTO, why);
            return true;
        }
    }
    /* Said as bad input, but closed as a lost connection (ARPC_ECONNLOST): a client killed
     * while writing a request is no fault of its peer's (an arpc frame cut so is not either;
     * core/fault_rate.c). */
    (void)jsonrpc_end(sc, ARPC_ECONNLOST, "jsonrpc: the stream ended inside a request");
    return true;
}

int jsonrpc_sconn_last_words(struct server_conn *sc)
{
    struct jsonrpc_sconn *js = sc->sc_json;
    if (js == NULL || js->js_last_line == NULL)
        return 0;
    uint8_t *line = js->js_last_line;
    js->js_last_line = NULL;
    (void)arpc_conn_send(&sc->sc_conn, line, line, js->js_last_len); /* without memory: the close says it */
    return js->js_last_code;
}

static void jsonrpc_refuse(struct server_conn *sc, const char *why) { jsonrpc_refuse_code(sc, ARPC_EPROTO, why); }

static void jsonrpc_answer(struct server_conn *sc, uint64_t xid, int code, const void *data, size_t len);

/* Answers call xid with an error, if it has not been answered yet. */
static void jsonrpc_fail(struct server_conn *sc, uint64_t xid, const char *msg, size_t len)
{
    char *id = arpc_u64_map_take(&sc->sc_json->js_ids, xid);
    if (id != NULL)
        jsonrpc_respond(sc, id, NULL, 0, msg, len);
}

/* Go's server's words (net/rpc/server.go) for a name it cannot serve, so a Go client sees
 * the same text from arpc as from Go: no dot, no such service, or no such method. */
static void jsonrpc_no_method(struct server_conn *sc, uint64_t xid, const char *name, size_t len)
{
    const char *dot = NULL;
    for (size_t i = 0; i < len; i++)
        if (name[i] == '.')
            dot = name + i;
    const struct arpc_registry *r = &sc->sc_server->sv_registry;
    bool service_known = false;
    for (size_t i = 0; dot != NULL && !service_known && i < r->r_count; i++) {
        const char *m = r->r_methods[i]->m_name, *mdot = strrchr(m, '.');
        service_known = mdot != NULL && (size_t)(mdot - m) == (size_t)(dot - name) && memcmp(m, name, (size_t)(dot - name)) == 0;
    }
    const char *what = dot == NULL      ? JSONRPC_GO_ILL_FORMED
                       : service_known ? JSONRPC_GO_CANT_FIND "method "
                                        : JSONRPC_GO_CANT_FIND "service ";
    size_t wlen = strlen(what);
    char *msg = arpc_malloc(wlen + len);
    if (msg == NULL) {
        jsonrpc_answer(sc, xid, ARPC_EREJECTED, "server out of memory", strlen("server out of memory"));
        return;
    }
    memcpy(msg, what, wlen);
    memcpy(msg + wlen, name, len);
    jsonrpc_fail(sc, xid, msg, wlen + len);
    arpc_free(msg);
}

/* A call's xid, under which its answers find id (taken; NULL: there was no memory for it).
 * 0 after closing the connection for want of memory. */
static uint64_t jsonrpc_track(struct server_conn *sc, char *id)
{
    struct jsonrpc_sconn *js = sc->sc_json;
    uint64_t xid = ++js->js_next_xid; /* from 1: 0 is never a call's */
    if (id != NULL && arpc_u64_map_put(&js->js_ids, xid, id) == ARPC_OK)
        return xid;
    arpc_free(id);
    jsonrpc_close_nomem(&sc->sc_conn);
    return 0;
}

static void jsonrpc_answer(struct server_conn *sc, uint64_t xid, int code, const void *data, size_t len);

/* The id a skim kept (core/jsonrpc_skim.h), as JSON text to answer by (arpc_malloc'd), or id
 * null: checked by jansson first, so the peer's bytes are echoed only as JSON. An integer
 * outside int64 (jansson's limit) is echoed as it was sent, once it parses as a number. */
static char *jsonrpc_skimmed_id(const struct jsonrpc_skim *sk)
{
    char *id = NULL;
    size_t id_len;
    if (sk->sk_id_state == JSONRPC_SKIM_ID_KEPT) {
        json_t *v = json_loadb(sk->sk_id, sk->sk_id_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (v != NULL) {
            if (jsonrpc_dump(v, &id, &id_len) != ARPC_OK)
                id = NULL;
        } else if ((v = json_loadb(sk->sk_id, sk->sk_id_len, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, NULL)) !=
                       NULL &&
                   json_is_number(v)) {
            id = arpc_text_copy(sk->sk_id, sk->sk_id_len);
        }
        json_decref(v);
    }
    return id != NULL ? id : jsonrpc_null_id();
}

/* A request that is JSON but that jansson cannot hold (an integer outside int64, a key with
 * \u0000) or that is refused (a key twice): the stream is still in step (jsonrpc_scan
 * delimited the object), so it is answered with an error by its id (id null when "id" is the
 * key twice: which one was meant is the question), and the connection goes on. */
static void jsonrpc_unrepresentable(struct server_conn *sc, const uint8_t *p, size_t len, const char *what)
{
    struct jsonrpc_skim sk;
    jsonrpc_skim_reset(&sk);
    size_t used;
    char *id = jsonrpc_skim(&sk, p, len, &used) == ARPC_OK ? jsonrpc_skimmed_id(&sk) : jsonrpc_null_id();
    uint64_t xid = jsonrpc_track(sc, id);
    if (xid == 0)
        return;
    char msg[ARPC_LOG_FIELD_MAX + 128];
    snprintf(msg, sizeof(msg), JSONRPC_NOT_TAKEN "%s", what);
    jsonrpc_fail(sc, xid, msg, strlen(msg));
}

/* What jansson says of a key twice, for the answer: its text quotes the peer's bytes (the
 * key), so they are escaped. */
static void jsonrpc_why_duplicate(const json_error_t *jerr, char *why, size_t size)
{
    char text[ARPC_LOG_FIELD_MAX];
    arpc_log_escape(text, sizeof(text), jerr->text, strlen(jerr->text));
    snprintf(why, size, "a key twice in one object (%s)", text);
}

/* One whole request object, p[0..len). */
static void jsonrpc_request(struct server_conn *sc, const uint8_t *p, size_t len)
{
    sc->sc_last_busy = arpc_loop_now(sc->sc_conn.c_loop); /* the idle timeout's "a frame arrived" */
    json_error_t jerr;
    json_t *req = json_loadb((const char *)p, len, JSONRPC_REQUEST_FLAGS, &jerr);
    if (req == NULL && (json_error_code(&jerr) == json_error_numeric_overflow ||
                        json_error_code(&jerr) == json_error_duplicate_key)) {
        /* jansson stopped at the number or the key: whether the rest is JSON is known only by
         * parsing it again, integers as reals and keys as they come (then only a real beyond
         * double's range stops it). */
        json_error_t again;
        json_t *v = json_loadb((const char *)p, len, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &again);
        bool held = v != NULL;
        json_decref(v);
        if (held || json_error_code(&again) == json_error_numeric_overflow ||
            json_error_code(&again) == json_error_null_byte_in_key) {
            char why[ARPC_LOG_FIELD_MAX + 64];
            if (json_error_code(&jerr) == json_error_duplicate_key)
                jsonrpc_why_duplicate(&jerr, why, sizeof(why));
            else
                snprintf(why, sizeof(why), "%s",
                         held ? "an integer outside int64 (the server's JSON library holds no larger)"
                              : "a number outside the range the server's JSON library holds");
            jsonrpc_unrepresentable(sc, p, len, why);
            return;
        }
        jerr = again; /* not JSON: malformed, below */
    }
    if (req == NULL && json_error_code(&jerr) == json_error_null_byte_in_key) {
        jsonrpc_unrepresentable(sc, p, len, "a key holds \\u0000");
        return;
    }
    if (req == NULL) {
        char why[JSONRPC_MALFORMED_MAX];
        jsonrpc_why_malformed(&jerr, why);
        jsonrpc_refuse(sc, why);
        return;
    }
    /* The id first, so that every answer below, the handler's too, finds it. */
    const json_t *id_v = json_object_get(req, "id");
    char *id = NULL;
    size_t id_len;
    if (id_v == NULL)
        id = jsonrpc_null_id();
    else if (jsonrpc_dump(id_v, &id, &id_len) != ARPC_OK)
        id = NULL;
    uint64_t xid = jsonrpc_track(sc, id);
    if (xid == 0) {
        json_decref(req);
        return;
    }
    const json_t *method = json_object_get(req, "method"), *params = json_object_get(req, "params");
    const char *name = json_is_string(method) ? json_string_value(method) : "";
    size_t name_len = json_is_string(method) ? json_string_length(method) : 0;
    arpc_server *s = sc->sc_server;
    const struct arpc_method *m = NULL;
    if (params != NULL && !json_is_null(params) && !json_is_array(params)) {
        static const char not_array[] = JSONRPC_PARAMS_NOT_ARRAY;
        jsonrpc_fail(sc, xid, not_array, sizeof(not_array) - 1);
    } else if (atomic_load(&s->sv_state) != SV_RUNNING) {
        jsonrpc_answer(sc, xid, ARPC_ESHUTDOWN, "server shutting down", strlen("server shutting down"));
    } else if (name_len > ARPC_METHOD_MAX ||
               (m = arpc_registry_find(&s->sv_registry, name, name_len)) == NULL) {
        jsonrpc_no_method(sc, xid, name, name_len);
    } else if (m->m_numbered_only) {
        sconn_refuse_unnumbered(sc, m, xid, false); /* JSON-RPC calls are never numbered */
    } else {
        /* Go sends exactly one parameter; none (or null) is the handler's "null". */
        const json_t *arg = json_is_array(params) && json_array_size(params) > 0 ? json_array_get(params, 0) : json_null();
        char *payload;
        size_t plen;
        if (jsonrpc_dump(arg, &payload, &plen) != ARPC_OK) {
            jsonrpc_answer(sc, xid, ARPC_EREJECTED, "server out of memory", strlen("server out of memory"));
        } else {
            struct arpc_frame f = {
                .f_kind = ARPC_FRAME_REQUEST,
                .f_xid = xid,
                .f_method = name,
                .f_method_len = (uint16_t)name_len,
                .f_payload = (const uint8_t *)payload,
                .f_payload_len = (uint32_t)plen,
            };
            arpc_conn_warm(&sc->sc_conn); /* it calls: as sconn_on_request */
            request_dispatch(sc, m, &f); /* copies the payload */
            arpc_free(payload);
        }
    }
    json_decref(req);
}

/* The oversized request skimmed whole: answered ARPC_ETOOLARGE by the id it carried
 * (jsonrpc_skimmed_id). */
static void jsonrpc_answer_too_large(struct server_conn *sc)
{
    const struct jsonrpc_skim *sk = &sc->sc_json->js_skim;
    sc->sc_last_busy = arpc_loop_now(sc->sc_conn.c_loop); /* the idle timeout's "a frame arrived" */
    uint64_t xid = jsonrpc_track(sc, jsonrpc_skimmed_id(sk));
    if (xid == 0)
        return;
    char msg[160];
    int n = sc->sc_json->js_skim_costly
                ? snprintf(msg, sizeof(msg),
                           "request of %llu bytes holds too many values for its size: parsing it would take "
                           "more than %u x the server's JSON-RPC request limit (%u) of memory",
                           (unsigned long long)sk->sk_skipped, JSONRPC_SCAN_COST_PER_BYTE, sc->sc_conn.c_max_body)
                : snprintf(msg, sizeof(msg), "request of %llu bytes is over the server's JSON-RPC request limit (%u)",
                           (unsigned long long)sk->sk_skipped, sc->sc_conn.c_max_body);
    jsonrpc_answer(sc, xid, ARPC_ETOOLARGE, msg, (size_t)n);
}

/* What a request nested deeper than the scan follows is refused with (the scan stops there,
 * and so would jansson). */
#define JSONRPC_TOO_DEEP "jsonrpc: request nested deeper than 2048 levels"
_Static_assert(JSONRPC_SCAN_MAX_DEPTH == 2048, "JSONRPC_TOO_DEEP says 2048");

/* Drops what has arrived of an oversized request. True once it ended (and was answered). */
static bool jsonrpc_skim_oversized(struct server_conn *sc)
{
    struct arpc_conn *conn = &sc->sc_conn;
    struct jsonrpc_sconn *js = sc->sc_json;
    size_t used;
    int rc = jsonrpc_skim(&js->js_skim, conn->c_rbuf + conn->c_rstart, conn->c_rend - conn->c_rstart, &used);
    conn->c_rstart += used;
    if (rc == ARPC_EAGAIN && js->js_skim.sk_skipped <= ARPC_CONN_SKIP_MAX)
        return false;
    js->js_skimming = false;
    conn->c_skip = 0;
    if (rc != ARPC_OK) {
        jsonrpc_refuse(sc, rc != ARPC_EPROTO                                  ? "jsonrpc: request larger than 1 GiB"
                           : js->js_skim.sk_depth > JSONRPC_SCAN_MAX_DEPTH ? JSONRPC_TOO_DEEP
                                                                            : "jsonrpc: expected a JSON object");
        return false;
    }
    jsonrpc_answer_too_large(sc);
    return true;
}

size_t jsonrpc_sconn_parse(struct server_conn *sc)
{
    struct arpc_conn *conn = &sc->sc_conn;
    struct jsonrpc_sconn *js = sc->sc_json;
    size_t parsed_from = conn->c_rstart;
    if (js != NULL && js->js_ended) {
        conn->c_rstart = conn->c_rend; /* after bad input: dropped as it comes (jsonrpc_end) */
        return 0;
    }
    while (js != NULL && !js->js_ended && conn->c_open && conn->c_hold == 0 && !conn->c_close_pending &&
           !conn->c_close_after_flush) {
        if (js->js_skimming && !jsonrpc_skim_oversized(sc))
            return js->js_skimming ? 1 : 0; /* more of it to drop, or closed for bad input */
        size_t len;
        int rc = jsonrpc_next(&js->js_scan, conn->c_rbuf, &conn->c_rstart, conn->c_rend, conn->c_max_body, &len);
        if (rc == ARPC_EAGAIN)
            return len + 1;
        if (rc == ARPC_ETOOLARGE) {
            /* From its first byte again: the scan so far found no end, the skim finds the id. */
            js->js_skim_costly = js->js_scan.js_costly;
            jsonrpc_scan_reset(&js->js_scan);
            jsonrpc_skim_reset(&js->js_skim);
            js->js_skimming = true;
            arpc_conn_begin_skip(conn, 1, parsed_from); /* its end is not known: 1 until then */
            continue;
        }
        if (rc != ARPC_OK) {
            jsonrpc_refuse(sc, js->js_scan.js_depth > JSONRPC_SCAN_MAX_DEPTH ? JSONRPC_TOO_DEEP
                                                                             : "jsonrpc: expected a JSON object");
            return 0;
        }
        const uint8_t *p = conn->c_rbuf + conn->c_rstart;
        conn->c_rstart += len; /* p stays valid: nothing below moves the buffer */
        jsonrpc_request(sc, p, len);
    }
    return 0;
}

static const char jsonrpc_not_json[] = "jsonrpc: the handler's reply is not valid JSON";

void jsonrpc_sconn_check_reply(const struct server_conn *sc, uint64_t xid, uint8_t *kind, int *code,
                               const void **data, size_t *len)
{
    (void)xid;
    if (!sc->sc_speaks_json || *kind != ARPC_FRAME_REPLY || jsonrpc_valid(*data, *len))
        return;
    *kind = ARPC_FRAME_ERROR; /* logged on the loop (jsonrpc_answer), within the peer's budget */
    *code = ARPC_EHANDLER;
    *data = jsonrpc_not_json;
    *len = sizeof(jsonrpc_not_json) - 1;
}

void jsonrpc_text_quoted(struct text_buf *b, const char *text, size_t len)
{
    size_t qlen = 0;
    char *quoted = jsonrpc_quote(text, len, &qlen);
    if (quoted != NULL)
        text_buf_append(b, quoted, qlen);
    else
        text_buf_fail(b);
    arpc_free(quoted);
}

static void jsonrpc_answer(struct server_conn *sc, uint64_t xid, int code, const void *data, size_t len)
{
    /* Any method whose replies are not JSON (every binary one) says so here at
     * a JSON-RPC peer's call: the peer chooses how often, so the line is a peer's (peer_log). */
    if (code == ARPC_EHANDLER && len == sizeof(jsonrpc_not_json) - 1 && memcmp(data, jsonrpc_not_json, len) == 0)
        peer_log(sc->sc_conn.c_loop, ARPC_LOG_WARN, "JSON-RPC call %llu from %s: %s", (unsigned long long)xid,
                 sc->sc_conn.c_peer, jsonrpc_not_json);
    if (code == ARPC_OK) { /* valid JSON: its handler's thread checked (jsonrpc_sconn_check_reply) */
        char *id = arpc_u64_map_take(&sc->sc_json->js_ids, xid);
        if (id != NULL)
            jsonrpc_respond(sc, id, data, len, NULL, 0);
        return;
    }
    size_t words;
    /* Any arpc error's name at its start is escaped, not only those this version's client
     * reads as outcomes: an older client read "ARPC_ENOMEM: ..." as "not sent". */
    if (code == ARPC_EHANDLER && jsonrpc_text_names_code(data, len, &words) == ARPC_OK &&
        jsonrpc_error_code(data, len, &words) == ARPC_EHANDLER) {
        jsonrpc_fail(sc, xid, data, len); /* the handler's own words, as Go's would be */
        return;
    }
    /* The server's answers (deadline, stop, refusals) say which, by the error's name; and so
     * does a handler whose words would read as one of them ("ARPC_ESHUTDOWN: ..."): the
     * client must not take its call for one that did not run (core/jsonrpc_codec.h). */
    const char *name = arpc_errname(code);
    size_t nlen = strlen(name);
    char *msg = arpc_malloc(nlen + 2 + len);
    if (msg == NULL) { /* still "NAME: ...": the name alone would read as a handler's words */
        char bare[64];
        int n = snprintf(bare, sizeof(bare), "%s: (no memory for the words)", name);
        jsonrpc_fail(sc, xid, bare, n > 0 && (size_t)n < sizeof(bare) ? (size_t)n : strlen(bare));
        return;
    }
    memcpy(msg, name, nlen);
    memcpy(msg + nlen, ": ", 2);
    memcpy(msg + nlen + 2, data, len);
    jsonrpc_fail(sc, xid, msg, nlen + 2 + len);
    arpc_free(msg);
}

bool jsonrpc_sconn_send_reply(struct server_conn *sc, struct reply_msg *rm)
{
    if (sc->sc_json == NULL)
        return false;
    struct arpc_frame f;
    size_t used;
    if (arpc_frame_decode(rm->rm_frame, rm->rm_len, UINT32_MAX, &f, &used, NULL) == ARPC_OK) {
        if (f.f_kind == ARPC_FRAME_REPLY)
            jsonrpc_answer(sc, f.f_xid, ARPC_OK, f.f_payload, f.f_payload_len);
        else if (f.f_kind == ARPC_FRAME_ERROR)
            jsonrpc_answer(sc, f.f_xid, (int)f.f_code, f.f_msg, f.f_msg_len);
    }
    reply_msg_free(rm); /* a large reply's buffer goes back to its connection */
    return true;
}

bool jsonrpc_sconn_send_error(struct server_conn *sc, uint64_t xid, int code, const char *msg, size_t len)
{
    if (sc->sc_json == NULL)
        return false;
    jsonrpc_answer(sc, xid, code, msg, len);
    return true;
}
