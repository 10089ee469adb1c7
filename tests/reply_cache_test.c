/*
 * The reply cache: every transition by hand, then random operations against a reference
 * model (verdicts, waiter lists, freed replies, expiries and stats after every step), then
 * every allocation failure. Replies are fake pointers (small integers), so the tests can
 * count which ones the cache discarded.
 *
 * The model test takes its seed from RC_SEED if set, and prints it with any mismatch.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "arpc/error.h"
#include "core/frame.h"
#include "core/reply_cache.h"
#include "support/test_util.h"

/* ---- what the callbacks saw ---- */

struct probe {
    unsigned char *freed; /* freed[id]: 1 = by free_reply, 2 = by the test (caller-owned) */
    size_t n_freed_by_cache;
    uint64_t expired[64];
    size_t n_expired;
    uint64_t forgotten[8]; /* on a goodbye */
    uint64_t forgotten_floor[8]; /* the floor each left, for the reply log */
    uint64_t forgotten_owner[8]; /* and whose share it is held against */
    size_t n_forgotten;
    size_t dropped;
    void *stand_in; /* what cb_stand_in gives: one shared reply, held and freed many times */
    size_t stand_in_holds, stand_in_frees;
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
    if (reply != NULL && reply == p->stand_in) {
        p->stand_in_frees++;
        return;
    }
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

static void cb_forget(void *ctx, uint64_t client_id, uint64_t floor, uint64_t owner)
{
    struct probe *p = ctx;
    assert_true(p->n_forgotten < 8);
    p->forgotten_floor[p->n_forgotten] = floor;
    p->forgotten_owner[p->n_forgotten] = owner;
    p->forgotten[p->n_forgotten++] = client_id;
}

static void cb_drop_waiter(void *ctx, struct arpc_rc_waiter *w)
{
    (void)w;
    ((struct probe *)ctx)->dropped++;
}

/* As the server's: a hold on one shared reply kept in place of one over a bound. */
static void *cb_stand_in(void *ctx, void *reply)
{
    struct probe *p = ctx;
    (void)reply;
    p->stand_in_holds++;
    return p->stand_in;
}

static const struct arpc_reply_cache_ops OPS = {
    .free_reply = cb_free_reply,
    .on_expire = cb_expire,
    .on_forget = cb_forget,
};

static const struct arpc_reply_cache_ops OPS_STAND_IN = {
    .free_reply = cb_free_reply,
    .on_expire = cb_expire,
    .on_forget = cb_forget,
    .stand_in = cb_stand_in,
};

#define R(id) ((void *)(uintptr_t)(id))
#define A R(0xA) /* two connections */
#define B R(0xB)
#define NOT_KEPT 4095 /* a reply the cache must not keep, nor free */

/* A cache whose clients may each take client_share of max_bytes (0: the default, half). */
static void cache_init_shared(struct arpc_reply_cache *rc, size_t max_bytes, size_t client_share, uint64_t idle_ns)
{
    test_alloc_install();
    probe_reset(hand_freed);
    memset(hand_freed, 0, sizeof(hand_freed));
    struct arpc_reply_cache_options o = {.max_bytes = max_bytes, .idle_expiry_ns = idle_ns, .max_client_bytes = client_share};
    assert_int_equal(ARPC_OK, arpc_reply_cache_init(rc, &o, &OPS, &P));
}

/* A cache one client may fill alone. */
static void cache_init(struct arpc_reply_cache *rc, size_t max_bytes, uint64_t idle_ns)
{
    cache_init_shared(rc, max_bytes, max_bytes, idle_ns);
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

/* begin for a client of identity owner (0: none). */
static enum arpc_rc_verdict begin_as(struct arpc_reply_cache *rc, uint64_t client, uint64_t owner, uint64_t seq,
                                     uint64_t ack, void *conn, uint64_t xid, uint64_t now)
{
    void *reply = NULL;
    return arpc_reply_cache_begin(rc, client, owner, seq, ack, conn, xid, now, &reply, NULL);
}

static enum arpc_rc_verdict begin(struct arpc_reply_cache *rc, uint64_t client, uint64_t seq,
                                  uint64_t ack, void *conn, uint64_t xid, uint64_t now)
{
    return begin_as(rc, client, 0, seq, ack, conn, xid, now);
}

/* Finishes a RUNNING call unlogged at now with reply id, expecting it kept; returns the
 * waiters. */
/* begin for a duplicate that must attach: its waiter, as the server holds it. */
static struct arpc_rc_waiter *attach(struct arpc_reply_cache *rc, uint64_t client, uint64_t seq, void *conn,
                                     uint64_t xid)
{
    void *reply = NULL;
    struct arpc_rc_waiter *w = NULL;
    assert_int_equal(ARPC_RC_ATTACHED, arpc_reply_cache_begin(rc, client, 0, seq, 0, conn, xid, 0, &reply, &w));
    assert_non_null(w);
    return w;
}

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
    enum arpc_rc_verdict v = arpc_reply_cache_begin(rc, client, 0, seq, 0, B, 999, now, &reply, NULL);
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

/* A waiter answered otherwise leaves; the call goes on for the others, in their order. */
static void test_leave(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 0);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 1, 0, A, 1, 0));
    struct arpc_rc_waiter *b40 = attach(&rc, 7, 1, B, 40);
    struct arpc_rc_waiter *a2 = attach(&rc, 7, 1, A, 2);
    struct arpc_rc_waiter stranger = {.w_conn = B, .w_xid = 40, .w_seq = 1, .w_attached = true};
    expect_waiters(&rc, arpc_reply_cache_leave(&rc, 7, 1, NULL), 1, A, (uint64_t)1); /* the runner */
    assert_null(arpc_reply_cache_leave(&rc, 7, 1, NULL)); /* gone already */
    assert_null(arpc_reply_cache_leave(&rc, 7, 1, &stranger)); /* never there, however alike */
    assert_null(arpc_reply_cache_leave(&rc, 7, 2, b40)); /* no such call */
    assert_null(arpc_reply_cache_leave(&rc, 8, 1, b40)); /* no such client */
    expect_waiters(&rc, arpc_reply_cache_leave(&rc, 7, 1, a2), 1, A, (uint64_t)2); /* the last */
    (void)attach(&rc, 7, 1, A, 3); /* linked after B */
    assert_int_equal(1, stats_of(&rc).running);
    expect_waiters(&rc, finish(&rc, 7, 1, 100, 10, 0), 2, B, (uint64_t)40, A, (uint64_t)3);
    assert_null(arpc_reply_cache_leave(&rc, 7, 1, NULL)); /* DONE: nobody waits */
    expect_replay(&rc, 7, 1, 100, 0);
    arpc_reply_cache_fini(&rc, NULL);
    assert_int_equal(1, hand_freed[100]);
}

/* The runner (the request that began a call, for a duplicate's CANCEL): there while the call
 * is RUNNING and its request waits; gone once it left, and once the call finished or logs. */
static void test_runner(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 0);
    assert_null(arpc_reply_cache_runner(&rc, 7, 1)); /* no such client */
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 1, 0, A, 1, 0));
    struct arpc_rc_waiter *b40 = attach(&rc, 7, 1, B, 40);
    struct arpc_rc_waiter *w = arpc_reply_cache_runner(&rc, 7, 1);
    assert_non_null(w);
    assert_ptr_equal(A, w->w_conn);
    assert_int_equal(1, w->w_xid);
    assert_false(w->w_attached);
    assert_null(arpc_reply_cache_runner(&rc, 7, 2)); /* no such call */
    assert_null(arpc_reply_cache_runner(&rc, 8, 1)); /* no such client */
    expect_waiters(&rc, arpc_reply_cache_leave(&rc, 7, 1, NULL), 1, A, (uint64_t)1);
    assert_null(arpc_reply_cache_runner(&rc, 7, 1)); /* answered otherwise: a duplicate is first now */
    (void)b40;
    expect_waiters(&rc, finish(&rc, 7, 1, 100, 10, 0), 1, B, (uint64_t)40);
    assert_null(arpc_reply_cache_runner(&rc, 7, 1)); /* DONE */
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 2, 0, A, 2, 0));
    assert_non_null(arpc_reply_cache_runner(&rc, 7, 2));
    finish_logged(&rc, 7, 2, 101, 10);
    assert_null(arpc_reply_cache_runner(&rc, 7, 2)); /* LOGGING: its handler is done */
    expect_waiters(&rc, durable(&rc, 7, 2, 101, true), 1, A, (uint64_t)2);
    arpc_reply_cache_fini(&rc, NULL);
    assert_int_equal(1, hand_freed[100]);
    assert_int_equal(1, hand_freed[101]);
}

/* A client may send one xid twice on a connection (a bug, or a peer writing frames by hand):
 * each copy's waiter leaves by itself, and the request running the call keeps its own. Before,
 * leave matched (conn, xid): a duplicate's deadline took out the first waiter with that pair,
 * here the runner's, whose caller then never got the result. */
static void test_leave_same_xid_twice(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 0);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 1, 0, A, 5, 0));
    struct arpc_rc_waiter *first = attach(&rc, 7, 1, A, 5); /* the runner's xid again */
    struct arpc_rc_waiter *second = attach(&rc, 7, 1, A, 5);
    struct arpc_rc_waiter *w = arpc_reply_cache_leave(&rc, 7, 1, second);
    assert_ptr_equal(second, w);
    arpc_reply_cache_free_waiters(&rc, w);
    w = arpc_reply_cache_leave(&rc, 7, 1, first);
    assert_ptr_equal(first, w);
    arpc_reply_cache_free_waiters(&rc, w);
    w = finish(&rc, 7, 1, 100, 10, 0); /* the runner's waiter alone is left */
    assert_non_null(w);
    assert_false(w->w_attached);
    assert_null(w->w_next);
    arpc_reply_cache_free_waiters(&rc, w);
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

/* One call held (seq 1, a long poll) holds the ack at 0: an ACK frame's claim beyond it frees
 * every later result but the ones still waited for, refuses their copies STALE, and is never
 * taken back by a smaller claim arriving later (the union is kept). A call it covers that is
 * still running is answered and dropped when it finishes; the held call's result is kept until
 * the ack passes it, and then the whole claim goes with the bytes of its list. */
