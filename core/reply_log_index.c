/*
 * The reply log's live index (core/reply_log_index.h).
 *
 * Design notes
 * - A client's live replies are an array sorted by seq with a moving head: replies mostly
 *   arrive in seq order (appended at the end) and acks drop them from the front (the head
 *   moves), so both are O(1) in the common case; an out-of-order reply is placed by binary
 *   search and a shift, bounded by the client's window of calls in flight.
 * - apply is all or nothing: every allocation it may need (the client, a slot in its array,
 *   a slot in the effect list) is made before anything changes, so a record refused for
 *   ENOMEM leaves the index describing exactly the records before it.
 * - "Is this reply's effect listed?" must flip for every live reply at each STATE; a
 *   generation number makes that O(1): a reply remembers the generation its effect was
 *   listed in, and a STATE starts a new one.
 */
#include "core/reply_log_index.h"

#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"

#define ACK_RECORD_SIZE (ARPC_LOG_RECORD_HEAD + ARPC_LOG_ACK_PAYLOAD)
#define GOODBYE_RECORD_SIZE (ARPC_LOG_RECORD_HEAD + ARPC_LOG_GOODBYE_OWNED_PAYLOAD) /* the larger kind */
#define REPLIES_MIN_CAP 8
#define EFFECTS_MIN_CAP 64
#define SHRINK_MIN_CAP 64 /* arrays at least this big give memory back when 1/8 used */

int arpc_log_index_init(struct arpc_log_index *ix)
{
    memset(ix, 0, sizeof(*ix));
    ix->ix_gen = 1;
    return arpc_u64_map_init(&ix->ix_clients, 16);
}

static void client_free(void *val, void *arg)
{
    (void)arg;
    struct arpc_log_client *c = val;
    arpc_free(c->c_replies);
    arpc_ack_claim_fini(&c->c_claim);
    arpc_free(c);
}

void arpc_log_index_fini(struct arpc_log_index *ix)
{
    arpc_u64_map_drain(&ix->ix_clients, client_free, NULL);
    arpc_u64_map_fini(&ix->ix_clients);
    arpc_free(ix->ix_effects);
    ix->ix_effects = NULL;
    ix->ix_neffects = ix->ix_effects_cap = 0;
    arpc_rc_gone_fini(&ix->ix_gone);
}

/* ---- accounting ---- */

uint64_t arpc_log_index_live_bytes(const struct arpc_log_index *ix)
{
    return ARPC_LOG_HEADER_SIZE + (ix->ix_has_state ? ix->ix_state.p_size : 0) + ix->ix_effect_bytes +
           ix->ix_unlisted_bytes + (uint64_t)arpc_u64_map_count(&ix->ix_clients) * ACK_RECORD_SIZE +
           (uint64_t)arpc_rc_gone_count(&ix->ix_gone) * GOODBYE_RECORD_SIZE + ix->ix_claim_bytes;
}

/* The ACK_BEYOND record a snapshot writes for c's claim (0: none). */
static uint64_t claim_record_size(const struct arpc_log_client *c)
{
    if (c->c_claim.ac_high <= c->c_ack)
        return 0;
    return ARPC_LOG_RECORD_HEAD + ARPC_LOG_ACK_BEYOND_FIXED + 8 * (uint64_t)c->c_claim.ac_n;
}

/* A listed reply's bytes are counted with the effects; the others on their own. */
static void count_reply(struct arpc_log_index *ix, const struct arpc_log_live_reply *r, bool add)
{
    if (arpc_log_index_listed(ix, r))
        return;
    if (add)
        ix->ix_unlisted_bytes += r->r_pos.p_size;
    else
        ix->ix_unlisted_bytes -= r->r_pos.p_size;
}

/* ---- a client's replies ---- */

/* Doubles the array *items of *cap elements of elem_size bytes (or makes min_cap of them). */
static int array_grow(void **items, size_t *cap, size_t elem_size, size_t min_cap)
{
    size_t n = *cap ? *cap * 2 : min_cap;
    void *grown = arpc_realloc(*items, n * elem_size);
    if (grown == NULL)
        return ARPC_ENOMEM;
    *items = grown;
    *cap = n;
    return ARPC_OK;
}

