/*
 * arpc/log.h: where arpc's log lines go.
 *
 * arpc logs what it cannot return to a caller: a connection closed for bad input, an accept
 * that failed, a server going away. By default lines at ARPC_LOG_INFO and above are written
 * to stderr as "<UTC time to the millisecond> arpc <LEVEL>: <message>", e.g.
 * "2026-12-06T18:55:01.123Z arpc WARN: ...". arpc_set_logger() sends them to fn instead (which
 * gets the message alone), or silences them.
 *
 * Bytes that came from a peer (method names, error messages, addresses) are escaped before
 * they reach a line: printable ASCII is kept, everything else is written as \xNN, and long
 * fields are cut, so a peer cannot forge log lines or inject terminal escape codes.
 */
#ifndef ARPC_LOG_H
#define ARPC_LOG_H

#include "arpc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

enum arpc_log_level {
    ARPC_LOG_DEBUG = 0,
    ARPC_LOG_INFO = 1,
    ARPC_LOG_WARN = 2,
    ARPC_LOG_ERROR = 3,
    ARPC_LOG_NONE = 4, /* as a minimum level: log nothing */
};

/* Receives one line (NUL-terminated, no trailing newline). Called on whichever arpc thread
 * logs (often a loop thread): it must not block for long and must not call back into arpc. */
typedef void (*arpc_log_fn)(void *ctx, enum arpc_log_level level, const char *line);

/* Lines below min_level are dropped; the rest go to fn(ctx, level, line), or to stderr when
 * fn is NULL (one fprintf on the thread that logs, often a loop's: a stderr that nobody reads,
 * a pipe left full, blocks that thread until it is read; where that can happen, set a logger
 * that does not block). Any thread, at any time, also while arpc's threads log: each line goes whole to
 * one logger or the other, and when this returns no line is still being delivered to the
 * previous one, so its ctx may be freed. It waits for lines being delivered (a logger that
 * blocks makes it wait); from inside a logger it would wait for ever (fn must not call it). */
ARPC_API void arpc_set_logger(arpc_log_fn fn, void *ctx, enum arpc_log_level min_level);

/* "DEBUG", "INFO", "WARN", "ERROR" (or "NONE"). */
ARPC_API const char *arpc_log_level_name(enum arpc_log_level level);

#ifdef __cplusplus
}
#endif

#endif