static void test_ack_beyond_a_held_call(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 0);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 1, 0, A, 1, 0)); /* held */
    for (uint64_t seq = 2; seq <= 3000; seq++)
        done(&rc, 7, seq, seq, 1, 0);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 3001, 0, A, 3001, 0)); /* running, covered */
    done(&rc, 7, 3002, 3002, 1, 0);
    size_t bytes_before = stats_of(&rc).bytes;
    assert_int_equal(3002, stats_of(&rc).entries); /* 3000 of them DONE, with a byte each */
    size_t ring = bytes_before - arpc_reply_cache_client_cost() - 3002 * arpc_reply_cache_entry_cost() - 3000;
    uint64_t waiting[] = {1, 500, 3003};
    bool grew = false;
    assert_int_equal(ARPC_OK, arpc_reply_cache_ack_beyond(&rc, 7, 0, 3003, waiting, 3, 0, &grew));
    assert_true(grew);
    for (uint64_t seq = 2; seq <= 3002; seq++)
        assert_int_equal(seq != 500 && seq != 3001, hand_freed[seq]);
    struct arpc_reply_cache_stats s = stats_of(&rc);
    assert_int_equal(3, s.entries); /* 1 and 3001 running, 500 kept */
    assert_true(s.bytes < bytes_before);
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 7, 2, 0, B, 9, 0));
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 7, 2999, 0, B, 9, 0));
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 7, 3001, 0, B, 9, 0));
    assert_true(arpc_reply_cache_knows(&rc, 7, 1234));
    expect_replay(&rc, 7, 500, 500, 0);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 3003, 0, A, 3003, 0)); /* waited for: runs */
    expect_waiters(&rc, finish_dropped(&rc, 7, 3001), 1, A, (uint64_t)3001);
    /* An older, smaller claim arriving late takes nothing back; a later one frees 500. */
    uint64_t older[] = {1, 2, 500};
    assert_int_equal(ARPC_OK, arpc_reply_cache_ack_beyond(&rc, 7, 0, 600, older, 3, 0, &grew));
    assert_false(grew); /* (the server logs no record for it) */
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 7, 2, 0, B, 9, 0));
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 7, 2000, 0, B, 9, 0));
    uint64_t later[] = {1};
    assert_int_equal(ARPC_OK, arpc_reply_cache_ack_beyond(&rc, 7, 0, 3002, later, 1, 0, &grew));
    assert_true(grew); /* 500 is acknowledged now */
    assert_int_equal(1, hand_freed[500]);
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 7, 500, 0, B, 9, 0));
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 3004, 0, A, 3004, 0)); /* beyond every claim */
    /* The held call ends: kept for a retry until the ack passes it. */
    expect_waiters(&rc, finish(&rc, 7, 1, 1, 1, 0), 1, A, (uint64_t)1);
    expect_replay(&rc, 7, 1, 1, 0);
    arpc_reply_cache_ack(&rc, 7, 3002, 0);
    assert_int_equal(1, hand_freed[1]);
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 7, 1, 0, B, 9, 0));
    expect_waiters(&rc, finish(&rc, 7, 3003, 3003, 1, 0), 1, A, (uint64_t)3003);
    arpc_reply_cache_ack(&rc, 7, 3004, 0); /* past the claim: it goes */
    expect_waiters(&rc, finish_dropped(&rc, 7, 3004), 1, A, (uint64_t)3004);
    s = stats_of(&rc);
    assert_int_equal(0, s.entries);
    assert_int_equal(arpc_reply_cache_client_cost() + ring, s.bytes); /* the list's bytes too */
    assert_int_equal(ARPC_EINVAL, arpc_reply_cache_ack_beyond(&rc, 8, 0, 10, NULL, 0, 0, NULL)); /* unknown: ignored */
    /* Lists that are not a claim's (the server passes only checked ones) are refused whole,
     * never written past the claim's 256 slots: 256 waiting up to 2000, then 256 above a high
     * of 10. */
    static uint64_t first[ARPC_ACK_WAITING_MAX], second[ARPC_ACK_WAITING_MAX];
    for (uint32_t i = 0; i < ARPC_ACK_WAITING_MAX; i++) {
        first[i] = 3010 + i;
        second[i] = 5000 + i;
    }
    assert_int_equal(ARPC_OK, arpc_reply_cache_ack_beyond(&rc, 7, 0, 5000, first, ARPC_ACK_WAITING_MAX, 0, &grew));
    assert_int_equal(ARPC_EINVAL,
                     arpc_reply_cache_ack_beyond(&rc, 7, 0, 3005, second, ARPC_ACK_WAITING_MAX, 0, &grew));
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 3010, 0, A, 3010, 0)); /* still waited for */
    expect_waiters(&rc, arpc_reply_cache_abort(&rc, 7, 3010), 1, A, (uint64_t)3010);
    assert_int_equal(1, stats_of(&rc).clients);
    arpc_reply_cache_fini(&rc, NULL);
}

/* An ack that covers a running call: duplicates are refused, the waiters are still answered
 * when it finishes, and then it is gone (the caller keeps the reply). Same while LOGGING. A
 * call finished for the log after the ack covered it still waits for its record: its waiters
 * come out of durable, never out of finish (a reply leaves only once its record is durable). */
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
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 3, 0, A, 5, 0));
    assert_int_equal(ARPC_RC_ATTACHED, begin(&rc, 7, 3, 0, B, 6, 0));
    arpc_reply_cache_ack(&rc, 7, 3, 0);
    finish_logged(&rc, 7, 3, 30, 8);
    s = stats_of(&rc);
    assert_int_equal(1, s.entries);
    assert_int_equal(1, s.logging);
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 7, 3, 0, B, 7, 0));
    expect_waiters(&rc, durable(&rc, 7, 3, 30, false), 2, A, (uint64_t)5, B, (uint64_t)6);
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

/* One client's share: by default half the bound. A client that holds it (replies it never
 * acks) is refused its NEW calls, while another still gets in; its ack makes room for it
 * again. Without the share, one client that sent a window of large calls and vanished left
 * every other client refused until it expired (minutes). */
static void test_client_share(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    size_t entry = arpc_reply_cache_entry_cost(), client = arpc_reply_cache_client_cost();
    size_t share = client + 4 * (entry + 100);
    cache_init_shared(&rc, 2 * share, 0, 0);
    for (uint64_t seq = 1; seq <= 4; seq++)
        done(&rc, 7, seq, seq, 100, 0);
    assert_int_equal(share, stats_of(&rc).bytes);
    assert_int_equal(ARPC_RC_CLIENT_FULL, begin(&rc, 7, 5, 0, A, 5, 0));
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 8, 1, 0, B, 6, 0)); /* another client gets in */
    expect_waiters(&rc, finish(&rc, 8, 1, 5, 100, 0), 1, B, (uint64_t)6);
    for (uint64_t seq = 1; seq <= 4; seq++) /* nothing of 7's evicted */
        expect_replay(&rc, 7, seq, seq, 0);
    struct arpc_reply_cache_stats s = stats_of(&rc);
    assert_int_equal(1, s.client_full);
    assert_int_equal(0, s.full);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 5, 1, A, 7, 0)); /* its own ack makes room */
    assert_int_equal(1, hand_freed[1]);
    expect_waiters(&rc, arpc_reply_cache_abort(&rc, 7, 5), 1, A, (uint64_t)7);
    arpc_reply_cache_fini(&rc, NULL);
}

/* The clients of one identity share one client's share: a client of it that holds little is
 * refused once they hold it together, a new client of it too, while a client of another
 * identity, or of none, still gets in; the identity's books go with its last client. (Before,
 * an identity could fill the cache by making up client ids, a share each.) */
static void test_identity_share(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    size_t entry = arpc_reply_cache_entry_cost(), client = arpc_reply_cache_client_cost();
    size_t share = 2 * client + 4 * (entry + 100);
    cache_init_shared(&rc, 4 * share, share, 0);
    for (uint64_t seq = 1; seq <= 2; seq++) { /* two clients of identity 9, two replies each */
        assert_int_equal(ARPC_RC_NEW, begin_as(&rc, 7, 9, seq, 0, A, seq, 0));
        expect_waiters(&rc, finish(&rc, 7, seq, seq, 100, 0), 1, A, seq);
        assert_int_equal(ARPC_RC_NEW, begin_as(&rc, 8, 9, seq, 0, A, 10 + seq, 0));
        expect_waiters(&rc, finish(&rc, 8, seq, 10 + seq, 100, 0), 1, A, (uint64_t)(10 + seq));
    }
    assert_int_equal(share, stats_of(&rc).bytes); /* each client alone holds half the share */
    assert_int_equal(ARPC_RC_CLIENT_FULL, begin_as(&rc, 7, 9, 3, 0, A, 3, 0));
    assert_int_equal(ARPC_RC_CLIENT_FULL, begin_as(&rc, 20, 9, 1, 0, A, 20, 0)); /* a new id of it */
    assert_int_equal(2, stats_of(&rc).clients);
    assert_int_equal(ARPC_RC_NEW, begin_as(&rc, 30, 10, 1, 0, B, 30, 0)); /* another identity */
    expect_waiters(&rc, arpc_reply_cache_abort(&rc, 30, 1), 1, B, (uint64_t)30);
    assert_int_equal(ARPC_RC_NEW, begin_as(&rc, 40, 0, 1, 0, B, 40, 0)); /* none */
    expect_waiters(&rc, arpc_reply_cache_abort(&rc, 40, 1), 1, B, (uint64_t)40);
    assert_int_equal(2, stats_of(&rc).client_full);
    /* 8 acknowledges its replies: room for the identity again. */
    assert_int_equal(ARPC_RC_NEW, begin_as(&rc, 8, 9, 3, 2, A, 13, 0));
    assert_int_equal(1, hand_freed[11]);
    assert_int_equal(1, hand_freed[12]);
    expect_waiters(&rc, arpc_reply_cache_abort(&rc, 8, 3), 1, A, (uint64_t)13);
    arpc_reply_cache_forget(&rc, 7, false);
    arpc_reply_cache_forget(&rc, 8, false);
    assert_int_equal(1, arpc_u64_map_count(&rc.rc_owners)); /* 9's went with its last client */
    arpc_reply_cache_forget(&rc, 30, false);
    assert_int_equal(0, arpc_u64_map_count(&rc.rc_owners));
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

/* Through the cache: identity 200 saying goodbye under 3 x ARPC_RC_GONE_MAX made-up client
 * ids does not make the server forget identity 100's goodbye: a late copy of its call is
 * still refused (with one set for all, it ran again). */
static void test_goodbyes_of_one_identity_spare_another(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 1000);
    assert_int_equal(ARPC_RC_NEW, begin_as(&rc, 1, 100, 1, 0, A, 1, 0));
    expect_waiters(&rc, finish(&rc, 1, 1, 11, 1, 0), 1, A, (uint64_t)1);
    assert_true(arpc_reply_cache_forget(&rc, 1, true));
    assert_int_equal(100, P.forgotten_owner[0]); /* the log keeps it, for a restart to share alike */
    for (uint64_t id = 1000; id < 1000 + 3 * ARPC_RC_GONE_MAX; id++) {
        assert_int_equal(ARPC_RC_NEW, begin_as(&rc, id, 200, 1, 0, B, 1, 0));
        expect_waiters(&rc, finish(&rc, id, 1, 12, 1, 0), 1, B, (uint64_t)1);
        assert_true(arpc_reply_cache_forget(&rc, id, true));
        P.n_forgotten = 0; /* (the probe keeps 8, and one reply id freed once) */
        hand_freed[12] = 0;
    }
    assert_true(arpc_reply_cache_under_goodbye(&rc, 1, 1));
    assert_int_equal(ARPC_RC_STALE, begin_as(&rc, 1, 100, 1, 0, A, 9, 0)); /* the late copy */
    arpc_reply_cache_fini(&rc, NULL);
}

/* A client's goodbye frees its replies at once, unless one of its calls still runs. What stays
 * is its highest seq: a late copy of one of its calls is refused, never run again; a call it
 * never made runs (and the client is known again, the floor in its ack). */
