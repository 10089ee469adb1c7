/*
 * Design notes.
 *
 * Three levels, by how far a node's time lies from the cursor w_now (blocks of 256 ms):
 *   near  its block is the cursor's: one slot per millisecond (time & 255);
 *   mid   one of the next 255 blocks: one slot per block (block & 255);
 *   far   later still: one unsorted list.
 * When the cursor enters a block (a time that is a multiple of 256) the mid slot of that block
 * is poured into near; when it enters a round (a multiple of 65,536 ms) the far list is sorted
 * out first. A mid slot poured at block b holds block b's nodes only: a node lands there only
 * while the cursor is less than 256 blocks before b, and the slot was emptied when the cursor
 * last entered a block of the same index. A far node is at least 256 blocks ahead when placed,
 * and a round starts within 256 blocks of any time, so the far list is sorted out before any of
 * its nodes is due. Each node therefore moves once at each round start it waits through and
 * once more (from mid to near), and firing a millisecond costs its own nodes only.
 *
 * Nodes keep no time: placing one again (pouring a mid slot, sorting out the far list) asks
 * the owner's time function, the only place the wheel needs a time it was not just given.
 *
 * The cursor does not tick: arpc_wheel_next names the next time anything must happen (a
 * millisecond with nodes, a block to pour, a round with far nodes), the owner's one loop
 * deadline waits for it, and expire jumps the cursor over the empty time between.
 */
#include "async/timer_wheel.h"

#include <assert.h>

#define SLOT_MASK ((uint64_t)ARPC_WHEEL_SLOTS - 1)
#define BLOCK_SHIFT ARPC_WHEEL_SLOT_BITS
#define ROUND_MASK (((uint64_t)1 << (2 * ARPC_WHEEL_SLOT_BITS)) - 1) /* 65,536 ms */

static void list_init(struct arpc_wheel_link *head) { head->wl_next = head->wl_prev = head; }
static bool list_empty(const struct arpc_wheel_link *head) { return head->wl_next == head; }

static void list_append(struct arpc_wheel_link *head, struct arpc_wheel_link *l)
{
    l->wl_prev = head->wl_prev;
    l->wl_next = head;
    head->wl_prev->wl_next = l;
    head->wl_prev = l;
}

static void list_unlink(struct arpc_wheel_link *l)
{
    l->wl_prev->wl_next = l->wl_next;
    l->wl_next->wl_prev = l->wl_prev;
    l->wl_next = l->wl_prev = NULL;
}

/* Moves every link of from to the (empty) head to. */
static void list_take(struct arpc_wheel_link *to, struct arpc_wheel_link *from)
{
    if (list_empty(from)) {
        list_init(to);
        return;
    }
    to->wl_next = from->wl_next;
    to->wl_prev = from->wl_prev;
    to->wl_next->wl_prev = to;
    to->wl_prev->wl_next = to;
    list_init(from);
}

static struct arpc_wheel_node *node_of(struct arpc_wheel_link *l)
{
    return (struct arpc_wheel_node *)((char *)l - offsetof(struct arpc_wheel_node, wn_link));
}

void arpc_wheel_init(struct arpc_wheel *w, uint64_t now_ms, arpc_wheel_time_fn time_fn, void *time_arg)
{
    w->w_time = time_fn;
    w->w_time_arg = time_arg;
    w->w_now = now_ms;
    w->w_count = 0;
    for (unsigned i = 0; i < ARPC_WHEEL_SLOTS; i++) {
        list_init(&w->w_near[i]);
        list_init(&w->w_mid[i]);
    }
    list_init(&w->w_far);
}

static void list_disarm(struct arpc_wheel_link *head)
{
    while (!list_empty(head))
        list_unlink(head->wl_next);
}

void arpc_wheel_fini(struct arpc_wheel *w)
{
    for (unsigned i = 0; i < ARPC_WHEEL_SLOTS; i++) {
        list_disarm(&w->w_near[i]);
        list_disarm(&w->w_mid[i]);
    }
    list_disarm(&w->w_far);
    w->w_count = 0;
}

/* The first round start after t. */
static uint64_t next_round(uint64_t t) { return (t | ROUND_MASK) + 1; }

/* Puts n, due at when, in its level's slot from the cursor; returns when the cursor must
 * reach it there. */
