/*
 * Looking the server's name up again when reconnecting to its addresses keeps failing.
 *
 * arpc_client_connect resolves its address once, on the caller's thread, and reconnects go to
 * what it found, so that the loop never waits on a resolver. A server that moved (a DNS
 * change, a fail-over to another host) would then be tried at its old address for ever. So
 * when a reconnect attempt has failed at every address of a name (arpc_target.t_named), the
 * name is looked up again on a thread of its own (getaddrinfo blocks), at most once every
 * re_resolve_ms (counting the lookup at connect); the next attempt after its answer uses it.
 * A lookup that fails keeps the addresses there were: a resolver that is down says nothing
 * about the server.
 *
 * The thread and the client share one counted record and nothing else: the thread writes
 * the answer and drops its reference, the loop thread takes the answer when it next starts
 * an attempt. A client closed meanwhile does not wait for the lookup (which may take the
 * resolver's whole timeout): whichever of the two lets go last frees the record. A lookup
 * still under way when a connection is made again is let go the same way: its answer, taken
 * at some later failure, would replace addresses that had just worked. A resolver that never
 * answers (an NSS back-end that hangs) leaves its thread blocked and no further lookup for
 * this client: the addresses it has stay. And at most CLIENT_LOOKUPS_MAX lookups run in the
 * process at once, whatever the clients: an application that makes a new client per attempt
 * against a hung resolver would otherwise leave a blocked thread (and its stack) per client,
 * without bound. A failed attempt that finds them all busy starts none (the next one asks
 * again). Since the thread is never waited for, arpc code may run after every client is
 * closed: the shared library is linked -z nodelete (cmake/install.cmake). Loop thread only,
 * but client_lookup_drop at the client's free (any thread).
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/refcount.h"
#include "base/thread.h"
#include "core/client_internal.h"
#include "transport/sock.h"

#define CLIENT_RE_RESOLVE_MS 30000
#define CLIENT_LOOKUPS_MAX 4 /* lookup threads in the process at once */

static atomic_int lookups_running;
static pthread_once_t lookups_once = PTHREAD_ONCE_INIT;
static _Atomic uint64_t lookups_busy_said_ns; /* the last WARN that all were busy */

/* A child of a fork has none of its parent's lookup threads: none of their places. */
static void lookups_after_fork(void) { atomic_store_explicit(&lookups_running, 0, memory_order_relaxed); }
static void lookups_install(void) { (void)pthread_atfork(NULL, NULL, lookups_after_fork); }

/* All places taken: said at most once a minute in the process (a WARN: a resolver that hangs
 * for 4 names holds up every client's re-resolution), at DEBUG otherwise. */
static void lookups_busy(const arpc_client *c, uint64_t now)
{
    uint64_t last = atomic_load_explicit(&lookups_busy_said_ns, memory_order_relaxed);
    bool warn = (last == 0 || now - last >= 60000 * ARPC_NS_PER_MS) &&
                atomic_compare_exchange_strong(&lookups_busy_said_ns, &last, now);
    arpc_log(warn ? ARPC_LOG_WARN : ARPC_LOG_DEBUG, "client of %s: %d name lookups are under way in this process "
             "already (a resolver slow to answer); reconnecting to the addresses it had", c->cl_target.t_addr,
             CLIENT_LOOKUPS_MAX);
}

struct client_lookup {
    arpc_refcount lk_refs; /* the client's and the thread's */
    atomic_bool lk_done;   /* the fields below are written (release; read after an acquire) */
    int lk_rc;
    char lk_why[CLIENT_WHY_MAX];
    struct arpc_target lk_target; /* t_addr set by the client; the rest the thread's answer */
};

int64_t client_lookup_interval_ms(int64_t re_resolve_ms)
{
    return re_resolve_ms == 0 ? CLIENT_RE_RESOLVE_MS : re_resolve_ms;
}

static void lookup_put(struct client_lookup *lk)
{
    if (arpc_refcount_put(&lk->lk_refs))
        arpc_free(lk);
}

static void *lookup_main(void *arg)
{
    struct client_lookup *lk = arg;
    pthread_setname_np(pthread_self(), "arpc-lookup");
    char addr[ARPC_ADDR_MAX];
    memcpy(addr, lk->lk_target.t_addr, sizeof(addr)); /* the resolve rewrites the target */
    lk->lk_rc = arpc_transport_resolve(addr, &lk->lk_target, lk->lk_why, sizeof(lk->lk_why));
    atomic_store_explicit(&lk->lk_done, true, memory_order_release);
    lookup_put(lk);
    atomic_fetch_sub_explicit(&lookups_running, 1, memory_order_relaxed);
    return NULL;
}