static void test_forget(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 1000);
    done(&rc, 1, 1, 11, 1, 0);
    done(&rc, 1, 2, 12, 1, 0);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 2, 1, 0, A, 1, 0)); /* busy */
    assert_true(arpc_reply_cache_forget(&rc, 1, true));
    assert_int_equal(1, hand_freed[11]);
    assert_int_equal(1, hand_freed[12]);
    assert_int_equal(1, P.n_forgotten); /* reported, for the reply log */
    assert_int_equal(1, P.forgotten[0]);
    assert_int_equal(2, P.forgotten_floor[0]); /* with its highest seq, which the log keeps */
    assert_false(arpc_reply_cache_forget(&rc, 2, true)); /* running: kept */
    assert_true(arpc_reply_cache_forget(&rc, 99, true)); /* never known */
    assert_int_equal(0, P.n_expired);             /* a goodbye is not an expiry */
    assert_int_equal(1, P.n_forgotten);           /* neither kept nor unknown is reported */
    assert_int_equal(1, stats_of(&rc).clients);
    expect_waiters(&rc, finish(&rc, 2, 1, 21, 1, 1), 1, A, (uint64_t)1);
    assert_true(arpc_reply_cache_forget(&rc, 2, true));
    assert_int_equal(1, hand_freed[21]);
    assert_int_equal(0, stats_of(&rc).clients);
    assert_int_equal(2, P.n_forgotten);
    assert_int_equal(2, P.forgotten[1]);
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 1, 2, 0, A, 9, 2)); /* late copies: not run */
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 1, 1, 0, A, 9, 2));
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 2, 1, 0, A, 9, 2));
    assert_int_equal(0, stats_of(&rc).clients);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 1, 3, 0, A, 9, 2)); /* never made: runs */
    expect_waiters(&rc, arpc_reply_cache_abort(&rc, 1, 3), 1, A, (uint64_t)9);
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 1, 2, 0, A, 9, 2)); /* known again: still refused */
    arpc_reply_cache_fini(&rc, NULL);
}

/* A call aborted before it ran (cancelled before it started: its entry goes, so that a re-send
 * by a client still there runs) is under the goodbye's floor all the same: after the goodbye a
 * copy of it (a proxy replaying the closed connection's bytes) is refused, never run (a trial
 * replayed a closing client's capture: its last call, cancelled before it started, ran). */
static void test_goodbye_floor_covers_calls_aborted_before_they_ran(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 1000);
    done(&rc, 1, 1, 11, 1, 0);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 1, 2, 0, A, 2, 0));
    expect_waiters(&rc, arpc_reply_cache_abort(&rc, 1, 2), 1, A, (uint64_t)2);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 1, 2, 0, A, 3, 0)); /* before the goodbye: a re-send runs */
    expect_waiters(&rc, arpc_reply_cache_abort(&rc, 1, 2), 1, A, (uint64_t)3);
    assert_true(arpc_reply_cache_forget(&rc, 1, true));
    assert_int_equal(1, P.n_forgotten);
    assert_int_equal(2, P.forgotten_floor[0]); /* the log keeps it so too */
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 1, 2, 0, A, 9, 2));
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 1, 3, 0, A, 9, 2)); /* never begun: runs */
    arpc_reply_cache_fini(&rc, NULL);
}

/* A client that said goodbye and came back (a late call above its floor, which runs) keeps
 * its floor through its idle expiry: it goes as at a goodbye (on_forget with its highest seq,
 * no on_expire), so the late copies its goodbye refused are still refused after it (a review
 * ran them after the expiry: its floor had gone with it). The same for one that said goodbye
 * while a call of its ran and then called again. */
static void test_expiry_after_a_comeback_keeps_the_floor(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 100);
    done(&rc, 1, 1, 11, 1, 0);
    done(&rc, 1, 2, 12, 1, 0);
    done(&rc, 1, 3, 13, 1, 0);
    assert_true(arpc_reply_cache_forget(&rc, 1, true)); /* goodbye: floor 3 */
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 1, 2, 0, A, 9, 10));
    done(&rc, 1, 4, 14, 1, 10); /* a late call it never ran: it runs, the client is known again */
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 1, 2, 0, A, 9, 20));
    assert_int_equal(1, arpc_reply_cache_expire(&rc, 200));
    assert_int_equal(0, P.n_expired);
    assert_int_equal(2, P.n_forgotten);
    assert_int_equal(1, P.forgotten[1]);
    assert_int_equal(4, P.forgotten_floor[1]); /* its highest seq now, for the log */
    assert_int_equal(0, stats_of(&rc).clients);
    for (uint64_t seq = 1; seq <= 4; seq++) /* late copies, after the expiry: not run */
        assert_int_equal(ARPC_RC_STALE, begin(&rc, 1, seq, 0, A, 9, 210));

    /* Said goodbye while a call of its ran, then called again. */
    done(&rc, 2, 1, 21, 1, 300);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 2, 2, 0, A, 2, 300)); /* busy */
    assert_false(arpc_reply_cache_forget(&rc, 2, true));
    assert_int_equal(2, P.n_forgotten);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 2, 3, 0, A, 3, 300)); /* calls again: the goodbye is off */
    /* The deferred goodbye is reported now, before the call that takes it back: the log has
     * the goodbye, then the comeback (a restart keeps the floor). */
    assert_int_equal(3, P.n_forgotten);
    assert_int_equal(2, P.forgotten[2]);
    assert_int_equal(2, P.forgotten_floor[2]);
    expect_waiters(&rc, finish(&rc, 2, 2, 22, 1, 300), 1, A, (uint64_t)2);
    expect_waiters(&rc, finish(&rc, 2, 3, 23, 1, 300), 1, A, (uint64_t)3);
    assert_int_equal(1, arpc_reply_cache_expire(&rc, 500));
    assert_int_equal(0, P.n_expired);
    assert_int_equal(4, P.n_forgotten);
    assert_int_equal(2, P.forgotten[3]);
    assert_int_equal(3, P.forgotten_floor[3]);
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 2, 1, 0, A, 9, 510));
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 2, 2, 0, A, 9, 510));

    /* A client that never said goodbye keeps nothing at its expiry, as before. */
    done(&rc, 3, 1, 31, 1, 600);
    assert_int_equal(1, arpc_reply_cache_expire(&rc, 800));
    assert_int_equal(1, P.n_expired);
    assert_int_equal(3, P.expired[0]);
    assert_int_equal(4, P.n_forgotten);
    arpc_reply_cache_fini(&rc, NULL);
}

/* knows: true for what begin would replay, attach or refuse as stale, false for what it would
 * start; it changes nothing (a stopping server answers copies with it, core/server_dedup.c). */
static void test_knows(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 1000);
    assert_false(arpc_reply_cache_knows(&rc, 1, 1)); /* a client never seen */
    done(&rc, 1, 1, 11, 1, 0);                        /* finished */
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 1, 2, 0, A, 2, 0)); /* running */
    assert_true(arpc_reply_cache_knows(&rc, 1, 1));
    assert_true(arpc_reply_cache_knows(&rc, 1, 2));
    assert_false(arpc_reply_cache_knows(&rc, 1, 3)); /* begin would start it */
    assert_false(arpc_reply_cache_knows(&rc, 0, 1)); /* not numbered */
    assert_false(arpc_reply_cache_knows(&rc, 1, 0));
    struct arpc_reply_cache_stats before = stats_of(&rc);
    assert_false(arpc_reply_cache_knows(&rc, 5, 1));
    assert_int_equal(before.clients, stats_of(&rc).clients); /* nothing made */
    expect_waiters(&rc, finish(&rc, 1, 2, 12, 1, 0), 1, A, (uint64_t)2);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 1, 3, 2, A, 3, 0)); /* acks 1 and 2: entries go */
    assert_true(arpc_reply_cache_knows(&rc, 1, 1)); /* at or below the ack: stale */
    assert_true(arpc_reply_cache_knows(&rc, 1, 2));
    expect_waiters(&rc, arpc_reply_cache_abort(&rc, 1, 3), 1, A, (uint64_t)3);
    assert_false(arpc_reply_cache_knows(&rc, 1, 3)); /* did not run: a retry may start it */
    assert_true(arpc_reply_cache_forget(&rc, 1, true)); /* a goodbye: its floor is kept */
    assert_true(arpc_reply_cache_knows(&rc, 1, 2));
    assert_false(arpc_reply_cache_knows(&rc, 1, 4));
    /* Refused for the goodbye's floor, not for an ack: the server's refusal says which. */
    assert_true(arpc_reply_cache_under_goodbye(&rc, 1, 2));
    assert_false(arpc_reply_cache_under_goodbye(&rc, 1, 4));
    assert_false(arpc_reply_cache_under_goodbye(&rc, 5, 1)); /* never said goodbye */
    assert_false(arpc_reply_cache_under_goodbye(&rc, 0, 1));
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 1, 4, 0, A, 4, 0)); /* it calls again: known, the floor its ack */
    assert_true(arpc_reply_cache_under_goodbye(&rc, 1, 2));
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 1, 2, 0, A, 5, 0));
    assert_false(arpc_reply_cache_under_goodbye(&rc, 1, 4));
    arpc_reply_cache_fini(&rc, NULL);
}

/* A goodbye that finds a call RUNNING or LOGGING is remembered: arpc_reply_cache_settle
 * forgets the client once its last such call is booked, whichever path books it, and not
 * before; a client that said no goodbye is never settled away. */
static void test_goodbye_settles(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 1000);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 3, 1, 0, A, 1, 0));
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 3, 2, 0, A, 2, 0));
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 4, 1, 0, A, 3, 0));
    assert_false(arpc_reply_cache_settle(&rc, 3)); /* no goodbye yet */
    assert_false(arpc_reply_cache_forget(&rc, 3, true)); /* two running: kept, remembered */
    assert_false(arpc_reply_cache_forget(&rc, 3, true)); /* said twice, counted once */
    assert_int_equal(1, rc.rc_goodbyes);
    expect_waiters(&rc, finish(&rc, 3, 1, 31, 1, 1), 1, A, (uint64_t)1);
    assert_false(arpc_reply_cache_settle(&rc, 3)); /* seq 2 still runs */
    assert_int_equal(0, hand_freed[31]);
    finish_logged(&rc, 3, 2, 32, 1); /* LOGGING is busy too */
    assert_false(arpc_reply_cache_settle(&rc, 3));
    expect_waiters(&rc, durable(&rc, 3, 2, 32, true), 1, A, (uint64_t)2);
    assert_int_equal(0, P.n_forgotten); /* not before the settle */
    assert_true(arpc_reply_cache_settle(&rc, 3));
    assert_int_equal(1, P.n_forgotten); /* reported, for the reply log */
    assert_int_equal(3, P.forgotten[0]);
    assert_int_equal(0, rc.rc_goodbyes);
    assert_int_equal(1, hand_freed[31]);
    assert_int_equal(1, hand_freed[32]);
    assert_false(arpc_reply_cache_settle(&rc, 3)); /* gone: nothing more to do */
    expect_waiters(&rc, finish(&rc, 4, 1, 41, 1, 1), 1, A, (uint64_t)3);
    assert_false(arpc_reply_cache_settle(&rc, 4)); /* no goodbye: kept for its retries */
    assert_int_equal(0, hand_freed[41]);
    assert_int_equal(1, stats_of(&rc).clients);
    assert_int_equal(0, P.n_expired);
    arpc_reply_cache_fini(&rc, NULL);
}


