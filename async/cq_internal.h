/*
 * The completion queue's seams for arpc's own tests (not installed).
 */
#ifndef ARPC_ASYNC_CQ_INTERNAL_H
#define ARPC_ASYNC_CQ_INTERNAL_H

#include "arpc/cq.h"

/* Called by a consumer that found its queue empty, just before it sleeps on the queue's fd;
 * NULL (the default): nothing. A test sets it before the consumers it means start and clears
 * it after they are done, so that a race between a sleeper and another consumer comes out
 * the way the test needs (tests/cq_refused_wake_test.c). */
extern void (*cq_before_sleep)(arpc_cq *cq);

#endif
