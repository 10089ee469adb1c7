/* The output queue (core/outq.h): a connection's encoded frames, written with one gathered
 * write per batch, small ones copied into one stage first. */
#include "core/outq.h"

#include <assert.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

#include "arpc/error.h"
#include "base/alloc.h"

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

void arpc_outq_init(struct arpc_outq *q)
{
    q->q_bufs = NULL;
    q->q_heads = NULL;
    q->q_head = q->q_count = q->q_cap = 0;
    q->q_bytes = 0;
    q->q_nheads = 0;
}

/* A head's entry: its bytes are the queue's (q_heads, at the entry's slot); nothing to release. */
static void outq_head_done(void *base) { (void)base; }
static bool outq_is_head(const struct arpc_outq_buf *b) { return b->b_release == outq_head_done; }
/* A head's room: one for each two slots. A head's slot is always followed by its buffer's (both
 * pushed, and a grow moves them, together), so two heads never share slot / 2, and half a
 * room a slot is enough: a queued request pays 64 bytes of head room, not 128. */
static size_t outq_heads_size(size_t cap) { return cap / 2 * ARPC_OUTQ_HEAD_MAX; }
static uint8_t *outq_head_room(uint8_t *heads, size_t slot) { return heads + slot / 2 * ARPC_OUTQ_HEAD_MAX; }

static void outq_free_rings(struct arpc_outq *q)
{
    arpc_free(q->q_bufs);
    arpc_free(q->q_heads);
    arpc_outq_init(q);
}

static void outq_release(const struct arpc_outq_buf *b)
{
    if (b->b_release != NULL)
        b->b_release(b->b_base);
    else
        arpc_free(b->b_base);
}

void arpc_outq_fini(struct arpc_outq *q)
{
    for (size_t i = 0; i < q->q_count; i++)
        outq_release(&q->q_bufs[(q->q_head + i) & (q->q_cap - 1)]);
    outq_free_rings(q);
}

void arpc_outq_each(const struct arpc_outq *q, arpc_outq_each_fn fn, void *arg)
{
    size_t ahead = 0, frame = 0; /* frame: where the head just passed began */
    bool headed = false;
    for (size_t i = 0; i < q->q_count; i++) {
        const struct arpc_outq_buf *b = &q->q_bufs[(q->q_head + i) & (q->q_cap - 1)];
        if (outq_is_head(b)) {
            frame = ahead;
            headed = true;
        } else {
            fn(b->b_base, b->b_release, b->b_len, headed ? frame : ahead, arg);
            headed = false;
        }
        ahead += b->b_len;
    }
}

/* Doubles the ring (and the heads' ring, which heads asks for if there is none yet). */
static int outq_grow(struct arpc_outq *q, bool heads)
{
    size_t cap = q->q_cap ? q->q_cap * 2 : 64;
    struct arpc_outq_buf *bufs = arpc_malloc(cap * sizeof(*bufs));
    uint8_t *hb = NULL;
    if (bufs != NULL && (heads || q->q_heads != NULL) && (hb = arpc_malloc(outq_heads_size(cap))) == NULL) {
        arpc_free(bufs);
        bufs = NULL;
    }
    if (bufs == NULL)
        return ARPC_ENOMEM;
    /* Unwrap the ring into the new array, oldest first; a head's bytes (what is left of them)
     * move with it to its new slot. */
    for (size_t i = 0; i < q->q_count; i++) {
        bufs[i] = q->q_bufs[(q->q_head + i) & (q->q_cap - 1)];
        if (outq_is_head(&bufs[i])) {
            memcpy(outq_head_room(hb, i), bufs[i].b_data, bufs[i].b_len);
            bufs[i].b_data = outq_head_room(hb, i);
        }
    }
    arpc_free(q->q_bufs);
    arpc_free(q->q_heads);
    q->q_bufs = bufs;
    q->q_heads = hb;
    q->q_head = 0;
    q->q_cap = cap;
    return ARPC_OK;
}