/* Room for one more reply at the end of c's array. */
static int replies_reserve(struct arpc_log_client *c)
{
    if (c->c_len < c->c_cap)
        return ARPC_OK;
    if (c->c_head > 0) { /* slide the live part to the front: no allocation */
        memmove(c->c_replies, c->c_replies + c->c_head, (c->c_len - c->c_head) * sizeof(*c->c_replies));
        c->c_len -= c->c_head;
        c->c_head = 0;
        return ARPC_OK;
    }
    return array_grow((void **)&c->c_replies, &c->c_cap, sizeof(*c->c_replies), REPLIES_MIN_CAP);
}

/* Gives back most of an array a burst grew and acks emptied (best effort). */
static void replies_shrink(struct arpc_log_client *c)
{
    size_t live = c->c_len - c->c_head;
    if (c->c_cap < SHRINK_MIN_CAP || live > c->c_cap / 8)
        return;
    memmove(c->c_replies, c->c_replies + c->c_head, live * sizeof(*c->c_replies));
    c->c_head = 0;
    c->c_len = live;
    struct arpc_log_live_reply *r = arpc_realloc(c->c_replies, (c->c_cap / 2) * sizeof(*r));
    if (r != NULL) {
        c->c_replies = r;
        c->c_cap /= 2;
    }
}

static void raise_ack(struct arpc_log_index *ix, struct arpc_log_client *c, uint64_t ack)
{
    if (ack <= c->c_ack)
        return;
    if (c->c_claim.ac_high != 0) {
        ix->ix_claim_bytes -= claim_record_size(c);
        arpc_ack_claim_trim(&c->c_claim, ack);
        c->c_ack = ack;
        ix->ix_claim_bytes += claim_record_size(c);
    }
    c->c_ack = ack;
    while (c->c_head < c->c_len && c->c_replies[c->c_head].r_seq <= ack)
        count_reply(ix, &c->c_replies[c->c_head++], false);
    if (c->c_head == c->c_len)
        c->c_head = c->c_len = 0;
    replies_shrink(c);
}

