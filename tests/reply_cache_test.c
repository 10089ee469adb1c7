/*
 * The reply cache: every transition by hand. Replies are fake pointers (small integers),
 * so the tests can count which ones the cache discarded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "arpc/error.h"
#include "core/reply_cache.h"
#include "support/test_util.h"

/* ---- what the callbacks saw ---- */

struct probe {
    unsigned char *freed; /* freed[id]: 1 = by free_reply, 2 = by the test (caller-owned) */
    size_t n_freed_by_cache;
    uint64_t expired[64];
    size_t n_expired;
    size_t dropped;
};

static struct probe P;
static unsigned char hand_freed[4096];

static void probe_reset(unsigned char *freed)
{
    memset(&P, 0, sizeof(P));
    P.freed = freed;
}

static void cb_free_reply(void *ctx, void *reply)
{
    struct probe *p = ctx;
    uintptr_t id = (uintptr_t)reply;
    assert_int_equal(0, p->freed[id]); /* never twice, never one the caller owns */
    p->freed[id] = 1;
    p->n_freed_by_cache++;
}

static void cb_expire(void *ctx, uint64_t client_id)
{
    struct probe *p = ctx;
    assert_true(p->n_expired < 64);
    p->expired[p->n_expired++] = client_id;
}

static void cb_drop_waiter(void *ctx, struct arpc_rc_waiter *w)
{
    (void)w;
    ((struct probe *)ctx)->dropped++;
}

static const struct arpc_reply_cache_ops OPS = {
    .free_reply = cb_free_reply,
    .on_expire = cb_expire,
};

#define R(id) ((void *)(uintptr_t)(id))
#define A R(0xA) /* two connections */
#define B R(0xB)
#define NOT_KEPT 4095 /* a reply the cache must not keep, nor free */

static void cache_init(struct arpc_reply_cache *rc, size_t max_bytes, uint64_t idle_ns)
{
    test_alloc_install();
    probe_reset(hand_freed);
    memset(hand_freed, 0, sizeof(hand_freed));
    struct arpc_reply_cache_options o = {max_bytes, idle_ns};
    assert_int_equal(ARPC_OK, arpc_reply_cache_init(rc, &o, &OPS, &P));
}

static struct arpc_reply_cache_stats stats_of(const struct arpc_reply_cache *rc)
{
    struct arpc_reply_cache_stats s;
    arpc_reply_cache_stats(rc, &s);
    return s;
}

/* Checks that list holds n waiters (conn, xid), in this order, and gives it back. */
static void expect_waiters(struct arpc_reply_cache *rc, struct arpc_rc_waiter *list, int n, ...)
{
    va_list ap;
    va_start(ap, n);
    struct arpc_rc_waiter *w = list;
    for (int i = 0; i < n; i++, w = w->w_next) {
        assert_non_null(w);
        assert_ptr_equal(va_arg(ap, void *), w->w_conn);
        assert_int_equal(va_arg(ap, uint64_t), w->w_xid);
    }
    va_end(ap);
    assert_null(w);
    arpc_reply_cache_free_waiters(rc, list);
}

static enum arpc_rc_verdict begin(struct arpc_reply_cache *rc, uint64_t client, uint64_t seq,
                                  uint64_t ack, void *conn, uint64_t xid, uint64_t now)
{
    void *reply = NULL;
    return arpc_reply_cache_begin(rc, client, seq, ack, conn, xid, now, &reply);
}

/* Finishes a RUNNING call unlogged at now with reply id, expecting it kept; returns the
 * waiters. */
static struct arpc_rc_waiter *finish(struct arpc_reply_cache *rc, uint64_t client, uint64_t seq,
                                     uintptr_t id, size_t bytes, uint64_t now)
{
    bool kept = false;
    struct arpc_rc_waiter *w =
        arpc_reply_cache_finish(rc, client, seq, R(id), bytes, false, now, &kept);
    assert_true(kept);
    return w;
}