int arpc_outq_push_shared(struct arpc_outq *q, void *base, uint8_t *data, size_t len,
                          arpc_outq_release_fn release)
{
    if (q->q_count == q->q_cap && outq_grow(q, false) != ARPC_OK)
        return ARPC_ENOMEM;
    q->q_bufs[(q->q_head + q->q_count) & (q->q_cap - 1)] = (struct arpc_outq_buf){base, data, len, release};
    q->q_count++;
    q->q_bytes += len;
    return ARPC_OK;
}

int arpc_outq_push_front_shared(struct arpc_outq *q, void *base, uint8_t *data, size_t len,
                                arpc_outq_release_fn release)
{
    if (q->q_count == q->q_cap && outq_grow(q, false) != ARPC_OK)
        return ARPC_ENOMEM;
    q->q_head = (q->q_head - 1) & (q->q_cap - 1);
    q->q_bufs[q->q_head] = (struct arpc_outq_buf){base, data, len, release};
    q->q_count++;
    q->q_bytes += len;
    return ARPC_OK;
}

int arpc_outq_push_headed(struct arpc_outq *q, const uint8_t *head, size_t head_len, void *base, uint8_t *data,
                          size_t len, arpc_outq_release_fn release, bool front)
{
    assert(head_len <= ARPC_OUTQ_HEAD_MAX);
    if (head_len == 0)
        return front ? arpc_outq_push_front_shared(q, base, data, len, release)
                     : arpc_outq_push_shared(q, base, data, len, release);
    if (q->q_count + 2 > q->q_cap && outq_grow(q, true) != ARPC_OK)
        return ARPC_ENOMEM; /* (doubled from 64 at least: room for two) */
    if (q->q_heads == NULL && (q->q_heads = arpc_malloc(outq_heads_size(q->q_cap))) == NULL)
        return ARPC_ENOMEM;
    size_t mask = q->q_cap - 1, hslot, bslot;
    if (front) {
        q->q_head = (q->q_head - 2) & mask;
        hslot = q->q_head;
        bslot = (q->q_head + 1) & mask;
    } else {
        hslot = (q->q_head + q->q_count) & mask;
        bslot = (hslot + 1) & mask;
    }
    uint8_t *h = outq_head_room(q->q_heads, hslot);
    memcpy(h, head, head_len);
    q->q_bufs[hslot] = (struct arpc_outq_buf){NULL, h, head_len, outq_head_done};
    q->q_bufs[bslot] = (struct arpc_outq_buf){base, data, len, release};
    q->q_count += 2;
    q->q_nheads++;
    q->q_bytes += head_len + len;
    return ARPC_OK;
}

int arpc_outq_push(struct arpc_outq *q, void *base, uint8_t *data, size_t len)
{
    return arpc_outq_push_shared(q, base, data, len, NULL);
}

/* Moves the first n entries d slots towards the back (into the room of d entries taken out
 * just behind them), last first, so no entry is written over before it has moved. A head's
 * bytes move to its new slot's room: that room was its own (same pair of slots) or belonged
 * to an entry moved or taken out already (a head's slot is followed by its buffer's). */
static void outq_shift_front(struct arpc_outq *q, size_t n, size_t d)
{
    size_t mask = q->q_cap - 1;
    for (size_t j = n; j-- > 0;) {
        size_t from = (q->q_head + j) & mask, to = (q->q_head + j + d) & mask;
        struct arpc_outq_buf b = q->q_bufs[from];
        if (outq_is_head(&b)) { /* (the front one may be half written: its offset is kept) */
            uint8_t *moved = outq_head_room(q->q_heads, to) + (b.b_data - outq_head_room(q->q_heads, from));
            memmove(moved, b.b_data, b.b_len);
            b.b_data = moved;
        }
        q->q_bufs[to] = b;
    }
    q->q_head = (q->q_head + d) & mask;
}

/* Moves the n entries from index `from` on d slots towards the front, first first, into the
 * room a withdrawal left (the entries before it stay). A head's bytes move to its new slot's
 * room: that room was free, or its own (a head's slot is followed by its buffer's, so the slot
 * paired with its new one holds no other head: it is in the room left, or was vacated). */
