/*
 * Design notes (the contract is in conn_write.h).
 *
 * Why a word and not a lock: a writer that finds the socket taken must not wait (on 2 cores the
 * holder may be preempted for a whole time slice), so losing the race is not an error but the
 * old path: the frame goes to the loop's queue. Only the loop ever waits, and only at a close
 * (for last words, arpc_conn_writer_take_waiting, and before the fd is closed), for a holder
 * inside one non-blocking send.
 *
 * Memory order: every transition is a seq_cst read-modify-write of w_state, so they are totally
 * ordered. A writer's CAS from 0 and the loop's fetch_or of CW_CLOSED: whichever comes second
 * sees the other's bit (the writer then does not write; the loop waits for it to leave, which
 * also orders the writer's send before the close for ThreadSanitizer's model of fds). The bytes
 * a writer sends are made by that writer, and the loop's queue is touched by the loop alone, so
 * the word orders nothing else.
 *
 * Why the loop's queue drains before a writer may write again: replies have no order between
 * them, but a frame the loop has half written must be finished first. CW_LOOP is held from the
 * loop's take until its queue is empty (across EAGAIN and the write watcher), so while the loop
 * is behind, writers queue behind it too: under pipelined load the loop keeps batching. For the
 * same reason a writer that leaves while the loop wanted the socket (CW_WANTED: the loop queued
 * frames while the writer wrote) leaves it to the loop, not to nobody: a third thread's CAS
 * from 0 in the gap before the loop's job ran would put its frame ahead of those. A client's
 * requests have an order (one thread's calls reach the server as it made them; per-key order
 * on the server rests on it): a stress trial under TSan saw a thread's second call pass its
 * first, which the loop had queued while another caller wrote.
 *
 * A connection that never allowed direct writes never touches the word (TLS, JSON-RPC): its
 * flushes cost no atomic.
 */
#include "core/conn_write.h"

#include <errno.h>
#include <sys/socket.h>

#include "base/backoff.h"
#include "core/conn.h"

bool arpc_conn_allow_direct(struct arpc_conn *conn)
{
    if (!arpc_conn_stream_thread_safe(conn))
        return false; /* TLS: the loop thread's SSL object writes every byte */
    struct arpc_conn_writer *w = &conn->c_writer;
    if (w->w_direct)
        return true;
    atomic_init(&w->w_state, 0);
    w->w_fd = conn->c_stream->s_fd;
    w->w_direct = true;
    return true;
}

bool arpc_conn_writer_take(struct arpc_conn *conn)
{
    struct arpc_conn_writer *w = &conn->c_writer;
    if (!w->w_direct)
        return true;
    uint32_t st = atomic_load(&w->w_state);
    for (;;) {
        if (st & CW_LOOP)
            break; /* held since an earlier flush that left bytes queued */
        if (!(st & (CW_WRITER | CW_HANDOFF))) {
            if (atomic_compare_exchange_weak(&w->w_state, &st, CW_LOOP))
                break; /* (a CW_WANTED left from a writer that already left is spent) */
            continue;
        }
        /* Taken: the holder wakes us as it leaves (its job restarts our flush). */
        if ((st & CW_WANTED) || atomic_compare_exchange_weak(&w->w_state, &st, st | CW_WANTED)) {
            w->w_loop_waits = true;
            return false;
        }
    }
    w->w_loop_waits = false;
    return true;
}

void arpc_conn_writer_leave(struct arpc_conn *conn)
{
    if (conn->c_writer.w_direct)
        atomic_fetch_and(&conn->c_writer.w_state, ~(uint32_t)CW_LOOP);
}

bool arpc_conn_writer_take_waiting(struct arpc_conn *conn)
{
    unsigned attempt = 0;
    while (!arpc_conn_writer_take(conn)) {
        if (atomic_load(&conn->c_writer.w_state) & CW_HANDOFF)
            return false; /* its rest is a job behind us on the lane */
        arpc_backoff_spin(&attempt);
    }
    return true;
}

void arpc_conn_writer_close(struct arpc_conn *conn)
{
    struct arpc_conn_writer *w = &conn->c_writer;
    if (!w->w_direct)
        return;
    /* A writer inside its send finishes it first: the fd number must not be reused under it. */
    unsigned attempt = 0;
    if (atomic_fetch_or(&w->w_state, CW_CLOSED) & CW_WRITER)
        while (atomic_load(&w->w_state) & CW_WRITER)
            arpc_backoff_spin(&attempt);
}

