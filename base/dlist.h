/*
 * An intrusive doubly linked list: a link embedded in each element, a head and a tail in the
 * owner. No lock, no allocation: one thread owns the list. The server's open connections and
 * its calls waiting for a reply, and the client's calls waiting for a connection, are these.
 */
#ifndef ARPC_BASE_DLIST_H
#define ARPC_BASE_DLIST_H

#include <stddef.h>

struct arpc_dlink {
    struct arpc_dlink *dl_prev, *dl_next;
};

struct arpc_dlist {
    struct arpc_dlink *dl_head, *dl_tail; /* both NULL when empty (a zeroed list is empty) */
};

/* The element a link (possibly NULL) is embedded in, as member of type. */
#define ARPC_DLIST_ENTRY(link, type, member) \
    ((link) != NULL ? (type *)(void *)((char *)(link) - offsetof(type, member)) : (type *)NULL)

/* Inserts n after pos; pos NULL: at the front. */
static inline void arpc_dlist_insert_after(struct arpc_dlist *l, struct arpc_dlink *pos, struct arpc_dlink *n)
{
    n->dl_prev = pos;
    n->dl_next = pos != NULL ? pos->dl_next : l->dl_head;
    if (n->dl_next != NULL)
        n->dl_next->dl_prev = n;
    else
        l->dl_tail = n;
    if (pos != NULL)
        pos->dl_next = n;
    else
        l->dl_head = n;
}

/* n must be on l. */
static inline void arpc_dlist_remove(struct arpc_dlist *l, struct arpc_dlink *n)
{
    if (n->dl_prev != NULL)
        n->dl_prev->dl_next = n->dl_next;
    else
        l->dl_head = n->dl_next;
    if (n->dl_next != NULL)
        n->dl_next->dl_prev = n->dl_prev;
    else
        l->dl_tail = n->dl_prev;
    n->dl_prev = n->dl_next = NULL;
}

#endif
