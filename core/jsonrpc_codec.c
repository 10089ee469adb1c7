/* JSON-RPC 1.0 messages as Go writes them (core/jsonrpc_codec.h): each line encoded in one
 * allocation, and an error's text read back as an arpc error code. */
#include "core/jsonrpc_codec.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/log.h"
#include "core/frame.h"

int jsonrpc_dump(const json_t *v, char **out, size_t *len)
{
    size_t n = json_dumpb(v, NULL, 0, JSONRPC_DUMP_FLAGS);
    char *buf = n > 0 ? arpc_malloc(n + 1) : NULL;
    if (buf == NULL)
        return ARPC_ENOMEM; /* 0: jansson could not encode it (out of memory too) */
    json_dumpb(v, buf, n, JSONRPC_DUMP_FLAGS);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return ARPC_OK;
}

char *jsonrpc_quote(const char *msg, size_t len, size_t *out_len)
{
    json_t *s = json_stringn(msg, len);
    if (s == NULL) {
        /* Not UTF-8 (jansson refuses it): the printable escape the log uses is ASCII. */
        char esc[ARPC_LOG_FIELD_MAX * 4];
        arpc_log_escape(esc, sizeof(esc), msg, len);
        s = json_string(esc);
    }
    char *out = NULL;
    int rc = s != NULL ? jsonrpc_dump(s, &out, out_len) : ARPC_ENOMEM;
    json_decref(s);
    return rc == ARPC_OK ? out : NULL;
}

/* Appends n bytes at *w. */
static void put(uint8_t **w, const void *p, size_t n)
{
    memcpy(*w, p, n);
    *w += n;
}

/* Each c in p[0..n) becomes a space (memchr: replies may be megabytes). */
static void blank_byte(uint8_t *p, size_t n, int c)
{
    for (uint8_t *end = p + n; (p = memchr(p, c, (size_t)(end - p))) != NULL;)
        *p++ = ' ';
}

uint8_t *jsonrpc_encode_response(const char *id, size_t id_len, const void *result, size_t result_len,
                                 const char *error_json, size_t error_len, size_t *out_len)
{
    static const char p_id[] = "{\"id\":", p_result[] = ",\"result\":", p_error[] = ",\"error\":",
                      null[] = "null", end[] = "}\n";
    if (error_json == NULL) {
        error_json = null;
        error_len = sizeof(null) - 1;
    } else {
        result = null;
        result_len = sizeof(null) - 1;
    }
    size_t n = sizeof(p_id) - 1 + id_len + sizeof(p_result) - 1 + result_len + sizeof(p_error) - 1 + error_len +
               sizeof(end) - 1;
    uint8_t *buf = arpc_malloc(n);
    if (buf == NULL)
        return NULL;
    uint8_t *w = buf;
    put(&w, p_id, sizeof(p_id) - 1);
    put(&w, id, id_len);
    put(&w, p_result, sizeof(p_result) - 1);
    put(&w, result, result_len);
    /* One response, one line, whatever the handler's layout (arpc.stats is indented): in
     * valid JSON a line break can only be whitespace between tokens (strings escape theirs),
     * so a space stands in for it, and a peer reading a line per response gets all of it. */
    blank_byte(w - result_len, result_len, '\n');
    blank_byte(w - result_len, result_len, '\r');
    put(&w, p_error, sizeof(p_error) - 1);
    put(&w, error_json, error_len);
    put(&w, end, sizeof(end) - 1);
    *out_len = n;
    return buf;
}

uint8_t *jsonrpc_encode_request(const char *method, uint64_t id, const void *params_json, size_t params_len,
                                size_t *out_len)
{
    json_t *m = json_string(method);
    char *mq = NULL;
    size_t mq_len = 0;
    int rc = m != NULL ? jsonrpc_dump(m, &mq, &mq_len) : ARPC_ENOMEM;
    json_decref(m);
    if (rc != ARPC_OK)
        return NULL;
    char tail[48];
    int tail_len = snprintf(tail, sizeof(tail), "],\"id\":%" PRIu64 "}\n", id);
    static const char p_method[] = "{\"method\":", p_params[] = ",\"params\":[";
    size_t n = sizeof(p_method) - 1 + mq_len + sizeof(p_params) - 1 + params_len + (size_t)tail_len;
    uint8_t *buf = arpc_malloc(n);
    if (buf != NULL) {
        uint8_t *w = buf;
        put(&w, p_method, sizeof(p_method) - 1);
        put(&w, mq, mq_len);
        put(&w, p_params, sizeof(p_params) - 1);
        put(&w, params_json, params_len);
        put(&w, tail, (size_t)tail_len);
        *out_len = n;
    }
    arpc_free(mq);
    return buf;
}

bool jsonrpc_valid(const void *buf, size_t len)
{
    json_error_t err;
    json_t *v = json_loadb(buf, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    /* An integer outside int64 (a uint64 above 2^63-1, which a Go peer takes) is JSON that
     * jansson holds only as a real: the bytes are sent as they are, so it is valid here. */
    if (v == NULL && json_error_code(&err) == json_error_numeric_overflow)
        v = json_loadb(buf, len, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &err);
    bool valid = v != NULL;
    json_decref(v);
    return valid;
}

static bool text_starts(const char *text, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(text, prefix, n) == 0;
}

int jsonrpc_text_names_code(const char *text, size_t len, size_t *words)
{
    for (int code = ARPC_OK + 1; code < ARPC_ERROR_COUNT_; code++) {
        const char *name = arpc_errname(code);
        size_t n = strlen(name);
        if (len >= n + 2 && memcmp(text, name, n) == 0 && text[n] == ':' && text[n + 1] == ' ') {
            *words = n + 2;
            return code;
        }
    }
    *words = 0;
    return ARPC_OK;
}

int jsonrpc_error_code(const char *text, size_t len, size_t *words)
{
    /* Only a code a server answers with: "ARPC_ENOMEM: ..." from a handler would tell the
     * caller its call was not sent. */
    int code = jsonrpc_text_names_code(text, len, words);
    if (code != ARPC_OK && arpc_frame_error_code_answers((uint32_t)code))
        return code;
    *words = 0;
    if (text_starts(text, len, JSONRPC_GO_CANT_FIND) || text_starts(text, len, JSONRPC_GO_ILL_FORMED))
        return ARPC_ENOMETHOD;
    if (text_starts(text, len, JSONRPC_NOT_TAKEN) || text_starts(text, len, JSONRPC_PARAMS_NOT_ARRAY))
        return ARPC_EREJECTED;
    return ARPC_EHANDLER;
}
