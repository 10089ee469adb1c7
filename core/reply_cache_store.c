/*
 * The reply cache's storage (core/reply_cache_store.h).
 *
 * Design notes
 * - Two levels of u64 map: client_id -> client, and per client seq -> entry.
 * - Clients sit on a doubly linked list in the order of their last request, oldest first; a
 *   request moves its client to the newest end. With now_ns never going back the list is
 *   also ordered by c_last_ns, which is what lets expiry pop from the oldest end and stop at
 *   the first client not idle long enough.
 * - Discard on ack: acks usually move by one per call, so the range (old ack, new ack] is
 *   walked seq by seq while it is no longer than the client's entry count; a larger jump
 *   iterates the table instead, collecting the doomed entries on a list through e_next
 *   (the table must not change while it is iterated) and taking them out afterwards.
 *   Either way an ack costs at most about the client's table, never the size of the jump.
 * - Only DONE entries go at the ack: RUNNING and LOGGING ones must still answer their
 *   waiters, and reply_cache.c drops them when they finish.
 * - Entries and waiters are recycled through bounded spare lists, so in steady state a call
 *   allocates nothing and a burst does not pin its peak memory.
 */
#include "core/reply_cache_store.h"

#include "arpc/error.h"
#include "base/alloc.h"

#define DEFAULT_MAX_BYTES ((size_t)64 << 20)
#define DEFAULT_IDLE_NS (10ull * 60 * 1000000000)
#define SPARE_MAX 1024        /* entries, and waiters, kept for reuse */
#define CLIENT_TABLE_SLOTS 64 /* a new client's seq table: u64_map's smallest */

/* The tables hold each key at a load between 3/8 and 3/4: about two slots per key. */
#define ENTRY_COST (sizeof(struct arpc_rc_entry) + 2 * sizeof(struct arpc_u64_slot))
#define CLIENT_COST                                                                          \
    (sizeof(struct arpc_rc_client) + (CLIENT_TABLE_SLOTS + 2) * sizeof(struct arpc_u64_slot))

size_t arpc_reply_cache_entry_cost(void) { return ENTRY_COST; }
size_t arpc_reply_cache_client_cost(void) { return CLIENT_COST; }

/* ---- spare lists ---- */

/* What a spare block holds: blocks come from arpc_malloc, so storing this in one is
 * allowed, and its next user's initialisation makes it an entry or a waiter again. */
struct arpc_rc_block {
    struct arpc_rc_block *b_next;
};

/* A block of size bytes: a spare one, else a new one; NULL when out of memory. */
static void *spare_take(struct arpc_rc_spare *s, size_t size)
{
    struct arpc_rc_block *b = s->s_head;
    if (b == NULL)
        return arpc_malloc(size);
    s->s_head = b->b_next;
    s->s_count--;
    return b;
}

static void spare_give(struct arpc_rc_spare *s, void *block)
{
    if (s->s_count >= SPARE_MAX) {
        arpc_free(block);
        return;
    }
    struct arpc_rc_block *b = block;
    b->b_next = s->s_head;
    s->s_head = b;
    s->s_count++;
}

static void spare_fini(struct arpc_rc_spare *s)
{
    while (s->s_head != NULL) {
        struct arpc_rc_block *b = s->s_head;
        s->s_head = b->b_next;
        arpc_free(b);
    }
    s->s_count = 0;
}

struct arpc_rc_entry *arpc_rc_entry_new(struct arpc_reply_cache *rc, uint64_t seq)
{
    struct arpc_rc_entry *e = spare_take(&rc->rc_spare_entries, sizeof(*e));
    if (e == NULL)
        return NULL;
    *e = (struct arpc_rc_entry){.e_seq = seq, .e_state = ARPC_RC_RUNNING};
    e->e_last = &e->e_waiters;
    return e;
}

void arpc_rc_entry_recycle(struct arpc_reply_cache *rc, struct arpc_rc_entry *e)
{
    spare_give(&rc->rc_spare_entries, e);
}