/* A call begun after the goodbye (the same client id again) is kept for its retry: the
 * goodbye spoke for the calls before it only. */
/* The goodbyes remembered are the latest ARPC_RC_GONE_MAX: with one owner (a server without
 * authentication) the oldest is dropped first; a second goodbye keeps one slot with the
 * higher floor; a client back is taken out, and its place is the next goodbye's. */
static void test_gone_bounded(void **state)
{
    (void)state;
    test_alloc_install();
    struct arpc_rc_gone g = {0};
    assert_int_equal(0, arpc_rc_gone_floor(&g, 1)); /* empty: nothing allocated yet */
    for (uint64_t id = 1; id <= ARPC_RC_GONE_MAX; id++)
        arpc_rc_gone_put(&g, id, id * 10, 0);
    arpc_rc_gone_put(&g, 2, 5, 0);  /* lower: kept at 20 */
    arpc_rc_gone_put(&g, 3, 99, 0); /* higher: 99 */
    assert_int_equal(10, arpc_rc_gone_floor(&g, 1));
    assert_int_equal(20, arpc_rc_gone_floor(&g, 2));
    assert_int_equal(99, arpc_rc_gone_floor(&g, 3));
    arpc_rc_gone_put(&g, ARPC_RC_GONE_MAX + 1, 7, 0); /* full: the oldest (1) goes */
    assert_int_equal(0, arpc_rc_gone_floor(&g, 1));
    assert_int_equal(7, arpc_rc_gone_floor(&g, ARPC_RC_GONE_MAX + 1));
    assert_int_equal(20, arpc_rc_gone_floor(&g, 2));
    arpc_rc_gone_take(&g, 2);
    assert_int_equal(0, arpc_rc_gone_floor(&g, 2));
    arpc_rc_gone_put(&g, ARPC_RC_GONE_MAX + 2, 8, 0); /* takes 2's old place: 3 stays */
    assert_int_equal(99, arpc_rc_gone_floor(&g, 3));
    assert_int_equal(8, arpc_rc_gone_floor(&g, ARPC_RC_GONE_MAX + 2));
    assert_int_equal(ARPC_RC_GONE_MAX, arpc_rc_gone_count(&g));
    arpc_rc_gone_fini(&g);
}

/* Shared fairly: with no room, the owner holding the most goodbyes gives up its oldest, so an
 * owner's goodbyes under ever new client ids drop only its own (an attacker's trial made a
 * server forget another identity's floor with 4,096 of them, and a late copy of its call ran
 * again). */
static void test_gone_fair_by_owner(void **state)
{
    (void)state;
    test_alloc_install();
    struct arpc_rc_gone g = {0};
    arpc_rc_gone_put(&g, 1, 10, 100); /* identity 100's one goodbye */
    arpc_rc_gone_put(&g, 2, 20, 0);   /* a client without an identity (or one from the log) */
    arpc_rc_gone_put(&g, 3, 30, 300); /* identity 300's */
    for (uint64_t id = 1000; id < 1000 + 3 * ARPC_RC_GONE_MAX; id++)
        arpc_rc_gone_put(&g, id, 5, 200); /* identity 200, under made-up ids */
    assert_int_equal(10, arpc_rc_gone_floor(&g, 1));
    assert_int_equal(20, arpc_rc_gone_floor(&g, 2));
    assert_int_equal(30, arpc_rc_gone_floor(&g, 3));
    assert_int_equal(ARPC_RC_GONE_MAX, arpc_rc_gone_count(&g));
    uint64_t newest = 1000 + 3 * ARPC_RC_GONE_MAX - 1;
    assert_int_equal(5, arpc_rc_gone_floor(&g, newest));            /* its latest are kept */
    assert_int_equal(0, arpc_rc_gone_floor(&g, 1000));              /* its oldest went */
    /* The same from clients without an identity: they take from the largest (200) until they
     * hold as much, then theirs go (2, their oldest, first); the identities' stay. */
    for (uint64_t id = 100000; id < 100000 + 2 * ARPC_RC_GONE_MAX; id++)
        arpc_rc_gone_put(&g, id, 6, 0);
    assert_int_equal(10, arpc_rc_gone_floor(&g, 1));
    assert_int_equal(0, arpc_rc_gone_floor(&g, 2));
    assert_int_equal(30, arpc_rc_gone_floor(&g, 3));
    assert_int_equal(5, arpc_rc_gone_floor(&g, newest));
    assert_int_equal(6, arpc_rc_gone_floor(&g, 100000 + 2 * ARPC_RC_GONE_MAX - 1));
    assert_int_equal(ARPC_RC_GONE_MAX, arpc_rc_gone_count(&g));
    /* Every owner with one goodbye: a new owner's takes the place of one of theirs. */
    arpc_rc_gone_fini(&g);
    g = (struct arpc_rc_gone){0};
    for (uint64_t id = 1; id <= ARPC_RC_GONE_MAX; id++)
        arpc_rc_gone_put(&g, id, 1, 5000 + id);
    arpc_rc_gone_take(&g, 7);
    arpc_rc_gone_put(&g, 7, 2, 5007); /* back in its own hole */
    arpc_rc_gone_put(&g, ARPC_RC_GONE_MAX + 1, 3, 1);
    assert_int_equal(ARPC_RC_GONE_MAX, arpc_rc_gone_count(&g));
    assert_int_equal(3, arpc_rc_gone_floor(&g, ARPC_RC_GONE_MAX + 1));
    assert_int_equal(2, arpc_rc_gone_floor(&g, 7));
    arpc_rc_gone_fini(&g);
}

/* Iteration gives the goodbyes oldest first with their owners, whatever places they took (a
 * slot given back, the victim's of a fair drop), so a snapshot of the reply log written in
 * that order and read back into an empty set is the same set. */
static void expect_next(const struct arpc_rc_gone *g, size_t *pos, uint64_t client, uint64_t floor, uint64_t owner)
{
    uint64_t c, f, o;
    assert_true(arpc_rc_gone_next(g, pos, &c, &f, &o));
    assert_int_equal(client, c);
    assert_int_equal(floor, f);
    assert_int_equal(owner, o);
}

static void test_gone_iterates_oldest_first(void **state)
{
    (void)state;
    test_alloc_install();
    struct arpc_rc_gone g = {0};
    uint64_t c, f, o;
    size_t pos = 0;
    assert_false(arpc_rc_gone_next(&g, &pos, &c, &f, &o)); /* empty, nothing allocated */
    arpc_rc_gone_put(&g, 1, 10, 0);
    arpc_rc_gone_put(&g, 2, 20, 100);
    arpc_rc_gone_put(&g, 3, 30, 0);
    arpc_rc_gone_put(&g, 4, 40, 200);
    arpc_rc_gone_take(&g, 2);
    arpc_rc_gone_put(&g, 5, 50, 300); /* in 2's slot, but the newest */
    arpc_rc_gone_put(&g, 1, 11, 0);   /* again: its first place, the higher floor */
    pos = 0;
    expect_next(&g, &pos, 1, 11, 0);
    expect_next(&g, &pos, 3, 30, 0);
    expect_next(&g, &pos, 4, 40, 200);
    expect_next(&g, &pos, 5, 50, 300);
    assert_false(arpc_rc_gone_next(&g, &pos, &c, &f, &o));
    arpc_rc_gone_fini(&g);

    /* Full: identity 7 holds the most, so its oldest (2) goes for identity 9's goodbye. */
    g = (struct arpc_rc_gone){0};
    arpc_rc_gone_put(&g, 1, 1, 8);
    for (uint64_t id = 2; id <= ARPC_RC_GONE_MAX; id++)
        arpc_rc_gone_put(&g, id, id, 7);
    arpc_rc_gone_put(&g, ARPC_RC_GONE_MAX + 1, 5, 9);
    assert_int_equal(0, arpc_rc_gone_floor(&g, 2));
    pos = 0;
    expect_next(&g, &pos, 1, 1, 8);
    expect_next(&g, &pos, 3, 3, 7);
    struct arpc_rc_gone again = {0};
    size_t n = 0;
    for (pos = 0; arpc_rc_gone_next(&g, &pos, &c, &f, &o); n++)
        assert_int_equal(ARPC_OK, arpc_rc_gone_put(&again, c, f, o));
    assert_int_equal(ARPC_RC_GONE_MAX, n);
    size_t pos_again = 0;
    for (pos = 0; arpc_rc_gone_next(&g, &pos, &c, &f, &o);)
        expect_next(&again, &pos_again, c, f, o);
    assert_false(arpc_rc_gone_next(&again, &pos_again, &c, &f, &o));
    /* Both drop alike from here: identity 7's oldest left is 3. */
    arpc_rc_gone_put(&g, ARPC_RC_GONE_MAX + 2, 5, 9);
    arpc_rc_gone_put(&again, ARPC_RC_GONE_MAX + 2, 5, 9);
    assert_int_equal(0, arpc_rc_gone_floor(&g, 3));
    assert_int_equal(0, arpc_rc_gone_floor(&again, 3));
    assert_int_equal(1, arpc_rc_gone_floor(&again, 1));
    arpc_rc_gone_fini(&g);
    arpc_rc_gone_fini(&again);
}

/* The set against a model of its policy, at its real size, with a few owners (one of them
 * flooding) and clients coming back: after every put or take the set holds exactly the
 * model's goodbyes, oldest first, with their floors and owners; with no room, the goodbye
 * dropped is the oldest of an owner holding the most: the adder's own if it is one of them,
 * else the oldest goodbye's owner if it is, else (a tie the policy leaves open) any of them. */
struct gone_ent {
    uint64_t client, floor, owner;
};

static size_t gone_model_oldest_of(const struct gone_ent *m, size_t n, uint64_t owner)
{
    size_t i = 0;
    while (i < n && m[i].owner != owner)
        i++;
    return i;
}

