/*
 * Throughput through arpc: every connection keeps `window` calls outstanding until it has
 * made its share of the calls.
 *
 * Two ways to keep the window full (--api):
 *   then (default): each call's then-callback, which runs on the client's loop thread as the
 *        reply is matched, records the latency and issues the slot's next call from that same
 *        thread. No thread hop between a reply and the next request: the loop thread matches
 *        a batch of replies, each callback queues a new call on the loop's own list (a
 *        submitter on the loop thread never waits, see arpc/loop.h), and the batch goes out
 *        in one write.
 *   cq:  arpc_go delivers completed calls to a completion queue; --threads consumer threads
 *        drain their queue and issue the next calls. Every completion crosses threads twice
 *        (loop -> consumer through the queue, consumer -> loop through the submit ring).
 *
 * A connection's slots, counters and histogram are touched only by the thread that completes
 * its calls (its loop thread for then, its consumer thread for cq), so they need no lock;
 * only the progress counter is read by the main thread, and the end of a connection is
 * reported under r_lock.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arpc_side.h"
#include "progress.h"

struct tp_conn;

struct tp_slot {
    struct tp_conn *s_conn;
    uint64_t s_start_ns;
};

struct tp_run;

struct tp_conn {
    struct tp_run *c_run;
    arpc_client *c_client;
    arpc_loop *c_loop;         /* then: where the window is filled */
    arpc_cq *c_cq;             /* cq: the consumer's queue */
    arpc_hist *c_hist;
    struct tp_slot *c_slots;   /* window of them */
    unsigned c_nslots;         /* slots in use this phase: min(window, target) */
    unsigned c_active;         /* slots still cycling */
    int64_t c_to_issue;        /* calls not yet started beyond the first fill */
    _Atomic uint64_t c_done;   /* calls completed, read by the main thread for progress */
};

struct tp_run {
    const struct bench_config *r_cfg;
    const void *r_tx;
    struct tp_conn *r_conns;
    unsigned r_nconns;
    _Atomic bool r_failed;     /* set by the first failed call: every slot stops */
    pthread_mutex_t r_lock;    /* guards the three fields below */
    pthread_cond_t r_cond;     /* signalled when a connection is done */
    unsigned r_conns_done;
    uint64_t r_end_ns;         /* latest completion of the phase */
    int r_first_error;
};

/* ---- shared by both APIs ---- */

static void run_fail(struct tp_run *r, int status)
{
    pthread_mutex_lock(&r->r_lock);
    if (r->r_first_error == ARPC_OK)
        r->r_first_error = status;
    pthread_mutex_unlock(&r->r_lock);
    atomic_store(&r->r_failed, true);
}

/* A slot stops cycling; the last slot of a connection reports the connection done. */
static void slot_retire(struct tp_conn *c, uint64_t now)
{
    if (--c->c_active > 0)
        return;
    struct tp_run *r = c->c_run;
    pthread_mutex_lock(&r->r_lock);
    if (now > r->r_end_ns)
        r->r_end_ns = now;
    r->r_conns_done++;
    pthread_cond_signal(&r->r_cond);
    pthread_mutex_unlock(&r->r_lock);
}

/* Accounts the completed call of slot s, timed at *now (read here). Returns true when the slot
 * should issue another call, false when it retired. */