/* A writer leaves; with CW_HANDOFF it leaves a rest behind for the loop (which takes CW_WANTED
 * over with it). A loop that wanted the socket meanwhile gets it, not the next writer: its
 * queue holds frames made before that writer's (a client's calls of one thread: one went to
 * the loop while this writer wrote, the next must not pass it). Returns whether it did. */
static bool writer_leave(struct arpc_conn_writer *w, uint32_t handoff)
{
    uint32_t st = atomic_load(&w->w_state);
    while (!atomic_compare_exchange_weak(&w->w_state, &st, arpc_conn_writer_left(st, handoff)))
        ;
    return (st & CW_WANTED) != 0;
}

/* True when the first n bytes of iov end exactly where one iovec ends. */
static bool ends_between(const struct iovec *iov, int iovcnt, size_t n)
{
    for (int i = 0; i < iovcnt && n >= iov[i].iov_len; i++) {
        n -= iov[i].iov_len;
        if (n == 0)
            return true;
    }
    return false;
}

/* whole_frames: each iovec is a frame of its own, so a send that stops between two has cut
 * none and leaves no rest to hand over. */
static enum arpc_direct writev_direct(struct arpc_conn *conn, const struct iovec *iov, int iovcnt, size_t len,
                                      size_t *written, bool whole_frames)
{
    struct arpc_conn_writer *w = &conn->c_writer;
    *written = 0;
    uint32_t idle = 0;
    if (!w->w_direct || !atomic_compare_exchange_strong(&w->w_state, &idle, CW_WRITER))
        return ARPC_DIRECT_NONE;
    struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    ssize_t n;
    do /* MSG_NOSIGNAL: a peer gone is EPIPE, not SIGPIPE; MSG_DONTWAIT: never wait for room */
        n = sendmsg(w->w_fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n <= 0 || (size_t)n == len) {
        bool wanted = writer_leave(w, 0);
        if (n <= 0)
            return ARPC_DIRECT_NONE; /* full or broken: the loop queues it (a post that wakes it)
                                      * and meets either itself */
        *written = len;
        return wanted ? ARPC_DIRECT_ALL_WAKE : ARPC_DIRECT_ALL;
    }
    /* Cut between two frames: nothing is owed to finish, so the word is let go as after a
     * whole send (a rest handed over would never come, and CW_HANDOFF would stay for good). */
    writer_leave(w, whole_frames && ends_between(iov, iovcnt, (size_t)n) ? 0 : CW_HANDOFF);
    *written = (size_t)n;
    return ARPC_DIRECT_PART;
}

enum arpc_direct arpc_conn_writev_direct(struct arpc_conn *conn, const struct iovec *iov, int iovcnt, size_t len,
                                         size_t *written)
{
    return writev_direct(conn, iov, iovcnt, len, written, false);
}

enum arpc_direct arpc_conn_writev_frames_direct(struct arpc_conn *conn, const struct iovec *iov, int iovcnt,
                                                size_t len, size_t *written)
{
    return writev_direct(conn, iov, iovcnt, len, written, true);
}

enum arpc_direct arpc_conn_write_direct(struct arpc_conn *conn, const uint8_t *data, size_t len, size_t *written)
{
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    return arpc_conn_writev_direct(conn, &iov, 1, len, written);
}

void arpc_conn_direct_done(struct arpc_conn *conn)
{
    if (!conn->c_open)
        return;
    if (arpc_outq_empty(&conn->c_out)) {
        /* The frames the loop wanted the socket for left meanwhile (a request taken back at
         * its deadline): the socket a writer left the loop (CW_LOOP) is nobody's again. Only
         * a loop that wanted it (w_loop_waits, the loop's own) can have been left it: no
         * locked instruction on the writers' word for every reply a worker wrote, which cost
         * the loop ~4% of its samples under pipelined load. */
        if (conn->c_writer.w_loop_waits && !ev_is_active(&conn->c_wio))
            arpc_conn_writer_leave(conn);
        return;
    }
    if (!ev_is_active(&conn->c_flush) && !ev_is_active(&conn->c_wio)) {
        ev_prepare_start(conn->c_ev, &conn->c_flush);
        arpc_loop_prepare_due(conn->c_loop);
    }
}
