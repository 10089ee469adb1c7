/*
 * The one unbounded multi-producer hand-off: an intrusive Concurrency Kit stack whose
 * producers push lock-free (ck_stack_push_upmc: one CAS, no producer ever waits for
 * another) and whose single consumer takes everything at once and reverses it, so items come
 * out in push order (per producer FIFO, and a total order across producers).
 *
 * Used by the loop's job lane and the completion queue. The TSan edge of the hand-off is
 * stated here, once (base/tsan.h): whatever the producer wrote before the push
 * happens-before the consumer's use of the item.
 */
#ifndef ARPC_BASE_STACK_FIFO_H
#define ARPC_BASE_STACK_FIFO_H

#include <ck_stack.h>
#include <stdbool.h>

#include "base/tsan.h"

/* Any thread; never blocks, never fails. */
static inline void arpc_stack_push(ck_stack_t *s, ck_stack_entry_t *item)
{
    ARPC_TSAN_RELEASE(s);
    ARPC_TSAN_IGNORE_WRITES_BEGIN();
    ck_stack_push_upmc(s, item);
    ARPC_TSAN_IGNORE_WRITES_END();
}

/* As arpc_stack_push, and true when the stack was empty: the item is the oldest waiting, so a
 * consumer that sleeps once it finds the stack empty may need waking. Every later push finds
 * the stack non-empty until the consumer takes it, and the consumer's take then gets those
 * items too: only the first push after a take has to wake it. (An item may lead a run of
 * items of its owner's, linked through a field of their own, that the consumer walks once it
 * took the item: async/actor.c's runs of jobs.) */
static inline bool arpc_stack_push_first(ck_stack_t *s, ck_stack_entry_t *item)
{
    ARPC_TSAN_RELEASE(s);
    ARPC_TSAN_IGNORE_WRITES_BEGIN();
    ck_stack_entry_t *head = ck_pr_load_ptr(&s->head);
    do {
        item->next = head;
        ck_pr_fence_store(); /* the item's writes before the CAS that publishes it */
    } while (!ck_pr_cas_ptr_value(&s->head, head, item, &head));
    ARPC_TSAN_IGNORE_WRITES_END();
    return head == NULL;
}

/* The consumer: takes every item pushed so far, oldest first (a NULL-terminated list through
 * ->next), or NULL when there is none. */
static inline ck_stack_entry_t *arpc_stack_take_fifo(ck_stack_t *s)
{
    ARPC_TSAN_IGNORE_READS_BEGIN();
    ck_stack_entry_t *list = ck_stack_batch_pop_upmc(s);
    ARPC_TSAN_IGNORE_READS_END();
    if (list == NULL)
        return NULL;
    ARPC_TSAN_ACQUIRE(s);
    ck_stack_entry_t *fifo = NULL;
    while (list != NULL) { /* the stack is newest first */
        ck_stack_entry_t *next = list->next;
        list->next = fifo;
        fifo = list;
        list = next;
    }
    return fifo;
}

static inline bool arpc_stack_is_empty(const ck_stack_t *s)
{
    return ck_pr_load_ptr(&s->head) == NULL;
}

#endif