/* Finishes a RUNNING call whose reply the cache must not keep (it was acked meanwhile), or
 * finds nothing RUNNING; returns the waiters. */
static struct arpc_rc_waiter *finish_dropped(struct arpc_reply_cache *rc, uint64_t client,
                                             uint64_t seq)
{
    bool kept = true;
    struct arpc_rc_waiter *w =
        arpc_reply_cache_finish(rc, client, seq, R(NOT_KEPT), 1, false, 0, &kept);
    assert_false(kept);
    return w;
}

/* Finishes a RUNNING call for the log: kept, LOGGING, nobody answered yet. */
static void finish_logged(struct arpc_reply_cache *rc, uint64_t client, uint64_t seq,
                          uintptr_t id, size_t bytes)
{
    bool kept = false;
    assert_null(arpc_reply_cache_finish(rc, client, seq, R(id), bytes, true, 0, &kept));
    assert_true(kept);
}

/* The log reports (client, seq) durable: checks the reply handed out (0: none) and kept. */
static struct arpc_rc_waiter *durable(struct arpc_reply_cache *rc, uint64_t client, uint64_t seq,
                                      uintptr_t want_reply, bool want_kept)
{
    bool kept = !want_kept;
    void *reply = R(NOT_KEPT);
    struct arpc_rc_waiter *w = arpc_reply_cache_durable(rc, client, seq, 0, &reply, &kept);
    assert_ptr_equal(R(want_reply), reply);
    assert_int_equal(want_kept, kept);
    return w;
}

/* begin NEW and finish at once: a DONE entry holding reply id. */
static void done(struct arpc_reply_cache *rc, uint64_t client, uint64_t seq, uintptr_t id,
                 size_t bytes, uint64_t now)
{
    assert_int_equal(ARPC_RC_NEW, begin(rc, client, seq, 0, A, seq, now));
    expect_waiters(rc, finish(rc, client, seq, id, bytes, now), 1, A, seq);
}

/* A duplicate at now gets the very reply id. */
static void expect_replay(struct arpc_reply_cache *rc, uint64_t client, uint64_t seq, uintptr_t id,
                          uint64_t now)
{
    void *reply = NULL;
    enum arpc_rc_verdict v = arpc_reply_cache_begin(rc, client, seq, 0, B, 999, now, &reply);
    assert_int_equal(ARPC_RC_REPLAY, v);
    assert_ptr_equal(R(id), reply);
}

/* ---- every transition by hand ---- */

static void test_new_attach_finish(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 0);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 1, 0, A, 1, 0));
    assert_int_equal(ARPC_RC_ATTACHED, begin(&rc, 7, 1, 0, B, 40, 0));
    assert_int_equal(ARPC_RC_ATTACHED, begin(&rc, 7, 1, 0, A, 2, 0));
    struct arpc_reply_cache_stats s = stats_of(&rc);
    assert_int_equal(1, s.clients);
    assert_int_equal(1, s.entries);
    assert_int_equal(1, s.running);
    assert_int_equal(2, s.hits_attached);
    size_t base = arpc_reply_cache_client_cost() + arpc_reply_cache_entry_cost();
    assert_int_equal(base, s.bytes);
    /* every waiter gets the one result, in arrival order */
    expect_waiters(&rc, finish(&rc, 7, 1, 100, 10, 0), 3, A, (uint64_t)1, B, (uint64_t)40, A,
                   (uint64_t)2);
    s = stats_of(&rc);
    assert_int_equal(0, s.running);
    assert_int_equal(1, s.entries);
    assert_int_equal(base + 10, s.bytes);
    assert_null(finish_dropped(&rc, 7, 1)); /* a second finish finds nothing RUNNING */
    arpc_reply_cache_fini(&rc, NULL);
    assert_int_equal(1, hand_freed[100]);
}

