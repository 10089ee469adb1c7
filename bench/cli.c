/*
 * Parsing with getopt_long; every number is checked whole (no trailing junk, no overflow,
 * within its range), and everything that makes no sense together is refused up front rather
 * than discovered mid-run.
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PAYLOAD (16u * 1024 * 1024 - 1024) /* under the default 16 MiB frame limit */
#define MAX_WINDOW (1u << 22)

static const char usage_text[] =
    "usage: arpc-bench latency    [options]\n"
    "       arpc-bench throughput [options]\n"
    "       arpc-bench serve --listen ADDR [--inline] [--workers N] [--worker-poll-us N]\n"
    "                        [--log DIR [--fsync F]] [--tls-cert FILE --tls-key FILE]\n"
    "       arpc-bench handoff [--threads P] [--calls N]\n"
    "\n"
    "Measures arpc calls to a server that echoes the request (\"bench.echo\"), and the same\n"
    "traffic over a raw socket on the same transport (the baseline), and reports both.\n"
    "\n"
    "  latency      one call outstanding at a time (blocking arpc_call); baseline: raw ping-pong\n"
    "  throughput   --window calls outstanding per connection; baseline: raw pipelined echo;\n"
    "               also measures client memory per outstanding call at the window\n"
    "  serve        serve the bench methods on ADDR until SIGINT or SIGTERM\n"
    "  handoff      P producer threads (--threads, default 4) post N jobs each (--calls,\n"
    "               default 1000000) into one actor (arpc_actor_post), then into one started\n"
    "               loop (arpc_loop_submit): seconds to the consumer's last job, jobs/s,\n"
    "               context switches per job\n"
    "\n"
    "options:\n"
    "  --calls N           measured calls (latency: 20000, throughput: 200000)\n"
    "  --warmup N          calls before measuring (default: 10%% of --calls, at most 1000;\n"
    "                      throughput: at most max(1000, window x connections))\n"
    "  --payload BYTES     request and reply size, 1..%u (default 64)\n"
    "  --transport T       tcp, unix, inproc or tls (default tcp; tls: the baseline is bare tcp)\n"
    "  --window W          throughput: calls outstanding per connection (default 64)\n"
    "  --connections C     throughput: client connections (default 1)\n"
    "  --threads T         throughput: client loop threads, at most C (default 1); with\n"
    "                      --api cq also the number of completion-queue threads\n"
    "  --api then|cq       throughput: issue the next call from the then-callback on the\n"
    "                      client loop (default), or from threads draining an arpc_cq\n"
    "  --no-memory         throughput: skip the memory-per-outstanding-call probe\n"
    "  --inline            run the server's handlers inline on its loop (default: actor pool)\n"
    "  --client-loop L     latency: 'caller' (default): the calling thread drives the client's\n"
    "                      loop inside arpc_call, no thread hop, like the raw client; 'thread':\n"
    "                      the client's loop runs on a thread of its own\n"
    "  --workers N         server actor pool size (default: one per CPU but one, at least one)\n"
    "  --worker-poll-us N  the pool's workers poll N us for the next request before sleeping,\n"
    "                      while a CPU is spare (arpc_server_options.worker_poll_us; default\n"
    "                      50; 0: they sleep at once)\n"
    "  --amo on|off        latency, throughput: calls at-most-once (on, the library's default:\n"
    "                      numbered, the server keeps a reply cache) or at-least-once (off:\n"
    "                      not numbered, no reply cache)\n"
    "  --deadline-ms MS    latency, throughput: every call's deadline (default: none, as\n"
    "                      arpc_client_options.default_deadline_ms 0); deadlines cost the\n"
    "                      client clock reads and a timer per call\n"
    "  --log DIR           the server's reply log: each run (or serve) logs in a fresh\n"
    "                      subdirectory DIR/arpc-bench-XXXXXX, removed when the server stops\n"
    "                      (an earlier log is never reused; DIR is created if missing and\n"
    "                      left in place). Not with --connect or --amo off (the log records\n"
    "                      at-most-once calls only)\n"
    "  --fsync F           with --log: always (default, like the library), batch (every\n"
    "                      10 ms or 1024 records) or off\n"
    "  --connect ADDR      use a server started with `arpc-bench serve` instead of an\n"
    "                      embedded one (the transport is ADDR's; the baseline runs locally)\n"
    "  --listen ADDR       serve: tcp://HOST:PORT, tls://HOST:PORT, unix:///PATH\n"
    "  --rate R            latency: start R calls/s from an open loop, whatever the replies do,\n"
    "                      and measure each call from its intended send time (no coordinated\n"
    "                      omission); the client's loop runs on its own thread (default\n"
    "                      --calls: 2 s worth, at least 2000 and at most 2000000: at a low\n"
    "                      rate, longer); no baseline is run\n"
    "  --arrivals A        with --rate or --rate-sweep: constant (default) or poisson gaps\n"
    "  --rate-sweep        latency: --rate at 1-2-5 steps from --rate-min (1000) up to the first\n"
    "                      saturated step (achieved < 90%% of offered) or --rate-max (10000000);\n"
    "                      each step lasts about --step-ms (1000) ms, and makes at least 1000\n"
    "                      calls (at a low rate, longer); the JSON's rate_sweep\n"
    "                      array has p50/p99/p99.9 per step; --plot draws latency vs throughput\n"
    "  --plot FILE.png     plot arpc's and the baseline's latency percentiles (needs gnuplot)\n"
    "  --tls-cert FILE     tls: the server's certificate (PEM; e.g. made by scripts/tls-selfsigned.sh)\n"
    "  --tls-key FILE      tls: its private key\n"
    "  --tls-ca FILE       tls: the CA the client trusts (default: --tls-cert, for a self-signed\n"
    "                      one; with --connect and neither: the system's CAs)\n"
    "  --quiet             no progress line\n"
    "  --help              this text\n"
    "\n"
    "Output: a table on stderr; one JSON object, the last line of stdout (serve: its address\n"
    "line only). With --connect the JSON's \"inline\" is null: the remote server's handlers\n"
    "are its own.\n";