static void outq_shift_back(struct arpc_outq *q, size_t from, size_t n, size_t d)
{
    size_t mask = q->q_cap - 1;
    for (size_t j = from; j < from + n; j++) {
        size_t src = (q->q_head + j) & mask, to = (q->q_head + j - d) & mask;
        struct arpc_outq_buf b = q->q_bufs[src];
        if (outq_is_head(&b)) {
            uint8_t *moved = outq_head_room(q->q_heads, to) + (b.b_data - outq_head_room(q->q_heads, src));
            memmove(moved, b.b_data, b.b_len);
            b.b_data = moved;
        }
        q->q_bufs[to] = b;
    }
}

enum withdraw_look { WITHDRAW_TAKEN, WITHDRAW_REFUSED, WITHDRAW_NOT_SEEN };

/* Takes out the frame at entries [first, last] (a head and its buffer, or a buffer),
 * frame_bytes long, closing the gap from whichever side moves fewer entries. */
static void outq_take_out(struct arpc_outq *q, size_t first, size_t last, size_t frame_bytes, size_t *taken)
{
    const struct arpc_outq_buf *b = &q->q_bufs[(q->q_head + last) & (q->q_cap - 1)];
    size_t d = last - first + 1, behind = q->q_count - last - 1;
    *taken = frame_bytes;
    q->q_nheads -= d - 1;
    outq_release(b);
    if (first <= behind)
        outq_shift_front(q, first, d);
    else
        outq_shift_back(q, last + 1, behind, d);
    q->q_count -= d;
    q->q_bytes -= frame_bytes;
}

/* The look frames after the first, oldest first. */
static enum withdraw_look outq_withdraw_front(struct arpc_outq *q, const void *base, size_t owed, size_t look,
                                              size_t *taken)
{
    size_t mask = q->q_cap - 1, bytes = 0, head_at = 0, frames = 0, looked = 0;
    bool headed = false; /* the entry before is a head: the frame began there */
    for (size_t i = 0; i < q->q_count; i++) {
        const struct arpc_outq_buf *b = &q->q_bufs[(q->q_head + i) & mask];
        if (outq_is_head(b)) {
            headed = true;
            head_at = bytes;
            bytes += b->b_len;
            continue;
        }
        size_t starts_at = headed ? head_at : bytes, first = i - headed;
        bytes += b->b_len;
        bool untouched = ++frames > 1 && starts_at >= owed;
        if (b->b_base == base) {
            if (!untouched)
                return WITHDRAW_REFUSED; /* it may have begun to leave */
            outq_take_out(q, first, i, bytes - starts_at, taken);
            return WITHDRAW_TAKEN;
        }
        headed = false;
        if (untouched && ++looked >= look)
            return WITHDRAW_NOT_SEEN;
    }
    return WITHDRAW_REFUSED; /* every frame looked at: not queued */
}

/* The look newest frames, newest first; none that may have begun to leave (those before
 * such a one may have too). */
static bool outq_withdraw_back(struct arpc_outq *q, const void *base, size_t owed, size_t look, size_t *taken)
{
    size_t mask = q->q_cap - 1, after = 0; /* the bytes of the frames looked at */
    for (size_t i = q->q_count, looked = 0; i-- > 0 && looked < look; looked++) {
        const struct arpc_outq_buf *b = &q->q_bufs[(q->q_head + i) & mask];
        const struct arpc_outq_buf *h = i > 0 ? &q->q_bufs[(q->q_head + i - 1) & mask] : NULL;
        bool headed = h != NULL && outq_is_head(h);
        size_t first = i - headed, frame_bytes = b->b_len + (headed ? h->b_len : 0);
        if (first == 0 || q->q_bytes - after - frame_bytes < owed)
            return false; /* the first frame, or one the stream owes */
        if (b->b_base == base) {
            outq_take_out(q, first, i, frame_bytes, taken);
            return true;
        }
        after += frame_bytes;
        i = first;
    }
    return false;
}

bool arpc_outq_withdraw(struct arpc_outq *q, const void *base, size_t owed, size_t look, size_t *taken)
{
    enum withdraw_look r = outq_withdraw_front(q, base, owed, look, taken);
    return r == WITHDRAW_TAKEN || (r == WITHDRAW_NOT_SEEN && outq_withdraw_back(q, base, owed, look, taken));
}