static void test_replay(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 0);
    done(&rc, 7, 1, 100, 10, 0);
    expect_replay(&rc, 7, 1, 100, 0); /* the very same reply, twice; nothing runs */
    expect_replay(&rc, 7, 1, 100, 0);
    struct arpc_reply_cache_stats s = stats_of(&rc);
    assert_int_equal(2, s.hits_replayed);
    assert_int_equal(0, s.running);
    assert_int_equal(0, P.n_freed_by_cache);
    arpc_reply_cache_fini(&rc, NULL);
}

static void test_stale(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 0);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 3, 2, A, 1, 0));
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 7, 2, 2, A, 2, 0));
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 7, 1, 0, B, 3, 0)); /* an old duplicate, late */
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 5, 1, A, 4, 0));   /* an ack never goes down */
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 7, 2, 0, A, 5, 0));
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 7, 6, 6, A, 6, 0)); /* seq <= its own ack */
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 0, 1, 0, A, 7, 0)); /* no client id */
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 7, 0, 0, A, 8, 0)); /* not numbered */
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 8, 4, 4, A, 9, 0)); /* a stranger's stale call */
    struct arpc_reply_cache_stats s = stats_of(&rc);
    assert_int_equal(7, s.stale);
    assert_int_equal(1, s.clients); /* ... does not create it */
    /* seq 3 and 5 are running (below the ack now: 6); they still finish normally */
    expect_waiters(&rc, finish_dropped(&rc, 7, 3), 1, A, (uint64_t)1);
    expect_waiters(&rc, arpc_reply_cache_abort(&rc, 7, 5), 1, A, (uint64_t)4);
    assert_int_equal(0, stats_of(&rc).entries);
    arpc_reply_cache_fini(&rc, NULL);
}

/* Acks free DONE entries: by one, by a small range (walked), by a large jump (iterated). */
static void test_ack_frees_done(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 0);
    for (uint64_t seq = 1; seq <= 300; seq++)
        done(&rc, 7, seq, seq, 1, 0);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 301, 0, A, 301, 0)); /* running: stays */
    arpc_reply_cache_ack(&rc, 7, 1, 0);
    assert_int_equal(1, hand_freed[1]);
    assert_int_equal(0, hand_freed[2]);
    arpc_reply_cache_ack(&rc, 7, 40, 0);
    for (uint64_t seq = 1; seq <= 300; seq++)
        assert_int_equal(seq <= 40, hand_freed[seq]);
    assert_int_equal(261, stats_of(&rc).entries);
    arpc_reply_cache_ack(&rc, 7, 3, 0); /* lower: ignored */
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 7, 40, 0, A, 1, 0));
    expect_replay(&rc, 7, 41, 41, 0);
    arpc_reply_cache_ack(&rc, 7, 1ull << 62, 0); /* a jump no walk could finish */
    for (uint64_t seq = 1; seq <= 300; seq++)
        assert_int_equal(1, hand_freed[seq]);
    struct arpc_reply_cache_stats s = stats_of(&rc);
    assert_int_equal(1, s.entries);
    assert_int_equal(1, s.running);
    arpc_reply_cache_ack(&rc, 8, 5, 0); /* an unknown client: ignored */
    assert_int_equal(1, stats_of(&rc).clients);
    expect_waiters(&rc, finish_dropped(&rc, 7, 301), 1, A, (uint64_t)301);
    assert_int_equal(0, stats_of(&rc).entries);
    arpc_reply_cache_fini(&rc, NULL);
}

/* An ack that covers a running call: duplicates are refused, the waiters are still answered
 * when it finishes, and then it is gone (the caller keeps the reply). Same while LOGGING. */