static void test_gone_against_model(void **state)
{
    (void)state;
    test_alloc_install();
    enum { GONE_OPS = 40000, CLIENTS = 3 * ARPC_RC_GONE_MAX, OWNERS = 4 };
    struct gone_ent *m = malloc((ARPC_RC_GONE_MAX + 1) * sizeof(*m));
    assert_non_null(m);
    size_t n = 0, owned[OWNERS] = {0};
    uint64_t rng = 0x9e3779b97f4a7c15u;
    struct arpc_rc_gone g = {0};
    for (int op = 0; op < GONE_OPS; op++) {
        uint64_t client = 1 + rng_next(&rng) % CLIENTS, floor = 1 + rng_next(&rng) % 1000;
        uint64_t owner = rng_next(&rng) % 100 < 40 ? 1 : rng_next(&rng) % OWNERS; /* owner 1 floods */
        size_t at = 0;
        while (at < n && m[at].client != client)
            at++;
        if (rng_next(&rng) % 4 == 0) { /* the client is back */
            arpc_rc_gone_take(&g, client);
            if (at < n) {
                owned[m[at].owner]--;
                memmove(&m[at], &m[at + 1], (--n - at) * sizeof(*m));
            }
        } else if (at < n) { /* a second goodbye */
            assert_int_equal(ARPC_OK, arpc_rc_gone_put(&g, client, floor, owner));
            if (floor > m[at].floor)
                m[at].floor = floor;
        } else {
            assert_int_equal(ARPC_OK, arpc_rc_gone_put(&g, client, floor, owner));
            if (n == ARPC_RC_GONE_MAX) {
                size_t most = 0;
                for (size_t o = 0; o < OWNERS; o++)
                    most = owned[o] > most ? owned[o] : most;
                size_t v = owned[owner] == most ? gone_model_oldest_of(m, n, owner) : owned[m[0].owner] == most ? 0 : n;
                for (size_t i = 0; v == n && i < n; i++) /* the open tie: the one dropped */
                    if (arpc_rc_gone_floor(&g, m[i].client) == 0)
                        v = i;
                assert_true(v < n);
                assert_int_equal(0, arpc_rc_gone_floor(&g, m[v].client)); /* it went */
                assert_int_equal(most, owned[m[v].owner]);
                assert_int_equal(v, gone_model_oldest_of(m, n, m[v].owner));
                owned[m[v].owner]--;
                memmove(&m[v], &m[v + 1], (--n - v) * sizeof(*m));
            }
            m[n++] = (struct gone_ent){client, floor, owner};
            owned[owner]++;
        }
        assert_int_equal(n, arpc_rc_gone_count(&g));
        if (op % 97 == 0) {
            size_t pos = 0, i = 0;
            uint64_t c, f, o;
            for (; arpc_rc_gone_next(&g, &pos, &c, &f, &o); i++) {
                assert_true(i < n);
                assert_int_equal(m[i].client, c);
                assert_int_equal(m[i].floor, f);
                assert_int_equal(m[i].owner, o);
            }
            assert_int_equal(n, i);
        }
    }
    arpc_rc_gone_fini(&g);
    assert_int_equal(0, arpc_rc_gone_count(&g)); /* zeroed: usable again */
    free(m);
}

static void test_call_after_goodbye_kept(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 1000);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 3, 1, 0, A, 1, 0));
    assert_false(arpc_reply_cache_forget(&rc, 3, true)); /* running: remembered */
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 3, 2, 0, A, 2, 0)); /* called again after it */
    assert_int_equal(0, rc.rc_goodbyes); /* settle's lookup is off the per-call path again */
    expect_waiters(&rc, finish(&rc, 3, 2, 32, 1, 1), 1, A, (uint64_t)2);
    arpc_reply_cache_settle(&rc, 3);
    expect_waiters(&rc, finish(&rc, 3, 1, 31, 1, 1), 1, A, (uint64_t)1);
    arpc_reply_cache_settle(&rc, 3);
    assert_int_equal(ARPC_RC_REPLAY, begin(&rc, 3, 2, 0, A, 3, 2)); /* its retry: not run again */
    arpc_reply_cache_fini(&rc, NULL);
}

/* The same while another client's goodbye still waits, so that settle looks clients up: the
 * call made after its goodbye took it back, and this client is not forgotten when its calls
 * end (its retry is answered, not refused as acknowledged). */
static void test_call_after_goodbye_kept_among_goodbyes(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 1000);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 4, 1, 0, B, 9, 0));
    assert_false(arpc_reply_cache_forget(&rc, 4, true)); /* client 4's goodbye waits for its call */
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 3, 1, 0, A, 1, 0));
    assert_false(arpc_reply_cache_forget(&rc, 3, true));
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 3, 2, 0, A, 2, 0)); /* called again after it */
    assert_int_equal(1, rc.rc_goodbyes);                      /* client 4's only */
    expect_waiters(&rc, finish(&rc, 3, 2, 32, 1, 1), 1, A, (uint64_t)2);
    assert_false(arpc_reply_cache_settle(&rc, 3));
    expect_waiters(&rc, finish(&rc, 3, 1, 31, 1, 1), 1, A, (uint64_t)1);
    assert_false(arpc_reply_cache_settle(&rc, 3)); /* its goodbye was taken back */
    assert_int_equal(1, P.n_forgotten); /* said for the log as it was taken back: floor 1 */
    assert_int_equal(3, P.forgotten[0]);
    assert_int_equal(1, P.forgotten_floor[0]);
    assert_int_equal(ARPC_RC_REPLAY, begin(&rc, 3, 2, 0, A, 3, 2)); /* its retry: not run again */
    expect_waiters(&rc, finish(&rc, 4, 1, 41, 1, 1), 1, B, (uint64_t)9);
    assert_true(arpc_reply_cache_settle(&rc, 4)); /* client 4's goodbye still holds */
    assert_int_equal(2, P.n_forgotten);
    assert_int_equal(4, P.forgotten[1]);
    assert_int_equal(0, rc.rc_goodbyes);
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

/* A goodbye's floor restored from the reply log refuses the client's late copies as the
 * goodbye itself did, and lets a call above it run, and is its identity's as before; a known
 * client gets it as its ack. */
static void test_restore_gone(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 1000);
    assert_int_equal(ARPC_OK, arpc_reply_cache_restore_gone(&rc, 9, 3, 100));
    assert_int_equal(ARPC_EINVAL, arpc_reply_cache_restore_gone(&rc, 0, 3, 0));
    assert_int_equal(ARPC_EINVAL, arpc_reply_cache_restore_gone(&rc, 9, 0, 0));
    /* Held against identity 100's share, as before the restart: goodbyes of clients without
     * an identity, however many, drop only theirs. */
    for (uint64_t id = 1000; id < 1000 + 2 * ARPC_RC_GONE_MAX; id++)
        assert_int_equal(ARPC_OK, arpc_rc_gone_put(&rc.rc_gone, id, 1, 0));
    assert_int_equal(0, stats_of(&rc).clients); /* a floor is not a client */
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 9, 3, 0, A, 1, 0));
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 9, 1, 0, A, 2, 0));
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 9, 4, 0, A, 3, 0));
    expect_waiters(&rc, arpc_reply_cache_abort(&rc, 9, 4), 1, A, (uint64_t)3);
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 9, 2, 0, A, 4, 0)); /* known again: its ack */
    assert_int_equal(ARPC_OK, arpc_reply_cache_restore_ack(&rc, 8, 1, 0));
    assert_int_equal(ARPC_OK, arpc_reply_cache_restore_gone(&rc, 8, 6, 0)); /* known: its ack */
    assert_int_equal(ARPC_RC_STALE, begin(&rc, 8, 6, 0, A, 5, 0));
    assert_true(arpc_reply_cache_under_goodbye(&rc, 8, 6)); /* and its floor: refused as after a goodbye */
    assert_false(arpc_reply_cache_under_goodbye(&rc, 8, 7));
    arpc_reply_cache_fini(&rc, NULL);
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

/* ---- the ring of entries by seq (core/reply_cache_store.c) ---- */

/* 40 calls outstanding over 1000 seqs: the 64-slot ring wraps many times; every call is
 * replayed while unacked and freed once acked, never twice. */
static void test_ring_wraps(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 0);
    enum { N = 1000, W = 40 };
    for (uint64_t seq = 1; seq <= N; seq++) {
        uint64_t ack = seq > W ? seq - W : 0;
        assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, seq, ack, A, seq, 0));
        expect_waiters(&rc, finish(&rc, 7, seq, seq, 1, 0), 1, A, seq);
        expect_replay(&rc, 7, seq, seq, 0);
        if (seq > W) {
            expect_replay(&rc, 7, ack + 1, ack + 1, 0); /* the oldest kept */
            assert_int_equal(1, hand_freed[ack]);       /* the newest acked */
            assert_int_equal(ARPC_RC_STALE, begin(&rc, 7, ack, 0, B, 1, 0));
        }
        assert_true(stats_of(&rc).entries <= W);
    }
    assert_int_equal(N - W, P.n_freed_by_cache);
    arpc_reply_cache_fini(&rc, NULL);
    assert_int_equal(N, P.n_freed_by_cache);
}

/* A seq whose slot is held (a call still running below the ack) and one far ahead of the
 * window: both kept aside, found, replayed and freed like the others. */
static void test_ring_outliers(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 0);
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 1, 0, A, 1, 0));     /* held */
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 101, 100, A, 2, 0)); /* acks past it */
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 129, 100, A, 3, 0)); /* 1's slot */
    assert_int_equal(ARPC_RC_ATTACHED, begin(&rc, 7, 129, 100, B, 4, 0));
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 1000001, 100, A, 5, 0)); /* far ahead */
    expect_waiters(&rc, finish(&rc, 7, 129, 129, 1, 0), 2, A, 3, B, 4);
    expect_waiters(&rc, finish(&rc, 7, 1000001, 1001, 1, 0), 1, A, 5);
    expect_replay(&rc, 7, 129, 129, 0);
    expect_replay(&rc, 7, 1000001, 1001, 0);
    expect_waiters(&rc, finish_dropped(&rc, 7, 1), 1, A, 1); /* acked while it ran */
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 193, 100, A, 6, 0)); /* 1's slot, free again */
    expect_waiters(&rc, finish(&rc, 7, 193, 193, 1, 0), 1, A, 6);
    expect_replay(&rc, 7, 129, 129, 0);
    expect_replay(&rc, 7, 193, 193, 0);
    expect_waiters(&rc, finish(&rc, 7, 101, 101, 1, 0), 1, A, 2);
    assert_int_equal(4, stats_of(&rc).entries);
    /* An ack beyond every entry, far beyond the ring: all of them go, each once. */
    assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, 2000001, 2000000, A, 7, 0));
    assert_int_equal(1, stats_of(&rc).entries);
    assert_int_equal(4, P.n_freed_by_cache);
    assert_int_equal(1, hand_freed[101]);
    assert_int_equal(1, hand_freed[129]);
    assert_int_equal(1, hand_freed[193]);
    assert_int_equal(1, hand_freed[1001]);
    arpc_reply_cache_fini(&rc, cb_drop_waiter);
    assert_int_equal(1, P.dropped);
}

/* A window of 300 calls, wider than the ring: it grows, and its growth is counted in bytes
 * until the client is forgotten. */
static void test_ring_grows(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 10);
    enum { W = 300 };
    for (uint64_t seq = 1; seq <= W; seq++)
        assert_int_equal(ARPC_RC_NEW, begin(&rc, 7, seq, 0, A, seq, 0));
    for (uint64_t seq = 1; seq <= W; seq++)
        assert_int_equal(ARPC_RC_ATTACHED, begin(&rc, 7, seq, 0, B, 1000 + seq, 0));
    for (uint64_t seq = W; seq >= 1; seq--)
        expect_waiters(&rc, finish(&rc, 7, seq, seq, 1, 0), 2, A, seq, B, 1000 + seq);
    for (uint64_t seq = 1; seq <= W; seq++)
        expect_replay(&rc, 7, seq, seq, 0);
    struct arpc_reply_cache_stats s = stats_of(&rc);
    size_t ring = s.bytes - arpc_reply_cache_client_cost() - W * (arpc_reply_cache_entry_cost() + 1);
    assert_true(ring > 0 && ring <= 4096 * sizeof(void *));
    arpc_reply_cache_ack(&rc, 7, W, 0);
    assert_int_equal(0, stats_of(&rc).entries);
    assert_int_equal(arpc_reply_cache_client_cost() + ring, stats_of(&rc).bytes);
    assert_int_equal(1, arpc_reply_cache_expire(&rc, 10));
    assert_int_equal(0, stats_of(&rc).bytes);
    arpc_reply_cache_fini(&rc, NULL);
}

