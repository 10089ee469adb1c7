/*
 * A client's method names, each kept once (core/method_names.c): a call keeps its method's
 * index here (a byte) instead of the name, which every outstanding call otherwise paid for
 * (docs/PERFORMANCE.md, "Client memory per call: 136 → 120 B"). The name is written after
 * the frame's fixed fields at each send (call_head), where a kept name would have been.
 *
 * Any thread: callers look names up (adding them) while the loop and other callers read them
 * by index. No lock: a slot goes from empty to a name once (a compare-and-swap) and stays so
 * until the table is freed with its client; readers load it with acquire.
 *
 * Bounded: METHOD_NAMES_SLOTS names of METHOD_NAME_SHORT bytes at most. A name that is longer,
 * or finds no slot within METHOD_NAMES_PROBES of its hash (a client calling very many methods),
 * or no memory, is not kept: its calls keep the name themselves, as before.
 */
#ifndef ARPC_CORE_METHOD_NAMES_H
#define ARPC_CORE_METHOD_NAMES_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define METHOD_NAMES_SLOTS 128u /* a power of two; an index fits in a byte */
#define METHOD_NAMES_PROBES 16u
/* The longest name kept: a send writes it into the frame's head (core/outq.h's head room). */
#define METHOD_NAME_SHORT 24u

struct method_name {
    uint8_t mn_len;
    char mn_bytes[]; /* METHOD_NAME_SHORT of them, zeros after the name's: a send copies them
                      * all, a copy of constant size (call_head) */
};

struct method_names {
    _Atomic(struct method_name *) mn_slots[METHOD_NAMES_SLOTS];
};

/* A zeroed struct method_names is empty; method_names_fini frees the names (no thread may use
 * the table then). */
void method_names_fini(struct method_names *t);

/* The index of name[0..len) (added if new), or -1: not kept (see above). Any thread. */
int method_names_index(struct method_names *t, const char *name, size_t len);

/* The name at index i, which method_names_index returned (to this thread, or to one whose
 * use of it happens before ours). Any thread. */
static inline const struct method_name *method_names_at(const struct method_names *t, unsigned i)
{
    return atomic_load_explicit(&t->mn_slots[i], memory_order_acquire);
}

#endif
