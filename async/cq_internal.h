/*
 * The completion queue's internals for arpc's own code and tests (not installed).
 */
#ifndef ARPC_ASYNC_CQ_INTERNAL_H
#define ARPC_ASYNC_CQ_INTERNAL_H

#include "arpc/cq.h"

/* Called by a consumer that found its queue empty, just before it sleeps on the queue's fd;
 * NULL (the default): nothing. A test sets it before the consumers it means start and clears
 * it after they are done, so that a race between a sleeper and another consumer comes out
 * the way the test needs (tests/cq_refused_wake_test.c). */
extern void (*cq_before_sleep)(arpc_cq *cq);

/* A server's method delivering requests to the queue (arpc_method_options.queue) counts as a
 * user from its registration to the end of the server's stop (n = 1, -1): arpc_cq_destroy
 * meanwhile is refused (base/handle.h, arpc_handle_in_use). */
void arpc_cq_users_add(arpc_cq *cq, int n);

#endif
