/*
 * Calls between connections (core/client_resend.c), the acknowledgement, and the call pieces
 * the client's other files share (core/client_call.c). Loop thread only.
 */
#ifndef ARPC_CORE_CLIENT_RESEND_H
#define ARPC_CORE_CLIENT_RESEND_H

#include "core/client_internal.h"

/* client_call.c */
/* A call of c with room for a frame_len-byte request after it (call_frame_bytes),
 * uninitialised but for the frame's fields; NULL without memory. A large one comes from
 * c->cl_bufs and goes back there. Freed by call_free (or, never handed to the loop, by
 * call_discard). Any thread. */
struct client_call *call_new(arpc_client *c, size_t frame_len);
uint8_t *call_frame_bytes(struct client_call *call);
void call_init(struct client_call *call, arpc_client *c, arpc_future *f, uint64_t when,
               enum arpc_call_semantics semantics);
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