/* Many clients interleaved (the last client found is remembered), expired, then back as
 * new clients: none finds another's entries, none outlives its expiry. */
static void test_ring_many_clients(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 100);
    enum { C = 50, N = 5 };
    for (uint64_t seq = 1; seq <= N; seq++)
        for (uint64_t c = 1; c <= C; c++)
            done(&rc, c, seq, c * 10 + seq, 1, 0);
    for (uint64_t c = 1; c <= C; c++)
        for (uint64_t seq = 1; seq <= N; seq++)
            expect_replay(&rc, c, seq, c * 10 + seq, 0);
    assert_int_equal(C * N, stats_of(&rc).entries);
    assert_int_equal(C, arpc_reply_cache_expire(&rc, 100));
    assert_int_equal(C * N, P.n_freed_by_cache);
    assert_int_equal(0, stats_of(&rc).entries);
    assert_int_equal(0, stats_of(&rc).bytes);
    for (uint64_t c = 1; c <= C; c++)
        assert_int_equal(ARPC_RC_NEW, begin(&rc, c, 1, 0, A, 1, 100)); /* forgotten: runs again */
    arpc_reply_cache_fini(&rc, cb_drop_waiter);
    assert_int_equal(C, P.dropped);
}

/* An expiry in slices: no more clients looked at than the budget, *more while some idle ones
 * are left, and together the slices forget what one sweep would. */
static void test_expire_in_slices(void **state)
{
    (void)state;
    struct arpc_reply_cache rc;
    cache_init(&rc, 0, 100);
    enum { C = 50, SLICE = 16 };
    for (uint64_t c = 1; c <= C; c++)
        done(&rc, c, 1, c * 10 + 1, 1, 0);
    size_t forgotten = 0, slices = 0;
    bool more = true;
    while (more) {
        size_t n = arpc_reply_cache_expire_some(&rc, 100, SLICE, &more);
        assert_true(n <= SLICE);
        assert_true(!more || n == SLICE);
        forgotten += n;
        slices++;
    }
    assert_int_equal(C, forgotten);
    assert_int_equal((C + SLICE - 1) / SLICE, slices);
    assert_int_equal(0, stats_of(&rc).entries);
    more = true;
    assert_int_equal(0, arpc_reply_cache_expire_some(&rc, 100, SLICE, &more)); /* none left */
    assert_false(more);
    arpc_reply_cache_fini(&rc, cb_drop_waiter);
}

/* ---- against a reference model ----
 * The rules of core/reply_cache.h written the plain way: per client an array of entries
 * searched linearly, waiters as arrays, expiry by scanning for the least recently touched
 * client, the bounds checked by summing. Only the accounting constants are taken from the
 * cache. Run with and without ops.stand_in (a reply over a bound when its call finishes kept
 * as a shared stand-in, and what it would have gone past full until an entry is freed). */

enum { M_CLIENTS = 5, M_WINDOW = 12, M_MAXE = 1024, M_OPS = 250000, M_IDLE = 250 };
enum { M_RUNNING, M_LOGGING, M_DONE };
#define M_STAND_IN ((uintptr_t)M_OPS + 2) /* the stand-in's id: no reply's */

struct m_waiter {
    void *conn;
    uint64_t xid;
};

struct m_entry {
    uint64_t seq;
    int state;
    uintptr_t reply; /* LOGGING, DONE */
    size_t bytes;
    struct m_waiter *w; /* RUNNING, LOGGING */
    size_t nw;
};

struct m_client {
    bool live;
    bool owned; /* counts toward its identity's share: from its first request (the log's
                 * records bring a client back without its identity) */
    bool full;  /* a reply of its own was over its share: full until one of its entries goes */
    uint64_t ack, last, order; /* order: of the last touch, for expiry */
    struct m_entry e[M_MAXE];
    size_t n;
    uint64_t base; /* the generator's idea of the client's progress; outlives expiry */
};

struct model {
    struct m_client c[M_CLIENTS];
    uint64_t order;
    size_t max_bytes, max_client_bytes;
    uint64_t attached, replayed, stale, full, client_full, crowded;
    uint64_t identity_full; /* of client_full: refused for its identity's bytes, not its own */
    size_t freed_by_cache; /* replies the cache should have given to free_reply */
    bool stand_ins;        /* the cache has ops.stand_in */
    bool cache_full, owner_full; /* over max_bytes, over the identity's share: as m_client.full */
    uint64_t stood_in;
    size_t stand_in_frees; /* holds on the stand-in given back */
    uint64_t expired[64];
    size_t n_expired;
};

static uint64_t m_seed;
static int m_op;

#define M_CHECK(cond)                                                                        \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            print_message("model mismatch at op %d (RC_SEED=%llu): %s\n", m_op,             \
                          (unsigned long long)m_seed, #cond);                                \
            fail();                                                                          \
        }                                                                                    \
    } while (0)

static uint64_t m_id(int ci) { return 1000 + (uint64_t)ci; } /* client ids */
/* Identities: the two quietest clients share one (so the busier ones still fill the whole
 * cache now and then); the others have none. */
static uint64_t m_owner(int ci) { return ci >= M_CLIENTS - 2 ? 50 : 0; }

static struct m_entry *m_find(struct m_client *c, uint64_t seq)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->e[i].seq == seq)
            return &c->e[i];
    return NULL;
}

static void m_remove(struct m_client *c, struct m_entry *e)
{
    free(e->w);
    *e = c->e[--c->n];
}

/* Entries of client ci were freed: room again, perhaps, so the full marks it could have set
 * go (the next call is admitted and its reply checked when it finishes). */
static void m_entries_freed(struct model *m, int ci)
{
    m->cache_full = false;
    m->c[ci].full = false;
    if (m->c[ci].owned && m_owner(ci) != 0)
        m->owner_full = false;
}

/* A DONE entry's reply given back by the cache (an ack, expiry): the stand-in's hold, or the
 * reply itself. */
static void m_count_free(struct model *m, const struct m_entry *e)
{
    if (e->reply == M_STAND_IN)
        m->stand_in_frees++;
    else
        m->freed_by_cache++;
}

static void m_add_waiter(struct m_entry *e, void *conn, uint64_t xid)
{
    e->w = realloc(e->w, (e->nw + 1) * sizeof(*e->w));
    e->w[e->nw++] = (struct m_waiter){conn, xid};
}

static void m_touch(struct model *m, struct m_client *c, uint64_t now)
{
    c->last = now;
    c->order = ++m->order;
}

static void m_raise_ack(struct model *m, int ci, uint64_t ack)
{
    struct m_client *c = &m->c[ci];
    if (ack <= c->ack)
        return;
    c->ack = ack;
    bool freed = false;
    for (size_t i = 0; i < c->n;) {
        struct m_entry *e = &c->e[i];
        if (e->seq <= ack && e->state == M_DONE) {
            m_count_free(m, e);
            m_remove(c, e);
            freed = true;
        } else {
            i++;
        }
    }
    if (freed)
        m_entries_freed(m, ci);
}

static size_t m_bytes(const struct model *m)
{
    size_t b = 0;
    for (int i = 0; i < M_CLIENTS; i++) {
        const struct m_client *c = &m->c[i];
        if (!c->live)
            continue;
        b += arpc_reply_cache_client_cost();
        for (size_t j = 0; j < c->n; j++)
            b += arpc_reply_cache_entry_cost() + c->e[j].bytes;
    }
    return b;
}

static size_t m_client_bytes(const struct m_client *c)
{
    size_t b = arpc_reply_cache_client_cost();
    for (size_t j = 0; j < c->n; j++)
        b += arpc_reply_cache_entry_cost() + c->e[j].bytes;
    return b;
}

/* The bytes of identity owner's live clients together. */
static size_t m_owner_bytes(const struct model *m, uint64_t owner)
{
    size_t b = 0;
    for (int i = 0; i < M_CLIENTS; i++)
        if (m->c[i].live && m->c[i].owned && m_owner(i) == owner)
            b += m_client_bytes(&m->c[i]);
    return b;
}

/* Whether n more bytes kept for client ci would go past its share, its identity's, or the
 * cache's bound; what would is marked full (the cache's over_if_kept). Without a stand-in
 * the cache keeps every reply and checks nothing. */
static bool m_over_if_kept(struct model *m, int ci, size_t n)
{
    struct m_client *c = &m->c[ci];
    bool over = false;
    if (!m->stand_ins)
        return false;
    if (m_client_bytes(c) + n > m->max_client_bytes)
        over = c->full = true;
    if (c->owned && m_owner(ci) != 0 && m_owner_bytes(m, m_owner(ci)) + n > m->max_client_bytes)
        over = m->owner_full = true;
    if (m_bytes(m) + n > m->max_bytes)
        over = m->cache_full = true;
    m->stood_in += over;
    return over;
}

static struct m_entry *m_new_entry(struct m_client *c, uint64_t seq, int state)
{
    M_CHECK(c->n < M_MAXE);
    struct m_entry *e = &c->e[c->n++];
    *e = (struct m_entry){.seq = seq, .state = state};
    return e;
}

static enum arpc_rc_verdict m_begin(struct model *m, int ci, uint64_t seq, uint64_t ack,
                                    void *conn, uint64_t xid, uint64_t now, uintptr_t *replay)
{
    struct m_client *c = &m->c[ci];
    if (!c->live) {
        if (seq <= ack)
            return m->stale++, ARPC_RC_STALE;
        if (m_bytes(m) >= m->max_bytes || m->cache_full)
            return m->full++, ARPC_RC_FULL;
        if (m_owner(ci) != 0 && (m_owner_bytes(m, m_owner(ci)) + arpc_reply_cache_client_cost() >= m->max_client_bytes || m->owner_full))
            return m->identity_full++, m->client_full++, ARPC_RC_CLIENT_FULL; /* its identity's share */
        c->live = true;
        c->owned = true;
        c->full = false;
        c->ack = ack;
        c->n = 0;
        m_touch(m, c, now);
        m_add_waiter(m_new_entry(c, seq, M_RUNNING), conn, xid);
        return ARPC_RC_NEW;
    }
    c->owned = true;
    m_touch(m, c, now);
    m_raise_ack(m, ci, ack);
    if (seq <= c->ack)
        return m->stale++, ARPC_RC_STALE;
    struct m_entry *e = m_find(c, seq);
    if (e == NULL) {
        if (m_bytes(m) >= m->max_bytes || m->cache_full)
            return m->full++, ARPC_RC_FULL;
        if (m_client_bytes(c) >= m->max_client_bytes || c->full)
            return m->client_full++, ARPC_RC_CLIENT_FULL;
        if (m_owner(ci) != 0 && (m_owner_bytes(m, m_owner(ci)) >= m->max_client_bytes || m->owner_full))
            return m->identity_full++, m->client_full++, ARPC_RC_CLIENT_FULL;
        m_add_waiter(m_new_entry(c, seq, M_RUNNING), conn, xid);
        return ARPC_RC_NEW;
    }
    if (e->state == M_DONE) {
        *replay = e->reply;
        return m->replayed++, ARPC_RC_REPLAY;
    }
    if (e->nw > ARPC_RC_MAX_WAITERS) /* the first waiter began the call: not a duplicate */
        return m->crowded++, ARPC_RC_CROWDED;
    m_add_waiter(e, conn, xid);
    return m->attached++, ARPC_RC_ATTACHED;
}