static void usage(FILE *f) { fprintf(f, usage_text, MAX_PAYLOAD); }

static int bad(const char *fmt, const char *arg)
{
    fputs("arpc-bench: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\n\n", stderr);
    usage(stderr);
    return 2;
}

/* A whole decimal number in [lo, hi]. */
static bool parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    errno = 0;
    if (s[0] < '0' || s[0] > '9')
        return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

enum { O_CALLS = 256, O_WARMUP, O_PAYLOAD, O_TRANSPORT, O_WINDOW, O_CONNS, O_THREADS, O_API,
       O_NOMEM, O_INLINE, O_CLIENT_LOOP, O_WORKERS, O_CONNECT, O_LISTEN, O_PLOT, O_AMO, O_LOG,
       O_FSYNC, O_RATE, O_ARRIVALS, O_SWEEP, O_RATE_MIN, O_RATE_MAX, O_STEP_MS, O_TLS_CERT, O_TLS_KEY,
       O_TLS_CA, O_DEADLINE, O_QUIET, O_WORKER_POLL, O_HELP };

static const struct option long_opts[] = {
    {"calls", required_argument, NULL, O_CALLS},
    {"warmup", required_argument, NULL, O_WARMUP},
    {"payload", required_argument, NULL, O_PAYLOAD},
    {"transport", required_argument, NULL, O_TRANSPORT},
    {"window", required_argument, NULL, O_WINDOW},
    {"connections", required_argument, NULL, O_CONNS},
    {"threads", required_argument, NULL, O_THREADS},
    {"api", required_argument, NULL, O_API},
    {"no-memory", no_argument, NULL, O_NOMEM},
    {"inline", no_argument, NULL, O_INLINE},
    {"client-loop", required_argument, NULL, O_CLIENT_LOOP},
    {"workers", required_argument, NULL, O_WORKERS},
    {"worker-poll-us", required_argument, NULL, O_WORKER_POLL},
    {"connect", required_argument, NULL, O_CONNECT},
    {"listen", required_argument, NULL, O_LISTEN},
    {"plot", required_argument, NULL, O_PLOT},
    {"amo", required_argument, NULL, O_AMO},
    {"log", required_argument, NULL, O_LOG},
    {"fsync", required_argument, NULL, O_FSYNC},
    {"rate", required_argument, NULL, O_RATE},
    {"arrivals", required_argument, NULL, O_ARRIVALS},
    {"rate-sweep", no_argument, NULL, O_SWEEP},
    {"rate-min", required_argument, NULL, O_RATE_MIN},
    {"rate-max", required_argument, NULL, O_RATE_MAX},
    {"step-ms", required_argument, NULL, O_STEP_MS},
    {"deadline-ms", required_argument, NULL, O_DEADLINE},
    {"quiet", no_argument, NULL, O_QUIET},
    {"tls-cert", required_argument, NULL, O_TLS_CERT},
    {"tls-key", required_argument, NULL, O_TLS_KEY},
    {"tls-ca", required_argument, NULL, O_TLS_CA},
    {"help", no_argument, NULL, O_HELP},
    {NULL, 0, NULL, 0},
};

