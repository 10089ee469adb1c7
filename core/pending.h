/*
 * The client's pending-call table: xid -> call, on a Concurrency Kit hash table (ck_ht in
 * direct-key mode). Only the client's loop thread writes it (the _spmc operations: one
 * writer, concurrent readers allowed), so matching a reply to its call takes no lock.
 */
#ifndef ARPC_CORE_PENDING_H
#define ARPC_CORE_PENDING_H

#include <ck_ht.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct arpc_pending {
    ck_ht_t p_ht;
    size_t p_count;
};

int arpc_pending_init(struct arpc_pending *p, size_t initial);
void arpc_pending_fini(struct arpc_pending *p);
/* xid must not be 0 or UINT64_MAX (ck_ht's empty and tombstone keys). ARPC_OK, ARPC_ENOMEM,
 * ARPC_EBUSY (xid already present). */
int arpc_pending_put(struct arpc_pending *p, uint64_t xid, void *call);
/* Removes and returns the call for xid, or NULL. */
void *arpc_pending_take(struct arpc_pending *p, uint64_t xid);
/* Removes every entry, calling fn(call, arg) for each (order unspecified). */
void arpc_pending_drain(struct arpc_pending *p, void (*fn)(void *call, void *arg), void *arg);

#endif