/* First index in [c_head, c_len) whose seq is >= seq. */
static size_t replies_lower_bound(const struct arpc_log_client *c, uint64_t seq)
{
    size_t lo = c->c_head, hi = c->c_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->c_replies[mid].r_seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Keeps r (seq > c_ack); room was reserved. */
static void replies_insert(struct arpc_log_index *ix, struct arpc_log_client *c, struct arpc_log_live_reply r)
{
    size_t at = c->c_len;
    if (c->c_len > c->c_head && c->c_replies[c->c_len - 1].r_seq >= r.r_seq) {
        at = replies_lower_bound(c, r.r_seq);
        if (c->c_replies[at].r_seq == r.r_seq) { /* logged again: the later record wins */
            count_reply(ix, &c->c_replies[at], false);
            c->c_replies[at] = r;
            count_reply(ix, &r, true);
            return;
        }
        memmove(c->c_replies + at + 1, c->c_replies + at, (c->c_len - at) * sizeof(r));
    }
    c->c_replies[at] = r;
    c->c_len++;
    count_reply(ix, &r, true);
}

/* ---- clients and effects ---- */

static struct arpc_log_client *client_get(struct arpc_log_index *ix, uint64_t id, bool *created)
{
    struct arpc_log_client *c = arpc_u64_map_get(&ix->ix_clients, id);
    *created = false;
    if (c != NULL)
        return c;
    c = arpc_calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->c_id = id;
    c->c_ack = arpc_rc_gone_floor(&ix->ix_gone, id); /* 0 unless it said goodbye: see client_back */
    c->c_floor = c->c_ack;
    if (arpc_u64_map_put(&ix->ix_clients, id, c) != ARPC_OK) {
        arpc_free(c);
        return NULL;
    }
    *created = true;
    return c;
}

/* A client just created is known again: it leaves the gone (its ack carries its floor).
 * Called once nothing can fail any more, so a refused record leaves the floor in place. */
static void client_back(struct arpc_log_index *ix, const struct arpc_log_client *c, bool created)
{
    if (created && c->c_ack != 0)
        arpc_rc_gone_take(&ix->ix_gone, c->c_id);
}

static void client_forget(struct arpc_log_index *ix, uint64_t id)
{
    struct arpc_log_client *c = arpc_u64_map_take(&ix->ix_clients, id);
    if (c == NULL)
        return;
    for (size_t i = c->c_head; i < c->c_len; i++)
        count_reply(ix, &c->c_replies[i], false);
    ix->ix_claim_bytes -= claim_record_size(c);
    client_free(c, NULL);
}

static int effects_reserve(struct arpc_log_index *ix)
{
    if (ix->ix_neffects < ix->ix_effects_cap)
        return ARPC_OK;
    return array_grow((void **)&ix->ix_effects, &ix->ix_effects_cap, sizeof(*ix->ix_effects), EFFECTS_MIN_CAP);
}

static void effects_push(struct arpc_log_index *ix, const struct arpc_log_view *v, struct arpc_log_pos pos)
{
    ix->ix_effects[ix->ix_neffects++] = (struct arpc_log_effect){
        .e_client_id = v->v_client_id, .e_seq = v->v_seq, .e_pos = pos};
    ix->ix_effect_bytes += pos.p_size;
}

static void apply_state(struct arpc_log_index *ix, struct arpc_log_pos pos)
{
    ix->ix_has_state = true;
    ix->ix_state = pos;
    ix->ix_neffects = 0;
    ix->ix_effect_bytes = 0;
    if (ix->ix_effects_cap > SHRINK_MIN_CAP) { /* a checkpoint is the moment to give it back */
        arpc_free(ix->ix_effects);
        ix->ix_effects = NULL;
        ix->ix_effects_cap = 0;
    }
    /* Replies whose effects were listed now count on their own. */
    struct arpc_log_client *c;
    for (size_t it = 0; (c = arpc_log_index_next_client(ix, &it)) != NULL;)
        for (size_t i = c->c_head; i < c->c_len; i++)
            if (arpc_log_index_listed(ix, &c->c_replies[i]))
                ix->ix_unlisted_bytes += c->c_replies[i].r_pos.p_size;
    ix->ix_gen++;
}

static int apply_reply(struct arpc_log_index *ix, const struct arpc_log_view *v, struct arpc_log_pos pos)
{
    bool has_effect = v->v_data_len > 0;
    if (has_effect && effects_reserve(ix) != ARPC_OK)
        return ARPC_ENOMEM;
    if (v->v_client_id == 0) { /* an effect whose reply need not be kept */
        if (has_effect)
            effects_push(ix, v, pos);
        return ARPC_OK;
    }
    bool created;
    struct arpc_log_client *c = client_get(ix, v->v_client_id, &created);
    if (c == NULL)
        return ARPC_ENOMEM;
    /* (A reply its client acknowledged beyond its ack before it was made: a call it gave up
     * on, logged for its effect.) */
    bool live = v->v_seq > c->c_ack && v->v_seq > v->v_ack &&
                !arpc_ack_claim_covers(&c->c_claim, c->c_ack, v->v_seq);
    if (live && replies_reserve(c) != ARPC_OK) {
        if (created)
            client_forget(ix, v->v_client_id);
        return ARPC_ENOMEM;
    }
    /* Nothing below fails. */
    client_back(ix, c, created);
    raise_ack(ix, c, v->v_ack);
    if (has_effect)
        effects_push(ix, v, pos);
    if (live)
        replies_insert(ix, c, (struct arpc_log_live_reply){
                                  .r_seq = v->v_seq, .r_pos = pos, .r_effect_gen = has_effect ? ix->ix_gen : 0});
    return ARPC_OK;
}

/* ACK_BEYOND: the claim is added to the client's, and the replies it covers go. */
static int apply_ack_beyond(struct arpc_log_index *ix, const struct arpc_log_view *v)
{
    bool created;
    struct arpc_log_client *c = client_get(ix, v->v_client_id, &created);
    if (c == NULL)
        return ARPC_ENOMEM;
    uint64_t waiting[ARPC_ACK_WAITING_MAX];
    uint32_t n = v->v_data_len / 8, nfreed; /* the decoder or the writer checked the list */
    arpc_frame_ack_list_load(waiting, v->v_data, n);
    uint64_t ack = v->v_ack > c->c_ack ? v->v_ack : c->c_ack, before = claim_record_size(c);
    /* (Which seqs it stopped waiting for is not needed: every reply is looked at below.) */
    int rc = arpc_ack_claim_add(&c->c_claim, ack, v->v_seq, waiting, n, NULL, &nfreed);
    if (rc != ARPC_OK) {
        if (created)
            client_forget(ix, v->v_client_id);
        return rc;
    }
    /* Nothing below fails. */
    ix->ix_claim_bytes += claim_record_size(c) - before;
    client_back(ix, c, created);
    raise_ack(ix, c, v->v_ack);
    size_t kept = c->c_head;
    for (size_t i = c->c_head; i < c->c_len; i++) {
        if (arpc_ack_claim_covers(&c->c_claim, c->c_ack, c->c_replies[i].r_seq))
            count_reply(ix, &c->c_replies[i], false);
        else
            c->c_replies[kept++] = c->c_replies[i];
    }
    c->c_len = kept;
    if (c->c_head == c->c_len)
        c->c_head = c->c_len = 0;
    replies_shrink(c);
    return ARPC_OK;
}

/* GOODBYE: the client goes, its floor stays (the higher of the record's and what the index
 * knew of it, should the record be older than what it says goodbye to). */
static int apply_goodbye(struct arpc_log_index *ix, const struct arpc_log_view *v)
{
    uint64_t floor = v->v_seq;
    const struct arpc_log_client *c = arpc_u64_map_get(&ix->ix_clients, v->v_client_id);
    if (c != NULL && c->c_ack > floor)
        floor = c->c_ack;
    if (c != NULL && c->c_claim.ac_high > floor)
        floor = c->c_claim.ac_high;
    if (c != NULL && c->c_len > c->c_head && c->c_replies[c->c_len - 1].r_seq > floor)
        floor = c->c_replies[c->c_len - 1].r_seq;
    if (floor != 0 && arpc_rc_gone_put(&ix->ix_gone, v->v_client_id, floor, v->v_owner) != ARPC_OK)
        return ARPC_ENOMEM; /* the set's first allocation, or an owner's first count: nothing changed */
    client_forget(ix, v->v_client_id);
    return ARPC_OK;
}

int arpc_log_index_apply(struct arpc_log_index *ix, const struct arpc_log_view *v, struct arpc_log_pos pos)
{
    bool created;
    struct arpc_log_client *c;
    switch (v->v_type) {
    case ARPC_LOG_REPLY:
        return apply_reply(ix, v, pos);
    case ARPC_LOG_ACK:
        c = client_get(ix, v->v_client_id, &created);
        if (c == NULL)
            return ARPC_ENOMEM;
        client_back(ix, c, created);
        raise_ack(ix, c, v->v_ack);
        return ARPC_OK;
    case ARPC_LOG_EXPIRE:
        client_forget(ix, v->v_client_id);
        return ARPC_OK;
    case ARPC_LOG_GOODBYE:
        return apply_goodbye(ix, v);
    case ARPC_LOG_ACK_BEYOND:
        return apply_ack_beyond(ix, v);
    default: /* STATE: the decoder and the writer let no other type through */
        apply_state(ix, pos);
        return ARPC_OK;
    }
}

struct arpc_log_client *arpc_log_index_next_client(const struct arpc_log_index *ix, size_t *pos)
{
    uint64_t id;
    void *val;
    return arpc_u64_map_next(&ix->ix_clients, pos, &id, &val) ? val : NULL;
}

struct arpc_log_live_reply *arpc_log_index_find(const struct arpc_log_index *ix, uint64_t client_id,
                                                uint64_t seq)
{
    struct arpc_log_client *c = arpc_u64_map_get(&ix->ix_clients, client_id);
    if (c == NULL)
        return NULL;
    size_t at = replies_lower_bound(c, seq);
    return at < c->c_len && c->c_replies[at].r_seq == seq ? &c->c_replies[at] : NULL;
}

void arpc_log_index_moved(struct arpc_log_index *ix, uint64_t segment)
{
    if (ix->ix_has_state)
        ix->ix_state = (struct arpc_log_pos){segment, ix->ix_state_new_offset, ix->ix_state_new_size};
    ix->ix_effect_bytes = 0;
    for (size_t i = 0; i < ix->ix_neffects; i++) {
        struct arpc_log_effect *e = &ix->ix_effects[i];
        e->e_pos = (struct arpc_log_pos){segment, e->e_new_offset, e->e_new_size};
        ix->ix_effect_bytes += e->e_new_size;
    }
    ix->ix_unlisted_bytes = 0;
    struct arpc_log_client *c;
    for (size_t it = 0; (c = arpc_log_index_next_client(ix, &it)) != NULL;) {
        for (size_t i = c->c_head; i < c->c_len; i++) {
            struct arpc_log_live_reply *r = &c->c_replies[i];
            r->r_pos = (struct arpc_log_pos){segment, r->r_new_offset, r->r_new_size};
            if (!arpc_log_index_listed(ix, r))
                r->r_effect_gen = 0; /* rewritten without the effect a STATE covers */
            count_reply(ix, r, true);
        }
    }
}
