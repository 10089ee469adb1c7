/*
 * Calls between connections (core/client_resend.c), the acknowledgement, and the call pieces
 * the client's other files share (core/client_call.c). Loop thread only.
 */
#ifndef ARPC_CORE_CLIENT_RESEND_H
#define ARPC_CORE_CLIENT_RESEND_H

#include "core/client_internal.h"
#include "core/frame.h"

/* client_call.c */
/* A call of c (its future, with the caller's reference and the call's hold, and the call's
 * state before it reaches the loop) with room for a request of method[0..method_len) and
 * payload_len bytes (call_set_request). The method of a request up to 1 KiB is looked up in
 * c->cl_names (added if new): a method kept there costs the call a byte, not its name
 * (core/method_names.h: not one too long, or that finds no room or memory). A
 * request whose frame is over 1 KiB is a second block (from c->cl_blocks, or c->cl_bufs from
 * ARPC_CONN_BODY_MIN on, and back there). NULL without memory. Freed by call_free once started
 * (or, never handed to the loop, by call_discard, and the hold dropped: the future stays the
 * caller's). Any thread. */
struct client_call *call_new(arpc_client *c, const char *method, size_t method_len, size_t payload_len, uint64_t when,
                             enum arpc_call_semantics semantics);
arpc_future *call_future(struct client_call *call);
struct client_call *call_of_future(arpc_future *f); /* the inverse */
/* The hooks of every call's future (client_api.c): the cancel hook (nobody can cancel before
 * call_start returns the future) and the block's free function. */
extern const struct arpc_future_owner call_future_owner;
void call_future_gone(arpc_future *f); /* its owner's free function: frees the block */
/* Copies the method (unless call_new kept its index) and the payload into the call (what
 * call_new was given). Any thread that owns the call before the loop sees it. */
void call_set_request(struct client_call *call, const char *method, size_t method_len, const void *payload,
                      size_t payload_len);
/* What the call keeps of its request, *len bytes: the frame's bytes after its head (call_head):
 * the payload when the method's name is kept in cl_names (the head carries it), else the
 * method and the payload. Any thread that may read the call. */
uint8_t *call_body(struct client_call *call, size_t *len);
/* The length of the call's head (call_head), and of its whole frame: the head and the body. */
size_t call_head_len(const struct client_call *call);
size_t call_frame_size(struct client_call *call);
/* The frame's header and fixed fields, and the method's name when the call keeps only its
 * index (call_head_len bytes into head, which has room for ARPC_OUTQ_HEAD_MAX: the bytes
 * after the head's may be written too), for a send with the
 * call's xid and seq (cc_xid, call_seq), ack and budget; body and body_len: call_body's.
 * Returns the bytes written. */
size_t call_head(const struct client_call *call, const uint8_t *body, size_t body_len, uint8_t *head, uint64_t ack,
                 uint32_t budget_ms);
void call_discard(struct client_call *call);
/* The call is done with (any thread; once): cl_live drops, and its memory goes once the
 * output queue has let go of its request too. */
void call_free(struct client_call *call);
/* The call's deadline or give-up time came (client_deadlines.c calls it). */
void call_on_deadline(struct client_call *call);
/* The code a call ends with when the client cannot carry it on for reason. If it never
 * reached a server (it did not run): reason itself, but ARPC_EUNREACHABLE for a lost
 * connection (ARPC_ECONNLOST says "may have run"). Else one that says it may have run:
 * ARPC_ECANCELLED for the client's close (ARPC_ESHUTDOWN), ARPC_ECONNLOST otherwise. */
int call_ended_code(const struct client_call *call, int reason);

/* Why a call sent on a connection since lost ends ARPC_ECONNLOST rather than being sent
 * again: the first words of its result (client_lost_why adds the loss itself). */
#define CALL_LOST_NO_RETRY "sent, then its connection was lost; ARPC_NO_RETRY: not sent again, so it may or may not have run"
#define CALL_LOST_NO_RECONNECT                                                                                   \
    "sent, then its connection was lost, and the client does not reconnect (no_reconnect): it may or may not have run"
#define CALL_LOST_GAVE_UP                                                                                        \
    "sent, then its connection was lost, and none came back within reconnect_give_up_ms: it may or may not have run"
#define CALL_LOST_FORGOTTEN                                                                                      \
    "sent, then its connection was lost, and the server reached again does not remember the call (it restarted " \
    "without a reply log, keeps no at-most-once replies, or is another server): it may or may not have run"
#define CALL_LOST_EXPIRED                                                                                        \
    "sent, then its connection was lost, and it was first sent longer ago than the server surely keeps an idle " \
    "client's replies (9/10 of its expiry): it may or may not have run"
#define CALL_LOST "sent, then its connection was lost: it may or may not have run"
/* A call whose deadline the client's own timer found passed, sent or queued on a live
 * connection (a server that answers first, at the deadline it was sent, gives its own words). */
#define CALL_TIMED_OUT "no answer came by the call's deadline (the client's timer): it may or may not have run"
/* A connected client's call whose deadline passed before its loop took it up (busy). */
#define CALL_NOT_SENT_IN_TIME "the call's deadline passed before the client's loop could send it (the loop was busy): it did not run"
/* A call sent before (on a connection since lost, or by its caller) that the client had no
 * memory to carry on: the whole of its result, no loss added (there may have been none). */
#define CALL_LOST_NO_MEMORY                                                                                   \
    "sent, then the client had no memory to await its reply or send it again: it may or may not have run"
/* A call whose connection was lost: why it cannot wait to be sent again (no reconnecting, or
 * sent and ARPC_NO_RETRY), or NULL when it waits for the next connection. */
