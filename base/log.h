/*
 * Internal logging: every line arpc prints goes through arpc_log (see arpc/log.h).
 */
#ifndef ARPC_BASE_LOG_H
#define ARPC_BASE_LOG_H

#include <stdbool.h>
#include <stddef.h>

#include "arpc/log.h"

/* True when a line at level would be delivered: skip expensive formatting otherwise. */
bool arpc_log_enabled(enum arpc_log_level level);

/* Formats and delivers one line (cut at 1 KiB). Any thread. */
void arpc_log(enum arpc_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Makes untrusted bytes safe for a log line: printable ASCII other than '\' is kept, every
 * other byte becomes \xNN, and input beyond what fits in out is cut and marked with "..."
 * (only when something was cut; an escape is never split; no mark when outlen < 4).
 * Always NUL-terminates out (outlen >= 1) and returns it. */
#define ARPC_LOG_FIELD_MAX 128 /* a good out size: about 30-120 input bytes */
const char *arpc_log_escape(char *out, size_t outlen, const void *bytes, size_t len);

#endif
