/*
 * The reply cache's storage (core/reply_cache_store.h).
 *
 * Design notes
 * - client_id -> client is a u64 map, with the last client found remembered (a connection's
 *   calls all come from one client). A client's entries are in a ring indexed by seq & mask:
 *   its live seqs are nearly consecutive (from its ack up to its window), so most land in a
 *   slot of their own, found and freed without hashing. A seq whose slot is taken (a window
 *   wider than the ring, a call held below the ack, a seq far ahead) goes to a per-client
 *   u64 map, which lookups try only when it is not empty. The ring doubles when a slot is
 *   taken by a live entry while it is at least half full, up to RING_MAX_SLOTS; its growth
 *   counts in bytes (its first RING_SLOTS are in the client's cost).
 * - Clients sit on a doubly linked list in the order of their last request, oldest first; a
 *   request moves its client to the newest end. With now_ns never going back the list is
 *   also ordered by c_last_ns, which is what lets expiry pop from the oldest end and stop at
 *   the first client not idle long enough.
 * - Discard on ack: the ring's slots for (old ack, new ack] are walked (all of them at most
 *   once for a larger jump). The map, when not empty, is walked seq by seq while the range
 *   is no longer than its count; a larger jump iterates it instead, collecting the doomed
 *   entries on a list through e_next (the table must not change while it is iterated) and
 *   taking them out afterwards. Either way an ack costs at most about the client's ring and
 *   table, never the size of the jump.
 * - Only DONE entries go at the ack: RUNNING and LOGGING ones must still answer their
 *   waiters, and reply_cache.c drops them when they finish.
 * - Entries and waiters are recycled through bounded spare lists, so in steady state a call
 *   allocates nothing and a burst does not pin its peak memory.
 */
#include "core/reply_cache_store.h"

#include "arpc/error.h"
#include "base/alloc.h"

#define DEFAULT_MAX_BYTES ((size_t)128 << 20)
#define DEFAULT_IDLE_NS (10ull * 60 * 1000000000)
#define CLIENT_TABLE_SLOTS 64 /* a new client's seq table: u64_map's smallest */
#define RING_SLOTS 64         /* a new client's ring */
#define RING_MAX_SLOTS 4096   /* a wider window's outliers go to the table */

/* The tables hold each key at a load between 3/8 and 3/4: about two slots per key. */
#define ENTRY_COST (sizeof(struct arpc_rc_entry) + 2 * sizeof(struct arpc_u64_slot))
#define CLIENT_COST                                                                          \
    (sizeof(struct arpc_rc_client) + (CLIENT_TABLE_SLOTS + 2) * sizeof(struct arpc_u64_slot) + \
     RING_SLOTS * sizeof(struct arpc_rc_entry *))

size_t arpc_reply_cache_entry_cost(void) { return ENTRY_COST; }
size_t arpc_reply_cache_client_cost(void) { return CLIENT_COST; }

/* ---- spare lists ---- */

static void spare_fini(struct arpc_rc_spare *s)
{
    while (s->s_head != NULL) {
        struct arpc_rc_block *b = s->s_head;
        s->s_head = b->b_next;
        arpc_free(b);
    }
    s->s_count = 0;
}

void arpc_reply_cache_free_waiters(struct arpc_reply_cache *rc, struct arpc_rc_waiter *list)
{
    while (list != NULL) {
        struct arpc_rc_waiter *w = list;
        list = w->w_next;
        arpc_rc_spare_give(&rc->rc_spare_waiters, w);
    }
}

/* ---- entries and the books ---- */

/* Doubles c's ring (ARPC_OK), keeping every entry in it: two seqs in different slots
 * modulo n are in different slots modulo 2n. */
static int ring_grow(struct arpc_reply_cache *rc, struct arpc_rc_client *c)
{
    size_t n = c->c_ring_mask + 1;
    struct arpc_rc_entry **ring = arpc_calloc(2 * n, sizeof(*ring));
    if (ring == NULL)
        return ARPC_ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (c->c_ring[i] != NULL)
            ring[c->c_ring[i]->e_seq & (2 * n - 1)] = c->c_ring[i];
    arpc_free(c->c_ring);
    c->c_ring = ring;
    c->c_ring_mask = 2 * n - 1;
    arpc_rc_books_add(rc, c, n * sizeof(*ring));
    return ARPC_OK;
}