static void test_ack_while_running(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 0);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 1, 0, A, 1, 0));
    assert_int_equal(ARPC_RC_ATTACHED, begin(&rc, 7, 1, 0, B, 2, 0));
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 2, 0, A, 3, 0));
    finish_logged(&rc, 7, 2, 20, 8);
    arpc_reply_cache_ack(&rc, 7, 2, 0);
    struct arpc_reply_cache_stats s = stats_of(&rc);
    assert_int_equal(2, s.entries);
    assert_int_equal(1, s.running);
    assert_int_equal(1, s.logging);
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 7, 1, 0, B, 4, 0));
    expect_waiters(&rc, finish_dropped(&rc, 7, 1), 2, A, (uint64_t)1, B, (uint64_t)2);
    expect_waiters(&rc, durable(&rc, 7, 2, 20, false), 1, A, (uint64_t)3);
    s = stats_of(&rc);
    assert_int_equal(0, s.entries);
    assert_int_equal(arpc_reply_cache_client_cost(), s.bytes);
    assert_int_equal(0, P.n_freed_by_cache); /* both replies stayed the caller's */
    arpc_reply_cache_fini(&rc, NULL);
}

static void test_logging_then_durable(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 0);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 1, 0, A, 1, 0));
    finish_logged(&rc, 7, 1, 10, 5);
    struct arpc_reply_cache_stats s = stats_of(&rc);
    assert_int_equal(1, s.logging);
    assert_int_equal(0, s.running);
    assert_int_equal(arpc_reply_cache_client_cost() + arpc_reply_cache_entry_cost() + 5, s.bytes);
    /* known but not durable: a duplicate waits, it is not answered yet */
    assert_int_equal(ARPC_RC_ATTACHED, begin(&rc, 7, 1, 0, B, 9, 0));
    assert_null(arpc_reply_cache_abort(&rc, 7, 1)); /* it ran: not abortable */
    assert_null(finish_dropped(&rc, 7, 1)); /* not RUNNING any more */
    expect_waiters(&rc, durable(&rc, 7, 1, 10, true), 2, A, (uint64_t)1, B, (uint64_t)9);
    expect_replay(&rc, 7, 1, 10, 0);
    assert_null(durable(&rc, 7, 1, 0, false)); /* DONE now */
    s = stats_of(&rc);
    assert_int_equal(0, s.logging);
    assert_int_equal(1, s.entries);
    arpc_reply_cache_fini(&rc, NULL);
    assert_int_equal(1, hand_freed[10]);
}

static void test_abort(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 0);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 1, 0, A, 1, 0));
    assert_int_equal(ARPC_RC_ATTACHED, begin(&rc, 7, 1, 0, B, 2, 0));
    expect_waiters(&rc, arpc_reply_cache_abort(&rc, 7, 1), 2, A, (uint64_t)1, B, (uint64_t)2);
    struct arpc_reply_cache_stats s = stats_of(&rc);
    assert_int_equal(0, s.entries);
    assert_int_equal(0, s.running);
    assert_null(arpc_reply_cache_abort(&rc, 7, 1)); /* twice: nothing */
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 1, 0, B, 3, 0)); /* a retry runs it */
    /* unknown (client, seq): no crash, nothing handed out */
    assert_null(arpc_reply_cache_abort(&rc, 8, 1));
    assert_null(arpc_reply_cache_abort(&rc, 7, 2));
    assert_null(finish_dropped(&rc, 8, 1));
    assert_null(durable(&rc, 7, 9, 0, false));
    expect_waiters(&rc, finish(&rc, 7, 1, 30, 1, 0), 1, B, (uint64_t)3);
    arpc_reply_cache_fini(&rc, NULL);
}