const char *call_not_resent_why(const arpc_client *c, const struct client_call *call);
/* Ends the call as call_ended_code(call, ARPC_ECONNLOST) says, with why (CALL_LOST_...) and
 * the connection's loss as its result when that is ARPC_ECONNLOST. */
void call_finish_lost(struct client_call *call, const char *why);
/* Ends the call the client has no memory to carry on: ARPC_ENOMEM if no send of it may have
 * reached a server, else ARPC_ECONNLOST with CALL_LOST_NO_MEMORY as its result. */
void call_finish_no_memory(struct client_call *call);
/* Ends the call its client cannot send any more (closed, or lost for good): as
 * call_ended_code(call, reason) says. say_why: the client was refused for good (CL_LOST), so a
 * call never sent carries why (client_unreachable_why) as its result. */
void call_finish_unavailable(struct client_call *call, int reason, bool say_why);
/* Sends the call on the current connection; now_ns: a clock read just made (its budget is
 * counted from it), or 0 to read one. */
void call_send(struct client_call *call, uint64_t now_ns);
/* A call that reached the loop (call_land) is started there: sent, or waiting for a
 * connection (or ended: call_arrive). call_job_start, the job of a call posted to the loop, is
 * call_land and this. */
void call_loop_start(struct client_call *call);
/* A call reaches the loop: counted, numbered (at-most-once, unless its caller numbered it) and
 * ordered; false when it ended there (client closed or lost, cancelled, past its deadline).
 * A call its caller wrote already (written) is not ended for a cancel: the cancel's own job,
 * which follows, ends it and tells the server, which may be running it. For a call with a
 * deadline, *now_ns is set to the clock read its check made (else left alone). */
bool call_arrive(struct client_call *call, bool written, uint64_t *now_ns);
/* The call was sent on the current connection with the xid its request carries: into the
 * pending table, its deadline armed, marked sent. False when it ended instead (ARPC_ENOMEM). */
bool call_track(struct client_call *call);
/* Out of the pending table (it is in: cc_tracked). */
void call_untrack(struct client_call *call);
/* The call went out (on the current connection, or the one just lost): sent, when, to whom. */
void call_mark_sent(struct client_call *call);
/* A hold on the call's request bytes (for an output queue): *holder, released with the
 * returned function. Any thread, while the caller holds the call's memory. */
arpc_outq_release_fn call_hold_frame(struct client_call *call, void **holder);
/* The connection's op: a request block its output queue never wrote whole (at its close). */
void call_on_unwritten(struct arpc_conn *conn, void *base, arpc_outq_release_fn release, size_t left, bool offered);
/* At the loss of the connection the call was last sent on (untracked): whether that send left
 * whole, and was read. If it did not, or the server's last word said it read no call it had not
 * answered (cl_unread), that send cannot have run: the call counts as sent only if an earlier
 * send left whole (cc_reached). Then forget the blocks with
 * calls_unwritten_forget, once every call of the connection was asked. */
void call_settle_sent(struct client_call *call);
/* ms left for the wire, at least 1; 0: none. now_ns: a clock read just made, or 0 to read one. */
uint32_t call_budget_ms(const struct client_call *call, uint64_t now_ns);

/* client_direct.c */
/* Any thread but the loop's: writes the call's request itself when the connection is idle
 * and hands the call to the loop without waking it. False when it did not (nothing
 * written, nothing changed): the caller posts the call to the loop as usual. */
bool client_direct_try(arpc_client *c, struct client_call *call);
/* Loop thread: every call its caller wrote reaches the loop now (before the pending table or
 * the waiting list is looked through, e.g. for a reply's xid). */
void client_direct_catch_up(arpc_client *c);
void client_direct_init(arpc_client *c);
/* Loop thread: callers may write the connection now (the server's HELLO came) / no longer
 * (it is lost, or draining); pausing waits for a caller inside its one send. */
void client_direct_resume(arpc_client *c);
void client_direct_pause(arpc_client *c);
/* Loop thread, at close: paused for good, every call taken, the sweep disarmed. */
void client_direct_stop(arpc_client *c);
/* Whether a reply's xid is one a caller chose (then client_direct_catch_up may find it). */
#define CD_XID_BIT ARPC_XID_CALLER_BIT /* core/frame.h */

/* client_deadlines.c */
/* Arms the call's wheel node at its deadline: the call has one (cc_timed), and its node is not
 * armed yet (a deadline never changes: armed once, at the call's first send or wait, it stays
 * so until the call finishes). ARPC_OK, or ARPC_ENOMEM (then not armed). */
int call_arm(struct client_call *call);
void call_disarm(struct client_call *call);

/* client_give_up.c (loop thread, but give_up_init) */
void give_up_init(arpc_client *c);  /* any thread, before the loop sees c */
void give_up_stop(arpc_client *c);  /* at close (client_deadlines_stop) */
/* A call began to wait, giving up at when (ns; ARPC_NEVER: never): the deadline waits for it
 * if nothing sooner is waited for. ARPC_OK, or ARPC_ENOMEM (the loop's heap). */
int give_up_arm(arpc_client *c, uint64_t when);

/* client_resend.c */
void resend_wait(arpc_client *c, struct client_call *call);    /* waits for a connection */
void resend_unlink(arpc_client *c, struct client_call *call);  /* leaves the waiting list */
void resend_seq_done(arpc_client *c, uint64_t seq);            /* a numbered call finished */
/* Tells the server what the client finished beyond its ack (an ACK frame), if anything and if
 * the server hears it (ARPC_HELLO_ACKS) on a ready connection. Loop thread. */
void resend_ack_beyond_tell(arpc_client *c);

#endif