static void m_expire(struct model *m, uint64_t now)
{
    for (;;) {
        struct m_client *oldest = NULL;
        for (int i = 0; i < M_CLIENTS; i++)
            if (m->c[i].live && (oldest == NULL || m->c[i].order < oldest->order))
                oldest = &m->c[i];
        if (oldest == NULL || now - oldest->last < M_IDLE)
            return;
        bool busy = false;
        for (size_t j = 0; j < oldest->n; j++)
            busy |= oldest->e[j].state != M_DONE;
        if (busy) {
            m_touch(m, oldest, now);
            continue;
        }
        M_CHECK(m->n_expired < 64);
        int ci = (int)(oldest - m->c);
        m->expired[m->n_expired++] = m_id(ci);
        if (oldest->n > 0)
            m_entries_freed(m, ci);
        while (oldest->n > 0) {
            m_count_free(m, &oldest->e[0]);
            m_remove(oldest, &oldest->e[0]);
        }
        oldest->live = false;
    }
}

/* The cache's waiter list must equal the model entry's, in order; gives it back. */
static void m_check_waiters(struct arpc_reply_cache *rc, struct arpc_rc_waiter *list,
                            const struct m_entry *e)
{
    struct arpc_rc_waiter *w = list;
    for (size_t i = 0; i < e->nw; i++, w = w->w_next) {
        M_CHECK(w != NULL);
        M_CHECK(w->w_conn == e->w[i].conn && w->w_xid == e->w[i].xid);
    }
    M_CHECK(w == NULL);
    arpc_reply_cache_free_waiters(rc, list);
}

/* A random entry of the model in state (any client), or NULL. */
static struct m_entry *m_pick(struct model *m, int state, uint64_t *rng, int *ci)
{
    size_t total = 0;
    for (int i = 0; i < M_CLIENTS; i++)
        for (size_t j = 0; j < m->c[i].n; j++)
            total += m->c[i].e[j].state == state;
    if (total == 0)
        return NULL;
    size_t k = rng_next(rng) % total;
    for (int i = 0; i < M_CLIENTS; i++)
        for (size_t j = 0; j < m->c[i].n; j++)
            if (m->c[i].e[j].state == state && k-- == 0) {
                *ci = i;
                return &m->c[i].e[j];
            }
    return NULL;
}

static void m_check_stats(struct arpc_reply_cache *rc, const struct model *m)
{
    struct arpc_reply_cache_stats s = stats_of(rc);
    size_t clients = 0, entries = 0, running = 0, logging = 0;
    for (int i = 0; i < M_CLIENTS; i++) {
        const struct m_client *c = &m->c[i];
        clients += c->live;
        entries += c->n;
        for (size_t j = 0; j < c->n; j++) {
            running += c->e[j].state == M_RUNNING;
            logging += c->e[j].state == M_LOGGING;
            M_CHECK(c->e[j].state == M_RUNNING || P.freed[c->e[j].reply] == 0);
        }
    }
    M_CHECK(s.clients == clients && s.entries == entries);
    M_CHECK(s.running == running && s.logging == logging);
    M_CHECK(s.bytes == m_bytes(m));
    M_CHECK(s.hits_attached == m->attached && s.hits_replayed == m->replayed);
    M_CHECK(s.stale == m->stale && s.full == m->full && s.client_full == m->client_full && s.crowded == m->crowded);
    M_CHECK(P.n_freed_by_cache == m->freed_by_cache);
    M_CHECK(s.stood_in == m->stood_in && P.stand_in_frees == m->stand_in_frees);
    if (m->stand_ins) { /* the bound itself, not the model's copy of its rules: past max_bytes
                         * by at most one admission (a client's and an entry's cost) and the
                         * replies held while their records are written */
        size_t logging_bytes = 0;
        for (int i = 0; i < M_CLIENTS; i++)
            for (size_t j = 0; j < m->c[i].n; j++)
                logging_bytes += m->c[i].e[j].state == M_LOGGING ? m->c[i].e[j].bytes : 0;
        M_CHECK(s.bytes <= m->max_bytes + arpc_reply_cache_client_cost() + arpc_reply_cache_entry_cost() + logging_bytes);
    }
    M_CHECK(P.stand_in_holds == m->stood_in);
    M_CHECK(P.n_expired == m->n_expired);
    for (size_t i = 0; i < m->n_expired; i++)
        M_CHECK(P.expired[i] == m->expired[i]);
}

/* An ack as a client would send it: usually a little behind its progress, now and then a
 * jump far ahead (it gave up on many calls), which moves its progress too. */
static uint64_t m_gen_ack(struct m_client *c, uint64_t *rng)
{
    if (rng_next(rng) % 64 == 0) {
        c->base += 30 + rng_next(rng) % 300;
        return c->base - 1;
    }
    uint64_t behind = 1 + rng_next(rng) % 5;
    return c->base > behind ? c->base - behind : 0;
}

/* Client 0 is busiest, the last one quietest, so some go idle long enough to expire. */
static int m_gen_client(uint64_t *rng)
{
    return (int)(rng_next(rng) % (1 + rng_next(rng) % M_CLIENTS));
}

static void run_model(bool stand_ins)
{
    test_alloc_install();
    const char *env = getenv("RC_SEED");
    m_seed = env != NULL ? strtoull(env, NULL, 0) : 0x5eed2026;
    uint64_t rng = m_seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull; /* one-to-one */
    rng += rng == 0; /* xorshift must not start at 0 */
    enum { MAX_REPLIES = M_STAND_IN + 1 };
    unsigned char *freed = calloc(MAX_REPLIES, 1);
    struct model *m = calloc(1, sizeof(*m));
    assert_non_null(freed);
    assert_non_null(m);
    probe_reset(freed);
    P.stand_in = stand_ins ? R(M_STAND_IN) : NULL;
    m->stand_ins = stand_ins;
    size_t entry = arpc_reply_cache_entry_cost(), client = arpc_reply_cache_client_cost();
    m->max_bytes = 4 * client + 40 * (entry + 150);
    m->max_client_bytes = client + 9 * (entry + 150); /* a window of 12 reaches it now and then */
    for (int i = 0; i < M_CLIENTS; i++)
        m->c[i].base = 1;
    struct arpc_reply_cache rc;
    struct arpc_reply_cache_options o = {.max_bytes = m->max_bytes, .idle_expiry_ns = M_IDLE,
                                         .max_client_bytes = m->max_client_bytes};
    assert_int_equal(ARPC_OK, arpc_reply_cache_init(&rc, &o, stand_ins ? &OPS_STAND_IN : &OPS, &P));
    uint64_t now = 0, xid = 0;
    uintptr_t next_reply = 1;
    size_t seen[ARPC_RC_CROWDED + 1] = {0}; /* by verdict: the last of the enum */
    size_t expiries = 0, kept_false = 0;
    for (m_op = 0; m_op < M_OPS; m_op++) {
        now += rng_next(&rng) % 6;
        P.n_expired = m->n_expired = 0;
        unsigned what = (unsigned)(rng_next(&rng) % 100);
        int ci = m_gen_client(&rng);
        struct m_client *c = &m->c[ci];
        bool kept = false;
        if (what < 45) { /* a request: new, a retry, or an old duplicate */
            if (rng_next(&rng) % 8 == 0)
                c->base += 1 + rng_next(&rng) % 2;
            uint64_t seq = c->base + rng_next(&rng) % M_WINDOW;
            seq = seq > 2 ? seq - 2 : 1;
            uint64_t ack = m_gen_ack(c, &rng);
            void *conn = R(1 + rng_next(&rng) % 3);
            xid++;
            uintptr_t want_reply = 0;
            void *got_reply = NULL;
            enum arpc_rc_verdict want = m_begin(m, ci, seq, ack, conn, xid, now, &want_reply);
            enum arpc_rc_verdict got =
                arpc_reply_cache_begin(&rc, m_id(ci), m_owner(ci), seq, ack, conn, xid, now, &got_reply, NULL);
            M_CHECK(got == want);
            M_CHECK(got != ARPC_RC_REPLAY || (uintptr_t)got_reply == want_reply);
            seen[got]++;
        } else if (what < 65) { /* a handler returns (now and then for nothing running) */
            struct m_entry *e = m_pick(m, M_RUNNING, &rng, &ci);
            uintptr_t id = next_reply++;
            size_t bytes = rng_next(&rng) % 300;
            bool logged = rng_next(&rng) % 3 == 0;
            if (e == NULL || rng_next(&rng) % 20 == 0) {
                M_CHECK(arpc_reply_cache_finish(&rc, m_id(ci), m->c[ci].base + 50, R(id), bytes,
                                                logged, now, &kept) == NULL);
                M_CHECK(!kept);
                freed[id] = 2;
                goto check;
            }
            c = &m->c[ci];
            struct arpc_rc_waiter *list =
                arpc_reply_cache_finish(&rc, m_id(ci), e->seq, R(id), bytes, logged, now, &kept);
            m_touch(m, c, now);
            if (e->seq <= c->ack && !logged) { /* logged: its waiters wait for durable, acked or not */
                M_CHECK(!kept);
                freed[id] = 2;
                kept_false++;
                m_check_waiters(&rc, list, e);
                m_remove(c, e);
                m_entries_freed(m, ci);
            } else if (!logged && m_over_if_kept(m, ci, bytes)) { /* ran; a retry gets the stand-in */
                M_CHECK(!kept);
                freed[id] = 2;
                e->reply = M_STAND_IN;
                e->state = M_DONE;
                m_check_waiters(&rc, list, e);
                free(e->w);
                e->w = NULL;
                e->nw = 0;
            } else {
                M_CHECK(kept);
                e->reply = id;
                e->bytes = bytes;
                e->state = logged ? M_LOGGING : M_DONE;
                if (logged) {
                    M_CHECK(list == NULL);
                } else {
                    m_check_waiters(&rc, list, e);
                    free(e->w);
                    e->w = NULL;
                    e->nw = 0;
                }
            }
        } else if (what < 73) { /* the log reports a record durable */
            struct m_entry *e = m_pick(m, M_LOGGING, &rng, &ci);
            if (e == NULL)
                goto check;
            c = &m->c[ci];
            void *reply = NULL;
            struct arpc_rc_waiter *list =
                arpc_reply_cache_durable(&rc, m_id(ci), e->seq, now, &reply, &kept);
            m_touch(m, c, now);
            M_CHECK((uintptr_t)reply == e->reply);
            m_check_waiters(&rc, list, e);
            if (e->seq <= c->ack) {
                M_CHECK(!kept);
                freed[e->reply] = 2;
                kept_false++;
                m_remove(c, e);
                m_entries_freed(m, ci);
            } else if (m_over_if_kept(m, ci, 0)) { /* its bytes were booked while it was held */
                M_CHECK(!kept);
                freed[e->reply] = 2;
                e->reply = M_STAND_IN;
                e->bytes = 0;
                e->state = M_DONE;
                free(e->w);
                e->w = NULL;
                e->nw = 0;
            } else {
                M_CHECK(kept);
                e->state = M_DONE;
                free(e->w);
                e->w = NULL;
                e->nw = 0;
            }
        } else if (what < 77) { /* a call that never started */
            int st = rng_next(&rng) % 4 == 0 ? M_LOGGING : M_RUNNING;
            struct m_entry *e = m_pick(m, st, &rng, &ci);
            if (e == NULL)
                goto check;
            struct arpc_rc_waiter *list = arpc_reply_cache_abort(&rc, m_id(ci), e->seq);
            if (st == M_LOGGING) {
                M_CHECK(list == NULL);
            } else {
                m_check_waiters(&rc, list, e);
                m_remove(&m->c[ci], e);
                m_entries_freed(m, ci);
            }
        } else if (what < 85) { /* an unnumbered request carries an ack */
            uint64_t ack = m_gen_ack(c, &rng);
            arpc_reply_cache_ack(&rc, m_id(ci), ack, now);
            if (c->live) {
                m_touch(m, c, now);
                m_raise_ack(m, ci, ack);
            }
        } else if (what < 95) {
            expiries += arpc_reply_cache_expire(&rc, now);
            m_expire(m, now);
        } else if (what < 98) { /* the log replays a record */
            uint64_t seq = c->base + rng_next(&rng) % M_WINDOW;
            uintptr_t id = next_reply++;
            size_t bytes = rng_next(&rng) % 300;
            int rc_got = arpc_reply_cache_restore(&rc, m_id(ci), seq, R(id), bytes, now);
            int want = ARPC_OK;
            if (!c->live) {
                *c = (struct m_client){.live = true, .base = c->base};
            }
            m_touch(m, c, now);
            if (seq <= c->ack)
                want = ARPC_EREJECTED;
            else if (m_find(c, seq) != NULL)
                want = ARPC_EBUSY;
            M_CHECK(rc_got == want);
            if (want == ARPC_OK && m_over_if_kept(m, ci, arpc_reply_cache_entry_cost() + bytes)) { /* the cache frees the reply */
                m_new_entry(c, seq, M_DONE)->reply = M_STAND_IN;
                m->freed_by_cache++;
            } else if (want == ARPC_OK) {
                struct m_entry *e = m_new_entry(c, seq, M_DONE);
                e->reply = id;
                e->bytes = bytes;
            } else {
                freed[id] = 2;
            }
        } else { /* the log replays an ack */
            uint64_t ack = m_gen_ack(c, &rng);
            M_CHECK(arpc_reply_cache_restore_ack(&rc, m_id(ci), ack, now) == ARPC_OK);
            if (!c->live)
                *c = (struct m_client){.live = true, .base = c->base};
            m_touch(m, c, now);
            m_raise_ack(m, ci, ack);
        }
    check:
        m_check_stats(&rc, m);
    }
    /* Every outcome happened often enough for the run to mean something (a whole cache full is
     * the rarest since an identity's clients are held to one share: 300-600 a run; 50-100 with
     * stand-ins, which keep the bytes under the bound, so only a mark refuses). */
    print_message("whole cache full: %zu\n", seen[ARPC_RC_FULL]);
    for (int v = ARPC_RC_NEW; v < ARPC_RC_FULL; v++)
        assert_true(seen[v] > 200);
    assert_true(seen[ARPC_RC_FULL] > (stand_ins ? 20 : 200));
    print_message("client shares full: %zu (%llu for an identity's)\n", seen[ARPC_RC_CLIENT_FULL],
                  (unsigned long long)m->identity_full);
    assert_true(seen[ARPC_RC_CLIENT_FULL] > 100);
    assert_true(m->identity_full > 50);
    assert_true(expiries > 100);
    assert_true(kept_false > 100);
    print_message("replies kept as the stand-in: %llu\n", (unsigned long long)m->stood_in);
    assert_true(stand_ins ? m->stood_in > 100 : m->stood_in == 0);
    /* fini: the waiters of unfinished calls are dropped, every reply ends freed once */
    size_t waiting = 0;
    for (int i = 0; i < M_CLIENTS; i++)
        for (size_t j = 0; j < m->c[i].n; j++)
            waiting += m->c[i].e[j].nw;
    arpc_reply_cache_fini(&rc, cb_drop_waiter);
    assert_int_equal(waiting, P.dropped);
    for (uintptr_t id = 1; id < next_reply; id++)
        M_CHECK(freed[id] != 0);
    M_CHECK(P.stand_in_frees == P.stand_in_holds); /* every hold on the stand-in given back */
    for (int i = 0; i < M_CLIENTS; i++)
        while (m->c[i].n > 0)
            m_remove(&m->c[i], &m->c[i].e[0]);
    free(m);
    free(freed);
}