struct numopt {
    int id;
    const char *name;
    uint64_t lo, hi;
};

static const struct numopt numopts[] = {
    {O_CALLS, "--calls", 1, UINT64_C(1) << 40},
    {O_WARMUP, "--warmup", 0, UINT64_C(1) << 40},
    {O_PAYLOAD, "--payload", 1, MAX_PAYLOAD},
    {O_WINDOW, "--window", 1, MAX_WINDOW},
    {O_CONNS, "--connections", 1, 1024},
    {O_THREADS, "--threads", 1, 256},
    {O_WORKERS, "--workers", 1, 256},
    {O_WORKER_POLL, "--worker-poll-us", 0, 1000},
    {O_RATE, "--rate", 1, 100000000},
    {O_RATE_MIN, "--rate-min", 1, 100000000},
    {O_RATE_MAX, "--rate-max", 1, 100000000},
    {O_STEP_MS, "--step-ms", 100, 600000},
    {O_DEADLINE, "--deadline-ms", 1, 86400000},
};

/* Values given on the command line; 0 / NULL = not given. */
struct given {
    uint64_t num[O_HELP + 1];
    bool has[O_HELP + 1];
    const char *transport;
};

static int apply_number(struct given *g, int id, const char *arg)
{
    for (size_t i = 0; i < sizeof(numopts) / sizeof(numopts[0]); i++) {
        if (numopts[i].id != id)
            continue;
        if (!parse_u64(arg, numopts[i].lo, numopts[i].hi, &g->num[id])) {
            char msg[128];
            snprintf(msg, sizeof(msg), "%s wants a whole number from %llu to %llu, not '%%s'",
                     numopts[i].name, (unsigned long long)numopts[i].lo,
                     (unsigned long long)numopts[i].hi);
            return bad(msg, arg);
        }
        g->has[id] = true;
        return -1;
    }
    return -1;
}

/* The scheme of an address ("tcp" for "tcp://..."), or NULL. */
static const char *scheme_of(const char *addr)
{
    static const char *const schemes[] = {"tcp", "unix", "inproc", "tls"};
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        size_t n = strlen(schemes[i]);
        if (strncmp(addr, schemes[i], n) == 0 && strncmp(addr + n, "://", 3) == 0)
            return schemes[i];
    }
    return NULL;
}