static bool slot_complete(struct tp_slot *s, arpc_future *f, uint64_t *now_out)
{
    uint64_t now = *now_out = bench_now_ns();
    struct tp_conn *c = s->s_conn;
    size_t len = 0;
    int st = arpc_future_poll(f);
    if (st == ARPC_OK && (arpc_future_data(f, &len), len != c->c_run->r_cfg->payload))
        st = ARPC_EPROTO;
    if (st == ARPC_OK)
        arpc_hist_record(c->c_hist, now - s->s_start_ns);
    else
        run_fail(c->c_run, st);
    /* One writer (the connection's loop, or its one consumer): a load and a store, not a
     * locked add per call. */
    atomic_store_explicit(&c->c_done, atomic_load_explicit(&c->c_done, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    if (!atomic_load_explicit(&c->c_run->r_failed, memory_order_relaxed) && c->c_to_issue > 0) {
        c->c_to_issue--;
        return true;
    }
    slot_retire(c, now);
    return false;
}

static void slot_fail(struct tp_slot *s, int status)
{
    run_fail(s->s_conn->c_run, status);
    slot_retire(s->s_conn, bench_now_ns());
}

/* ---- then: callbacks on the loop thread issue the next call ---- */

static void then_issue(struct tp_slot *s, uint64_t now);

/* The completion's time is the next call's start, as the raw baseline times a message it
 * admits with the read that freed its slot (baseline.c): one clock read per call, not two
 * (a read costs 50-70 ns in this VM), and a latency that is never shorter than the call's. */
static void then_done(arpc_future *f, void *arg)
{
    uint64_t now;
    if (slot_complete(arg, f, &now))
        then_issue(arg, now);
}

static void then_issue(struct tp_slot *s, uint64_t now)
{
    struct tp_conn *c = s->s_conn;
    const struct bench_config *cfg = c->c_run->r_cfg;
    s->s_start_ns = now;
    arpc_future *f = arpc_call_async(c->c_client, BENCH_METHOD_ECHO, c->c_run->r_tx, cfg->payload, 0);
    if (f == NULL) {
        slot_fail(s, ARPC_ENOMEM);
        return;
    }
    int rv = arpc_future_then(f, then_done, s);
    arpc_future_release(f); /* the callback borrows f; the client holds it until it completes */
    if (rv != ARPC_OK)
        slot_fail(s, rv);
}

/* Runs on the connection's loop, so every callback of this connection runs there too. */
static void then_fill(arpc_loop *loop, void *arg)
{
    (void)loop;
    struct tp_conn *c = arg;
    for (unsigned i = 0; i < c->c_nslots; i++) {
        if (atomic_load_explicit(&c->c_run->r_failed, memory_order_relaxed))
            slot_retire(c, bench_now_ns());
        else
            then_issue(&c->c_slots[i], bench_now_ns());
    }
}

/* A connection whose calls will never complete (its fill could not start, or its consumer
 * gave up) is reported done here so the phase still ends. */
static void conn_abandon(struct tp_conn *c)
{
    if (c->c_active == 0)
        return;
    c->c_active = 0;
    pthread_mutex_lock(&c->c_run->r_lock);
    c->c_run->r_conns_done++;
    pthread_cond_signal(&c->c_run->r_cond);
    pthread_mutex_unlock(&c->c_run->r_lock);
}

static void then_start(struct tp_run *r)
{
    for (unsigned i = 0; i < r->r_nconns; i++) {
        struct tp_conn *c = &r->r_conns[i];
        int rv = c->c_nslots > 0 ? arpc_loop_submit(c->c_loop, then_fill, c) : ARPC_OK;
        if (rv != ARPC_OK) {
            run_fail(r, rv);
            conn_abandon(c);
        }
    }
}

/* ---- cq: consumer threads drain completion queues ---- */

struct tp_consumer {
    struct tp_run *k_run;
    arpc_cq *k_cq;
    unsigned k_first;          /* connections k_first, k_first + step, ... are this thread's */
    unsigned k_step;
    pthread_t k_thread;
};

/* Returns true when the call was started (its completion will reach the queue). */
static bool cq_issue(struct tp_slot *s)
{
    struct tp_conn *c = s->s_conn;
    s->s_start_ns = bench_now_ns();
    int rv = arpc_go(c->c_client, BENCH_METHOD_ECHO, c->c_run->r_tx, c->c_run->r_cfg->payload, 0,
                     c->c_cq, s);
    if (rv != ARPC_OK)
        slot_fail(s, rv);
    return rv == ARPC_OK;
}

static void *cq_main(void *arg)
{
    struct tp_consumer *k = arg;
    struct tp_run *r = k->k_run;
    uint64_t outstanding = 0;
    for (unsigned i = k->k_first; i < r->r_nconns; i += k->k_step)
        for (unsigned j = 0; j < r->r_conns[i].c_nslots; j++)
            outstanding += cq_issue(&r->r_conns[i].c_slots[j]);
    while (outstanding > 0) {
        arpc_future *f;
        void *tag;
        int rv = arpc_cq_next(k->k_cq, &f, &tag);
        if (rv != ARPC_OK) { /* not expected from a live queue; give up rather than spin */
            run_fail(r, rv);
            break;
        }
        outstanding--;
        uint64_t now;
        bool again = slot_complete(tag, f, &now);
        arpc_future_release(f);
        if (again)
            outstanding += cq_issue(tag);
    }
    for (unsigned i = k->k_first; i < r->r_nconns; i += k->k_step)
        conn_abandon(&r->r_conns[i]); /* only if the loop above gave up */
    return NULL;
}

static void cq_start(struct tp_run *r, struct tp_consumer *ks, unsigned nks, unsigned *started)
{
    for (*started = 0; *started < nks; ++*started)
        if (pthread_create(&ks[*started].k_thread, NULL, cq_main, &ks[*started]) != 0)
            break;
    for (unsigned k = *started; k < nks; k++) {
        run_fail(r, ARPC_ESYSTEM);
        for (unsigned i = ks[k].k_first; i < r->r_nconns; i += ks[k].k_step)
            conn_abandon(&r->r_conns[i]);
    }
}

/* ---- the run ---- */

/* Splits calls over the connections and resets their state for a phase. */
static void phase_reset(struct tp_run *r, uint64_t calls)
{
    unsigned window = r->r_cfg->window;
    r->r_conns_done = 0;
    r->r_end_ns = 0;
    for (unsigned i = 0; i < r->r_nconns; i++) {
        struct tp_conn *c = &r->r_conns[i];
        uint64_t target = calls / r->r_nconns + (i < calls % r->r_nconns);
        c->c_nslots = target < window ? (unsigned)target : window;
        c->c_active = c->c_nslots;
        c->c_to_issue = (int64_t)(target - c->c_nslots);
        atomic_store(&c->c_done, 0);
        if (c->c_nslots == 0)
            r->r_conns_done++;
    }
}

static uint64_t phase_done_calls(struct tp_run *r)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < r->r_nconns; i++)
        n += atomic_load_explicit(&r->r_conns[i].c_done, memory_order_relaxed);
    return n;
}

