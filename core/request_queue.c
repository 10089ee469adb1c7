/*
 * Requests delivered to a completion queue (arpc_method_options.queue) instead of a handler:
 * the application takes them where it takes its calls' completions (arpc_cq_fd in its own poll
 * loop) and replies when it likes, from its own thread. Runs inline on the server's loop: one
 * completed future per request, tagged with the request, through the queue's own lock-free
 * delivery (async/cq.c), so nothing new is needed for the hand-off or the wake-up.
 */
#include "arpc/cq.h"
#include "arpc/error.h"
#include "arpc/future.h"
#include "core/request_internal.h"

#define NO_ROOM_IN_QUEUE "out of memory queueing the request"

void request_to_queue(arpc_request *req, void *cq)
{
    /* The application is its handler until it replies: what it reads of the request stays
     * lent until then, even once the server answered the call (its deadline, a stop). */
    atomic_fetch_or(&req->rq_flags, RQ_QUEUED);
    arpc_future *f;
    if (arpc_future_create(&f) != ARPC_OK) {
        request_refuse(req, ARPC_EREJECTED, NO_ROOM_IN_QUEUE); /* nothing ran: a retry may */
        return;
    }
    int rc = arpc_cq_attach(cq, f, req);
    if (rc == ARPC_OK)
        arpc_future_complete(f, ARPC_OK, NULL, 0); /* delivered now: the queue holds its own reference */
    arpc_future_release(f);
    if (rc == ARPC_ESHUTDOWN) /* the application takes no more from it: nothing ran */
        request_refuse(req, ARPC_EREJECTED, "the method's queue was shut down (arpc_cq_shutdown)");
    else if (rc != ARPC_OK)
        request_refuse(req, ARPC_EREJECTED, NO_ROOM_IN_QUEUE);
}