static int parse_fsync(struct bench_config *cfg, const char *arg)
{
    static const enum arpc_fsync all[] = {ARPC_FSYNC_ALWAYS, ARPC_FSYNC_BATCH, ARPC_FSYNC_OFF};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (strcmp(arg, bench_fsync_name(all[i])) == 0) {
            cfg->fsync = all[i];
            return -1;
        }
    }
    return bad("--fsync wants always, batch or off, not '%s'", arg);
}

static int apply_option(struct bench_config *cfg, struct given *g, int opt, const char *arg)
{
    switch (opt) {
    case O_TRANSPORT:
        if (scheme_of(arg) != NULL ||
            (strcmp(arg, "tcp") && strcmp(arg, "unix") && strcmp(arg, "inproc") && strcmp(arg, "tls")))
            return bad("--transport wants tcp, unix, inproc or tls, not '%s'", arg);
        g->transport = arg;
        return -1;
    case O_API:
        if (strcmp(arg, "then") != 0 && strcmp(arg, "cq") != 0)
            return bad("--api wants then or cq, not '%s'", arg);
        cfg->api = strcmp(arg, "cq") == 0 ? BENCH_API_CQ : BENCH_API_THEN;
        return -1;
    case O_NOMEM: cfg->memory = false; return -1;
    case O_INLINE: cfg->inline_handler = true; return -1;
    case O_CLIENT_LOOP:
        if (strcmp(arg, "caller") != 0 && strcmp(arg, "thread") != 0)
            return bad("--client-loop wants caller or thread, not '%s'", arg);
        cfg->caller_loop = strcmp(arg, "caller") == 0;
        return -1;
    case O_QUIET: cfg->quiet = true; return -1;
    case O_CONNECT: cfg->connect_addr = arg; return -1;
    case O_LISTEN: cfg->listen_addr = arg; return -1;
    case O_PLOT: cfg->plot_path = arg; return -1;
    case O_AMO:
        if (strcmp(arg, "on") != 0 && strcmp(arg, "off") != 0)
            return bad("--amo wants on or off, not '%s'", arg);
        cfg->amo = strcmp(arg, "on") == 0;
        return -1;
    case O_LOG:
        if (arg[0] == '\0')
            return bad("--log wants a directory, not '%s'", arg);
        cfg->log_dir = arg;
        return -1;
    case O_FSYNC: return parse_fsync(cfg, arg);
    case O_ARRIVALS:
        if (strcmp(arg, "constant") != 0 && strcmp(arg, "poisson") != 0)
            return bad("--arrivals wants constant or poisson, not '%s'", arg);
        cfg->poisson = strcmp(arg, "poisson") == 0;
        return -1;
    case O_SWEEP: cfg->rate_sweep = true; return -1;
    case O_TLS_CERT: cfg->tls_cert = arg; return -1;
    case O_TLS_KEY: cfg->tls_key = arg; return -1;
    case O_TLS_CA: cfg->tls_ca = arg; return -1;
    case O_HELP: usage(stdout); return 0;
    default: return apply_number(g, opt, arg);
    }
}

static int check_connect(struct bench_config *cfg, const struct given *g)
{
    const char *scheme = scheme_of(cfg->connect_addr);
    if (scheme == NULL || strcmp(scheme, "inproc") == 0)
        return bad("--connect wants tcp://HOST:PORT, tls://HOST:PORT or unix:///PATH, not '%s'", cfg->connect_addr);
    if (g->transport != NULL && strcmp(g->transport, scheme) != 0)
        return bad("--transport %s contradicts the --connect address", g->transport);
    /* The server at --connect was configured when it was started (serve): a run that took
     * these would record them in its JSON as if they had applied (an operator's trial). */
    static const struct { int opt; const char *name; } server_side[] = {
        {O_INLINE, "--inline"}, {O_WORKERS, "--workers"}, {O_WORKER_POLL, "--worker-poll-us"}};
    for (size_t i = 0; i < sizeof(server_side) / sizeof(server_side[0]); i++)
        if (g->has[server_side[i].opt])
            return bad("%s configures the embedded server, not the one at --connect (give it to serve)",
                       server_side[i].name);
    cfg->transport = scheme;
    return -1;
}