/* Waits for every connection, redrawing the progress line meanwhile. */
static void phase_wait(struct tp_run *r, unsigned expected, struct bench_progress *prog)
{
    pthread_mutex_lock(&r->r_lock);
    while (r->r_conns_done < expected) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 250000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&r->r_cond, &r->r_lock, &ts);
        if (prog != NULL && r->r_conns_done < expected) {
            pthread_mutex_unlock(&r->r_lock);
            bench_progress_update(prog, phase_done_calls(r), bench_now_ns());
            pthread_mutex_lock(&r->r_lock);
        }
    }
    pthread_mutex_unlock(&r->r_lock);
}

/* One phase (warm-up or measured). Returns its duration, first call to last reply. */
static uint64_t run_phase(struct tp_run *r, struct tp_consumer *ks, unsigned nks, uint64_t calls,
                          struct bench_progress *prog)
{
    phase_reset(r, calls);
    uint64_t t0 = bench_now_ns();
    unsigned started = 0;
    if (ks == NULL)
        then_start(r);
    else
        cq_start(r, ks, nks, &started);
    phase_wait(r, r->r_nconns, prog);
    for (unsigned i = 0; i < started; i++)
        pthread_join(ks[i].k_thread, NULL);
    return r->r_end_ns > t0 ? r->r_end_ns - t0 : 0;
}

struct tp_setup {
    struct bench_clients t_bc;
    struct tp_consumer *t_ks; /* NULL for the then API */
    unsigned t_nks;
    void *t_tx;
};

static void setup_free(struct tp_run *r, struct tp_setup *t)
{
    bench_clients_close(&t->t_bc); /* before the queues: no completion arrives after this */
    for (unsigned k = 0; t->t_ks != NULL && k < t->t_nks; k++)
        if (t->t_ks[k].k_cq != NULL)
            arpc_cq_destroy(t->t_ks[k].k_cq);
    for (unsigned i = 0; r->r_conns != NULL && i < r->r_nconns; i++) {
        free(r->r_conns[i].c_hist);
        free(r->r_conns[i].c_slots);
    }
    free(r->r_conns);
    free(t->t_ks);
    free(t->t_tx);
    pthread_cond_destroy(&r->r_cond);
    pthread_mutex_destroy(&r->r_lock);
}

static int setup_consumers(struct tp_run *r, struct tp_setup *t, unsigned n)
{
    t->t_ks = calloc(n, sizeof(*t->t_ks));
    if (t->t_ks == NULL)
        return ARPC_ENOMEM;
    t->t_nks = n;
    for (unsigned k = 0; k < n; k++) {
        t->t_ks[k] = (struct tp_consumer){.k_run = r, .k_first = k, .k_step = n};
        int rv = arpc_cq_create(&t->t_ks[k].k_cq);
        if (rv != ARPC_OK)
            return rv;
    }
    for (unsigned i = 0; i < r->r_nconns; i++)
        r->r_conns[i].c_cq = t->t_ks[i % n].k_cq;
    return ARPC_OK;
}

