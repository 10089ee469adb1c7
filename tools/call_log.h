/*
 * tools/call_log.h: the library's log lines (arpc/log.h), held back so that arpc-call's
 * failure is one line on stderr: a line that says what the failure line says already is
 * dropped, one that adds to it is folded into it, and after a success the lines are written
 * as arpc-call's own ("arpc: ...": the library's default adds the time and the level).
 */
#ifndef ARPC_TOOLS_CALL_LOG_H
#define ARPC_TOOLS_CALL_LOG_H

#include <stdbool.h>
#include <stddef.h>

/* Installs the hook and keeps lines from now on (none kept yet): before any other arpc call. */
void call_log_start(void);

/* For the failure line being built in line (NUL-terminated, room for cap bytes), whose message
 * is text: appends " (arpc: LINE)" for each line kept that text does not already say (the line
 * after its first ": ", e.g. past "closing the connection with ADDR", is not found in text),
 * cut to fit, and keeps no more lines: any later one is dropped. Any thread. */
void call_log_fold(char *line, size_t cap, const char *text);

/* At exit: after a success (print), writes the lines kept to stderr as "arpc: LINE"; otherwise
 * drops them. Keeps no more lines. */
void call_log_end(bool print);

#endif
