/*
 * The client's calls waiting for a connection (core/client_resend.c), in the order they began
 * to wait, each with its give-up time (core/client_give_up.c). Loop thread only.
 *
 * An array of slots (call, give-up time) rather than a list through the calls: a call keeps
 * only its slot's index (cc_wait_pos, 4 bytes, in room the call uses for something else
 * before it reaches the loop), where two links and a give-up time took 24 bytes in every
 * call's block, waiting or not (docs/PERFORMANCE.md, "Client memory per call: 152 → 136 B").
 * The array exists only while calls wait: 16 bytes a waiting call, freed when the last leaves.
 *
 * Slots [wc_head, wc_tail) were handed out in order; a call that leaves empties its slot
 * (NULL), and wc_head moves past empty slots, so the first slot is the first call's. A push
 * that finds the array full compacts it (at most half full) or doubles it, and tells the calls
 * their new indexes. Nothing but a push or a sort moves a call, so a walk by index
 * (waiting_at) may end calls as it goes.
 */
#ifndef ARPC_CORE_WAITING_CALLS_H
#define ARPC_CORE_WAITING_CALLS_H

#include <stdbool.h>
#include <stdint.h>

struct client_call;

struct waiting_slot {
    struct client_call *ws_call; /* NULL: its call left */
    uint64_t ws_give_up;         /* ns; ARPC_NEVER: never */
};

struct waiting_calls {
    struct waiting_slot *wc_slots; /* wc_cap of them; NULL while no call waits */
    uint32_t wc_cap;
    uint32_t wc_head, wc_tail;     /* the slots handed out and not yet passed */
    uint32_t wc_count;             /* calls in */
};

/* A zeroed struct waiting_calls is empty; waiting_fini frees what is left (the calls stay). */
void waiting_fini(struct waiting_calls *w);
/* call (not in) joins at the tail, giving up at give_up; sets its cc_wait_pos. ARPC_OK or
 * ARPC_ENOMEM (not in; the others intact). */
int waiting_push(struct waiting_calls *w, struct client_call *call, uint64_t give_up);
/* call (in) leaves. The last to leave frees the array. */
void waiting_remove(struct waiting_calls *w, struct client_call *call);
/* The first call and (give_up not NULL) its give-up time, or NULL when none waits. */
struct client_call *waiting_first(const struct waiting_calls *w, uint64_t *give_up);
/* The call in slot *pos or after it (*pos set to its slot), or NULL past the tail: a walk
 * from wc_head, *pos + 1 each step. */
struct client_call *waiting_at(const struct waiting_calls *w, uint32_t *pos);
static inline uint32_t waiting_count(const struct waiting_calls *w) { return w->wc_count; }
/* Sorts the calls by before (a strict order; ties keep their order), and compacts them. */
void waiting_sort(struct waiting_calls *w, bool (*before)(const struct waiting_slot *a, const struct waiting_slot *b));

#endif
