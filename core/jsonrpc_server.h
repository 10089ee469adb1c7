/*
 * JSON-RPC 1.0 on the server's connections (core/jsonrpc_server.c): the hooks the server's
 * connection code (core/server_conn.c, server_dedup.c) calls. Loop thread only. Built with
 * ARPC_WITH_JSONRPC; without it they are no-ops and every connection speaks arpc frames.
 */
#ifndef ARPC_CORE_JSONRPC_SERVER_H
#define ARPC_CORE_JSONRPC_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct server_conn;
struct reply_msg;
struct text_buf;

#ifdef ARPC_WITH_JSONRPC
/* A connection that has not sent HELLO yet: if its first byte is '{', '[' or JSON whitespace (an
 * arpc frame starts with its magic 'a'), it becomes a JSON-RPC connection (no HELLO, no
 * heartbeat) and true is returned; the caller then parses with jsonrpc_sconn_parse. */
bool jsonrpc_sconn_adopt(struct server_conn *sc);
/* arpc_conn_ops.parse for a JSON-RPC connection. */
size_t jsonrpc_sconn_parse(struct server_conn *sc);
/* The connection closed: its calls' ids are freed (replies still to come are dropped). */
void jsonrpc_sconn_close(struct server_conn *sc);
/* Bad input ended a JSON-RPC connection's input (nothing more is parsed): it closes once the
 * calls read before it are answered, after its last words (jsonrpc_sconn_last_words). */
bool jsonrpc_sconn_ended(const struct server_conn *sc);
/* The end of stream came with part of a request in: on a JSON-RPC connection that is bad input
 * (its input ended as above, the part dropped) and true is returned; false for arpc frames.
 * May close the connection (no memory). */
bool jsonrpc_sconn_cut_short(struct server_conn *sc);
/* Queues the response saying why the input ended, once, and returns its code (ARPC_EPROTO,
 * ARPC_EAUTH; ARPC_ECONNLOST for a request cut by the end of stream) for the close; 0 when there is none (not JSON-RPC, or its input did not end so). */
int jsonrpc_sconn_last_words(struct server_conn *sc);
/* The code the input ended with (as jsonrpc_sconn_last_words), said or not yet; 0 when it did not
 * end so (or sc is not JSON-RPC). */
int jsonrpc_sconn_end_code(const struct server_conn *sc);
/* The server's answers, written as JSON-RPC responses on a JSON-RPC connection: true when sc
 * is one (rm, an encoded REPLY or ERROR frame, is then taken); false: send the frame. */
bool jsonrpc_sconn_send_reply(struct server_conn *sc, struct reply_msg *rm);
bool jsonrpc_sconn_send_error(struct server_conn *sc, uint64_t xid, int code, const char *msg, size_t len);
/* True for a JSON-RPC connection, which has no GOAWAY (it is just closed). */
bool jsonrpc_sconn_is(const struct server_conn *sc);
/* The replying thread, before it encodes a handler's reply for sc: on a JSON-RPC connection a
 * REPLY that is not valid JSON becomes an ARPC_EHANDLER error saying so (checked here, not on
 * the loop, which would parse every reply again while all its connections wait; logged on
 * the loop, as a peer's line, when it is answered). */
void jsonrpc_sconn_check_reply(const struct server_conn *sc, uint64_t xid, uint8_t *kind, int *code,
                               const void **data, size_t *len);
/* Appends text[0..len) to b as a JSON string, quoted as the server quotes its words to a
 * JSON-RPC peer (jsonrpc_quote: bytes that are not UTF-8 as the log escapes them), for a
 * built-in's JSON answer (core/server_builtin.c). Any thread. No memory: b fails. */
void jsonrpc_text_quoted(struct text_buf *b, const char *text, size_t len);
#else
static inline bool jsonrpc_sconn_adopt(struct server_conn *sc) { (void)sc; return false; }
static inline size_t jsonrpc_sconn_parse(struct server_conn *sc) { (void)sc; return 0; }
static inline void jsonrpc_sconn_close(struct server_conn *sc) { (void)sc; }
static inline bool jsonrpc_sconn_ended(const struct server_conn *sc) { (void)sc; return false; }
static inline bool jsonrpc_sconn_cut_short(struct server_conn *sc) { (void)sc; return false; }
static inline int jsonrpc_sconn_last_words(struct server_conn *sc) { (void)sc; return 0; }
static inline int jsonrpc_sconn_end_code(const struct server_conn *sc) { (void)sc; return 0; }
static inline bool jsonrpc_sconn_send_reply(struct server_conn *sc, struct reply_msg *rm)
{
    (void)sc;
    (void)rm;
    return false;
}
static inline bool jsonrpc_sconn_send_error(struct server_conn *sc, uint64_t xid, int code, const char *msg,
                                            size_t len)
{
    (void)sc, (void)xid, (void)code, (void)msg, (void)len;
    return false;
}
static inline bool jsonrpc_sconn_is(const struct server_conn *sc) { (void)sc; return false; }
static inline void jsonrpc_sconn_check_reply(const struct server_conn *sc, uint64_t xid, uint8_t *kind, int *code,
                                             const void **data, size_t *len)
{
    (void)sc, (void)xid, (void)kind, (void)code, (void)data, (void)len;
}
/* Without JSON-RPC no request comes from a JSON-RPC peer: never called. */
static inline void jsonrpc_text_quoted(struct text_buf *b, const char *text, size_t len)
{
    (void)b, (void)text, (void)len;
}
#endif

#endif