/* FULL refuses NEW calls only, evicts nothing, and acks make room again. */
static void test_full(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    size_t entry = arpc_reply_cache_entry_cost(), client = arpc_reply_cache_client_cost();
    cache_init(&rc, client + 4 * (entry + 100), 0);
    for (uint64_t seq = 1; seq <= 4; seq++)
        done(&rc, 7, seq, seq, 100, 0);
    assert_int_equal(client + 4 * (entry + 100), stats_of(&rc).bytes);
    assert_int_equal(ARPC_RC_FULL, begin(&rc, 7, 5, 0, A, 5, 0));
    assert_int_equal(ARPC_RC_FULL, begin(&rc, 8, 1, 0, A, 6, 0)); /* nor a new client */
    for (uint64_t seq = 1; seq <= 4; seq++)                       /* nothing evicted */
        expect_replay(&rc, 7, seq, seq, 0);
    assert_int_equal(0, P.n_freed_by_cache);
    struct arpc_reply_cache_stats s = stats_of(&rc);
    assert_int_equal(2, s.full);
    assert_int_equal(1, s.clients);
    /* a running call and a duplicate still pass: only NEW is refused */
    arpc_reply_cache_ack(&rc, 7, 1, 0);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 5, 0, A, 7, 0));
    assert_int_equal(ARPC_RC_ATTACHED, begin(&rc, 7, 5, 0, B, 8, 0));
    expect_waiters(&rc, finish(&rc, 7, 5, 5, 100, 0), 2, A, (uint64_t)7, B, (uint64_t)8);
    assert_int_equal(ARPC_RC_FULL, begin(&rc, 7, 6, 0, A, 9, 0));
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 6, 3, A, 10, 0)); /* its own ack makes room */
    assert_int_equal(1, hand_freed[3]);
    expect_waiters(&rc, arpc_reply_cache_abort(&rc, 7, 6), 1, A, (uint64_t)10);
    arpc_reply_cache_fini(&rc, NULL);
}

static void test_expiry(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 100);
    done(&rc, 1, 1, 11, 1, 0);
    done(&rc, 2, 1, 21, 1, 10);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 3, 1, 0, A, 1, 20)); /* busy */
    done(&rc, 4, 1, 41, 1, 30);
    arpc_reply_cache_ack(&rc, 1, 0, 50); /* any request is activity: 1 is now the newest */
    assert_int_equal(0, arpc_reply_cache_expire(&rc, 109));
    assert_int_equal(1, arpc_reply_cache_expire(&rc, 110));
    assert_int_equal(1, P.n_expired);
    assert_int_equal(2, P.expired[0]);
    assert_int_equal(1, hand_freed[21]);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 2, 1, 0, A, 2, 111)); /* forgotten: runs again */
    expect_waiters(&rc, arpc_reply_cache_abort(&rc, 2, 1), 1, A, (uint64_t)2);
    /* at 130: 3 is busy (kept, counted active now), 4 goes, 1 (last at 50) stays */
    assert_int_equal(1, arpc_reply_cache_expire(&rc, 130));
    assert_int_equal(4, P.expired[1]);
    assert_int_equal(3, stats_of(&rc).clients); /* 1, 3, and 2 again */
    /* at 150: 1 goes; 2 (111) and 3 (130) stay */
    assert_int_equal(1, arpc_reply_cache_expire(&rc, 150));
    assert_int_equal(1, P.expired[2]);
    /* 3's call, longer than idle, ends at 225: its reply is kept idle from then on */
    expect_waiters(&rc, finish(&rc, 3, 1, 31, 1, 225), 1, A, (uint64_t)1);
    assert_int_equal(1, arpc_reply_cache_expire(&rc, 229)); /* 2 (111) goes */
    assert_int_equal(2, P.expired[3]);
    assert_int_equal(0, arpc_reply_cache_expire(&rc, 324));
    expect_replay(&rc, 3, 1, 31, 324); /* a retry that lost the reply still finds it */
    assert_int_equal(0, arpc_reply_cache_expire(&rc, 423));
    assert_int_equal(1, arpc_reply_cache_expire(&rc, 424));
    assert_int_equal(5, P.n_expired);
    assert_int_equal(3, P.expired[4]);
    assert_int_equal(1, hand_freed[31]);
    struct arpc_reply_cache_stats s = stats_of(&rc);
    assert_int_equal(0, s.clients);
    assert_int_equal(0, s.entries);
    assert_int_equal(0, s.bytes);
    assert_int_equal(0, arpc_reply_cache_expire(&rc, 1000000));
    arpc_reply_cache_fini(&rc, NULL);
}

