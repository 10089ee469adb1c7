#include "core/pending.h"

#include "arpc/error.h"
#include "core/alloc.h"

/* ck_ht frees a replaced map with defer=true when readers might still use it; our only
 * reader is the writer thread, so it can always be freed at once. */
static void *pending_malloc(size_t size) { return arpc_malloc(size); }
static void *pending_realloc(void *p, size_t old, size_t size, bool defer)
{
    (void)old;
    (void)defer;
    return arpc_realloc(p, size);
}
static void pending_free(void *p, size_t size, bool defer)
{
    (void)size;
    (void)defer;
    arpc_free(p);
}
static struct ck_malloc pending_allocator = {pending_malloc, pending_realloc, pending_free};

int arpc_pending_init(struct arpc_pending *p, size_t initial)
{
    p->p_count = 0;
    if (!ck_ht_init(&p->p_ht, CK_HT_MODE_DIRECT | CK_HT_WORKLOAD_DELETE, NULL, &pending_allocator,
                    initial < 64 ? 64 : initial, 0x61727063u))
        return ARPC_ENOMEM;
    return ARPC_OK;
}

void arpc_pending_fini(struct arpc_pending *p) { ck_ht_destroy(&p->p_ht); }

int arpc_pending_put(struct arpc_pending *p, uint64_t xid, void *call)
{
    ck_ht_hash_t h;
    ck_ht_entry_t e;
    ck_ht_hash_direct(&h, &p->p_ht, (uintptr_t)xid);
    ck_ht_entry_set_direct(&e, h, (uintptr_t)xid, (uintptr_t)call);
    if (!ck_ht_put_spmc(&p->p_ht, h, &e)) {
        /* put fails for a present key or when growing the table fails. */
        ck_ht_entry_t probe;
        ck_ht_entry_key_set_direct(&probe, (uintptr_t)xid);
        return ck_ht_get_spmc(&p->p_ht, h, &probe) ? ARPC_EBUSY : ARPC_ENOMEM;
    }
    p->p_count++;
    return ARPC_OK;
}

void *arpc_pending_take(struct arpc_pending *p, uint64_t xid)
{
    ck_ht_hash_t h;
    ck_ht_entry_t e;
    ck_ht_hash_direct(&h, &p->p_ht, (uintptr_t)xid);
    ck_ht_entry_key_set_direct(&e, (uintptr_t)xid);
    if (!ck_ht_remove_spmc(&p->p_ht, h, &e))
        return NULL;
    p->p_count--;
    return (void *)ck_ht_entry_value_direct(&e);
}

void arpc_pending_drain(struct arpc_pending *p, void (*fn)(void *call, void *arg), void *arg)
{
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    ck_ht_entry_t *e;
    while (ck_ht_next(&p->p_ht, &it, &e))
        fn((void *)ck_ht_entry_value_direct(e), arg);
    ck_ht_reset_spmc(&p->p_ht);
    p->p_count = 0;
}