/* Puts e in its ring slot (true), growing the ring when it is worth it, or says no. */
static bool ring_put(struct arpc_reply_cache *rc, struct arpc_rc_client *c, struct arpc_rc_entry *e)
{
    struct arpc_rc_entry **slot = &c->c_ring[e->e_seq & c->c_ring_mask];
    if (*slot != NULL) {
        /* Only a live window wider than the ring pays for a larger one; a call held below
         * the ack, or a lone seq far ahead, stays in the table. */
        size_t n = c->c_ring_mask + 1;
        if ((*slot)->e_seq <= c->c_ack || n >= RING_MAX_SLOTS || 2 * c->c_nring < n ||
            ring_grow(rc, c) != ARPC_OK)
            return false;
        slot = &c->c_ring[e->e_seq & c->c_ring_mask];
        if (*slot != NULL)
            return false;
    }
    *slot = e;
    c->c_nring++;
    return true;
}

int arpc_rc_entry_add(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                      struct arpc_rc_entry *e)
{
    if (!ring_put(rc, c, e) && arpc_u64_map_put(&c->c_entries, e->e_seq, e) != ARPC_OK)
        return ARPC_ENOMEM;
    arpc_rc_count_state(rc, c, e->e_state, true);
    arpc_stat_inc(&rc->rc_gauges.g_entries);
    arpc_rc_books_add(rc, c, ENTRY_COST + e->e_reply_bytes);
    return ARPC_OK;
}

/* Counts e, already out of c's table and emptied by its caller, out of the books. */
static void entry_release(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                          struct arpc_rc_entry *e)
{
    arpc_rc_count_state(rc, c, e->e_state, false);
    arpc_stat_add(&rc->rc_gauges.g_entries, (uint64_t)-1);
    arpc_rc_books_freed(rc, c, ENTRY_COST + e->e_reply_bytes);
    arpc_rc_entry_recycle(rc, e);
}

struct arpc_rc_waiter *arpc_rc_entry_remove(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                                            struct arpc_rc_entry *e)
{
    struct arpc_rc_waiter *list = arpc_rc_take_waiters(e);
    struct arpc_rc_entry **slot = &c->c_ring[e->e_seq & c->c_ring_mask];
    if (*slot == e) {
        *slot = NULL;
        c->c_nring--;
    } else {
        arpc_u64_map_take(&c->c_entries, e->e_seq);
    }
    entry_release(rc, c, e);
    return list;
}

static void discard_done(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                         struct arpc_rc_entry *e)
{
    void *reply = e->e_reply;
    arpc_rc_entry_remove(rc, c, e); /* a DONE entry has no waiters */
    arpc_rc_free_reply(rc, reply);
}

/* Frees c's DONE entries with a seq in (lo, hi] that c acknowledged. Every DONE entry lies
 * above lo or is not acknowledged (the invariant), so a ring slot holding one at or below lo
 * is passed over by the acked check. */