static void test_restore(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 1, 0); /* restore ignores max_bytes */
    assert_int_equal(ARPC_OK, arpc_reply_cache_restore_ack(&rc, 7, 4, 0));
    assert_int_equal(ARPC_OK, arpc_reply_cache_restore(&rc, 7, 5, R(50), 10, 0));
    assert_int_equal(ARPC_OK, arpc_reply_cache_restore(&rc, 7, 6, R(60), 10, 0));
    assert_int_equal(ARPC_OK, arpc_reply_cache_restore(&rc, 8, 1, R(81), 10, 0));
    assert_int_equal(ARPC_EBUSY, arpc_reply_cache_restore(&rc, 7, 5, R(51), 10, 0));
    assert_int_equal(ARPC_EREJECTED, arpc_reply_cache_restore(&rc, 7, 4, R(40), 10, 0));
    assert_int_equal(ARPC_EINVAL, arpc_reply_cache_restore(&rc, 0, 4, R(40), 10, 0));
    assert_int_equal(ARPC_EINVAL, arpc_reply_cache_restore(&rc, 7, 0, R(40), 10, 0));
    assert_int_equal(ARPC_EINVAL, arpc_reply_cache_restore_ack(&rc, 0, 4, 0));
    struct arpc_reply_cache_stats s = stats_of(&rc);
    assert_int_equal(2, s.clients);
    assert_int_equal(3, s.entries);
    assert_int_equal(0, s.running);
    assert_int_equal(2 * arpc_reply_cache_client_cost() + 3 * (arpc_reply_cache_entry_cost() + 10),
                     s.bytes);
    expect_replay(&rc, 7, 5, 50, 0);
    expect_replay(&rc, 8, 1, 81, 0);
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 7, 4, 0, A, 1, 0));
    assert_int_equal(ARPC_RC_FULL, begin(&rc, 7, 7, 0, A, 2, 0));
    assert_int_equal(ARPC_OK, arpc_reply_cache_restore_ack(&rc, 7, 5, 0)); /* frees 5 */
    assert_int_equal(1, hand_freed[50]);
    assert_int_equal(0, hand_freed[60]);
    arpc_reply_cache_fini(&rc, NULL);
    assert_int_equal(1, hand_freed[60]);
    assert_int_equal(1, hand_freed[81]);
}

/* fini frees every kept reply and hands each unfinished call's waiters to drop_waiter. */
static void test_fini(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 0);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 1, 0, A, 1, 0));
    assert_int_equal(ARPC_RC_ATTACHED, begin(&rc, 7, 1, 0, B, 2, 0));
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 2, 0, A, 3, 0));
    finish_logged(&rc, 7, 2, 20, 1);
    done(&rc, 8, 1, 81, 1, 0);
    arpc_reply_cache_fini(&rc, cb_drop_waiter);
    assert_int_equal(3, P.dropped);
    assert_int_equal(1, hand_freed[20]);
    assert_int_equal(1, hand_freed[81]);
    assert_int_equal(2, P.n_freed_by_cache);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_new_attach_finish),
        cmocka_unit_test_no_leak(test_replay),
        cmocka_unit_test_no_leak(test_stale),
        cmocka_unit_test_no_leak(test_ack_frees_done),
        cmocka_unit_test_no_leak(test_ack_while_running),
        cmocka_unit_test_no_leak(test_logging_then_durable),
        cmocka_unit_test_no_leak(test_abort),
        cmocka_unit_test_no_leak(test_full),
        cmocka_unit_test_no_leak(test_expiry),
        cmocka_unit_test_no_leak(test_restore),
        cmocka_unit_test_no_leak(test_fini),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
