/*
 * Calls between connections (core/client_resend.c), the acknowledgement, and the call pieces
 * the client's other files share (core/client_call.c). Loop thread only.
 */
#ifndef ARPC_CORE_CLIENT_RESEND_H
#define ARPC_CORE_CLIENT_RESEND_H

#include "core/client_internal.h"

/* client_call.c */
struct call_frame *call_frame_new(size_t len);
uint8_t *call_frame_bytes(struct call_frame *f);
void call_frame_put(struct call_frame *f);
int call_init(struct client_call *call, arpc_client *c, arpc_future *f, struct call_frame *frame, uint64_t when,
              enum arpc_call_semantics semantics);
int call_arm(struct client_call *call, uint64_t when);
void call_send(struct client_call *call);

/* client_resend.c */
void resend_wait(arpc_client *c, struct client_call *call);    /* waits for a connection */
void resend_unlink(arpc_client *c, struct client_call *call);  /* leaves the waiting list */
void resend_seq_done(arpc_client *c, uint64_t seq);            /* a numbered call finished */

#endif
