/*
 * The text of one member's value in a JSON object, as it was written: for a value jansson
 * cannot hold (an integer outside int64), which must reach its reader digit for digit.
 * Pure (no allocation).
 */
#ifndef ARPC_CORE_JSONRPC_MEMBER_H
#define ARPC_CORE_JSONRPC_MEMBER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* obj[0..len) is one JSON object that jansson accepted (valid JSON: not checked again). The
 * value of its top-level member named key (UTF-8) is obj[*at .. *at + *value_len): a key is
 * compared as a parser reads it, its escapes decoded ("res\u0075lt" is "result", as it is to
 * jansson); of duplicate keys the first, but the JSON-RPC code refuses those before it asks.
 * False when there is no such member. */
bool jsonrpc_member_text(const uint8_t *obj, size_t len, const char *key, size_t *at, size_t *value_len);

#endif