/* Drops fully written buffers from the front and advances into a partly written one. */
static void outq_consume(struct arpc_outq *q, size_t written)
{
    q->q_bytes -= written;
    while (written > 0) {
        struct arpc_outq_buf *b = &q->q_bufs[q->q_head];
        if (written < b->b_len) {
            b->b_data += written;
            b->b_len -= written;
            return;
        }
        written -= b->b_len;
        if (outq_is_head(b))
            q->q_nheads--; /* (nothing to release) */
        else
            outq_release(b);
        q->q_head = (q->q_head + 1) & (q->q_cap - 1);
        q->q_count--;
    }
    /* Zero-length buffers left at the front are done as well. */
    while (q->q_count > 0 && q->q_bufs[q->q_head].b_len == 0) {
        outq_release(&q->q_bufs[q->q_head]);
        q->q_head = (q->q_head + 1) & (q->q_cap - 1);
        q->q_count--;
    }
    /* A burst grew the ring: give the memory back once it has drained, so an idle
     * connection costs little (a pipelined client's memory per call is a target). */
    if (q->q_count == 0 && q->q_cap > 1024)
        outq_free_rings(q);
}

/* Fills iov for one write from the buffers at the front: each buffer of ARPC_OUTQ_COPY_MAX
 * bytes or fewer is copied into stage, after the small buffers just before it, so that a run
 * of small frames (a pipelined batch: 64 requests are 128 buffers with their heads) is one
 * iovec; a larger buffer is an iovec of its own. Stops at iov_max iovecs, or at a small buffer
 * the stage has no room left for (the next write takes it). Returns the iovecs filled. */
static int outq_gather(const struct arpc_outq *q, struct iovec *iov, size_t iov_max, uint8_t *stage,
                       size_t stage_cap)
{
    size_t n = 0, staged = 0;
    size_t run = SIZE_MAX; /* where in stage the run iov[n - 1] began; SIZE_MAX: no run open */
    for (size_t i = 0; i < q->q_count; i++) {
        const struct arpc_outq_buf *b = &q->q_bufs[(q->q_head + i) & (q->q_cap - 1)];
        if (b->b_len <= ARPC_OUTQ_COPY_MAX) {
            if (staged + b->b_len > stage_cap)
                break;
            if (run == SIZE_MAX) {
                if (n == iov_max)
                    break;
                iov[n++].iov_base = stage + staged;
                run = staged;
            }
            memcpy(stage + staged, b->b_data, b->b_len);
            staged += b->b_len;
            continue;
        }
        if (n == iov_max)
            break;
        if (run != SIZE_MAX)
            iov[n - 1].iov_len = staged - run; /* (its length once, not at each copy) */
        run = SIZE_MAX;
        iov[n++] = (struct iovec){.iov_base = b->b_data, .iov_len = b->b_len};
    }
    if (run != SIZE_MAX)
        iov[n - 1].iov_len = staged - run;
    return (int)n;
}

int arpc_outq_flush(struct arpc_outq *q, struct arpc_stream *s)
{
    /* 16 KiB of stack in all, as the 1,024 iovecs this took before the stage. */
    struct iovec iov[256];
    uint8_t stage[ARPC_OUTQ_STAGE];
    const size_t iov_max = sizeof(iov) / sizeof(iov[0]) < IOV_MAX ? sizeof(iov) / sizeof(iov[0]) : IOV_MAX;
    while (q->q_count > 0) {
        int n = outq_gather(q, iov, iov_max, stage, sizeof(stage));
        ssize_t w = s->s_ops->s_writev(s, iov, n);
        if (w == ARPC_STREAM_WANT_WRITE)
            return ARPC_EAGAIN;
        if (w == ARPC_STREAM_WANT_READ)
            return ARPC_EPENDING;
        if (w < 0)
            return s->s_error;
        /* The stage's bytes are the buffers' own, in order: w counts through them as through
         * the buffers (a write cut inside the run resumes inside the buffer it cut). */
        outq_consume(q, (size_t)w);
    }
    return ARPC_OK;
}
