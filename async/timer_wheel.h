/*
 * A hierarchical timing wheel of millisecond deadlines: intrusive (a 16-byte node in its
 * owner, nothing allocated), O(1) add and remove. Pure data structure: no clock, no loop,
 * single-threaded; the owner feeds it the time and runs one loop deadline at
 * arpc_wheel_next. For many deadlines of one owner (a client's calls) where a heap entry
 * each (async/deadline_heap.h, 40 bytes) costs too much.
 *
 * A node does not keep its time: the owner keeps it anyway (a call's deadline), so the wheel
 * asks the owner's time function for it when a node moves (sorted out of the far list at a
 * round start, poured from a mid slot into near). The time a node was added with must therefore be what that function says for it
 * until it fires or is removed.
 *
 * Ordering rule: every node whose time is <= now fires in arpc_wheel_expire(now), earlier
 * milliseconds before later ones; nodes of the same millisecond in no promised order. A node
 * never fires before its time.
 */
#ifndef ARPC_ASYNC_TIMER_WHEEL_H
#define ARPC_ASYNC_TIMER_WHEEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARPC_WHEEL_SLOT_BITS 8
#define ARPC_WHEEL_SLOTS (1u << ARPC_WHEEL_SLOT_BITS) /* per level: 256 ms, then 256 x 256 ms */
#define ARPC_WHEEL_NONE UINT64_MAX                   /* arpc_wheel_next of an empty wheel */

/* A slot's list: circular, through its head. */
struct arpc_wheel_link {
    struct arpc_wheel_link *wl_next, *wl_prev;
};

/* Embedded by its owner; zeroed (or arpc_wheel_node_init) before first use. Its time is the
 * owner's (arpc_wheel_time_fn). */
struct arpc_wheel_node {
    struct arpc_wheel_link wn_link; /* wl_next NULL: not in a wheel */
};

/* The time, in ms on the owner's clock, that n was added with (arpc_wheel_add). */
typedef uint64_t (*arpc_wheel_time_fn)(const struct arpc_wheel_node *n, void *arg);

struct arpc_wheel {
    arpc_wheel_time_fn w_time;
    void *w_time_arg;
    uint64_t w_now; /* the next millisecond to expire: every node before it has fired */
    size_t w_count;
    struct arpc_wheel_link w_near[ARPC_WHEEL_SLOTS]; /* this 256 ms block, by millisecond */
    struct arpc_wheel_link w_mid[ARPC_WHEEL_SLOTS];  /* the next 255 blocks, by block */
    struct arpc_wheel_link w_far;                    /* later still: sorted out every 65.5 s */
};

typedef void (*arpc_wheel_fn)(struct arpc_wheel_node *n, void *arg);

static inline void arpc_wheel_node_init(struct arpc_wheel_node *n) { n->wn_link.wl_next = n->wn_link.wl_prev = NULL; }
static inline bool arpc_wheel_node_armed(const struct arpc_wheel_node *n) { return n->wn_link.wl_next != NULL; }

/* now_ms: the owner's clock now; nothing before it will be asked for. time_fn(n, time_arg):
 * a node's time. */
void arpc_wheel_init(struct arpc_wheel *w, uint64_t now_ms, arpc_wheel_time_fn time_fn, void *time_arg);
/* Nodes still in w are left unarmed. */
void arpc_wheel_fini(struct arpc_wheel *w);

/* Adds n (not armed) to fire at when_ms (already past: at the first millisecond not yet
 * expired), which the wheel's time function must give for n until n fires or is removed.
 * Returns the time by which arpc_wheel_expire must run for n: when_ms, or earlier
 * for a node that must first move to a finer level. */
uint64_t arpc_wheel_add(struct arpc_wheel *w, struct arpc_wheel_node *n, uint64_t when_ms);

/* Removes n from w; a no-op when n is not armed. */
void arpc_wheel_remove(struct arpc_wheel *w, struct arpc_wheel_node *n);

/* Fires (fn) and removes every node whose time is <= now_ms, in the order above. fn may add
 * and remove nodes (a node added at a time <= now_ms fires at the next expire, not this one).
 * Returns how many fired. */
size_t arpc_wheel_expire(struct arpc_wheel *w, uint64_t now_ms, arpc_wheel_fn fn, void *arg);

/* When arpc_wheel_expire must run next (at most the earliest node's time; ARPC_WHEEL_NONE:
 * empty). O(ARPC_WHEEL_SLOTS). */
uint64_t arpc_wheel_next(const struct arpc_wheel *w);

static inline size_t arpc_wheel_count(const struct arpc_wheel *w) { return w->w_count; }

#endif
