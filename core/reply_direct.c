/*
 * A worker's reply written by the worker itself, so the reply does not wait for the loop to wake
 * up just to write it (core/conn_write.h says who may write a socket and when).
 *
 * The reply still goes to the loop afterwards, as a job, for what only the loop may touch: the
 * cancel table, the deadline, the reply cache (a numbered call's waiters other than this
 * request get their copies there; this one is skipped), the flow limits' counts (what the call
 * owed its connection is paid then: until then it counts as owed, never less than the loop path
 * counts), the stats (the bytes written count in io_bytes_out then: the counters have one
 * writer, the loop), and freeing the request. What leaves early is only the bytes, and only
 * where nothing else decides when or how they may leave (request.c, reply_with):
 *   - a plain-socket connection that speaks arpc frames: never TLS (its SSL object is the loop
 *     thread's; arpc_conn_allow_direct refuses it) nor JSON-RPC (its replies are re-encoded on
 *     the loop, core/jsonrpc_server.c);
 *   - the call ran: a caller told "did not run" may retry at once, and its retry must find the
 *     call forgotten by the reply cache (its abort runs on the loop), not still running;
 *   - no reply log: with one, a reply leaves only once its record is durable (server_journal.c);
 *   - the server did not answer the caller itself (deadline, stop): then the reply is dropped
 *     (decided by the same read-modify-write of rq_flags that settles it);
 *   - not on the loop's own thread, nor for an inline method or one whose requests go to a
 *     queue (a reply made on the loop is batched there for free; one made later on another
 *     thread is not watched for by the lazy deadline below);
 *   - the loop sleeps in its poll with nothing posted to it (arpc_loop_idle): while it runs
 *     (reading a pipelined batch, draining its lane) or has jobs or a wake-up pending, the
 *     replies join its batch, many in one gathered write, where a direct write would cost a
 *     send per reply and cut the batch. Only a reply that would wake an idle loop just to be
 *     written is written here. (A pollable loop counts as running between its steps: its
 *     workers' replies take the loop's path.)
 * A frame that went out in part has its rest queued first by the loop (CW_HANDOFF: nobody
 * writes the socket until then); one the socket took nothing of goes the usual way.
 *
 * A reply written whole is not worth a wake-up of the loop: its job is posted lazily
 * (arpc_loop_post_lazy) and runs when the loop next wakes, typically at the next request's
 * arrival, after that request is read and handed to its worker: off the next call's path. The
 * reply cache and the flow limits take that order: an ack of the call that overtakes its
 * bookkeeping leaves its entry running until then, and the bookkeeping then removes it; a
 * GOAWAY that finds the client's call still running is remembered (by the reply cache) and
 * the client forgotten once the call is booked; the call counts toward its connection's limits a
 * little longer (more conservative, never less). Two things cannot wait that long, and wake it: frames
 * the loop queued for this connection while the worker wrote (ARPC_DIRECT_ALL_WAKE), and a
 * stop, which waits for every request to be let go (request.c, server_loop_hand: the poster
 * looks at the state after its push, the stop stores it before the drain of its first step, so
 * one of them sees the other).
 *
 * "Next wakes" must come even when no request follows: a lazy job pushed while the loop sleeps
 * would otherwise hold its request, connection and reply-cache entry until some other event.
 * So while calls are out at workers (sv_awaiting is not empty) one deadline (sv_lazy, on the
 * loop's deadline heap: a pollable or wrapped loop has no timers of its own) turns the loop:
 * after 1 ms, then at doubling intervals up to LAZY_MAX_S while calls stay out, and it is not
 * re-armed once none is (an idle server sleeps). Under steady traffic it fires about once per
 * interval, not per call; a handler that holds its request for long costs a wake-up per
 * LAZY_MAX_S.
 */
#include "arpc/error.h"
#include "core/conn_write.h"
#include "core/request_internal.h"
#include "core/server_internal.h"

bool reply_direct_write(struct reply_msg *rm)
{
    struct server_conn *sc = rm->rm_req->rq_state->rs_conn; /* held by the request until the job ran */
    size_t written = 0;
    enum arpc_direct how = arpc_conn_write_direct(&sc->sc_conn, rm->rm_frame, rm->rm_len, &written);
    rm->rm_direct = written;
    rm->rm_direct_to = sc;
    return how == ARPC_DIRECT_ALL;
}

#define LAZY_FIRST_S 0.001
#define LAZY_MAX_S 0.064

static void lazy_on_deadline(struct arpc_deadline *d, void *arg)
{
    arpc_server *s = arg;
    if (s->sv_awaiting.dl_head == NULL)
        return; /* nothing out: rest until the next call goes to a worker */
    /* Out still (their lazy jobs, if any, ran as the loop woke for this): look again later. */
    s->sv_lazy_s = s->sv_lazy_s * 2 < LAZY_MAX_S ? s->sv_lazy_s * 2 : LAZY_MAX_S;
    (void)arpc_deadline_arm_after_s(s->sv_loop, d, s->sv_lazy_s); /* ENOMEM: see reply_direct_watch */
}

void reply_direct_watch(arpc_server *s)
{
    /* Another call is out too: a worker may take them together and hold their replies, whose
     * batch the loop must look at soon (core/reply_take.c); a deadline saves a wake-up per take.
     * (Whether a reply may be held is its own connection's matter, and the calls out may be on
     * several: armed for all, a server of TLS or JSON-RPC connections only turns for nothing.) */
    if (s->sv_awaiting.dl_head != NULL && s->sv_awaiting.dl_head->dl_next != NULL)
        (void)reply_take_turn_soon(s); /* (sv_lazy, below, turns it otherwise) */
    if (arpc_deadline_is_armed(&s->sv_lazy))
        return;
    s->sv_lazy_s = LAZY_FIRST_S;
    arpc_deadline_init(&s->sv_lazy, lazy_on_deadline, s);
    /* Out of memory for the heap: the lazy jobs then wait for the loop's next event (a request,
     * a stop); the next dispatch tries again. */
    (void)arpc_deadline_arm_after_s(s->sv_loop, &s->sv_lazy, LAZY_FIRST_S);
}

void reply_direct_unwatch(arpc_server *s)
{
    arpc_deadline_cancel(s->sv_loop, &s->sv_lazy);
    arpc_deadline_cancel(s->sv_loop, &s->sv_take_turn);
}


void reply_direct_finish(struct server_conn *sc, struct reply_msg *rm)
{
    struct arpc_conn *conn = &sc->sc_conn;
    arpc_stat_inc(&sc->sc_server->sv_direct_replies);
    size_t head = rm->rm_direct < rm->rm_len ? rm->rm_direct : rm->rm_len;
    if (conn->c_stats != NULL)
        arpc_stat_add(&conn->c_stats->io_bytes_out, head); /* the rest counts as it is written */
    if (head < rm->rm_len) {
        rm->rm_refs++; /* the rest's hold, besides the caller's (the reply cache may keep rm) */
        arpc_conn_send_rest(conn, rm, rm->rm_frame + head, rm->rm_len - head, reply_msg_release);
    }
    arpc_conn_direct_done(conn);
}
