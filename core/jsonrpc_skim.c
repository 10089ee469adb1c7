/* Skimming a JSON-RPC request too large to keep: its bytes dropped, its "id" kept
 * (core/jsonrpc_skim.h). */
#include "core/jsonrpc_skim.h"

#include "arpc/error.h"
#include "core/jsonrpc_scan.h"

/* Where the skim is in the outer object, outside nested values. */
enum {
    W_START,    /* before its '{' */
    W_KEY,      /* a key may start */
    W_IN_KEY,   /* inside a key's string */
    W_COLON,    /* after a key */
    W_VALUE,    /* after the colon: a value may start */
    W_IN_VALUE, /* inside a value (at any depth) until the ',' or '}' that ends it */
};

static void skim_put(struct jsonrpc_skim *sk, uint8_t b)
{
    if (sk->sk_id_len == JSONRPC_SKIM_ID_MAX)
        sk->sk_id_state = JSONRPC_SKIM_ID_TOO_LONG;
    else
        sk->sk_id[sk->sk_id_len++] = (char)b;
}

/* Keeps b of the id's text. Whitespace between its tokens is kept as one space each, but only
 * once a token follows: the spaces before the ',' or '}' that ends it do not count toward
 * JSONRPC_SKIM_ID_MAX (nor are they dropped between tokens: "1 2" must stay invalid). */
static void skim_keep(struct jsonrpc_skim *sk, uint8_t b)
{
    if (!sk->sk_key_is_id || sk->sk_id_state == JSONRPC_SKIM_ID_TOO_LONG)
        return;
    for (; sk->sk_id_spaces > 0 && sk->sk_id_state != JSONRPC_SKIM_ID_TOO_LONG; sk->sk_id_spaces--)
        skim_put(sk, ' ');
    if (sk->sk_id_state != JSONRPC_SKIM_ID_TOO_LONG)
        skim_put(sk, b);
}

/* Whitespace outside strings, inside the id's value. */
static void skim_space(struct jsonrpc_skim *sk)
{
    if (sk->sk_key_is_id && sk->sk_id_spaces < JSONRPC_SKIM_ID_MAX + 1)
        sk->sk_id_spaces++;
}

/* A value begins. A second "id" leaves no id to answer by: parsers disagree on which of two
 * counts (jansson and Go keep the last, others the first), so neither is trusted. */
static void skim_value_begins(struct jsonrpc_skim *sk, uint8_t b)
{
    sk->sk_where = W_IN_VALUE;
    if (sk->sk_key_is_id && sk->sk_id_state != JSONRPC_SKIM_ID_NONE)
        sk->sk_id_state = JSONRPC_SKIM_ID_TWICE;
    if (sk->sk_id_state == JSONRPC_SKIM_ID_TWICE)
        sk->sk_key_is_id = false; /* nothing more is kept */
    skim_keep(sk, b);
}

static void skim_value_ends(struct jsonrpc_skim *sk)
{
    if (sk->sk_key_is_id && sk->sk_id_state == JSONRPC_SKIM_ID_NONE)
        sk->sk_id_state = JSONRPC_SKIM_ID_KEPT; /* the spaces before the ',' or '}' never kept */
    sk->sk_key_is_id = false;
    sk->sk_where = W_KEY;
}

/* One character of an outer key, decoded (escapes included, as a parser reads the key). */
static void skim_key_char(struct jsonrpc_skim *sk, unsigned c)
{
    if (sk->sk_key_pos != 0xff)
        sk->sk_key_pos = sk->sk_key_pos < 2 && c == (uint8_t)"id"[sk->sk_key_pos] ? (uint8_t)(sk->sk_key_pos + 1) : 0xff;
}

/* A key's byte after "\\u": a hex digit of its code unit; true when it was one. Anything else
 * ends the escape as no match and is read as the byte it is (the framing stays jsonrpc_scan's,
 * which reads no escape past its first byte; jansson refuses such an object later). */