struct arpc_rc_waiter *arpc_rc_waiter_new(struct arpc_reply_cache *rc, void *conn, uint64_t xid)
{
    struct arpc_rc_waiter *w = spare_take(&rc->rc_spare_waiters, sizeof(*w));
    if (w != NULL)
        *w = (struct arpc_rc_waiter){.w_conn = conn, .w_xid = xid};
    return w;
}

void arpc_reply_cache_free_waiters(struct arpc_reply_cache *rc, struct arpc_rc_waiter *list)
{
    while (list != NULL) {
        struct arpc_rc_waiter *w = list;
        list = w->w_next;
        spare_give(&rc->rc_spare_waiters, w);
    }
}

/* ---- entries and the books ---- */

/* Counts an entry in state into (in = true) or out of the busy counts. */
static void count_state(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                        enum arpc_rc_state state, bool in)
{
    if (state == ARPC_RC_DONE)
        return;
    size_t *n = state == ARPC_RC_RUNNING ? &rc->rc_stats.running : &rc->rc_stats.logging;
    if (in) {
        c->c_busy++;
        (*n)++;
    } else {
        c->c_busy--;
        (*n)--;
    }
}

int arpc_rc_entry_add(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                      struct arpc_rc_entry *e)
{
    if (arpc_u64_map_put(&c->c_entries, e->e_seq, e) != ARPC_OK)
        return ARPC_ENOMEM;
    count_state(rc, c, e->e_state, true);
    rc->rc_stats.entries++;
    rc->rc_stats.bytes += ENTRY_COST + e->e_reply_bytes;
    return ARPC_OK;
}

void arpc_rc_entry_move(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                        struct arpc_rc_entry *e, enum arpc_rc_state state)
{
    count_state(rc, c, e->e_state, false);
    e->e_state = state;
    count_state(rc, c, e->e_state, true);
}

void arpc_rc_entry_hold(struct arpc_reply_cache *rc, struct arpc_rc_entry *e, void *reply,
                        size_t reply_bytes)
{
    e->e_reply = reply;
    e->e_reply_bytes = reply_bytes;
    rc->rc_stats.bytes += reply_bytes;
}

/* Counts e, already out of c's table and emptied by its caller, out of the books. */
static void entry_release(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                          struct arpc_rc_entry *e)
{
    count_state(rc, c, e->e_state, false);
    rc->rc_stats.entries--;
    rc->rc_stats.bytes -= ENTRY_COST + e->e_reply_bytes;
    arpc_rc_entry_recycle(rc, e);
}

struct arpc_rc_waiter *arpc_rc_entry_remove(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                                            struct arpc_rc_entry *e)
{
    struct arpc_rc_waiter *list = arpc_rc_take_waiters(e);
    arpc_u64_map_take(&c->c_entries, e->e_seq);
    entry_release(rc, c, e);
    return list;
}

static void free_reply(struct arpc_reply_cache *rc, void *reply)
{
    if (rc->rc_ops.free_reply != NULL)
        rc->rc_ops.free_reply(rc->rc_ctx, reply);
}

static void discard_done(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                         struct arpc_rc_entry *e)
{
    void *reply = e->e_reply;
    arpc_rc_entry_remove(rc, c, e); /* a DONE entry has no waiters */
    free_reply(rc, reply);
}

