/*
 * JSON-RPC 1.0 messages as Go's net/rpc/jsonrpc writes them, one per line:
 *   request   {"method":"Service.Method","params":[P],"id":ID}
 *   response  {"id":ID,"result":R,"error":null}  or  {"id":ID,"result":null,"error":"text"}
 * error is a string or null, never an object; result is null on error; the id is echoed.
 * Parsing is jansson's; the encoders here build each line in one allocation (base/alloc.h),
 * copying the JSON texts they are given as they are.
 */
#ifndef ARPC_CORE_JSONRPC_CODEC_H
#define ARPC_CORE_JSONRPC_CODEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How a value taken from a message is written back: compact, any value, doubles exact. */
#define JSONRPC_DUMP_FLAGS (JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17))

/* v as JSON text in a NUL-terminated buffer from arpc_malloc (*len excludes the NUL).
 * ARPC_OK or ARPC_ENOMEM. */
int jsonrpc_dump(const json_t *v, char **out, size_t *len);

/* msg[0..len) as a JSON string (quoted, escaped), NUL-terminated from arpc_malloc. Bytes that
 * are not UTF-8 are escaped as the log escapes them (base/log.h). NULL without memory. */
char *jsonrpc_quote(const char *msg, size_t len, size_t *out_len);

/* A response line. id and result are JSON texts (result valid JSON: the caller checked; its
 * line breaks, whitespace then, become spaces);
 * error_json, if not NULL, a quoted string from jsonrpc_quote, and result is then ignored
 * (null). NULL without memory. */
uint8_t *jsonrpc_encode_response(const char *id, size_t id_len, const void *result, size_t result_len,
                                 const char *error_json, size_t error_len, size_t *out_len);

/* A request line with a numeric id; params_json is one JSON value (checked by the caller),
 * sent as the one element of params. NULL without memory or for a method that is not UTF-8. */
uint8_t *jsonrpc_encode_request(const char *method, uint64_t id, const void *params_json, size_t params_len,
                                size_t *out_len);

/* True when buf[0..len) is exactly one JSON value (any kind), optionally surrounded by
 * whitespace; integers of any size (jansson holds int64 only: larger ones are checked as
 * reals). */
bool jsonrpc_valid(const void *buf, size_t len);

/* Go's server's words for a name it cannot serve (net/rpc/server.go), which arpc's server
 * writes too ("... method S.M", "... service S.M"; "...: M" without a dot): nothing ran. */
#define JSONRPC_GO_CANT_FIND "rpc: can't find "
#define JSONRPC_GO_ILL_FORMED "rpc: service/method request ill-formed: "

/* The starts of the error texts of arpc's server for a request it did not take (well-formed
 * JSON it cannot hold or refuses; params not an array): nothing ran. */
#define JSONRPC_NOT_TAKEN "jsonrpc: request not taken: "
#define JSONRPC_PARAMS_NOT_ARRAY "jsonrpc: params must be an array"

/* The arpc error (not ARPC_OK) whose name and ": " begin text, else ARPC_OK; *words: where the
 * text after them begins (else 0). */
int jsonrpc_text_names_code(const char *text, size_t len, size_t *words);
/* What a response's error text says of its call, as arpc's client reads it (JSON-RPC has no
 * error codes): the arpc error its first words name ("ARPC_ESHUTDOWN: server shutting down":
 * arpc's server names its own answers so), if one a server answers calls with
 * (arpc_frame_error_code_answers: not a local condition's), ARPC_ENOMETHOD for Go's texts
 * for a name it cannot serve, ARPC_EREJECTED for a request arpc's server did not take (above),
 * else ARPC_EHANDLER: a handler's own words, which arpc's server names "ARPC_EHANDLER: " when
 * they would read as one of the others or begin with any arpc error's name. *words: where
 * the text after a name begins (else 0). */
int jsonrpc_error_code(const char *text, size_t len, size_t *words);

#endif