static bool skim_key_hex(struct jsonrpc_skim *sk, uint8_t b)
{
    int v = jsonrpc_hex_digit(b);
    if (v < 0) {
        sk->sk_key_hex = 0;
        sk->sk_key_pos = 0xff;
        return false;
    }
    sk->sk_key_code = (uint16_t)(sk->sk_key_code << 4 | (unsigned)v);
    if (--sk->sk_key_hex == 0)
        skim_key_char(sk, sk->sk_key_code);
    return true;
}

/* One byte inside a string (a key's or a value's). */
static void skim_string_byte(struct jsonrpc_skim *sk, uint8_t b)
{
    bool in_key = sk->sk_where == W_IN_KEY;
    if (sk->sk_where == W_IN_VALUE)
        skim_keep(sk, b);
    if (sk->sk_escape) {
        sk->sk_escape = false;
        if (in_key && b == 'u') {
            sk->sk_key_hex = 4; /* "\\u0069d" is "id" too: the answer must carry its value */
            sk->sk_key_code = 0;
        } else if (in_key) {
            skim_key_char(sk, 0); /* \\", \\n, ...: never a letter of "id" */
        }
        return;
    }
    if (in_key && sk->sk_key_hex > 0 && skim_key_hex(sk, b))
        return;
    if (b == '"') {
        sk->sk_in_string = false;
        if (in_key) {
            sk->sk_key_is_id = sk->sk_key_pos == 2;
            sk->sk_where = W_COLON;
        }
        return;
    }
    if (b == '\\') {
        sk->sk_escape = true;
        return;
    }
    if (in_key)
        skim_key_char(sk, b);
}

int jsonrpc_skim(struct jsonrpc_skim *sk, const uint8_t *buf, size_t len, size_t *used)
{
    for (size_t i = 0; i < len; i++) {
        uint8_t b = buf[i];
        if (sk->sk_where == W_START) {
            if (b != '{')
                return ARPC_EPROTO;
            sk->sk_depth = 1;
            sk->sk_where = W_KEY;
            continue;
        }
        if (sk->sk_in_string) {
            skim_string_byte(sk, b);
            continue;
        }
        if (sk->sk_depth == 1 && sk->sk_where == W_IN_VALUE && (b == ',' || b == '}')) {
            skim_value_ends(sk);
            if (b == ',')
                continue;
        }
        if (b == '"') {
            sk->sk_in_string = true;
            if (sk->sk_where == W_KEY) {
                sk->sk_where = W_IN_KEY;
                sk->sk_key_pos = 0;
                sk->sk_key_hex = 0;
            } else if (sk->sk_where == W_VALUE) {
                skim_value_begins(sk, b);
            } else if (sk->sk_where == W_IN_VALUE) {
                skim_keep(sk, b);
            }
        } else if (b == '{' || b == '[') {
            if (++sk->sk_depth > JSONRPC_SCAN_MAX_DEPTH)
                return ARPC_EPROTO;
            if (sk->sk_where == W_VALUE)
                skim_value_begins(sk, b);
            else if (sk->sk_where == W_IN_VALUE)
                skim_keep(sk, b);
        } else if (b == '}' || b == ']') {
            if (--sk->sk_depth == 0) {
                *used = i + 1;
                sk->sk_skipped += i + 1;
                return ARPC_OK;
            }
            if (sk->sk_where == W_IN_VALUE)
                skim_keep(sk, b);
        } else if (sk->sk_where == W_COLON && b == ':') {
            sk->sk_where = W_VALUE;
        } else if (sk->sk_where == W_VALUE && !jsonrpc_is_space(b)) {
            skim_value_begins(sk, b); /* a number, true, false, null */
        } else if (sk->sk_where == W_IN_VALUE) {
            if (jsonrpc_is_space(b))
                skim_space(sk);
            else
                skim_keep(sk, b);
        }
    }
    *used = len;
    sk->sk_skipped += len;
    return ARPC_EAGAIN;
}
