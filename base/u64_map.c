/* The single-owner u64 -> pointer map (base/u64_map.h). */
#include "base/u64_map.h"

#include "arpc/error.h"
#include "base/alloc.h"

static inline size_t slot_of(const struct arpc_u64_map *p, uint64_t key)
{
    /* Fibonacci hashing: consecutive keys land far apart, and any key pattern spreads. */
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> p->p_shift);
}

static int map_alloc(struct arpc_u64_map *p, size_t cap)
{
    struct arpc_u64_slot *slots = arpc_calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return ARPC_ENOMEM;
    unsigned bits = 0;
    while (((size_t)1 << bits) < cap)
        bits++;
    p->p_slots = slots;
    p->p_mask = cap - 1;
    p->p_shift = 64 - bits;
    return ARPC_OK;
}

int arpc_u64_map_init(struct arpc_u64_map *p, size_t initial)
{
    size_t cap = 64;
    while (cap < initial * 2)
        cap *= 2;
    p->p_count = 0;
    return map_alloc(p, cap);
}

void arpc_u64_map_fini(struct arpc_u64_map *p)
{
    arpc_free(p->p_slots);
    p->p_slots = NULL;
    p->p_count = 0;
}

static void insert_fresh(struct arpc_u64_map *p, uint64_t key, void *val)
{
    size_t i = slot_of(p, key);
    while (p->p_slots[i].s_key != 0)
        i = (i + 1) & p->p_mask;
    p->p_slots[i] = (struct arpc_u64_slot){key, val};
}

/* Doubles the table. */
static int map_grow(struct arpc_u64_map *p)
{
    struct arpc_u64_slot *old = p->p_slots;
    size_t old_cap = p->p_mask + 1;
    if (map_alloc(p, old_cap * 2) != ARPC_OK) {
        p->p_slots = old;
        return ARPC_ENOMEM;
    }
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].s_key != 0)
            insert_fresh(p, old[i].s_key, old[i].s_val);
    arpc_free(old);
    return ARPC_OK;
}

int arpc_u64_map_put(struct arpc_u64_map *p, uint64_t key, void *val)
{
    /* Grow at a load factor of 3/4: sequential xids under Fibonacci hashing barely cluster,
     * so probes stay short, and the table costs at most ~21-43 bytes per pending val. */
    if ((p->p_count + 1) * 4 > (p->p_mask + 1) * 3 && map_grow(p) != ARPC_OK)
        return ARPC_ENOMEM;
    size_t i = slot_of(p, key);
    for (; p->p_slots[i].s_key != 0; i = (i + 1) & p->p_mask)
        if (p->p_slots[i].s_key == key)
            return ARPC_EBUSY;
    p->p_slots[i] = (struct arpc_u64_slot){key, val};
    p->p_count++;
    return ARPC_OK;
}

void *arpc_u64_map_get(const struct arpc_u64_map *p, uint64_t key)
{
    if (key == 0)
        return NULL;
    for (size_t i = slot_of(p, key); p->p_slots[i].s_key != 0; i = (i + 1) & p->p_mask)
        if (p->p_slots[i].s_key == key)
            return p->p_slots[i].s_val;
    return NULL;
}

bool arpc_u64_map_next(const struct arpc_u64_map *p, size_t *pos, uint64_t *key, void **val)
{
    for (size_t i = *pos; i <= p->p_mask; i++) {
        if (p->p_slots[i].s_key != 0) {
            *key = p->p_slots[i].s_key;
            *val = p->p_slots[i].s_val;
            *pos = i + 1;
            return true;
        }
    }
    *pos = p->p_mask + 1;
    return false;
}

void *arpc_u64_map_take(struct arpc_u64_map *p, uint64_t key)
{
    if (key == 0)
        return NULL; /* 0 marks empty slots: a peer's key 0 matches nothing */
    size_t i = slot_of(p, key);
    while (p->p_slots[i].s_key != key) {
        if (p->p_slots[i].s_key == 0)
            return NULL;
        i = (i + 1) & p->p_mask;
    }
    void *val = p->p_slots[i].s_val;
    p->p_count--;
    /* Backward-shift deletion: pull later members of the run into the hole when the hole lies
     * between their home slot and where they sit, so no tombstone is needed. */
    size_t hole = i;
    for (size_t j = (i + 1) & p->p_mask; p->p_slots[j].s_key != 0; j = (j + 1) & p->p_mask) {
        size_t home = slot_of(p, p->p_slots[j].s_key);
        /* Distance from home to j versus from home to the hole, both cyclic. */
        if (((j - home) & p->p_mask) >= ((j - hole) & p->p_mask)) {
            p->p_slots[hole] = p->p_slots[j];
            hole = j;
        }
    }
    p->p_slots[hole].s_key = 0;
    p->p_slots[hole].s_val = NULL;
    return val;
}

void arpc_u64_map_drain(struct arpc_u64_map *p, void (*fn)(void *val, void *arg), void *arg)
{
    for (size_t i = 0; i <= p->p_mask; i++) {
        struct arpc_u64_slot s = p->p_slots[i];
        if (s.s_key == 0)
            continue;
        p->p_slots[i].s_key = 0;
        p->p_slots[i].s_val = NULL;
        fn(s.s_val, arg);
    }
    p->p_count = 0;
}