static void discard_acked(struct arpc_reply_cache *rc, struct arpc_rc_client *c, uint64_t lo, uint64_t hi)
{
    if (hi <= lo || arpc_rc_entry_count(c) == c->c_busy)
        return; /* nothing DONE to free */
    uint64_t span = hi - lo;
    uint64_t walk = span <= c->c_ring_mask ? span : c->c_ring_mask + 1;
    size_t gone = 0, gone_bytes = 0;
    for (uint64_t i = 1; i <= walk; i++) {
        struct arpc_rc_entry **slot = &c->c_ring[(lo + i) & c->c_ring_mask];
        struct arpc_rc_entry *e = *slot;
        if (e == NULL || e->e_seq > hi || e->e_state != ARPC_RC_DONE || !arpc_rc_acked(c, e->e_seq))
            continue;
        /* entry_remove's work for a DONE entry in the ring, its books summed once */
        *slot = NULL;
        gone++;
        gone_bytes += ENTRY_COST + e->e_reply_bytes;
        arpc_rc_free_reply(rc, e->e_reply);
        arpc_rc_entry_recycle(rc, e);
    }
    c->c_nring -= gone;
    arpc_stat_add(&rc->rc_gauges.g_entries, -(uint64_t)gone);
    arpc_rc_books_freed(rc, c, gone_bytes);
    size_t count = arpc_u64_map_count(&c->c_entries);
    if (count == 0)
        return;
    if (span <= count) {
        for (uint64_t i = 1; i <= span; i++) {
            struct arpc_rc_entry *e = arpc_u64_map_get(&c->c_entries, lo + i);
            if (e != NULL && e->e_state == ARPC_RC_DONE && arpc_rc_acked(c, lo + i))
                discard_done(rc, c, e);
        }
        return;
    }
    struct arpc_rc_entry *doomed = NULL;
    size_t pos = 0;
    uint64_t seq;
    void *val;
    while (arpc_u64_map_next(&c->c_entries, &pos, &seq, &val)) {
        struct arpc_rc_entry *e = val;
        if (seq > lo && seq <= hi && e->e_state == ARPC_RC_DONE && arpc_rc_acked(c, seq)) {
            e->e_next = doomed;
            doomed = e;
        }
    }
    while (doomed != NULL) {
        struct arpc_rc_entry *e = doomed;
        doomed = e->e_next;
        discard_done(rc, c, e);
    }
}

/* c's claim beyond its ack changed in cl (trim, add): its array's bytes move in the books. */
static void claim_books(struct arpc_reply_cache *rc, struct arpc_rc_client *c, size_t bytes_before)
{
    size_t now = arpc_ack_claim_bytes(&c->c_claim);
    if (now > bytes_before)
        arpc_rc_books_add(rc, c, now - bytes_before);
    else
        arpc_rc_books_sub(rc, c, bytes_before - now);
}

void arpc_rc_raise_ack(struct arpc_reply_cache *rc, struct arpc_rc_client *c, uint64_t ack)
{
    if (ack <= c->c_ack)
        return;
    uint64_t old = c->c_ack;
    c->c_ack = ack;
    if (c->c_claim.ac_high != 0) {
        size_t bytes = arpc_ack_claim_bytes(&c->c_claim);
        arpc_ack_claim_trim(&c->c_claim, ack);
        claim_books(rc, c, bytes);
    }
    discard_acked(rc, c, old, ack);
}

int arpc_rc_ack_beyond(struct arpc_reply_cache *rc, struct arpc_rc_client *c, uint64_t high,
                       const uint64_t *waiting, uint32_t n, bool *grew)
{
    uint64_t freed[ARPC_ACK_WAITING_MAX], old_high = c->c_claim.ac_high;
    uint32_t nfreed;
    size_t bytes = arpc_ack_claim_bytes(&c->c_claim);
    int rc_add = arpc_ack_claim_add(&c->c_claim, c->c_ack, high, waiting, n, freed, &nfreed);
    if (rc_add != ARPC_OK)
        return rc_add;
    *grew = c->c_claim.ac_high > old_high || nfreed != 0;
    claim_books(rc, c, bytes);
    /* Newly acknowledged: the seqs above the old claim's high, and the ones it waited for. */
    discard_acked(rc, c, old_high > c->c_ack ? old_high : c->c_ack, c->c_claim.ac_high);
    for (uint32_t i = 0; i < nfreed; i++) {
        struct arpc_rc_entry *e = arpc_rc_entry_get(c, freed[i]);
        if (e != NULL && e->e_state == ARPC_RC_DONE)
            discard_done(rc, c, e);
    }
    return ARPC_OK;
}

/* ---- clients ---- */

struct arpc_rc_client *arpc_rc_client_new(struct arpc_reply_cache *rc, uint64_t client_id,
                                          uint64_t ack, uint64_t now_ns)
{
    struct arpc_rc_client *c = arpc_malloc(sizeof(*c));
    if (c == NULL)
        return NULL;
    *c = (struct arpc_rc_client){.c_id = client_id, .c_ack = ack, .c_last_ns = now_ns,
                                 .c_ring_mask = RING_SLOTS - 1};
    c->c_ring = arpc_calloc(RING_SLOTS, sizeof(*c->c_ring));
    if (c->c_ring == NULL || arpc_u64_map_init(&c->c_entries, CLIENT_TABLE_SLOTS / 2) != ARPC_OK) {
        arpc_free(c->c_ring);
        arpc_free(c);
        return NULL;
    }
    if (arpc_u64_map_put(&rc->rc_clients, client_id, c) != ARPC_OK) {
        arpc_u64_map_fini(&c->c_entries);
        arpc_free(c->c_ring);
        arpc_free(c);
        return NULL;
    }
    arpc_rc_list_push_newest(rc, c);
    arpc_stat_inc(&rc->rc_gauges.g_clients);
    arpc_rc_books_add(rc, c, CLIENT_COST);
    return c;
}

