/*
 * Skimming a JSON-RPC request too large to keep: its bytes are dropped as they stream in, and
 * only what the answer needs is kept, the top-level "id" value's text, so the caller is told
 * ARPC_ETOOLARGE for that call and the connection goes on (as an oversized arpc frame's body
 * is skipped). Framing as core/jsonrpc_scan.h (strings, escapes, bracket depth), plus the
 * keys of the outer object. Pure (no I/O, no allocation) and resumable byte by byte.
 */
#ifndef ARPC_CORE_JSONRPC_SKIM_H
#define ARPC_CORE_JSONRPC_SKIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longer id values are not kept (the answer then says id null). Go's ids are uint64. */
#define JSONRPC_SKIM_ID_MAX 64

enum jsonrpc_skim_id {
    JSONRPC_SKIM_ID_NONE,   /* no "id" key (yet) */
    JSONRPC_SKIM_ID_KEPT,   /* sk_id[0..sk_id_len) is its value's text, as sent */
    JSONRPC_SKIM_ID_TOO_LONG,
    JSONRPC_SKIM_ID_TWICE,  /* "id" is a key more than once: no id to answer by (ambiguous) */
};

struct jsonrpc_skim {
    uint64_t sk_skipped;    /* bytes of the object dropped so far */
    unsigned sk_depth;
    uint8_t sk_where;       /* where in the outer object (jsonrpc_skim.c) */
    bool sk_in_string;
    bool sk_escape;
    uint8_t sk_key_pos;     /* characters of the current outer key matched against "id" (0xff: not it) */
    uint8_t sk_key_hex;     /* hex digits of a key's \uXXXX escape still to come */
    uint16_t sk_key_code;   /* that escape's code unit so far */
    bool sk_key_is_id;      /* the value being read belongs to "id" */
    uint8_t sk_id_state;    /* enum jsonrpc_skim_id */
    uint8_t sk_id_len;
    uint8_t sk_id_spaces;   /* whitespace after the id's last token, kept only if another follows */
    char sk_id[JSONRPC_SKIM_ID_MAX];
};

static inline void jsonrpc_skim_reset(struct jsonrpc_skim *sk) { *sk = (struct jsonrpc_skim){0}; }

/* Skims buf[0..len), the next bytes of an object whose first byte ('{') was in the first
 * buffer given after a reset. Returns ARPC_OK once the object's closing brace was read
 * (*used: the bytes of buf that were the object's; sk holds the id), ARPC_EAGAIN when all of
 * buf was the object's and more is to come (*used = len), ARPC_EPROTO when the bytes are not
 * one JSON object (as jsonrpc_scan would refuse them). */
int jsonrpc_skim(struct jsonrpc_skim *sk, const uint8_t *buf, size_t len, size_t *used);

#endif