/* The at-most-once and reply-log options. */
static int check_amo_log(const struct bench_config *cfg, const struct given *g)
{
    if (cfg->mode == BENCH_SERVE && g->has[O_AMO])
        return bad("%s applies to the calling side (latency, throughput), not serve", "--amo");
    if (cfg->mode == BENCH_SERVE && g->has[O_DEADLINE])
        return bad("%s applies to the calling side (latency, throughput), not serve", "--deadline-ms");
    if (g->has[O_FSYNC] && cfg->log_dir == NULL)
        return bad("%s needs --log DIR", "--fsync");
    if (cfg->log_dir != NULL && cfg->connect_addr != NULL)
        return bad("%s configures the embedded server, not the one at --connect", "--log");
    if (cfg->log_dir != NULL && cfg->mode != BENCH_SERVE && !cfg->amo)
        return bad("%s records at-most-once calls only: with --amo off it stays empty", "--log");
    return -1;
}

/* The open-loop options (--rate, --rate-sweep). */
static int check_rate(const struct bench_config *cfg, const struct given *g)
{
    static const struct { int id; const char *name; } rate_only[] = {
        {O_ARRIVALS, "--arrivals"}, {O_RATE_MIN, "--rate-min"}, {O_RATE_MAX, "--rate-max"},
        {O_STEP_MS, "--step-ms"}};
    bool open_loop = g->has[O_RATE] || cfg->rate_sweep;
    if (open_loop && cfg->mode != BENCH_LATENCY)
        return bad("%s applies to latency mode only", g->has[O_RATE] ? "--rate" : "--rate-sweep");
    for (size_t i = 0; !open_loop && i < sizeof(rate_only) / sizeof(rate_only[0]); i++)
        if (g->has[rate_only[i].id])
            return bad("%s needs --rate R or --rate-sweep", rate_only[i].name);
    if (g->has[O_RATE] && cfg->rate_sweep)
        return bad("%s: give --rate R or --rate-sweep, not both", "--rate");
    if ((g->has[O_STEP_MS] || g->has[O_RATE_MIN] || g->has[O_RATE_MAX]) && !cfg->rate_sweep)
        return bad("%s: --rate-min, --rate-max and --step-ms shape a sweep", "--rate-sweep missing");
    if (g->has[O_CALLS] && cfg->rate_sweep)
        return bad("%s: a sweep's steps make rate x --step-ms calls each", "--calls");
    if (open_loop && g->has[O_CLIENT_LOOP] && cfg->caller_loop)
        return bad("%s: an open loop sleeps between sends, so the client's loop needs its own thread",
                   "--client-loop caller");
    if (cfg->rate_min > cfg->rate_max)
        return bad("%s", "--rate-min must be at most --rate-max");
    return -1;
}

/* handoff takes --threads and --calls only. */
static int check_handoff(const struct given *g)
{
    for (int id = O_CALLS; id < O_HELP; id++)
        if (g->has[id] && id != O_CALLS && id != O_THREADS && id != O_QUIET)
            return bad("%s", "handoff takes --threads P and --calls N only");
    return -1;
}

/* serve takes the server's options only: one it would ignore (--transport, --calls, --plot,
 * ...) is refused, so that nobody believes it applied (a trial of the tools). --amo and
 * --deadline-ms pass here for check_amo_log's words. */
