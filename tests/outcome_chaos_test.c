/*
 * The outcome table of docs/SEMANTICS.md checked against many calls under random failures.
 *
 * A client keeps a window of calls in flight, each numbered by its index (its payload), with a
 * mix of semantics, deadlines and handler times; the test cancels some. Meanwhile a chaos
 * thread breaks the path between client and server at random points of the run (measured in
 * calls completed, not in time): cut connections, a silently dead path found by the
 * heartbeat, replies that stop coming, new connections held back, and the server stopped and
 * started again on the same address (with its reply log in one case: it remembers every call;
 * without one in the other: it forgets them, and its calls out then end "may have run", never
 * run twice). Every call must end (none
 * hangs), and once the server has stopped, what each caller was told must agree with what
 * the server did:
 *   - ARPC_OK / ARPC_EHANDLER: the call ran (once, unless at-least-once), and an OK result is
 *     the call's own (its index echoed), never another call's;
 *   - "did not run" (ARPC_EUNREACHABLE, ARPC_ESHUTDOWN, ARPC_EREJECTED, ...): it never ran;
 *   - "may have run" (ARPC_ETIMEDOUT, ARPC_ECONNLOST, ARPC_ECANCELLED, ARPC_EABANDONED): at
 *     most once for an at-most-once or no-retry call;
 *   - nothing else, and no at-most-once call runs twice whatever its outcome.
 * The random seed is printed, with every disagreement.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/cut_proxy.h"
#include "support/server_proc.h"
#include "support/test_util.h"
#ifdef ARPC_TEST_WITH_TLS
#include "support/tls_certs.h"
#endif

enum { CALLS = 2400, WINDOW_MAX = 48, BIG = 192 * 1024 };

struct call_req {
    uint32_t index;
    uint32_t hold_us; /* how long the handler takes: some calls are running at a break */
    /* some requests are BIG bytes long: at a cut, one may be half written */
};

static const char *const methods[] = {
    "c.apply",  /* the server's worker pool */
    "c.actor",  /* one actor with a small mailbox: a full one pauses the connections feeding it */
    "c.inline", /* on the server's loop (never held) */
};
static arpc_actor *one_actor;

static atomic_int runs[CALLS];

/* ctx not NULL: runs on the server's loop, so it never takes time. */
static void h_apply(arpc_request *req, void *ctx)
{
    size_t len;
    const void *data = arpc_request_data(req, &len);
    struct call_req r_copy; /* the payload need not be aligned */
    const struct call_req *r = &r_copy;
    if (len >= sizeof(r_copy))
        memcpy(&r_copy, data, sizeof(r_copy));
    if ((len != sizeof(*r) && len != BIG) || r->index >= CALLS) {
        arpc_reply_error(req, "bad request");
        return;
    }
    atomic_fetch_add(&runs[r->index], 1);
    if (r->hold_us != 0 && ctx == NULL)
        usleep(r->hold_us); /* a handler that takes time: the subject, not a wait */
    if (r->index % 7 == 3)
        arpc_reply_error(req, "refused by the handler"); /* ARPC_EHANDLER: it ran */
    else
        arpc_reply(req, &r->index, sizeof(r->index));
}

/* ---- the server, started again on the same address ---- */

struct chaos_server {
    arpc_server *s;
    char addr[256];
    const char *log_dir; /* NULL: none */
    const arpc_tls_options *tls; /* NULL: tcp:// */
};

