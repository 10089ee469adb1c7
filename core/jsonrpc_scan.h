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

/* What jansson's parse of an object costs in memory, estimated as the scan goes: bytes per
 * object, array, string and further value (each ',' starts one), as measured with jansson 2.14
 * (mallinfo2). Its text is small next to that: a request of 14 MB of "0," took a server to
 * 594 MB, and "{}," costs 75 bytes of memory per byte. An object is refused (as one over
 * max) once its estimate passes JSONRPC_SCAN_COST_PER_BYTE x max + JSONRPC_SCAN_COST_BASE (the
 * request's envelope): an array of numbers of 3 digits or more (8 per byte at most) never
 * reaches it under max, one of 1-digit numbers does at half of max, and objects and strings
 * of a few bytes each well before. So a request costs at most about 8 x max_frame to parse
 * (the parse runs on the loop thread, one at a time), not 75 x. */
#define JSONRPC_SCAN_COST_OBJECT 224u
#define JSONRPC_SCAN_COST_ARRAY 128u
#define JSONRPC_SCAN_COST_STRING 80u
#define JSONRPC_SCAN_COST_VALUE 32u
#define JSONRPC_SCAN_COST_PER_BYTE 8u
#define JSONRPC_SCAN_COST_BASE 4096u

struct jsonrpc_scan {
    size_t js_pos;     /* bytes of the current object scanned so far */
    unsigned js_depth; /* open brackets ({ and [) */
    bool js_in_string;
    bool js_escape;    /* the previous byte in a string was a backslash */
    uint64_t js_cost;  /* jansson's estimated memory for the object so far (above) */
    uint64_t js_cost_max; /* 0: none; jsonrpc_next sets it */
    bool js_costly;    /* ARPC_ETOOLARGE came from js_cost_max, not the length */
};

static inline void jsonrpc_scan_reset(struct jsonrpc_scan *st) { *st = (struct jsonrpc_scan){0}; }

/* JSON's whitespace (RFC 8259): what may separate objects in the stream. */
static inline bool jsonrpc_is_space(uint8_t b) { return b == ' ' || b == '\t' || b == '\n' || b == '\r'; }

/* A connection's first byte that makes its peer a JSON one: an object, whitespace, or '['
 * (not JSON-RPC 1.0 -- a 2.0 batch, say -- but a JSON peer is better told so in JSON). */
static inline bool jsonrpc_peer_first(uint8_t b) { return b == '{' || b == '[' || jsonrpc_is_space(b); }

/* A hex digit's value (a \uXXXX escape's), or -1. */
static inline int jsonrpc_hex_digit(uint8_t b)
{
    return b >= '0' && b <= '9' ? b - '0' : b >= 'a' && b <= 'f' ? b - 'a' + 10 : b >= 'A' && b <= 'F' ? b - 'A' + 10 : -1;
}

/* The number of whitespace bytes at the start of buf[0..len). */
size_t jsonrpc_skip_space(const uint8_t *buf, size_t len);

/* buf[0..len) starts with the current object (the same first bytes as at the previous call:
 * only what was appended is scanned). Returns ARPC_OK with *obj_len = the object's length
 * once its closing brace is in buf (st is then ready for the next object), ARPC_EAGAIN while
 * it is not yet whole (st remembers how far it got), ARPC_EPROTO when buf does not start
 * with '{', a bracket closes nothing, or nesting passes JSONRPC_SCAN_MAX_DEPTH,
 * ARPC_ETOOLARGE (js_costly set) once its cost passes js_cost_max when that is not 0. */
int jsonrpc_scan(struct jsonrpc_scan *st, const uint8_t *buf, size_t len, size_t *obj_len);

/* A stream's next object in buf[*start..end), as both ends of a JSON-RPC connection read it:
 * between objects the whitespace before it is skipped (*start advances past it). ARPC_OK: the
 * object is buf[*start..*start + *obj_len), not yet consumed. ARPC_EAGAIN: not whole yet;
 * *obj_len = the bytes of it held so far. ARPC_EPROTO: not an object (as jsonrpc_scan).
 * ARPC_ETOOLARGE: the object, whole or not, is over max bytes, or would cost jansson more
 * than JSONRPC_SCAN_COST_PER_BYTE x max (+ the base) to parse (st->js_costly then). */
int jsonrpc_next(struct jsonrpc_scan *st, const uint8_t *buf, size_t *start, size_t end, size_t max,
                 size_t *obj_len);

#endif
