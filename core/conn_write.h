/*
 * Who writes a connection's socket: one atomic ownership word per connection, so a thread other
 * than the loop (a worker replying) may write its frame itself when nobody else is writing,
 * without waking the loop (the way brpc writes: the first writer writes inline).
 *
 * The word (w_state) says who may write:
 *   0           nobody: the first thread to CAS it to CW_WRITER (or the loop, to CW_LOOP) owns it
 *   CW_WRITER   a thread other than the loop writes one whole frame inline, with one non-blocking
 *               send; it never waits for room
 *   CW_LOOP     the loop writes: its output queue (core/outq.h) is being flushed or waits for the
 *               socket to take more. Everything others send meanwhile is queued on the loop, so
 *               under pipelined load replies still leave many per gathered write
 *   CW_HANDOFF  a writer's send took only part of its frame: the rest must be the next bytes on
 *               the wire, so nobody writes until the loop has put that rest at the front of its
 *               queue (arpc_conn_send_rest), which makes the word CW_LOOP
 *   CW_WANTED   (with CW_WRITER or CW_HANDOFF) the loop wanted to flush its queue and could not:
 *               the writer leaves the socket to the loop (CW_LOOP: the frames the loop queued
 *               came first, and go first, so that no later frame passes them: a client's calls
 *               keep their order) and brings it a job with a wake-up (ARPC_DIRECT_ALL_WAKE)
 *   CW_CLOSED   the loop closed the connection: nobody writes again. The loop closes the fd
 *               itself, once a writer still inside its send has left (so the fd number is never
 *               reused while a send on it is under way, and libev's own uses of the fd and the
 *               close stay on one thread, in order)
 *
 * Frames never interleave: bytes are written only by the owner, and an owner that cannot finish
 * a frame hands the rest on before anyone else may write. Producers never wait for each other: a
 * thread that finds the word taken does not wait, it hands its frame to the loop as before.
 *
 * A writer brings the loop a job after it leaves (arpc_conn_direct_done), which starts the
 * loop's flush again if the loop queued frames meanwhile: the server's reply job does it for
 * every reply written inline. That job may wait for the loop's next turn (a lazy post), unless
 * the loop found the socket taken (CW_WANTED): then it must wake the loop.
 *
 * Direct writes are allowed per connection (arpc_conn_allow_direct, off by default) and only over
 * a stream whose writes any thread may make (s_thread_safe: the plain socket). A TLS stream keeps
 * them off: its SSL object is the loop thread's, and it is written by the loop alone.
 */
#ifndef ARPC_CORE_CONN_WRITE_H
#define ARPC_CORE_CONN_WRITE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/uio.h>

#include "core/outq.h"

enum {
    CW_WRITER = 1u << 0,
    CW_LOOP = 1u << 1,
    CW_HANDOFF = 1u << 2,
    CW_CLOSED = 1u << 3,
    CW_WANTED = 1u << 4,
};

struct arpc_conn_writer {
    _Atomic uint32_t w_state;
    int w_fd;         /* fixed when allowed: a writer never reads c_fd, which the loop clears at close */
    bool w_direct;    /* threads other than the loop may write inline (set before any may try) */
    bool w_loop_waits; /* loop thread: its flush found the socket taken; the writer's job restarts it */
};

struct arpc_conn;

/* Loop thread, before the connection is shared: lets other threads write this connection
 * inline. Does nothing (returns false) over a stream that is not thread-safe (TLS). */
bool arpc_conn_allow_direct(struct arpc_conn *conn);

/* Loop thread: takes the socket for the loop's own flush. False while another thread writes or
 * a handed-off rest is not queued yet (CW_WANTED is then set): that thread's job, with a
 * wake-up, restarts the flush. Always true on a connection without direct writes. */
bool arpc_conn_writer_take(struct arpc_conn *conn);
/* Loop thread: the output queue is empty; others may write again. */
void arpc_conn_writer_leave(struct arpc_conn *conn);
/* Loop thread: for last words before a close, waits for a thread inside its send to leave (one
 * non-blocking send: a bounded wait) and takes the socket. False if a handed-off rest is pending. */
bool arpc_conn_writer_take_waiting(struct arpc_conn *conn);
/* Loop thread, at close, before the stream closes the fd: nobody writes again; waits for a
 * thread inside its send to leave (a bounded wait: one non-blocking send). */
void arpc_conn_writer_close(struct arpc_conn *conn);

enum arpc_direct {
    ARPC_DIRECT_NONE, /* nothing written: send the frame through the loop as usual */
    ARPC_DIRECT_ALL,  /* the whole frame is written */
    ARPC_DIRECT_ALL_WAKE, /* the whole frame is written, and the loop waits to flush its own
                           * queue: its job must wake it (not a lazy post) */
    ARPC_DIRECT_PART, /* *written bytes (0 < *written < len) are written; the rest must reach the
                       * loop's arpc_conn_send_rest, and nobody writes this socket until then */
};

/* Any thread but the loop's: writes data[0..len) with one non-blocking send if direct writes
 * are allowed and nobody else is writing. Never waits. The caller keeps conn's memory alive
 * (a reference) across the call; a connection closed meanwhile is never written. A socket error
 * or a full socket writes nothing (NONE): the loop then meets it itself. The rest of a PART
 * goes to arpc_conn_send_rest (core/conn.h). Counts nothing: the
 * loop adds *written to the connection's io_bytes_out when the writer's job reaches it (its
 * counters have one writer, core/stats.h). */
enum arpc_direct arpc_conn_write_direct(struct arpc_conn *conn, const uint8_t *data, size_t len, size_t *written);
/* As arpc_conn_write_direct for a frame in pieces: iov[0..iovcnt), len bytes in all, gathered
 * in one non-blocking sendmsg (a request's header made at the send, then what its call keeps). */
enum arpc_direct arpc_conn_writev_direct(struct arpc_conn *conn, const struct iovec *iov, int iovcnt, size_t len,
                                         size_t *written);
/* As arpc_conn_writev_direct for whole frames, one per iovec (a worker's replies of one take,
 * core/reply_take.c): a PART that stops exactly between two frames cut none, so it leaves no
 * rest (nothing to pass to arpc_conn_send_rest) and lets the socket go; the frames not written
 * go to the loop's queue whole. */
enum arpc_direct arpc_conn_writev_frames_direct(struct arpc_conn *conn, const struct iovec *iov, int iovcnt,
                                                size_t len, size_t *written);

/* Loop thread: a thread wrote this connection inline and has left; frames the loop queued
 * meanwhile (it could not take the socket) are flushed now (or, should none be left, the
 * socket the writer left to the loop is let go). */
void arpc_conn_direct_done(struct arpc_conn *conn);

/* The word a writer leaves behind (st: the word as it leaves; handoff: CW_HANDOFF for a rest
 * it left the loop, else 0). Its own bit goes; a rest keeps CW_WANTED for the loop's take of
 * the rest; a loop that wanted the socket gets it (CW_LOOP). */
static inline uint32_t arpc_conn_writer_left(uint32_t st, uint32_t handoff)
{
    if (handoff)
        return (st & ~(uint32_t)CW_WRITER) | handoff;
    if (st & CW_WANTED)
        return (st & ~(uint32_t)(CW_WRITER | CW_WANTED)) | CW_LOOP;
    return st & ~(uint32_t)CW_WRITER;
}

#endif