static int check_serve(const struct given *g)
{
    static const int serve_opts[] = {O_LISTEN, O_INLINE, O_WORKERS, O_WORKER_POLL, O_LOG, O_FSYNC,
                                     O_TLS_CERT, O_TLS_KEY, O_QUIET, O_AMO, O_DEADLINE};
    for (size_t i = 0; i < sizeof(long_opts) / sizeof(long_opts[0]) - 1; i++) {
        bool taken = !g->has[long_opts[i].val] || long_opts[i].val == O_HELP;
        for (size_t k = 0; !taken && k < sizeof(serve_opts) / sizeof(serve_opts[0]); k++)
            taken = serve_opts[k] == long_opts[i].val;
        if (!taken) {
            char name[40];
            snprintf(name, sizeof(name), "--%s", long_opts[i].name);
            return bad("%s applies to latency and throughput, not serve (serve takes --listen, --inline, --workers, "
                       "--worker-poll-us, --log, --fsync, --tls-cert and --tls-key)",
                       name);
        }
    }
    return -1;
}

/* Options that only one mode understands. */
static int check_mode_options(struct bench_config *cfg, const struct given *g)
{
    if (cfg->mode == BENCH_HANDOFF)
        return check_handoff(g);
    int rv;
    if (cfg->mode == BENCH_SERVE && (rv = check_serve(g)) >= 0)
        return rv;
    rv = check_amo_log(cfg, g);
    if (rv >= 0 || (rv = check_rate(cfg, g)) >= 0)
        return rv;
    static const struct { int id; const char *name; } tp_only[] = {
        {O_WINDOW, "--window"}, {O_CONNS, "--connections"}, {O_THREADS, "--threads"},
        {O_API, "--api"}, {O_NOMEM, "--no-memory"}};
    if (cfg->mode != BENCH_LATENCY && g->has[O_CLIENT_LOOP])
        return bad("%s applies to latency mode only", "--client-loop");
    for (size_t i = 0; cfg->mode != BENCH_THROUGHPUT && i < sizeof(tp_only) / sizeof(tp_only[0]); i++)
        if (g->has[tp_only[i].id])
            return bad("%s applies to throughput mode only", tp_only[i].name);
    bool tls_server = cfg->mode == BENCH_SERVE
                          ? cfg->listen_addr != NULL && strncmp(cfg->listen_addr, "tls://", 6) == 0
                          : cfg->connect_addr == NULL && g->transport != NULL && strcmp(g->transport, "tls") == 0;
    if (tls_server && (cfg->tls_cert == NULL || cfg->tls_key == NULL))
        return bad("%s needs --tls-cert and --tls-key (scripts/tls-selfsigned.sh makes a pair)", "a tls server");
    if (cfg->mode == BENCH_SERVE) {
        if (cfg->listen_addr == NULL)
            return bad("%s needs --listen ADDR", "serve");
        const char *scheme = scheme_of(cfg->listen_addr);
        if (scheme == NULL || strcmp(scheme, "inproc") == 0)
            return bad("--listen wants tcp://HOST:PORT, tls://HOST:PORT or unix:///PATH, not '%s'", cfg->listen_addr);
        if (cfg->connect_addr != NULL)
            return bad("%s does not take --connect", "serve");
        return -1;
    }
    if (cfg->listen_addr != NULL)
        return bad("%s applies to serve mode only", "--listen");
    if (cfg->threads > cfg->connections)
        return bad("--threads must be at most --connections (%s)", "a thread with no connection idles");
    return cfg->connect_addr != NULL ? check_connect(cfg, g) : -1;
}

