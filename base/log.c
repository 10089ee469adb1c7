/*
 * The logging hook. Like the allocator hook, a process-wide setting made at start-up; the
 * minimum level alone is atomic, so a level change takes effect at once on every thread.
 */
#include "base/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

static arpc_log_fn log_fn;
static void *log_ctx;
static atomic_int log_min = ARPC_LOG_INFO;

void arpc_set_logger(arpc_log_fn fn, void *ctx, enum arpc_log_level min_level)
{
    log_fn = fn;
    log_ctx = ctx;
    atomic_store(&log_min, (int)min_level);
}

const char *arpc_log_level_name(enum arpc_log_level level)
{
    static const char *const names[] = {"DEBUG", "INFO", "WARN", "ERROR", "NONE"};
    return (unsigned)level <= ARPC_LOG_NONE ? names[level] : "NONE";
}

bool arpc_log_enabled(enum arpc_log_level level)
{
    return level < ARPC_LOG_NONE && (int)level >= atomic_load_explicit(&log_min, memory_order_relaxed);
}

void arpc_log(enum arpc_log_level level, const char *fmt, ...)
{
    if (!arpc_log_enabled(level))
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (log_fn != NULL)
        log_fn(log_ctx, level, line);
    else
        fprintf(stderr, "arpc: %s\n", line); /* one call: lines from threads do not interleave */
}

const char *arpc_log_escape(char *out, size_t outlen, const void *bytes, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *in = bytes;
    size_t o = 0;
    if (outlen == 0)
        return out;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = in[i];
        bool plain = ch >= 0x20 && ch < 0x7f && ch != '\\';
        size_t need = plain ? 1 : 4;
        /* Keep room for "..." and the NUL in case more input follows. */
        if (o + need + (i + 1 < len ? 3 : 0) + 1 > outlen) {
            if (o + 4 <= outlen) {
                out[o++] = '.';
                out[o++] = '.';
                out[o++] = '.';
            }
            break;
        }
        if (plain) {
            out[o++] = (char)ch;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = '\0';
    return out;
}
