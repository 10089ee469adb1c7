/*
 * The byte stream under a connection: how core/conn.c reads and core/outq.c writes, so that a
 * connection does not care whether its bytes travel in clear (a socket) or through TLS
 * (transport/tls_stream.c). An ops table with one implementation per kind, like the
 * transports'; the plain one (transport/stream.c) is a connection's default.
 *
 * Non-blocking only. A stream may need the fd to be readable before it can write (a TLS
 * handshake waiting for the peer's answer) or writable before it can read (a handshake
 * message to send): its results say which, and the caller waits for that, then calls the
 * same op again with the same bytes (writev: the same first bytes; more may follow).
 *
 * Threads: a stream is used by one thread at a time. s_thread_safe says whether that thread
 * may change (a plain socket: yes; TLS: no, an SSL object belongs to the loop thread), so a
 * writer on another thread must check it before writing directly.
 */
#ifndef ARPC_TRANSPORT_STREAM_H
#define ARPC_TRANSPORT_STREAM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "transport/transport.h"

/* Results below zero from s_read and s_writev. */
enum {
    ARPC_STREAM_WANT_READ = -1,  /* nothing now: call again once the fd is readable */
    ARPC_STREAM_WANT_WRITE = -2, /* nothing now: call again once the fd is writable */
    ARPC_STREAM_FAILED = -3,     /* broken for good: s_error and s_why say why */
};

struct arpc_stream;

/* s_handshake: what the peer did of the stream's handshake. */
enum arpc_stream_handshake {
    ARPC_STREAM_NO_HANDSHAKE = 0, /* none to do (plain), or the peer sent no byte of it yet */
    ARPC_STREAM_HANDSHAKE_BEGUN,  /* bytes of it came, and it has not ended (stalled there) */
    ARPC_STREAM_HANDSHAKE_DONE,   /* it ended: whatever follows is the application's */
};

struct arpc_stream_ops {
    /* Reads up to len (> 0) bytes into buf: the count (> 0), 0 when the peer closed the
     * stream, or a result above. Never blocks. */
    ssize_t (*s_read)(struct arpc_stream *s, void *buf, size_t len);
    /* Writes from iov[0..iovcnt) (iovcnt > 0, at most IOV_MAX): the count written (>= 0,
     * perhaps less than asked), or a result above. Never blocks; never raises SIGPIPE. */
    ssize_t (*s_writev)(struct arpc_stream *s, const struct iovec *iov, int iovcnt);
    /* Optional (NULL: never any): bytes already taken from the fd that s_read has not returned
     * yet (TLS: the rest of a decrypted record), or 1 when the next s_read has no byte but an
     * end to return (TLS: a close_notify or a failure already read, which every read from then
     * on returns). The fd's
     * readiness does not announce them, so a reader that stops while some remain must come
     * back by itself. */
    size_t (*s_buffered)(const struct arpc_stream *s);
    /* Optional (NULL: none): after s_writev answered a WANT, how many of the first bytes it was
     * given the next call must offer again as they are (TLS: the record begun; a socket takes
     * what it takes and holds nothing back). Bytes past them may still be changed. */
    size_t (*s_write_owed)(const struct arpc_stream *s);
    /* Optional (NULL: cannot): ends the sending side for good, telling the peer (a socket's
     * FIN; TLS: its close_notify first), while this side may still read to the peer's end.
     * ARPC_OK; ARPC_EAGAIN: call again once the fd is writable (TLS: the alert did not fit);
     * anything else: it cannot (then close). A lingering close waits for the peer's end only
     * after this, so that bytes the peer has not read yet are not lost to the reset a close
     * with unread input sends. */
    int (*s_shut_write)(struct arpc_stream *s);
    /* Optional (NULL: always ARPC_STREAM_NO_HANDSHAKE): how far the peer took the stream's
     * handshake (TLS). */
    enum arpc_stream_handshake (*s_handshake)(const struct arpc_stream *s);
    /* Closes the fd and releases the stream (for an allocated stream, its memory). */
    void (*s_close)(struct arpc_stream *s);
};

/* A stream kind allocates a larger struct beginning with this one for its private state. */
struct arpc_stream {
    const struct arpc_stream_ops *s_ops;
    int s_fd;           /* non-blocking; the one to watch for the WANT results */
    bool s_thread_safe; /* may be written from a thread other than the last one (see above) */
    int s_error;        /* after ARPC_STREAM_FAILED: ARPC_ECONNLOST (the peer or the network
                         * broke it), or ARPC_ETLS (handshake, certificate or record refused) */
    const char *s_why;  /* after ARPC_STREAM_FAILED: one line saying why ("" for none), valid
                         * until s_close */
    uint64_t s_setup_ns; /* CPU time its reads and writes spent before the peer was let in (TLS:
                          * the handshake, and on a server the reads up to s_let_in; 0 for
                          * plain): what a peer that then faults cost the server beyond a
                          * plain fault (core/fault_rate.c) */
    bool s_let_in;       /* the owner let the peer in (a server: its HELLO accepted): the
                          * set-up's clock stops (arpc_conn_let_in) */
    _Atomic uint64_t s_sent; /* bytes written to s_fd, in all (TLS: records, handshakes and
                              * alerts): against the kernel's send queue, what the peer took
                              * (core/conn.c, the write timeout). Written by the one thread
                              * writing at a time (arpc_stream_sent), read by any */
};

/* The writer's: n more bytes went to the fd. One writer at a time (the connection's writer
 * word, core/conn_write.h), so a relaxed load and store, no read-modify-write. */
static inline void arpc_stream_sent(struct arpc_stream *s, size_t n)
{
    atomic_store_explicit(&s->s_sent, atomic_load_explicit(&s->s_sent, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* Makes s the plain stream over fd (a non-blocking stream socket): reads with read(2),
 * writes with sendmsg(2) and MSG_NOSIGNAL. Nothing to allocate; s_close closes fd. */
void arpc_stream_plain_init(struct arpc_stream *s, int fd);

#endif