static void defaults(struct bench_config *cfg, const struct given *g)
{
    bool tp = cfg->mode == BENCH_THROUGHPUT;
    cfg->transport = g->transport != NULL ? g->transport : "tcp";
    cfg->calls = g->has[O_CALLS] ? g->num[O_CALLS] : tp ? 200000 : 20000;
    cfg->rate = g->has[O_RATE] ? (double)g->num[O_RATE] : 0;
    cfg->rate_min = g->has[O_RATE_MIN] ? (double)g->num[O_RATE_MIN] : 1000;
    cfg->rate_max = g->has[O_RATE_MAX] ? (double)g->num[O_RATE_MAX] : 10000000;
    cfg->step_ms = g->has[O_STEP_MS] ? (unsigned)g->num[O_STEP_MS] : 1000;
    cfg->deadline_ms = g->has[O_DEADLINE] ? (int64_t)g->num[O_DEADLINE] : 0;
    bool open_loop = cfg->rate > 0 || cfg->rate_sweep;
    if (open_loop && !g->has[O_CALLS]) /* about 2 s at the rate */
        cfg->calls = cfg->rate * 2 < 2000 ? 2000 : cfg->rate * 2 > 2e6 ? 2000000 : (uint64_t)(cfg->rate * 2);
    if (cfg->mode == BENCH_LATENCY && !g->has[O_CLIENT_LOOP])
        cfg->caller_loop = !open_loop;
    cfg->payload = g->has[O_PAYLOAD] ? (size_t)g->num[O_PAYLOAD] : 64;
    cfg->window = g->has[O_WINDOW] ? (unsigned)g->num[O_WINDOW] : 64;
    cfg->connections = g->has[O_CONNS] ? (unsigned)g->num[O_CONNS] : 1;
    cfg->threads = g->has[O_THREADS] ? (unsigned)g->num[O_THREADS] : cfg->mode == BENCH_HANDOFF ? 4 : 1;
    if (cfg->mode == BENCH_HANDOFF && !g->has[O_CALLS])
        cfg->calls = 1000000;
    cfg->workers = g->has[O_WORKERS] ? (unsigned)g->num[O_WORKERS] : 0;
    /* 0 on the command line is no poll; not given is the server's default */
    cfg->worker_poll_us = !g->has[O_WORKER_POLL] ? 0 : g->num[O_WORKER_POLL] == 0 ? -1 : (int)g->num[O_WORKER_POLL];
    /* Enough to warm caches and connections, and in throughput mode one full window. */
    uint64_t cap = tp ? (uint64_t)cfg->window * cfg->connections : 0;
    cap = cap > 1000 ? cap : 1000;
    cfg->warmup = g->has[O_WARMUP] ? g->num[O_WARMUP] : cfg->calls / 10 < cap ? cfg->calls / 10 : cap;
}

static int parse_mode(struct bench_config *cfg, const char *word)
{
    if (strcmp(word, "latency") == 0)
        cfg->mode = BENCH_LATENCY;
    else if (strcmp(word, "throughput") == 0)
        cfg->mode = BENCH_THROUGHPUT;
    else if (strcmp(word, "serve") == 0)
        cfg->mode = BENCH_SERVE;
    else if (strcmp(word, "handoff") == 0)
        cfg->mode = BENCH_HANDOFF;
    else if (strcmp(word, "--help") == 0 || strcmp(word, "-h") == 0)
        return usage(stdout), 0;
    else
        return bad("unknown mode '%s' (latency, throughput, serve or handoff)", word);
    return -1;
}

int bench_cli_parse(struct bench_config *cfg, int argc, char **argv)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->memory = true;
    cfg->amo = true; /* what users get by default */
    cfg->fsync = ARPC_FSYNC_ALWAYS;
    if (argc < 2)
        return bad("%s", "no mode given");
    int rv = parse_mode(cfg, argv[1]);
    if (rv >= 0)
        return rv;
    struct given g = {.transport = NULL};
    optind = 2;
    opterr = 0; /* our own message, then the usage */
    int opt;
    while ((opt = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
        if (opt == 'h')
            opt = O_HELP;
        if (opt == '?')
            return bad("unknown option or missing value: '%s'", argv[optind - 1]);
        if (opt >= O_CALLS && opt <= O_HELP)
            g.has[opt] = true;
        if ((rv = apply_option(cfg, &g, opt, optarg)) >= 0)
            return rv;
    }
    if (optind < argc)
        return bad("unexpected argument '%s'", argv[optind]);
    defaults(cfg, &g);
    return check_mode_options(cfg, &g);
}