static void server_start(struct chaos_server *cs, const char *addr)
{
    arpc_server_options so = {.workers = 4, .log_dir = cs->log_dir, .tls = cs->tls};
    assert_int_equal(ARPC_OK, arpc_server_create(&cs->s, &so));
    arpc_method_options on_actor = {.actor = one_actor}, on_loop = {.inline_on_loop = true};
    assert_int_equal(ARPC_OK, arpc_server_register(cs->s, methods[0], h_apply, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(cs->s, methods[1], h_apply, NULL, &on_actor));
    assert_int_equal(ARPC_OK, arpc_server_register(cs->s, methods[2], h_apply, "inline", &on_loop));
    assert_int_equal(ARPC_OK, arpc_server_listen(cs->s, addr, cs->addr, sizeof(cs->addr)));
}

/* ---- the chaos thread: one break per random number of completed calls ---- */

static atomic_bool chaos_stop;
static atomic_int breaks[5];

struct chaos {
    struct cut_proxy *proxy;
    struct chaos_server *server;
};

static atomic_int done_count; /* calls ended */

/* An outage (a path that swallows, a silent one, connections held back) lasts until this many
 * more calls ended (by their deadlines, mostly) or this long, whichever comes first. */
#define OUTAGE_CALLS 10
#define OUTAGE_MS 300

static void *chaos_main(void *arg)
{
    struct chaos *ch = arg;
    struct cut_proxy *proxy = ch->proxy;
    unsigned seed = (unsigned)rand();
    unsigned next = 30;
    while (!atomic_load(&chaos_stop)) {
        if (!latch_wait(next, 50))
            continue; /* look at the stop flag now and then */
        int what = (int)(rand_r(&seed) % 11);
        bool outage = false;
        if (what == 10) {
            /* Handlers running now finish (their replies may be dropped), queued ones are
             * answered ESHUTDOWN: what the callers see must say so. */
            arpc_server_destroy(ch->server->s);
            char addr[256];
            snprintf(addr, sizeof(addr), "%s", ch->server->addr);
            server_start(ch->server, addr);
            atomic_fetch_add(&breaks[4], 1);
        } else if (what < 5) {
            cut_proxy_cut(proxy);
            atomic_fetch_add(&breaks[0], 1);
        } else if (what < 7) {
            cut_proxy_cut_silently(proxy);
            atomic_fetch_add(&breaks[1], 1);
            outage = true;
        } else if (what < 9) {
            cut_proxy_swallow_replies(proxy, true);
            atomic_fetch_add(&breaks[2], 1);
            outage = true;
        } else {
            cut_proxy_hold_new(proxy, true);
            cut_proxy_cut(proxy);
            atomic_fetch_add(&breaks[3], 1);
            outage = true;
        }
        if (outage) {
            (void)latch_wait((unsigned)atomic_load(&done_count) + OUTAGE_CALLS, OUTAGE_MS);
            cut_proxy_swallow_replies(proxy, false);
            cut_proxy_hold_new(proxy, false);
            cut_proxy_cut(proxy); /* a silent path's client side too, if its heartbeat has not */
        }
        next = (unsigned)atomic_load(&done_count) + 20 + rand_r(&seed) % 120;
    }
    return NULL;
}

/* ---- the calls ---- */

struct call_slot {
    arpc_future *f; /* NULL: a one-way message */
    enum arpc_call_semantics sem;
    bool cancelled; /* the test cancelled it */
};

static struct call_slot slots[CALLS];

static void on_done(arpc_future *f, void *arg)
{
    (void)f;
    (void)arg;
    atomic_fetch_add(&done_count, 1);
    latch_add();
}

static bool ran_ok(int st) { return st == ARPC_OK || st == ARPC_EHANDLER; }

static bool did_not_run(int st)
{
    return st == ARPC_EUNREACHABLE || st == ARPC_ESHUTDOWN || st == ARPC_EREJECTED || st == ARPC_ENOMETHOD ||
           st == ARPC_EEXPIRED || st == ARPC_EOVERLOADED;
}

static bool may_have_run(int st)
{
    return st == ARPC_ETIMEDOUT || st == ARPC_ECONNLOST || st == ARPC_ECANCELLED || st == ARPC_EABANDONED;
}

static const char *sem_name(enum arpc_call_semantics s)
{
    return s == ARPC_AT_MOST_ONCE ? "at-most-once" : s == ARPC_AT_LEAST_ONCE ? "at-least-once" : "no-retry";
}

/* What the caller was told against what the server did; false (and a line on stderr) if they
 * disagree. */
static bool outcome_agrees(int i, unsigned seed)
{
    struct call_slot *s = &slots[i];
    int ran = atomic_load(&runs[i]);
    if (s->f == NULL) { /* a one-way message */
        if (ran <= 1)
            return true;
        fprintf(stderr, "seed %u: one-way message %d ran %d times\n", seed, i, ran);
        return false;
    }
    int st = arpc_future_poll(s->f);
    const char *why = NULL;
    if (st == ARPC_EPENDING)
        why = "never ended";
    else if (s->sem != ARPC_AT_LEAST_ONCE && ran > 1)
        why = "ran more than once";
    else if (ran_ok(st) && ran == 0)
        why = "told it ran, but it never did";
    else if (did_not_run(st) && ran != 0)
        why = "told it did not run, but it did";
    else if (!ran_ok(st) && !did_not_run(st) && !may_have_run(st))
        why = "an outcome the table does not list";
    else if (st == ARPC_OK) {
        size_t len;
        const void *got = arpc_future_data(s->f, &len);
        uint32_t index = UINT32_MAX;
        if (len == sizeof(index))
            memcpy(&index, got, sizeof(index));
        if (index != (uint32_t)i)
            why = "the result is not the call's own";
    } else if (st == ARPC_EHANDLER && i % 7 != 3)
        why = "a handler error from a call whose handler does not refuse";
    else if (st == ARPC_OK && i % 7 == 3)
        why = "OK from a call whose handler refuses";
    if (why == NULL)
        return true;
    fprintf(stderr, "seed %u: call %d (%s%s): %s, ran %d time(s): %s\n", seed, i, sem_name(s->sem),
            s->cancelled ? ", cancelled" : "", arpc_errname(st), ran, why);
    return false;
}

/* The same address with another scheme ("tls://127.0.0.1:1" as "tcp://127.0.0.1:1"). */
static void with_scheme(char *out, size_t len, const char *scheme, const char *addr)
{
    snprintf(out, len, "%s%s", scheme, strstr(addr, "://") + 3);
}

/* ---- the callers: one or two threads issuing calls on one client ---- */

static atomic_int issued; /* indexes taken */

struct caller {
    arpc_client *c;
    int calls;
    int window; /* calls out, all callers together, at most this (times the callers) */
    unsigned seed;
    pthread_t thread;
    bool ok;
};

static void *caller_main(void *arg)
{
    struct caller *cl = arg;
    static const enum arpc_call_semantics sems[] = {ARPC_AT_MOST_ONCE, ARPC_AT_MOST_ONCE, ARPC_AT_MOST_ONCE,
                                                    ARPC_AT_LEAST_ONCE, ARPC_NO_RETRY};
    static const int64_t deadlines[] = {ARPC_FOREVER, 20000, 20000, 200, 20, 1000};
    uint8_t *big = malloc(BIG);
    int mine[8], n_mine = 0; /* this caller's last calls, which it may cancel */
    int window = cl->window;
    cl->ok = big != NULL;
    for (int i; cl->ok && (i = atomic_fetch_add(&issued, 1)) < cl->calls;) {
        /* Now a full window, now a few calls at a time: then the caller's thread writes its
         * request itself (core/client_direct.c), which a break can also cut short. */
        if (i % 100 < 2)
            window = rand_r(&cl->seed) % 2 ? cl->window : 1 + rand_r(&cl->seed) % 4;
        while (cl->ok && i - atomic_load(&done_count) >= window)
            cl->ok = latch_wait((unsigned)(atomic_load(&done_count) + 1), TEST_WAIT_MS); /* a hang fails */
        struct call_req r = {.index = (uint32_t)i,
                             .hold_us = rand_r(&cl->seed) % 4 == 0 ? (uint32_t)(rand_r(&cl->seed) % 3000) : 0};
        const void *body = &r;
        size_t body_len = sizeof(r);
        if (rand_r(&cl->seed) % 24 == 0) {
            memcpy(big, &r, sizeof(r));
            body = big;
            body_len = BIG;
        }
        const char *method = methods[rand_r(&cl->seed) % 3];
        slots[i].sem = sems[rand_r(&cl->seed) % (sizeof(sems) / sizeof(sems[0]))];
        arpc_call_options o = {.deadline_ms = deadlines[rand_r(&cl->seed) % (sizeof(deadlines) / sizeof(deadlines[0]))],
                               .semantics = slots[i].sem};
        if (rand_r(&cl->seed) % 20 == 0) {
            /* A one-way message: dropped, or read by the server and run, never run twice. */
            int rc = arpc_notify(cl->c, method, body, body_len);
            if (rc != ARPC_OK)
                fprintf(stderr, "one-way message %d: %s\n", i, arpc_errname(rc));
            cl->ok = rc == ARPC_OK; /* queued: whatever becomes of it is counted, not refused */
            on_done(NULL, NULL);
            continue;
        }
        slots[i].f = arpc_call_async_opts(cl->c, method, body, body_len, &o);
        cl->ok = slots[i].f != NULL && arpc_future_then(slots[i].f, on_done, NULL) == ARPC_OK;
        /* Now and then a call already out is cancelled: sent, running, or waiting to be sent. */
        if (n_mine == 8 && rand_r(&cl->seed) % 16 == 0) {
            int j = mine[rand_r(&cl->seed) % 8];
            slots[j].cancelled = arpc_future_cancel(slots[j].f);
        }
        mine[n_mine < 8 ? n_mine++ : rand_r(&cl->seed) % 8] = i;
    }
    free(big);
    return NULL;
}

struct variant {
    const char *log_dir;                          /* the server's reply log; NULL: none */
    const arpc_tls_options *server_tls, *client_tls; /* NULL: tcp:// */
    bool close_midway; /* the client closes with calls out, at a random point of the run */
    bool two_callers;  /* two threads call at once */
};

static void outcomes_agree_under_random_breaks(const struct variant *v)
{
    const char *log_dir = v->log_dir;
    const arpc_tls_options *server_tls = v->server_tls, *client_tls = v->client_tls;
    const char *env = getenv("ARPC_CHAOS_SEED");
    unsigned seed = env != NULL ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL) ^ (unsigned)getpid();
    srand(seed);
    fprintf(stderr, "outcome_chaos_test: seed %u (ARPC_CHAOS_SEED=%u repeats the choices, not the timing)\n",
            seed, seed);
    latch_reset();
    atomic_store(&done_count, 0);
    atomic_store(&chaos_stop, false);
    for (int i = 0; i < CALLS; i++)
        atomic_store(&runs[i], 0);
    memset(slots, 0, sizeof(slots)); /* an earlier run's futures are released */

    arpc_actor_options ao = {.mailbox_size = 4};
    assert_int_equal(ARPC_OK, arpc_actor_create(&one_actor, &ao));
    static struct chaos_server cs;
    cs.log_dir = log_dir;
    cs.tls = server_tls;
    server_start(&cs, server_tls != NULL ? "tls://127.0.0.1:0" : "tcp://127.0.0.1:0");
    char target[256], paddr[256], caddr[256];
    with_scheme(target, sizeof(target), "tcp://", cs.addr); /* the proxy forwards bytes */
    struct cut_proxy *proxy = cut_proxy_start(target, paddr, sizeof(paddr));
    assert_non_null(proxy);
    with_scheme(caddr, sizeof(caddr), client_tls != NULL ? "tls://" : "tcp://", paddr);
    arpc_client *c;
    /* A silent path is found in ~0.3 s, an unanswered HELLO in 0.3 s; a call waits up to 3 s
     * for a connection. */
    arpc_client_options co = {.reconnect_max_ms = 20, .heartbeat_ms = 100, .heartbeat_misses = 2,
                              .reconnect_give_up_ms = 3000, .connect_timeout_ms = 300, .tls = client_tls};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, caddr, &co));
    pthread_t chaos;
    struct chaos ch = {.proxy = proxy, .server = &cs};
    for (int i = 0; i < 5; i++)
        atomic_store(&breaks[i], 0);
    assert_int_equal(0, pthread_create(&chaos, NULL, chaos_main, &ch));

    int calls = v->close_midway ? CALLS / 2 + rand() % (CALLS / 2) : CALLS;
    struct caller callers[2];
    int n_callers = v->two_callers ? 2 : 1;
    atomic_store(&issued, 0);
    for (int t = 0; t < n_callers; t++) {
        callers[t] = (struct caller){.c = c, .calls = calls, .window = WINDOW_MAX / n_callers,
                                     .seed = (unsigned)rand()};
        assert_int_equal(0, pthread_create(&callers[t].thread, NULL, caller_main, &callers[t]));
    }
    bool callers_ok = true;
    for (int t = 0; t < n_callers; t++) {
        pthread_join(callers[t].thread, NULL);
        callers_ok = callers_ok && callers[t].ok;
    }
    assert_true(callers_ok); /* a hang (no call ended for TEST_WAIT_MS) or a refused call */
    /* Closing ends every call at once (ESHUTDOWN: never sent; ECANCELLED: sent, it may run). */
    bool all_ended = v->close_midway || latch_wait(CALLS, 60000);
    if (v->close_midway)
        arpc_client_close(c);
    atomic_store(&chaos_stop, true);
    pthread_join(chaos, NULL);
    if (!v->close_midway)
        arpc_client_close(c);
    cut_proxy_stop(proxy);
    /* Every handler the server took has returned before the counts are read. */
    arpc_server_destroy(cs.s);
    arpc_actor_destroy(one_actor);

    int bad = 0, counts[4] = {0}, oneways = 0;
    for (int i = 0; i < calls; i++) {
        if (!outcome_agrees(i, seed))
            bad++;
        if (slots[i].f == NULL) {
            oneways++;
            continue;
        }
        int st = arpc_future_poll(slots[i].f);
        counts[ran_ok(st) ? 0 : did_not_run(st) ? 1 : may_have_run(st) ? 2 : 3]++;
        arpc_future_release(slots[i].f);
    }
    fprintf(stderr,
            "outcome_chaos_test: %d calls: %d ran, %d did not run, %d may have run, %d one-way; breaks: %d cuts, %d silent, "
            "%d swallowed replies, %d held reconnects, %d server restarts (%s%s%s%s)\n",
            calls, counts[0], counts[1], counts[2], oneways, atomic_load(&breaks[0]), atomic_load(&breaks[1]),
            atomic_load(&breaks[2]), atomic_load(&breaks[3]), atomic_load(&breaks[4]),
            log_dir != NULL ? "with a reply log" : "without a log", server_tls != NULL ? ", tls://" : "",
            v->close_midway ? ", the client closed with calls out" : "", v->two_callers ? ", two callers" : "");
    assert_true(all_ended);
    assert_int_equal(0, bad);
    assert_true(counts[0] > 0); /* the run did make calls, not only fail them */
}