int arpc_rc_client_own(struct arpc_reply_cache *rc, struct arpc_rc_client *c, uint64_t owner)
{
    if (owner == 0 || c->c_owner != NULL)
        return ARPC_OK;
    struct arpc_rc_owner *o = arpc_u64_map_get(&rc->rc_owners, owner);
    if (o == NULL) {
        o = arpc_malloc(sizeof(*o));
        if (o == NULL)
            return ARPC_ENOMEM;
        *o = (struct arpc_rc_owner){.o_id = owner};
        if (arpc_u64_map_put(&rc->rc_owners, owner, o) != ARPC_OK) {
            arpc_free(o);
            return ARPC_ENOMEM;
        }
    }
    o->o_clients++;
    o->o_bytes += c->c_bytes;
    c->c_owner = o;
    return ARPC_OK;
}

/* c no longer counts toward its owner's share; the owner goes with its last client. */
static void client_disown(struct arpc_reply_cache *rc, struct arpc_rc_client *c)
{
    struct arpc_rc_owner *o = c->c_owner;
    if (o == NULL)
        return;
    o->o_bytes -= c->c_bytes;
    c->c_owner = NULL;
    if (--o->o_clients == 0) {
        arpc_u64_map_take(&rc->rc_owners, o->o_id);
        arpc_free(o);
    }
}

struct drain_ctx {
    struct arpc_reply_cache *rc;
    struct arpc_rc_client *c;
    void (*drop_waiter)(void *ctx, struct arpc_rc_waiter *w);
};

static void drain_entry(void *val, void *arg)
{
    struct drain_ctx *d = arg;
    struct arpc_rc_entry *e = val;
    struct arpc_rc_waiter *list = arpc_rc_take_waiters(e);
    for (struct arpc_rc_waiter *w = list; w != NULL && d->drop_waiter != NULL; w = w->w_next)
        d->drop_waiter(d->rc->rc_ctx, w);
    arpc_reply_cache_free_waiters(d->rc, list);
    if (e->e_state != ARPC_RC_RUNNING)
        arpc_rc_free_reply(d->rc, e->e_reply);
    entry_release(d->rc, d->c, e);
}

void arpc_rc_client_free(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                         void (*drop_waiter)(void *ctx, struct arpc_rc_waiter *w))
{
    struct drain_ctx d = {rc, c, drop_waiter};
    for (size_t i = 0; i <= c->c_ring_mask; i++)
        if (c->c_ring[i] != NULL)
            drain_entry(c->c_ring[i], &d);
    arpc_free(c->c_ring);
    arpc_u64_map_drain(&c->c_entries, drain_entry, &d);
    arpc_u64_map_fini(&c->c_entries);
    arpc_u64_map_take(&rc->rc_clients, c->c_id);
    if (rc->rc_last == c)
        rc->rc_last = NULL;
    arpc_rc_list_unlink(rc, c);
    arpc_stat_add(&rc->rc_gauges.g_clients, (uint64_t)-1);
    arpc_rc_books_sub(rc, c, arpc_ack_claim_bytes(&c->c_claim));
    arpc_ack_claim_fini(&c->c_claim);
    arpc_rc_books_sub(rc, c, CLIENT_COST + (c->c_ring_mask + 1 - RING_SLOTS) * sizeof(*c->c_ring));
    client_disown(rc, c);
    rc->rc_goodbyes -= c->c_goodbye;
    arpc_free(c);
}

/* ---- the whole cache ---- */