void arpc_rc_raise_ack(struct arpc_reply_cache *rc, struct arpc_rc_client *c, uint64_t ack)
{
    if (ack <= c->c_ack)
        return;
    uint64_t old = c->c_ack, span = ack - old;
    c->c_ack = ack;
    size_t count = arpc_u64_map_count(&c->c_entries);
    if (count == c->c_busy)
        return; /* nothing DONE to free */
    if (span <= count) {
        for (uint64_t i = 1; i <= span; i++) {
            struct arpc_rc_entry *e = arpc_u64_map_get(&c->c_entries, old + i);
            if (e != NULL && e->e_state == ARPC_RC_DONE)
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
        if (seq <= ack && e->e_state == ARPC_RC_DONE) {
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

/* ---- clients ---- */

static void list_unlink(struct arpc_reply_cache *rc, struct arpc_rc_client *c)
{
    *(c->c_older ? &c->c_older->c_newer : &rc->rc_oldest) = c->c_newer;
    *(c->c_newer ? &c->c_newer->c_older : &rc->rc_newest) = c->c_older;
}

static void list_push_newest(struct arpc_reply_cache *rc, struct arpc_rc_client *c)
{
    c->c_newer = NULL;
    c->c_older = rc->rc_newest;
    *(rc->rc_newest ? &rc->rc_newest->c_newer : &rc->rc_oldest) = c;
    rc->rc_newest = c;
}

void arpc_rc_touch(struct arpc_reply_cache *rc, struct arpc_rc_client *c, uint64_t now_ns)
{
    c->c_last_ns = now_ns;
    if (rc->rc_newest != c) {
        list_unlink(rc, c);
        list_push_newest(rc, c);
    }
}

struct arpc_rc_client *arpc_rc_client_new(struct arpc_reply_cache *rc, uint64_t client_id,
                                          uint64_t ack, uint64_t now_ns)
{
    struct arpc_rc_client *c = arpc_malloc(sizeof(*c));
    if (c == NULL)
        return NULL;
    *c = (struct arpc_rc_client){.c_id = client_id, .c_ack = ack, .c_last_ns = now_ns};
    if (arpc_u64_map_init(&c->c_entries, CLIENT_TABLE_SLOTS / 2) != ARPC_OK) {
        arpc_free(c);
        return NULL;
    }
    if (arpc_u64_map_put(&rc->rc_clients, client_id, c) != ARPC_OK) {
        arpc_u64_map_fini(&c->c_entries);
        arpc_free(c);
        return NULL;
    }
    list_push_newest(rc, c);
    rc->rc_stats.clients++;
    rc->rc_stats.bytes += CLIENT_COST;
    return c;
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
        free_reply(d->rc, e->e_reply);
    entry_release(d->rc, d->c, e);
}

void arpc_rc_client_free(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                         void (*drop_waiter)(void *ctx, struct arpc_rc_waiter *w))
{
    struct drain_ctx d = {rc, c, drop_waiter};
    arpc_u64_map_drain(&c->c_entries, drain_entry, &d);
    arpc_u64_map_fini(&c->c_entries);
    arpc_u64_map_take(&rc->rc_clients, c->c_id);
    list_unlink(rc, c);
    rc->rc_stats.clients--;
    rc->rc_stats.bytes -= CLIENT_COST;
    rc->rc_goodbyes -= c->c_goodbye;
    arpc_free(c);
}

/* ---- the whole cache ---- */

int arpc_reply_cache_init(struct arpc_reply_cache *rc, const struct arpc_reply_cache_options *o,
                          const struct arpc_reply_cache_ops *ops, void *ctx)
{
    *rc = (struct arpc_reply_cache){.rc_ctx = ctx};
    if (ops != NULL)
        rc->rc_ops = *ops;
    rc->rc_max_bytes = o != NULL && o->max_bytes != 0 ? o->max_bytes : DEFAULT_MAX_BYTES;
    rc->rc_idle_ns = o != NULL && o->idle_expiry_ns != 0 ? o->idle_expiry_ns : DEFAULT_IDLE_NS;
    return arpc_u64_map_init(&rc->rc_clients, 64);
}

void arpc_reply_cache_fini(struct arpc_reply_cache *rc,
                           void (*drop_waiter)(void *ctx, struct arpc_rc_waiter *w))
{
    while (rc->rc_oldest != NULL)
        arpc_rc_client_free(rc, rc->rc_oldest, drop_waiter);
    arpc_u64_map_fini(&rc->rc_clients);
    spare_fini(&rc->rc_spare_entries);
    spare_fini(&rc->rc_spare_waiters);
}

void arpc_reply_cache_stats(const struct arpc_reply_cache *rc, struct arpc_reply_cache_stats *out)
{
    *out = rc->rc_stats;
}