void client_lookup_maybe_start(arpc_client *c)
{
    if (!c->cl_target.t_named || c->cl_lookup != NULL || c->cl_re_resolve_ms < 0)
        return;
    uint64_t now = arpc_now_coarse_ns();
    if (now < arpc_deadline_after(c->cl_lookup_ns, c->cl_re_resolve_ms))
        return;
    pthread_once(&lookups_once, lookups_install);
    if (atomic_fetch_add_explicit(&lookups_running, 1, memory_order_relaxed) >= CLIENT_LOOKUPS_MAX) {
        atomic_fetch_sub_explicit(&lookups_running, 1, memory_order_relaxed);
        lookups_busy(c, now);
        return; /* the next failed attempt asks again */
    }
    struct client_lookup *lk = arpc_malloc(sizeof(*lk));
    if (lk == NULL) {
        atomic_fetch_sub_explicit(&lookups_running, 1, memory_order_relaxed);
        return; /* the addresses there are stay; the next failed attempt asks again */
    }
    arpc_refcount_init(&lk->lk_refs, 2);
    atomic_init(&lk->lk_done, false);
    memcpy(lk->lk_target.t_addr, c->cl_target.t_addr, sizeof(lk->lk_target.t_addr));
    pthread_t t;
    int err = arpc_thread_create(&t, lookup_main, lk);
    if (err != 0) {
        arpc_log(ARPC_LOG_WARN, "client of %s: no thread to look its name up again (%s); reconnecting to "
                 "the addresses it had", c->cl_target.t_addr, strerror(err));
        arpc_free(lk);
        atomic_fetch_sub_explicit(&lookups_running, 1, memory_order_relaxed);
        c->cl_lookup_ns = now; /* not again at every attempt */
        return;
    }
    pthread_detach(t);
    c->cl_lookup = lk;
    c->cl_lookup_ns = now;
    atomic_fetch_add_explicit(&c->cl_lookups, 1, memory_order_relaxed);
}

static bool target_has(const struct arpc_target *t, const struct sockaddr_storage *sa, socklen_t len)
{
    for (size_t i = 0; i < t->t_count; i++)
        if (t->t_salen[i] == len && memcmp(&t->t_sa[i], sa, len) == 0)
            return true;
    return false;
}

/* The same addresses in any order: a name answered round-robin has not moved. */
static bool target_same(const struct arpc_target *a, const struct arpc_target *b)
{
    if (a->t_count != b->t_count)
        return false;
    for (size_t i = 0; i < a->t_count; i++)
        if (!target_has(b, &a->t_sa[i], a->t_salen[i]))
            return false;
    return true;
}

static void lookup_take_answer(arpc_client *c, const struct client_lookup *lk)
{
    struct arpc_target *t = &c->cl_target;
    if (lk->lk_rc != ARPC_OK) {
        arpc_log(ARPC_LOG_WARN, "client of %s: looking its name up again failed (%s); reconnecting to the "
                 "addresses it had", t->t_addr, lk->lk_why);
        return;
    }
    if (target_same(t, &lk->lk_target))
        return;
    char was[ARPC_ADDR_MAX + 64], now[ARPC_ADDR_MAX + 64];
    arpc_sock_target_name(t, 0, was, sizeof(was));
    arpc_sock_target_name(&lk->lk_target, 0, now, sizeof(now));
    arpc_log(ARPC_LOG_INFO, "client of %s: the name now resolves to %zu address%s, first %s (was %s)",
             t->t_addr, lk->lk_target.t_count, lk->lk_target.t_count == 1 ? "" : "es", now, was);
    /* t_ops and t_addr stay (the TLS context was made for them); the addresses change. */
    t->t_count = lk->lk_target.t_count;
    memcpy(t->t_sa, lk->lk_target.t_sa, sizeof(t->t_sa));
    memcpy(t->t_salen, lk->lk_target.t_salen, sizeof(t->t_salen));
}

void client_lookup_take(arpc_client *c)
{
    struct client_lookup *lk = c->cl_lookup;
    if (lk == NULL || !atomic_load_explicit(&lk->lk_done, memory_order_acquire))
        return;
    lookup_take_answer(c, lk);
    c->cl_lookup = NULL;
    lookup_put(lk);
}

void client_lookup_drop(arpc_client *c)
{
    /* A lookup under way is not waited for: its thread frees the record when it returns. */
    if (c->cl_lookup != NULL)
        lookup_put(c->cl_lookup);
    c->cl_lookup = NULL;
}