/* Calls fn(e, ctx) for every entry of c: those in its ring, then those in its map. */
static void client_each_entry(struct arpc_rc_client *c, void (*fn)(struct arpc_rc_entry *e, void *ctx), void *ctx)
{
    for (size_t i = 0; i <= c->c_ring_mask; i++)
        if (c->c_ring[i] != NULL)
            fn(c->c_ring[i], ctx);
    size_t pos = 0;
    uint64_t seq;
    void *e;
    while (arpc_u64_map_next(&c->c_entries, &pos, &seq, &e))
        fn(e, ctx);
}

struct each_waiter_ctx {
    void (*fn)(void *ctx, struct arpc_rc_waiter *w);
    void *ctx;
};

static void each_entry_waiter(struct arpc_rc_entry *e, void *arg)
{
    struct each_waiter_ctx *ew = arg;
    for (struct arpc_rc_waiter *w = e->e_waiters; w != NULL; w = w->w_next)
        ew->fn(ew->ctx, w);
}

struct running_ctx {
    uint64_t *seqs;
    size_t max, n;
};

static void note_running(struct arpc_rc_entry *e, void *arg)
{
    struct running_ctx *r = arg;
    if (e->e_state == ARPC_RC_RUNNING && r->n++ < r->max)
        r->seqs[r->n - 1] = e->e_seq;
}

size_t arpc_reply_cache_running(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t *seqs, size_t max)
{
    struct arpc_rc_client *c = arpc_rc_client_get(rc, client_id);
    struct running_ctx r = {seqs, max, 0};
    if (c != NULL && c->c_busy != 0)
        client_each_entry(c, note_running, &r);
    return r.n;
}

void arpc_reply_cache_each_waiter(struct arpc_reply_cache *rc,
                                  void (*fn)(void *ctx, struct arpc_rc_waiter *w), void *ctx)
{
    struct each_waiter_ctx ew = {fn, ctx};
    for (struct arpc_rc_client *c = rc->rc_oldest; c != NULL; c = c->c_newer)
        if (c->c_busy != 0) /* only RUNNING and LOGGING entries have waiters */
            client_each_entry(c, each_entry_waiter, &ew);
}

int arpc_reply_cache_init(struct arpc_reply_cache *rc, const struct arpc_reply_cache_options *o,
                          const struct arpc_reply_cache_ops *ops, void *ctx)
{
    *rc = (struct arpc_reply_cache){.rc_ctx = ctx};
    if (ops != NULL)
        rc->rc_ops = *ops;
    rc->rc_max_bytes = o != NULL && o->max_bytes != 0 ? o->max_bytes : DEFAULT_MAX_BYTES;
    rc->rc_max_client_bytes = o != NULL && o->max_client_bytes != 0 ? o->max_client_bytes : rc->rc_max_bytes / 2;
    rc->rc_idle_ns = o != NULL && o->idle_expiry_ns != 0 ? o->idle_expiry_ns : DEFAULT_IDLE_NS;
    if (arpc_u64_map_init(&rc->rc_owners, 16) != ARPC_OK)
        return ARPC_ENOMEM;
    if (arpc_u64_map_init(&rc->rc_clients, 64) != ARPC_OK) {
        arpc_u64_map_fini(&rc->rc_owners);
        return ARPC_ENOMEM;
    }
    return ARPC_OK;
}

void arpc_reply_cache_fini(struct arpc_reply_cache *rc,
                           void (*drop_waiter)(void *ctx, struct arpc_rc_waiter *w))
{
    while (rc->rc_oldest != NULL)
        arpc_rc_client_free(rc, rc->rc_oldest, drop_waiter);
    arpc_u64_map_fini(&rc->rc_clients);
    arpc_u64_map_fini(&rc->rc_owners); /* (empty: each went with its last client) */
    arpc_rc_gone_fini(&rc->rc_gone);
    spare_fini(&rc->rc_spare_entries);
    spare_fini(&rc->rc_spare_waiters);
}

void arpc_reply_cache_stats(const struct arpc_reply_cache *rc, struct arpc_reply_cache_stats *out)
{
    *out = rc->rc_stats;
    out->clients = (size_t)arpc_stat_get(&rc->rc_gauges.g_clients);
    out->entries = (size_t)arpc_stat_get(&rc->rc_gauges.g_entries);
    out->bytes = (size_t)arpc_stat_get(&rc->rc_gauges.g_bytes);
}
