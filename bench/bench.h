/*
 * bench/bench.h: what the pieces of arpc-bench share: the parsed command line, the result of
 * one measured run, and the clock.
 *
 * The tool's own memory (histograms, slots, buffers) comes from plain malloc on purpose: the
 * memory probe (memacct.h) counts what arpc allocates through its allocator hook, and the
 * tool's bookkeeping must not be mistaken for the library's.
 */
#ifndef ARPC_BENCH_BENCH_H
#define ARPC_BENCH_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "arpc/server.h"
#include "base/histogram.h"

enum bench_mode { BENCH_LATENCY, BENCH_THROUGHPUT, BENCH_SERVE, BENCH_HANDOFF };

/* How throughput mode keeps the window full (see throughput.c for why `then` is the default). */
enum bench_api { BENCH_API_THEN, BENCH_API_CQ };

struct bench_config {
    enum bench_mode mode;
    const char *transport;    /* "tcp", "unix", "inproc" or "tls" */
    uint64_t calls;           /* measured calls */
    uint64_t warmup;          /* calls before measuring */
    size_t payload;           /* request (and reply) bytes */
    unsigned window;          /* calls outstanding per connection (throughput) */
    unsigned connections;     /* client connections (throughput) */
    unsigned threads;         /* client loop threads (then) or consumer threads (cq) */
    unsigned workers;         /* embedded server's actor pool; 0: one per CPU */
    int worker_poll_us;       /* its workers' poll before sleeping (arpc_server_options: 0 its
                               * default, < 0 none) */
    enum bench_api api;
    bool inline_handler;      /* register bench.echo with inline_on_loop */
    bool caller_loop;         /* latency: the calling thread drives the client's loop */
    bool memory;              /* run the memory probe (throughput) */
    bool quiet;               /* no progress line */
    const char *connect_addr; /* NULL: start an embedded server */
    const char *listen_addr;  /* serve */
    const char *plot_path;    /* NULL: no plot */
    bool amo;                 /* client calls at-most-once (numbered; the library's default),
                               * or at-least-once (not numbered, no reply cache on the server) */
    const char *log_dir;      /* the server's reply log goes in a fresh subdirectory of this one
                               * (see logdir.h); NULL: no log */
    enum arpc_fsync fsync;    /* with log_dir */
    int64_t deadline_ms;      /* every call's deadline; 0: none */
    /* Latency at a fixed offered rate from an open loop (rate.c, sweep.c): */
    double rate;              /* calls/s; 0: one call at a time, as fast as they come back */
    bool poisson;             /* exponential gaps between intended sends (else constant) */
    bool rate_sweep;          /* offered rates rate_min, 2x, 5x, 10x, ... up to saturation */
    double rate_min, rate_max;
    unsigned step_ms;         /* a sweep step lasts about this long (calls = rate x step) */
    /* tls: the embedded (or serving) server's certificate and key, and the CA the client
     * trusts (default: tls_cert itself, for a self-signed one; with --connect and neither:
     * the system's store). */
    const char *tls_cert, *tls_key, *tls_ca;
};

/* The roles of a process's threads (bench_threads_read, below). */
enum bench_role { BENCH_ROLE_SERVER_LOOP, BENCH_ROLE_WORKERS, BENCH_ROLE_CLIENT_LOOPS, BENCH_ROLE_OTHER, BENCH_ROLES };

/* One measured run of either side. */
struct bench_run {
    arpc_hist *hist;   /* latency of every measured call (owned; free()) */
    uint64_t calls;     /* completed successfully */
    uint64_t errors;    /* completed with an error */
    double elapsed_s;
    double calls_per_s;
    double ctx_per_call; /* context switches of the whole process (every thread, the embedded
                          * server's too; voluntary + involuntary) per measured call */
    double cpu_us_per_call; /* CPU time of the whole process (user + system, every thread) per
                             * measured call: unlike calls/s, it does not move with the share
                             * of the cores other processes take. 0: not measured */
    bool roles_valid;       /* the split below was measured (throughput; /proc readable) */
    double role_cpu_us[BENCH_ROLES]; /* cpu_us_per_call's share of each role (bench_threads) */
    double role_ctx[BENCH_ROLES];    /* ctx_per_call's share of each role */
};

/* Client memory per outstanding call (throughput mode). */
struct bench_mem {
    bool valid;
    unsigned window;         /* calls held outstanding while measuring */
    double client_bytes;     /* arpc heap allocated on client threads, per call */
    bool process_valid;      /* mallinfo2 answered (sanitizer allocators do not) */
    double process_bytes;    /* whole-process heap growth (mallinfo2), per call */
    double residual_bytes;   /* client heap left after they all completed, per call */
};

static inline uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Context switches so far of every thread of this process (getrusage: voluntary, when a
 * thread waits, plus involuntary, when it is preempted). */
uint64_t bench_ctx_switches(void);
/* CPU time so far of every thread of this process, user + system, in nanoseconds (getrusage). */
uint64_t bench_cpu_ns(void);

/* Where a run's CPU time and context switches went, by the role of the thread (read from
 * /proc/self/task: each thread's time on a CPU from schedstat, its voluntary and involuntary
 * switches from status). The roles come from the threads' names: the server's loop
 * ("arpc-loop", the library's name for a loop thread), its pool's workers ("arpc-worker-N"),
 * the client's loops (named "arpc-cloop" by the bench as it starts them), the rest (the
 * bench's own threads). valid: /proc could be read. */
struct bench_threads {
    bool valid;
    uint64_t cpu_ns[BENCH_ROLES];
    uint64_t ctx[BENCH_ROLES];
};
void bench_threads_read(struct bench_threads *t);
/* The name the bench gives its client loop threads (clients.c). */
#define BENCH_CLIENT_LOOP_NAME "arpc-cloop"

/* Allocates an empty histogram (NULL on failure). */
arpc_hist *bench_hist_new(void);

/* A percentile in microseconds, as the reports print it. */
static inline double bench_hist_us(const arpc_hist *h, double pct)
{
    return (double)arpc_hist_percentile(h, pct) / 1e3;
}

/* "always", "batch" or "off". */
const char *bench_fsync_name(enum arpc_fsync f);

/* Fills a payload buffer with a recognisable pattern (so a wrong echo is caught). */
void bench_fill_pattern(void *buf, size_t len);

/* The method names the bench server serves. */
#define BENCH_METHOD_ECHO "bench.echo"
#define BENCH_METHOD_HOLD "bench.hold"       /* held until bench.release */
#define BENCH_METHOD_HELD "bench.held"       /* replies with the count held (8 bytes, LE) */
#define BENCH_METHOD_RELEASE "bench.release" /* replies to every held call */

#endif
