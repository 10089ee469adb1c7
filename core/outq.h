/*
 * arpc_outq: a connection's queue of encoded frames waiting to be written, flushed with one
 * gathered write (the stream's s_writev with an iovec array) per batch (up to 256 iovecs).
 * Loop thread only.
 *
 * Each queued buffer is owned by the queue and released once fully written (or when the
 * queue is destroyed), so producers hand over a buffer and forget it. Released means
 * arpc_free, or the buffer's own release function for a buffer the producer shares (a call
 * keeps its request's method and payload for re-sends: a reference count of its own).
 *
 * Small buffers (ARPC_OUTQ_COPY_MAX bytes or fewer) are copied, at the flush, into a stage on the
 * stack and written from there, a run of them as one iovec: the kernel's sendmsg costs ~16 ns
 * per iovec on loopback TCP (256 iovecs of 33 B: 5.2 us; the same bytes copied and written as
 * one: 1.6 us), so a pipelined batch of small frames is cheaper copied once more than gathered
 * (docs/PERFORMANCE.md, "Small frames written from one stage, and a batch of 64 frames").
 *
 * A buffer may be pushed with a head: up to ARPC_OUTQ_HEAD_MAX bytes the queue copies and
 * writes just before it, in the same gathered write (a client's request: the frame header and
 * fixed fields, and the method's name when the client keeps it once, made at each send, before
 * the payload (or method and payload) the call keeps). The heads
 * live in a ring of the queue's own, parallel to the buffers (allocated at the first head), so
 * a buffer queued without one costs nothing more.
 */
#ifndef ARPC_CORE_OUTQ_H
#define ARPC_CORE_OUTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport/stream.h"

typedef void (*arpc_outq_release_fn)(void *base);

/* Buffers of this many bytes or fewer are copied into the flush's stage (see above), which
 * holds ARPC_OUTQ_STAGE bytes: a write carries at most that much of small buffers. */
#define ARPC_OUTQ_COPY_MAX 256
#define ARPC_OUTQ_STAGE (12 * 1024)

/* The largest head (arpc_outq_push_headed): a request's header and fixed fields (40 bytes)
 * and a method name of up to 24 bytes (a client keeps short names once: core/method_names.h). */
#define ARPC_OUTQ_HEAD_MAX 64

struct arpc_outq_buf {
    void *b_base;  /* start of the allocation, released when written */
    uint8_t *b_data;
    size_t b_len;  /* bytes still to write, starting at b_data */
    arpc_outq_release_fn b_release; /* NULL: arpc_free */
};

struct arpc_outq {
    struct arpc_outq_buf *q_bufs; /* ring of buffers */
    uint8_t *q_heads;             /* the heads' bytes, ARPC_OUTQ_HEAD_MAX a head, one head's room
                                   * for each two slots of q_bufs (a head is a buffer of its own
                                   * there, followed by its buffer's); NULL until the first */
    size_t q_head, q_count, q_cap; /* q_cap is a power of two */
    size_t q_bytes;                /* bytes still to write */
    size_t q_nheads;               /* of the q_count buffers, heads (not frames of their own) */
};

void arpc_outq_init(struct arpc_outq *q);
/* Frees every queued buffer. */
void arpc_outq_fini(struct arpc_outq *q);
/* Queues len bytes at data, inside the allocation base (freed when written). On ARPC_ENOMEM
 * the buffer is NOT taken: the caller still owns base. */
int arpc_outq_push(struct arpc_outq *q, void *base, uint8_t *data, size_t len);
/* As arpc_outq_push, released with release(base) instead of arpc_free. */
int arpc_outq_push_shared(struct arpc_outq *q, void *base, uint8_t *data, size_t len,
                          arpc_outq_release_fn release);
/* As arpc_outq_push_shared, at the front: the rest of a frame another thread began writing
 * (core/conn_write.h), which must be the next bytes on the wire. */
int arpc_outq_push_front_shared(struct arpc_outq *q, void *base, uint8_t *data, size_t len,
                                arpc_outq_release_fn release);
/* As arpc_outq_push_shared (front: as arpc_outq_push_front_shared), with head[0..head_len)
 * (copied; head_len <= ARPC_OUTQ_HEAD_MAX, 0: none) written just before data[0..len). Both or
 * neither: on ARPC_ENOMEM nothing is queued and the caller still owns base. */
int arpc_outq_push_headed(struct arpc_outq *q, const uint8_t *head, size_t head_len, void *base, uint8_t *data,
                          size_t len, arpc_outq_release_fn release, bool front);
/* Calls fn(base, release, left, ahead, arg) for each buffer still queued (not wholly
 * written), oldest first (heads are not buffers of anyone's: skipped): left, its bytes not yet
 * written; ahead, the bytes queued before its frame (before its head, if it has one). The
 * queue is left as it is. */
typedef void (*arpc_outq_each_fn)(void *base, arpc_outq_release_fn release, size_t left, size_t ahead, void *arg);
void arpc_outq_each(const struct arpc_outq *q, arpc_outq_each_fn fn, void *arg);
/* Takes out of the queue the frame whose buffer is base, if no byte of it can have left: not
 * the first frame (it may be half written), nor one that begins within the first owed bytes
 * (a stream that must be offered them again as they are: transport/stream.h's s_write_owed).
 * Looks at the look frames past those and the look newest, no further, so a caller pays
 * little for a frame not there (written already) and finds both a frame whose deadline comes
 * in the order the frames were queued and one just queued; a frame further in from both ends
 * stays. True if taken out: the buffer is released (the head is the queue's) and *bytes says
 * how many bytes left the queue, its head's included. The other frames keep their order (the
 * side with fewer entries moves into the gap). */
bool arpc_outq_withdraw(struct arpc_outq *q, const void *base, size_t owed, size_t look, size_t *bytes);
/* Writes as much as the stream takes. Returns ARPC_OK (all written), ARPC_EAGAIN (the socket
 * is full; more remains: call again once it is writable), ARPC_EPENDING (more remains, and
 * the stream must read first, e.g. a TLS handshake waiting for the peer: call again once the
 * fd is readable), or the stream's s_error (ARPC_ECONNLOST, ARPC_ETLS: broken for good). */
int arpc_outq_flush(struct arpc_outq *q, struct arpc_stream *s);
static inline bool arpc_outq_empty(const struct arpc_outq *q) { return q->q_count == 0; }
/* Frames (or their rests) queued: the buffers, a head and its buffer counted once. */
static inline size_t arpc_outq_frames(const struct arpc_outq *q) { return q->q_count - q->q_nheads; }

#endif
