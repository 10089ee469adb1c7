/*
 * Calls between connections (core/client_resend.c), the acknowledgement, and the call pieces
 * the client's other files share (core/client_call.c). Loop thread only.
 */
#ifndef ARPC_CORE_CLIENT_RESEND_H
#define ARPC_CORE_CLIENT_RESEND_H

#include "core/client_internal.h"

/* client_call.c */
/* A call of c (its future, with the caller's reference, and the call's state before it reaches
 * the loop) with room for a frame_len-byte request (call_frame_bytes). A request over 1 KiB is
 * a second allocation (from c->cl_bufs from ARPC_CONN_BODY_MIN on, and back there). NULL without memory. Freed by call_free once started
 * (or, never handed to the loop, by call_discard: the future stays the caller's). Any thread. */
struct client_call *call_new(arpc_client *c, size_t frame_len, uint64_t when, enum arpc_call_semantics semantics);
arpc_future *call_future(struct client_call *call);
struct client_call *call_of_future(arpc_future *f); /* the inverse */
uint8_t *call_frame_bytes(struct client_call *call);
void call_discard(struct client_call *call);
/* The call is done with (any thread; once): cl_live drops, and its memory goes once the
 * output queue has let go of its request too. */
void call_free(struct client_call *call);
int call_arm(struct client_call *call, uint64_t when);
void call_send(struct client_call *call);

/* client_resend.c */
void resend_wait(arpc_client *c, struct client_call *call);    /* waits for a connection */
void resend_unlink(arpc_client *c, struct client_call *call);  /* leaves the waiting list */
void resend_seq_done(arpc_client *c, uint64_t seq);            /* a numbered call finished */

#endif
