/*
 * Where one JSON object ends in a byte stream: framing only, for JSON-RPC connections (Go's
 * encoder writes one object per line; a stream may hold several, or part of one). It follows
 * strings, their escapes and the depth of brackets, nothing more: whether the object is valid
 * JSON is for jansson to say once it is whole. Pure (no I/O, no allocation) and resumable: a
 * partial object is scanned once, the rest when more bytes come, so a slow sender costs O(n),
 * not a re-parse per read.
 */
#ifndef ARPC_CORE_JSONRPC_SCAN_H
#define ARPC_CORE_JSONRPC_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Deeper nesting is refused: jansson refuses it too (its JSON_PARSER_MAX_DEPTH). */
#define JSONRPC_SCAN_MAX_DEPTH 2048

struct jsonrpc_scan {
    size_t js_pos;     /* bytes of the current object scanned so far */
    unsigned js_depth; /* open brackets ({ and [) */
    bool js_in_string;
    bool js_escape;    /* the previous byte in a string was a backslash */
};

static inline void jsonrpc_scan_reset(struct jsonrpc_scan *st) { *st = (struct jsonrpc_scan){0}; }

/* JSON's whitespace (RFC 8259): what may separate objects in the stream. */
static inline bool jsonrpc_is_space(uint8_t b) { return b == ' ' || b == '\t' || b == '\n' || b == '\r'; }

/* The number of whitespace bytes at the start of buf[0..len). */
size_t jsonrpc_skip_space(const uint8_t *buf, size_t len);

/* buf[0..len) starts with the current object (the same first bytes as at the previous call:
 * only what was appended is scanned). Returns ARPC_OK with *obj_len = the object's length
 * once its closing brace is in buf (st is then ready for the next object), ARPC_EAGAIN while
 * it is not yet whole (st remembers how far it got), ARPC_EPROTO when buf does not start
 * with '{', a bracket closes nothing, or nesting passes JSONRPC_SCAN_MAX_DEPTH. */
int jsonrpc_scan(struct jsonrpc_scan *st, const uint8_t *buf, size_t len, size_t *obj_len);

/* A stream's next object in buf[*start..end), as both ends of a JSON-RPC connection read it:
 * between objects the whitespace before it is skipped (*start advances past it). ARPC_OK: the
 * object is buf[*start..*start + *obj_len), not yet consumed. ARPC_EAGAIN: not whole yet;
 * *obj_len = the bytes of it held so far. ARPC_EPROTO: not an object (as jsonrpc_scan).
 * ARPC_ETOOLARGE: the object, whole or not, is over max bytes. */
int jsonrpc_next(struct jsonrpc_scan *st, const uint8_t *buf, size_t *start, size_t end, size_t max,
                 size_t *obj_len);

#endif
