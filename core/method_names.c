/* A client's method names, each kept once (core/method_names.h): the thread's last name
 * compared first, else a hash and a probe. */
#include "core/method_names.h"

#include <stdbool.h>
#include <string.h>

#include "base/alloc.h"
#include "base/name_hash.h"

void method_names_fini(struct method_names *t)
{
    for (unsigned i = 0; i < METHOD_NAMES_SLOTS; i++) {
        arpc_free(atomic_load_explicit(&t->mn_slots[i], memory_order_relaxed));
        atomic_store_explicit(&t->mn_slots[i], NULL, memory_order_relaxed);
    }
}

static bool name_is(const struct method_name *n, const char *name, size_t len)
{
    return n->mn_len == len && arpc_name_equal(n->mn_bytes, name, len);
}

static struct method_name *name_new(const char *name, size_t len)
{
    struct method_name *n = arpc_calloc(1, sizeof(*n) + METHOD_NAME_SHORT);
    if (n != NULL) {
        n->mn_len = (uint8_t)len;
        memcpy(n->mn_bytes, name, len);
    }
    return n;
}

/* The last name this thread found, by the caller's pointer: a caller often calls one method
 * many times over (a hash and a probe skipped). Its bytes are compared again, for the caller's
 * buffer may say something else now, or the table be another at the same address. */
static _Thread_local struct {
    const struct method_names *lf_table;
    const char *lf_name;
    size_t lf_len;
    unsigned lf_index;
} last_found;

static int found_at(struct method_names *t, const char *name, size_t len, unsigned i)
{
    last_found.lf_table = t;
    last_found.lf_name = name;
    last_found.lf_len = len;
    last_found.lf_index = i;
    return (int)i;
}

/* method_names_index past the last name found: apart, so that the common case saves no
 * registers for this one. */
static __attribute__((noinline)) int names_probe(struct method_names *t, const char *name, size_t len)
{
    if (len > METHOD_NAME_SHORT)
        return -1;
    unsigned h = (unsigned)arpc_name_hash(name, len);
    struct method_name *mine = NULL; /* made at the first empty slot; freed unless it took one */
    int found = -1;
    for (unsigned k = 0; k < METHOD_NAMES_PROBES; k++) {
        unsigned i = (h + k) & (METHOD_NAMES_SLOTS - 1);
        struct method_name *n = atomic_load_explicit(&t->mn_slots[i], memory_order_acquire);
        if (n == NULL) {
            if (mine == NULL && (mine = name_new(name, len)) == NULL)
                break; /* no memory: the calls keep their names */
            /* Release: a reader of the slot sees the name's bytes. A lost race reads the
             * winner into n (acquire), which may be this very name from another caller. */
            if (atomic_compare_exchange_strong_explicit(&t->mn_slots[i], &n, mine, memory_order_acq_rel,
                                                        memory_order_acquire))
                return found_at(t, name, len, i);
        }
        if (name_is(n, name, len)) {
            found = found_at(t, name, len, i);
            break;
        }
    }
    if (mine != NULL)
        arpc_free(mine);
    return found;
}

int method_names_index(struct method_names *t, const char *name, size_t len)
{
    if (last_found.lf_table == t && last_found.lf_name == name && last_found.lf_len == len) {
        const struct method_name *n = method_names_at(t, last_found.lf_index);
        if (n != NULL && name_is(n, name, len))
            return (int)last_found.lf_index;
    }
    return names_probe(t, name, len);
}
