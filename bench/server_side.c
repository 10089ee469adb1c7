/*
 * The bench server's handlers. Held calls sit in a mutex-guarded array: bench.hold may run on
 * any pool actor and bench.release on another, and arpc_reply may be called from any thread.
 */
#include "server_side.h"

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "logdir.h"

#define HOLD_MAX (1u << 22) /* refuse to hold more than 4M calls: a runaway client */

struct bench_server {
    arpc_server *bs_server;
    pthread_mutex_t bs_lock; /* guards bs_held, bs_nheld, bs_cap */
    arpc_request **bs_held;
    size_t bs_nheld, bs_cap;
    char bs_logdir[4096];    /* the reply log's fresh directory; "" without a log */
};

static void on_echo(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const void *data = arpc_request_data(req, &len);
    arpc_reply(req, data, len);
}

static bool hold_push(struct bench_server *s, arpc_request *req)
{
    if (s->bs_nheld == s->bs_cap) {
        size_t cap = s->bs_cap ? 2 * s->bs_cap : 1024;
        arpc_request **held = cap <= HOLD_MAX ? realloc(s->bs_held, cap * sizeof(*held)) : NULL;
        if (held == NULL)
            return false;
        s->bs_held = held;
        s->bs_cap = cap;
    }
    s->bs_held[s->bs_nheld++] = req;
    return true;
}

static void on_hold(arpc_request *req, void *ctx)
{
    struct bench_server *s = ctx;
    pthread_mutex_lock(&s->bs_lock);
    bool held = hold_push(s, req);
    pthread_mutex_unlock(&s->bs_lock);
    if (!held)
        arpc_reply_error(req, "bench.hold: too many calls held");
}

static void on_held(arpc_request *req, void *ctx)
{
    struct bench_server *s = ctx;
    pthread_mutex_lock(&s->bs_lock);
    uint64_t n = s->bs_nheld;
    pthread_mutex_unlock(&s->bs_lock);
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(n >> (8 * i));
    arpc_reply(req, le, sizeof(le));
}

/* Replies outside the lock: a reply may take a while for a large window. */
static size_t release_all(struct bench_server *s)
{
    pthread_mutex_lock(&s->bs_lock);
    arpc_request **held = s->bs_held;
    size_t n = s->bs_nheld;
    s->bs_held = NULL;
    s->bs_nheld = s->bs_cap = 0;
    pthread_mutex_unlock(&s->bs_lock);
    for (size_t i = 0; i < n; i++)
        on_echo(held[i], NULL);
    free(held);
    return n;
}

static void on_release(arpc_request *req, void *ctx)
{
    release_all(ctx);
    arpc_reply(req, NULL, 0);
}

static int register_all(struct bench_server *s, bool inline_handler)
{
    /* Small replies (the payload echoed, or none): a hint, so that the first window is not
     * counted at max_conn_bytes/16 per call before a reply is seen (bench.hold never replies
     * while the probe fills its window). */
    const arpc_method_options mopts = {.inline_on_loop = inline_handler, .reply_bytes_hint = 256};
    static const struct {
        const char *name;
        arpc_handler_fn fn;
    } methods[] = {
        {BENCH_METHOD_ECHO, on_echo},
        {BENCH_METHOD_HOLD, on_hold},
        {BENCH_METHOD_HELD, on_held},
        {BENCH_METHOD_RELEASE, on_release},
    };
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        int rv = arpc_server_register(s->bs_server, methods[i].name, methods[i].fn, s, &mopts);
        if (rv != ARPC_OK)
            return rv;
    }
    return ARPC_OK;
}

/* Frees s after a failed start or a stop (the server, if any, is destroyed). */
static void server_free(struct bench_server *s)
{
    if (s->bs_server != NULL)
        arpc_server_destroy(s->bs_server); /* releases the log's lock before the removal */
    if (s->bs_logdir[0] != '\0')
        bench_logdir_remove(s->bs_logdir);
    pthread_mutex_destroy(&s->bs_lock);
    free(s);
}

static int server_create(struct bench_server *s, const struct bench_config *cfg)
{
    char why[256] = "";
    const arpc_tls_options tls = {.cert_file = cfg->tls_cert, .key_file = cfg->tls_key};
    /* The memory probe holds a whole window (up to MAX_WINDOW calls) unanswered on one
     * connection on purpose: the server's flow limits would hold it back at 1,024 calls or
     * 16 MiB. Its request objects stay under PROBE_MAX_HELD (1 GiB). */
    arpc_server_options sopts = {.workers = cfg->workers, .worker_poll_us = cfg->worker_poll_us, .errbuf = why, .errbuf_len = sizeof(why),
                                 .tls = cfg->tls_cert != NULL ? &tls : NULL,
                                 .max_calls_per_conn = UINT_MAX, .max_calls_per_client = UINT_MAX,
                                 .max_conn_bytes = (size_t)2 << 30};
    if (cfg->log_dir != NULL) {
        if (bench_logdir_create(cfg->log_dir, s->bs_logdir, sizeof(s->bs_logdir)) != 0)
            return ARPC_ESYSTEM;
        sopts.log_dir = s->bs_logdir;
        sopts.fsync = cfg->fsync;
    }
    int rv = arpc_server_create(&s->bs_server, &sopts);
    if (rv != ARPC_OK && why[0] != '\0')
        fprintf(stderr, "arpc-bench: %s\n", why);
    return rv;
}

int bench_server_start(struct bench_server **out, const char *addr, const struct bench_config *cfg,
                       char *bound, size_t boundlen)
{
    struct bench_server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        fprintf(stderr, "arpc-bench: out of memory\n");
        return -1;
    }
    pthread_mutex_init(&s->bs_lock, NULL);
    const char *what = "create";
    int rv = server_create(s, cfg);
    if (rv == ARPC_OK && (what = "register", rv = register_all(s, cfg->inline_handler)) == ARPC_OK &&
        (what = "listen", rv = arpc_server_listen(s->bs_server, addr, bound, boundlen)) == ARPC_OK) {
        *out = s;
        return 0;
    }
    fprintf(stderr, "arpc-bench: server %s on %s: %s\n", what, addr, arpc_strerror(rv));
    server_free(s);
    return -1;
}

void bench_server_stop(struct bench_server *s)
{
    if (s == NULL)
        return;
    release_all(s); /* every request must be finished exactly once, held ones included */
    arpc_server_stop(s->bs_server, 1000);
    release_all(s); /* a hold that raced with the first release */
    server_free(s);
}

/* The signals are blocked in every thread (the mask is set before any thread starts, and
 * threads inherit it), so sigwait here is the only place they are taken, whatever their
 * disposition. Before the mask a SIGINT is lost if the process inherited it ignored (a
 * script's background job: `valgrind ... arpc-bench serve &`), so a script signals only after
 * the "serving on" line, which is printed once the mask is set, or stops it with SIGTERM. */
int bench_serve_main(const struct bench_config *cfg)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    struct bench_server *s;
    char bound[256] = "";
    if (bench_server_start(&s, cfg->listen_addr, cfg, bound, sizeof(bound)) != 0)
        return 1;
    printf("arpc-bench: serving on %s (%s handlers", bound, cfg->inline_handler ? "inline" : "pool");
    if (cfg->log_dir != NULL)
        printf(", reply log in %s, fsync %s", s->bs_logdir, bench_fsync_name(cfg->fsync));
    printf("); stop with Ctrl-C\n");
    fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    fprintf(stderr, "arpc-bench: %s, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    bench_server_stop(s);
    return 0;
}