static uint64_t place(struct arpc_wheel *w, struct arpc_wheel_node *n, uint64_t when)
{
    uint64_t t = when > w->w_now ? when : w->w_now; /* a past time: the next expire */
    uint64_t block = t >> BLOCK_SHIFT, cursor_block = w->w_now >> BLOCK_SHIFT;
    if (block == cursor_block) {
        list_append(&w->w_near[t & SLOT_MASK], &n->wn_link);
        return t;
    }
    if (block - cursor_block < ARPC_WHEEL_SLOTS) {
        list_append(&w->w_mid[block & SLOT_MASK], &n->wn_link);
        return block << BLOCK_SHIFT;
    }
    list_append(&w->w_far, &n->wn_link);
    return next_round(w->w_now);
}

uint64_t arpc_wheel_add(struct arpc_wheel *w, struct arpc_wheel_node *n, uint64_t when_ms)
{
    assert(!arpc_wheel_node_armed(n));
    w->w_count++;
    return place(w, n, when_ms);
}

void arpc_wheel_remove(struct arpc_wheel *w, struct arpc_wheel_node *n)
{
    if (!arpc_wheel_node_armed(n))
        return;
    list_unlink(&n->wn_link);
    w->w_count--;
}

/* Places again every node of from (the cursor moved since they were placed). */
static void replace_all(struct arpc_wheel *w, struct arpc_wheel_link *from)
{
    struct arpc_wheel_link moving;
    list_take(&moving, from);
    while (!list_empty(&moving)) {
        struct arpc_wheel_link *l = moving.wl_next;
        struct arpc_wheel_node *n = node_of(l);
        uint64_t when = w->w_time(n, w->w_time_arg); /* asked while n is still armed */
        list_unlink(l);
        (void)place(w, n, when);
    }
}

/* The cursor enters the block starting at t: the far list first at a round's start, then the
 * block's mid slot, into near. */
static void enter_block(struct arpc_wheel *w, uint64_t t)
{
    if ((t & ROUND_MASK) == 0)
        replace_all(w, &w->w_far);
    replace_all(w, &w->w_mid[(t >> BLOCK_SHIFT) & SLOT_MASK]);
}

uint64_t arpc_wheel_next(const struct arpc_wheel *w)
{
    if (w->w_count == 0)
        return ARPC_WHEEL_NONE;
    uint64_t t = w->w_now, block = t >> BLOCK_SHIFT;
    bool far = !list_empty(&w->w_far);
    /* The cursor's own block not entered yet (a jump landed on its start). */
    if ((t & SLOT_MASK) == 0 && (!list_empty(&w->w_mid[block & SLOT_MASK]) || (far && (t & ROUND_MASK) == 0)))
        return t;
    /* Slots before the cursor's in its block are empty: they fired, and nothing is put there. */
    for (uint64_t i = t & SLOT_MASK; i < ARPC_WHEEL_SLOTS; i++) {
        if (!list_empty(&w->w_near[i]))
            return (block << BLOCK_SHIFT) | i;
    }
    for (uint64_t b = block + 1; b <= block + ARPC_WHEEL_SLOTS; b++) {
        if (!list_empty(&w->w_mid[b & SLOT_MASK]) || (far && (b & SLOT_MASK) == 0))
            return b << BLOCK_SHIFT;
    }
    assert(!"a node outside every level"); /* the loop ends at a round's start */
    return ARPC_WHEEL_NONE;
}

size_t arpc_wheel_expire(struct arpc_wheel *w, uint64_t now_ms, arpc_wheel_fn fn, void *arg)
{
    size_t fired = 0;
    while (w->w_now <= now_ms && w->w_count > 0) {
        uint64_t t = w->w_now;
        if ((t & SLOT_MASK) == 0 || list_empty(&w->w_near[t & SLOT_MASK])) {
            /* Jump over the time nothing needs, entering a block where it lands on one. */
            uint64_t need = arpc_wheel_next(w);
            if (need > now_ms)
                break;
            w->w_now = t = need;
            if ((t & SLOT_MASK) == 0)
                enter_block(w, t);
        }
        struct arpc_wheel_link due;
        list_take(&due, &w->w_near[t & SLOT_MASK]);
        w->w_now = t + 1; /* before the callbacks: what they add goes after this millisecond */
        while (!list_empty(&due)) {
            struct arpc_wheel_link *l = due.wl_next;
            list_unlink(l); /* fn may remove the others from due: it is a list like a slot */
            w->w_count--;
            fired++;
            fn(node_of(l), arg);
        }
    }
    /* Nothing left before now_ms + 1: the next search starts there (it would enter no block a
     * node needs: arpc_wheel_next found none up to now_ms). */
    if (w->w_now <= now_ms)
        w->w_now = now_ms + 1;
    return fired;
}