static void test_against_model(void **state)
{
    (void)state;
    run_model(false);
}

static void test_against_model_with_stand_ins(void **state)
{
    (void)state;
    run_model(true);
}

/* ---- out of memory ---- */

static bool same_books(struct arpc_reply_cache_stats a, struct arpc_reply_cache_stats b)
{
    return a.clients == b.clients && a.entries == b.entries && a.running == b.running &&
           a.bytes == b.bytes && a.hits_attached == b.hits_attached;
}

/* One scripted workload under an allocation budget: every refusal for want of memory must
 * leave the books as they were. Returns how many operations failed for want of memory. */
static int script_under_budget(struct arpc_reply_cache *rc)
{
    int failed = 0;
    struct arpc_reply_cache_stats before, after;
    for (uint64_t client = 1; client <= 90; client++) { /* grows the client table */
        uint64_t seqs = client == 1 ? 120 : 2;         /* grows one seq table */
        for (uint64_t seq = 1; seq <= seqs; seq++) {
            for (int dup = 0; dup < 2; dup++) {
                before = stats_of(rc);
                enum arpc_rc_verdict v = begin(rc, client, seq, 0, dup ? B : A, seq, 0);
                after = stats_of(rc);
                if (v == ARPC_RC_NOMEM) {
                    failed++;
                    assert_true(same_books(before, after));
                } else {
                    assert_int_equal(dup ? ARPC_RC_ATTACHED : ARPC_RC_NEW, v);
                }
                if (v != ARPC_RC_NEW)
                    break; /* no call to attach to */
            }
        }
    }
    for (uint64_t seq = 1; seq <= 100; seq++) { /* grows a seq table on restore */
        before = stats_of(rc);
        int err = arpc_reply_cache_restore(rc, 99, seq, R(1000 + seq), 1, 0);
        if (err == ARPC_ENOMEM) {
            failed++;
            assert_true(same_books(before, stats_of(rc)));
        } else {
            assert_int_equal(ARPC_OK, err);
        }
    }
    for (uint64_t client = 100; client <= 180; client++) {
        before = stats_of(rc);
        int err = arpc_reply_cache_restore(rc, client, 1, R(client), 1, 0);
        if (err == ARPC_ENOMEM) {
            failed++;
            assert_true(same_books(before, stats_of(rc)));
        } else {
            assert_int_equal(ARPC_OK, err);
        }
        before = stats_of(rc);
        err = arpc_reply_cache_restore_ack(rc, client + 100, 5, 0);
        if (err == ARPC_ENOMEM) {
            failed++;
            assert_true(same_books(before, stats_of(rc)));
        } else {
            assert_int_equal(ARPC_OK, err);
        }
    }
    return failed;
}

static void test_nomem(void **state)
{
    (void)state;
    test_alloc_install();
    probe_reset(hand_freed);
    for (long budget = 0;; budget++) {
        memset(hand_freed, 0, sizeof(hand_freed));
        atomic_store(&test_alloc_budget, budget);
        struct arpc_reply_cache rc;
        if (arpc_reply_cache_init(&rc, NULL, &OPS, &P) != ARPC_OK) {
            assert_int_equal(0, atomic_load(&test_alloc_live));
            continue;
        }
        int failed = script_under_budget(&rc);
        atomic_store(&test_alloc_budget, -1);
        arpc_reply_cache_fini(&rc, NULL);
        assert_int_equal(0, atomic_load(&test_alloc_live));
        if (failed == 0)
            break;
        assert_true(budget < 5000);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_new_attach_finish),
        cmocka_unit_test_no_leak(test_leave),
        cmocka_unit_test_no_leak(test_runner),
        cmocka_unit_test_no_leak(test_leave_same_xid_twice),
        cmocka_unit_test_no_leak(test_replay),
        cmocka_unit_test_no_leak(test_stale),
        cmocka_unit_test_no_leak(test_ack_frees_done),
        cmocka_unit_test_no_leak(test_ack_beyond_a_held_call),
        cmocka_unit_test_no_leak(test_ack_while_running),
        cmocka_unit_test_no_leak(test_logging_then_durable),
        cmocka_unit_test_no_leak(test_abort),
        cmocka_unit_test_no_leak(test_full),
        cmocka_unit_test_no_leak(test_client_share),
        cmocka_unit_test_no_leak(test_identity_share),
        cmocka_unit_test_no_leak(test_expiry),
        cmocka_unit_test_no_leak(test_forget),
        cmocka_unit_test_no_leak(test_goodbye_floor_covers_calls_aborted_before_they_ran),
        cmocka_unit_test_no_leak(test_expiry_after_a_comeback_keeps_the_floor),
        cmocka_unit_test_no_leak(test_knows),
        cmocka_unit_test_no_leak(test_goodbye_settles),
        cmocka_unit_test_no_leak(test_call_after_goodbye_kept),
        cmocka_unit_test_no_leak(test_call_after_goodbye_kept_among_goodbyes),
        cmocka_unit_test_no_leak(test_gone_bounded),
        cmocka_unit_test_no_leak(test_gone_fair_by_owner),
        cmocka_unit_test_no_leak(test_goodbyes_of_one_identity_spare_another),
        cmocka_unit_test_no_leak(test_gone_iterates_oldest_first),
        cmocka_unit_test_no_leak(test_gone_against_model),
        cmocka_unit_test_no_leak(test_restore),
        cmocka_unit_test_no_leak(test_restore_gone),
        cmocka_unit_test_no_leak(test_fini),
        cmocka_unit_test_no_leak(test_ring_wraps),
        cmocka_unit_test_no_leak(test_ring_outliers),
        cmocka_unit_test_no_leak(test_ring_grows),
        cmocka_unit_test_no_leak(test_ring_many_clients),
        cmocka_unit_test_no_leak(test_expire_in_slices),
        cmocka_unit_test_no_leak(test_against_model),
        cmocka_unit_test_no_leak(test_against_model_with_stand_ins),
        cmocka_unit_test_no_leak(test_nomem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