static void test_outcomes_agree_under_random_breaks(void **state)
{
    (void)state;
    outcomes_agree_under_random_breaks(&(struct variant){0});
}

static void test_outcomes_agree_with_a_reply_log(void **state)
{
    (void)state;
    char dir[256];
    server_proc_mkdir(dir, sizeof(dir));
    assert_true(dir[0] != '\0');
    outcomes_agree_under_random_breaks(&(struct variant){.log_dir = dir, .two_callers = true});
    server_proc_rmdir(dir);
}

/* The client closes in the middle: calls never sent must never run. */
static void test_outcomes_agree_when_the_client_closes(void **state)
{
    (void)state;
    outcomes_agree_under_random_breaks(&(struct variant){.close_midway = true});
}

#ifdef ARPC_TEST_WITH_TLS
/* The same through TLS: its records cut anywhere, its handshakes broken. */
static void test_outcomes_agree_over_tls(void **state)
{
    (void)state;
    struct tls_certs certs;
    struct tls_certs_pair pair;
    assert_true(tls_certs_make(&certs));
    tls_certs_pair(&certs, &pair);
    outcomes_agree_under_random_breaks(&(struct variant){.server_tls = &pair.tp_server, .client_tls = &pair.tp_client});
    tls_certs_remove(&certs);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outcomes_agree_under_random_breaks),
        cmocka_unit_test(test_outcomes_agree_with_a_reply_log),
        cmocka_unit_test(test_outcomes_agree_when_the_client_closes),
#ifdef ARPC_TEST_WITH_TLS
        cmocka_unit_test(test_outcomes_agree_over_tls),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