static int setup(struct tp_run *r, struct tp_setup *t, const struct bench_config *cfg, const char *addr)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* phase_wait's deadlines */
    pthread_cond_init(&r->r_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&r->r_lock, NULL);
    r->r_cfg = cfg;
    r->r_nconns = cfg->connections;
    r->r_conns = calloc(cfg->connections, sizeof(*r->r_conns));
    r->r_tx = t->t_tx = malloc(cfg->payload);
    if (r->r_conns == NULL || t->t_tx == NULL)
        return ARPC_ENOMEM;
    bench_fill_pattern(t->t_tx, cfg->payload);
    if (bench_clients_open(&t->t_bc, addr, cfg->connections, cfg->threads, false, cfg) != 0)
        return -1;
    for (unsigned i = 0; i < r->r_nconns; i++) {
        struct tp_conn *c = &r->r_conns[i];
        c->c_run = r;
        c->c_client = t->t_bc.bc_clients[i];
        c->c_loop = t->t_bc.bc_loops[i % t->t_bc.bc_nloops];
        c->c_hist = bench_hist_new();
        c->c_slots = calloc(cfg->window, sizeof(*c->c_slots));
        if (c->c_hist == NULL || c->c_slots == NULL)
            return ARPC_ENOMEM;
        for (unsigned j = 0; j < cfg->window; j++)
            c->c_slots[j].s_conn = c;
    }
    return cfg->api == BENCH_API_CQ ? setup_consumers(r, t, cfg->threads) : ARPC_OK;
}

static void collect(struct tp_run *r, uint64_t elapsed_ns, struct bench_run *out)
{
    uint64_t done = phase_done_calls(r);
    for (unsigned i = 0; i < r->r_nconns; i++)
        arpc_hist_merge(out->hist, r->r_conns[i].c_hist);
    out->calls = arpc_hist_count(out->hist);
    out->errors = done - out->calls;
    out->elapsed_s = (double)elapsed_ns / 1e9;
    out->calls_per_s = out->elapsed_s > 0 ? (double)out->calls / out->elapsed_s : 0;
    if (r->r_first_error != ARPC_OK)
        fprintf(stderr, "arpc-bench: throughput run failed: %s\n",
                r->r_first_error == ARPC_EPROTO ? "reply differs from request"
                                                : arpc_strerror(r->r_first_error));
}

int bench_arpc_throughput(const struct bench_config *cfg, const char *addr, struct bench_run *out)
{
    memset(out, 0, sizeof(*out));
    struct tp_run r = {0};
    struct tp_setup t = {0};
    int rv = setup(&r, &t, cfg, addr);
    if (rv == ARPC_OK && (out->hist = bench_hist_new()) == NULL)
        rv = ARPC_ENOMEM;
    if (rv != ARPC_OK) {
        if (rv > 0)
            fprintf(stderr, "arpc-bench: throughput setup: %s\n", arpc_strerror(rv));
        setup_free(&r, &t);
        return -1;
    }
    if (cfg->warmup > 0) {
        run_phase(&r, t.t_ks, t.t_nks, cfg->warmup, NULL);
        for (unsigned i = 0; i < r.r_nconns; i++)
            arpc_hist_init(r.r_conns[i].c_hist);
    }
    if (!atomic_load(&r.r_failed)) {
        struct bench_progress prog;
        bench_progress_start(&prog, "arpc throughput", cfg->calls, !cfg->quiet);
        struct bench_threads th0, th1;
        bench_threads_read(&th0);
        uint64_t ctx0 = bench_ctx_switches(), cpu0 = bench_cpu_ns();
        uint64_t elapsed = run_phase(&r, t.t_ks, t.t_nks, cfg->calls, &prog);
        uint64_t ctx = bench_ctx_switches() - ctx0, cpu = bench_cpu_ns() - cpu0;
        bench_threads_read(&th1);
        bench_progress_end(&prog);
        collect(&r, elapsed, out);
        out->ctx_per_call = (double)ctx / (double)cfg->calls;
        out->cpu_us_per_call = (double)cpu / 1e3 / (double)cfg->calls;
        out->roles_valid = th0.valid && th1.valid;
        for (int i = 0; i < BENCH_ROLES && out->roles_valid; i++) {
            out->role_cpu_us[i] = (double)(th1.cpu_ns[i] - th0.cpu_ns[i]) / 1e3 / (double)cfg->calls;
            out->role_ctx[i] = (double)(th1.ctx[i] - th0.ctx[i]) / (double)cfg->calls;
        }
    } else {
        collect(&r, 0, out);
        out->errors += out->errors == 0; /* the warm-up failed: the run is not valid */
    }
    setup_free(&r, &t);
    return 0;
}
