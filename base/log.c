/*
 * The logging hook. The minimum level is one atomic word, so a level change takes effect at
 * once on every thread. The hook (function and context) may be replaced while other threads
 * log: it lives in two slots, one current; a line is delivered through the slot it counted
 * itself into, and arpc_set_logger fills the other slot, makes it current, then waits until
 * no line is still being delivered through the old one. So a line never mixes one hook's
 * function with another's context, and once arpc_set_logger returns the old context is no
 * longer used: its owner may free it. A child of a fork starts afresh (log_fork_child): the
 * threads that were delivering lines, or replacing the hook, are not there.
 */
#include "base/log.h"

#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

struct log_hook {
    arpc_log_fn lh_fn; /* NULL: stderr */
    void *lh_ctx;
    int lh_min; /* its own minimum: a line let through by the one before is checked again */
};

static struct log_hook log_hooks[2] = {{NULL, NULL, ARPC_LOG_INFO}, {NULL, NULL, ARPC_LOG_INFO}};
static atomic_uint log_current; /* which of log_hooks lines go through */
static atomic_uint log_users[2]; /* lines being delivered through each slot */
static pthread_mutex_t log_set_mtx = PTHREAD_MUTEX_INITIALIZER; /* one replacement at a time */
static atomic_int log_min = ARPC_LOG_INFO;
static pthread_once_t log_fork_once = PTHREAD_ONCE_INIT;

/* Only the forking thread lives on in the child: no line is being delivered there and no
 * replacement is under way, whatever the counts and the mutex say (a count left by a thread
 * that was logging made the child's arpc_set_logger wait for ever: review 237). */
static void log_fork_child(void)
{
    atomic_store(&log_users[0], 0);
    atomic_store(&log_users[1], 0);
    pthread_mutex_init(&log_set_mtx, NULL);
}

static void log_fork_install(void) { (void)pthread_atfork(NULL, NULL, log_fork_child); }

/* The current slot, counted into: its hook stays as it is until log_hook_put. A line that
 * counted itself into a slot just replaced counts itself out and takes the new one. */
static unsigned log_hook_take(void)
{
    pthread_once(&log_fork_once, log_fork_install); /* before any count: a fork after it is seen */
    for (;;) {
        unsigned i = atomic_load(&log_current);
        atomic_fetch_add(&log_users[i], 1);
        if (atomic_load(&log_current) == i)
            return i;
        atomic_fetch_sub(&log_users[i], 1);
    }
}

static void log_hook_put(unsigned i) { atomic_fetch_sub(&log_users[i], 1); }

/* Every line delivered through slot i (or counted into it on its way to the other) is done.
 * Only lines that began before the replacement hold it: the wait ends. */
static void log_hook_drain(unsigned i)
{
    while (atomic_load(&log_users[i]) != 0)
        sched_yield();
}

void arpc_set_logger(arpc_log_fn fn, void *ctx, enum arpc_log_level min_level)
{
    pthread_once(&log_fork_once, log_fork_install);
    pthread_mutex_lock(&log_set_mtx);
    unsigned old = atomic_load(&log_current), next = old ^ 1;
    log_hook_drain(next); /* lines that counted into it before the last replacement let go */
    log_hooks[next] = (struct log_hook){fn, ctx, (int)min_level};
    atomic_store(&log_current, next);
    atomic_store(&log_min, (int)min_level);
    log_hook_drain(old);
    pthread_mutex_unlock(&log_set_mtx);
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

/* The default: when (UTC, to the millisecond) and how bad, in front of the line, as an
 * operator reading a server's stderr needs (a program whose service manager stamps its
 * lines already logs its own way with arpc_set_logger). */
static void log_to_stderr(enum arpc_log_level level, const char *line)
{
    struct timespec now;
    struct tm utc;
    char when[32] = "";
    if (clock_gettime(CLOCK_REALTIME, &now) == 0 && gmtime_r(&now.tv_sec, &utc) != NULL) {
        size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &utc);
        snprintf(when + n, sizeof(when) - n, ".%03ldZ ", now.tv_nsec / 1000000);
    }
    /* One call: lines from threads do not interleave. */
    fprintf(stderr, "%sarpc %s: %s\n", when, arpc_log_level_name(level), line);
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
    unsigned i = log_hook_take();
    if ((int)level < log_hooks[i].lh_min)
        ; /* under the minimum of the logger set meanwhile */
    else if (log_hooks[i].lh_fn != NULL)
        log_hooks[i].lh_fn(log_hooks[i].lh_ctx, level, line);
    else
        log_to_stderr(level, line);
    log_hook_put(i);
}

static bool escape_plain(unsigned char ch) { return ch >= 0x20 && ch < 0x7f && ch != '\\'; }

const char *arpc_log_escape(char *out, size_t outlen, const void *bytes, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *in = bytes;
    if (outlen == 0)
        return out;
    /* Does all of it fit? Counted first (stopping once it cannot), so that input which fits
     * exactly is not cut to make room for a "..." it does not need. */
    size_t whole = 0;
    for (size_t i = 0; i < len && whole < outlen; i++)
        whole += escape_plain(in[i]) ? 1 : 4;
    size_t room = whole < outlen ? outlen - 1 : (outlen > 3 ? outlen - 4 : 0); /* "..." and NUL */
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        bool plain = escape_plain(in[i]);
        if (o + (plain ? 1 : 4) > room)
            break; /* an escape is never split */
        if (plain) {
            out[o++] = (char)in[i];
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[in[i] >> 4];
            out[o++] = hex[in[i] & 15];
        }
    }
    if (whole >= outlen && outlen > 3) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}
