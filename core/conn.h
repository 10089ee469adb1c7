/*
 * arpc_conn: one stream connection owned by a loop thread, shared by client and server.
 *
 * Reading: level-triggered ev_io; each readiness reads what the socket has (a few reads at
 * most) into a growing buffer and hands every complete frame to ops->on_frame (frame fields point into the read
 * buffer, or for a large body into its own buffer (see "Large frames" below), and are valid only during the
 * call unless the owner takes that buffer). A frame that is malformed or larger than
 * max_body closes the connection with ARPC_EPROTO / ARPC_ETOOLARGE, decided from the header
 * before the body is read, unless ops->on_oversized takes the oversized frame (its body is
 * then skipped).
 *
 * Bytes go through a stream (transport/stream.h): a plain socket, or TLS. A stream that must
 * write before it can read (or read before it can write) says so, and the connection waits for
 * that readiness instead (c_read_wants_write, c_write_wants_read). Only a TLS handshake asks
 * that (renegotiation is off), so a write waiting to read never meets held input; last words
 * queued before the handshake ends are dropped with the connection (nothing reads then). A stream that fails closes
 * the connection with its s_error (ARPC_ECONNLOST, ARPC_ETLS) and its words in c_why.
 *
 * Writing: arpc_conn_send() queues an encoded frame; an ev_prepare watcher flushes every queued
 * frame with one gathered sendmsg (core/outq.h) just before the loop next sleeps, so frames queued in one loop iteration
 * leave in one batch. A full socket arms a write watcher. Where the owner allows it, another
 * thread may write a frame itself while the loop is not writing (core/conn_write.h: who writes).
 *
 * Closing: arpc_conn_close() may be called from inside on_frame; the close then happens after
 * the current read batch. ops->on_close runs exactly once, on the loop thread, after the fd is
 * closed and the watchers stopped; the owner may free the memory holding the conn there.
 *
 * Every function here runs on the loop thread, but arpc_conn_write_direct (core/conn_write.h),
 * the buffer cache's get/put and arpc_conn_unpin.
 */
#ifndef ARPC_CORE_CONN_H
#define ARPC_CORE_CONN_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arpc/log.h"
#include "arpc/loop.h"
#include "async/loop_internal.h"
#include "base/buf_cache.h"
#include "base/cacheline.h"
#include "core/conn_write.h"
#include "core/frame.h"
#include "core/outq.h"
#include "transport/stream.h"

struct arpc_conn;
struct io_stats;

struct arpc_conn_ops {
    /* Every frame but PING (answered by the connection) and PONG (a sign of life only). */
    void (*on_frame)(struct arpc_conn *conn, const struct arpc_frame *frame);
    /* reason: ARPC_ECONNLOST (peer closed or I/O error), ARPC_EPROTO, ARPC_ETOOLARGE, or the
     * reason given to arpc_conn_close. */
    void (*on_close)(struct arpc_conn *conn, int reason);
    /* Optional: at the close, before on_close, each buffer of the output queue that was not
     * wholly written (base and release as queued; left: its bytes not written): bytes the
     * peer never had all of, unless offered: the stream was handed some of its frame's bytes
     * and may have sent them all (a TLS write to retry: records already sent may hold whole
     * frames that the queue still holds). It must not touch the connection. */
    void (*on_unwritten)(struct arpc_conn *conn, void *base, arpc_outq_release_fn release, size_t left,
                         bool offered);
    /* Optional: bad input arrived (ARPC_EPROTO or ARPC_ETOOLARGE), or a peer not let in yet
     * (c_stranger) sent a frame there is no memory to read (ARPC_ENOMEM); why: what was
     * wrong, in words safe for a log (core/frame_fault.c). The owner may queue a last frame (e.g.
     * GOAWAY); the connection then stops reading and closes once it is written. */
    void (*on_bad_input)(struct arpc_conn *conn, int reason, const char *why);
    /* Optional: the connection held its own input for a reason of its own
     * (ARPC_CONN_HOLD_BACKLOG or ARPC_CONN_HOLD_BYTES), e.g. to count or log it. */
    void (*on_held)(struct arpc_conn *conn, unsigned reason);
    /* Optional: a well-formed header announces a body over max_body but not over
     * ARPC_CONN_SKIP_MAX. f holds the header's kind and xid and, for a request, the fixed
     * fields of its body (seq, ack, deadline: arpc_frame_peek_request_fields), the rest zero. Return true to answer that frame alone (e.g. ERROR ARPC_ETOOLARGE
     * for its xid): its body is then dropped as it streams in, never buffered, and the
     * connection goes on. False: bad input, as above. */
    bool (*on_oversized)(struct arpc_conn *conn, const struct arpc_frame *f, uint32_t body_len);
    /* Optional: the owner parses the input itself (another codec, e.g. JSON-RPC, or choosing
     * one from the first bytes): called instead of the frame parser whenever input arrived or
     * was resumed. It consumes from c_rbuf[c_rstart..c_rend) (advancing c_rstart), stops
     * while c_hold != 0 / c_close_pending / c_close_after_flush, and returns the bytes its next
     * unit needs in total (for the buffer's growth), or 0. It may hand over to the frame
     * parser (arpc_conn_parse_frames). on_frame is then called only by that parser. */
    size_t (*parse)(struct arpc_conn *conn);
    /* Optional: the peer finished sending (end of stream: a half-close, or a close that
     * writing will find): nothing more is read (c_eof), and the owner closes the connection
     * when it has answered what it read, e.g. with arpc_conn_close_after_flush. Part of a
     * frame may be left in (c_rstart < c_rend, c_body or c_skip): the owner closes at once or
     * drops it. NULL: closed (ARPC_ECONNLOST). */
    void (*on_eof)(struct arpc_conn *conn);
    /* Optional, with arpc_conn_pass_control: a complete frame found in the read buffer while
     * input is held (PING and PONG pass by themselves and never come here). True: the owner
     * took it, now, out of order (it is removed from the buffer); false: it stays, in order,
     * until the hold ends. */
    bool (*on_held_frame)(struct arpc_conn *conn, const struct arpc_frame *frame);
    /* Optional: the connection went a heartbeat interval without input (called as the first
     * PING of that silence goes out), so the owner may let go of what it keeps for busy
     * times (the client: its cache of large request blocks). Its blocks held for the
     * connection's own reads (c_bufs) are freed just before. */
    void (*on_quiet)(struct arpc_conn *conn);
};

/* Bodies larger than this are never skipped: such a header is bad input (a peer announcing
 * a GiB is not making a call). */
#define ARPC_CONN_SKIP_MAX (1u << 30)

/* The body_len of the oversized request at the read buffer's start when ARPC_CONN_SKIP_MAX is
 * the bound that refused it (one over c_max_body but under that is skipped and answered
 * alone, by an owner that skips, from a peer it let in); else 0. For the words of the
 * refusal. */
uint32_t arpc_conn_past_skip(const struct arpc_conn *conn);

struct arpc_conn {
    arpc_loop *c_loop;
    struct ev_loop *c_ev;
    int c_fd;
    ev_io c_rio, c_wio;
    ev_prepare c_flush;
    struct arpc_deadline c_hb; /* heartbeat (core/conn_heartbeat.c); unarmed when off */
    double c_last_rx;         /* loop time (arpc_loop_now) of the last bytes read */
    uint64_t c_rx_ns;         /* arpc_now_ns of the last read that brought bytes, read on first
                               * use (0: not yet): see arpc_conn_arrival_ns */
    bool c_rx_waited;         /* input was held since that read: the frames still buffered from
                               * it waited, and their budgets may have run out meanwhile */
    double c_last_tx;         /* loop time output last moved (the write timeout's clock): the
                               * first frame queued on an empty queue, or
                               * ARPC_CONN_WRITE_PROGRESS_MIN bytes handed on to the peer */
    int64_t c_tx_mark;        /* bytes the kernel had handed on to the peer (the stream's
                               * s_sent less its send queue) when the clock last started
                               * (arpc_conn_write_age) */
    bool c_tx_mark_unset;     /* the clock started since the last look: mark at the next */
    double c_frame_since;     /* loop time the unparsed frame's first byte arrived; 0: none
                               * (an owner's frame timeout reads it, see arpc_conn_frame_age) */
    double c_hb_idle;         /* seconds without input before a PING; 0: off */
    unsigned c_hb_misses;     /* PINGs left unanswered before the peer is declared dead */
    unsigned c_hb_sent;       /* PINGs sent since the last input */
    uint64_t c_skip;          /* bytes of an oversized frame's body still to drop (JSON-RPC: 1 while
                               * an oversized object is dropped, its end not yet known) */
    uint8_t *c_rbuf;          /* NULL until the first read, and while a cold connection has
                               * nothing buffered (core/conn.c: conn_rbuf_drop_if_cold) */
    size_t c_rstart, c_rend, c_rcap; /* unparsed bytes are c_rbuf[c_rstart..c_rend) */
    struct arpc_outq c_out;
    uint32_t c_max_body;
    const struct arpc_conn_ops *c_ops;
    void *c_owner;
    bool c_open;          /* false once closed */
    bool c_dispatching;   /* inside the read/parse loop */
    bool c_close_pending; /* close requested during dispatch */
    bool c_close_after_flush; /* close once the output queue drains (e.g. after GOAWAY) */
    bool c_linger;        /* closing once the queue drains and the peer's stream ends (arpc_conn_linger) */
    bool c_wr_shut;       /* lingering: the queue drained and the stream's write side is shut */
    bool c_output_capped; /* a frame was refused for output over the hard cap: the loop's next
                           * prepare closes the connection, whatever the queue holds by then */
    bool c_close_deferred; /* an early write decided a close (arpc_conn_flush_batch): carried
                            * out once the dispatch ends, or by the prepare watcher, without
                            * stopping the frames already read from going up */
    bool c_eof;           /* the peer finished sending (on_eof): nothing more is read */
    bool c_stranger;      /* the peer has not passed the owner's handshake yet: every frame goes
                           * to on_frame, PING and PONG too, so nothing is answered before it
                           * (a PONG is output a peer that never reads could make us hold) */
    bool c_heard;         /* bytes were read from the peer (the first read of its handshake) */
    bool c_owner_tells;   /* the owner tells someone waiting why the connection ended (a first
                           * connect's errbuf): see conn_fault_log_level */
    bool c_backlog_limit; /* stop reading while too much output waits (see arpc_conn_limit_backlog) */
    unsigned c_hold;      /* why input is held: ARPC_CONN_HOLD_* bits; 0: reading */
    bool c_pass_control;  /* control frames pass a hold (arpc_conn_pass_control) */
    bool c_hup_when_held; /* the hangup is watched from a hold's start (arpc_conn_hangup_when_held) */
    bool c_lazy_urgent;   /* counted in its loop's arpc_loop_lazy_urgent while input is held */
    bool c_held_eof;      /* the end of stream came while held with frames buffered: it is
                           * read again once the hold ends and they went up (a half-closed
                           * peer's calls are answered, not dropped with the connection) */
    uint16_t c_cancels_behind; /* CANCELs the hold's look-through left in the buffer behind
                                * their calls (core/conn_held.c), less those read since: while
                                * any, a call read looks for its own (arpc_conn_cancel_behind) */
    size_t c_held_scan;   /* while held: bytes after c_rstart already looked through (frames
                           * that stay), so each read looks at its new frames only */
    size_t c_held_walk;   /* frames arpc_conn_held_request may still decode in this look-through */
    size_t c_max_bytes;   /* read buffer + queued + owed bound (arpc_conn_limit_bytes); 0: none */
    size_t c_owed;        /* bytes the owner expects to queue (arpc_conn_owe) */
    int c_close_reason;
    uint64_t c_setup_ns; /* once closed: its stream's s_setup_ns (the stream is gone) */
    enum arpc_stream_handshake c_handshake; /* once closed: how far its handshake went */
    char c_peer[256];     /* for log lines: the peer, or the listener for unix/inproc peers */
    struct io_stats *c_stats; /* the owner's byte counters (core/stats.h); NULL: none */
    /* The byte stream (transport/stream.h): c_plain over c_fd, or a TLS stream. */
    struct arpc_stream *c_stream;
    struct arpc_stream c_plain;
    bool c_read_wants_write; /* the stream must write before it can read: c_wio is armed for it */
    bool c_write_wants_read; /* the stream must read before it can write: the next read flushes */
    char c_why[ARPC_WHY_MAX]; /* why the stream failed (in on_close with its s_error), or what
                               * was wrong with bad input (ARPC_EPROTO, ARPC_ETOOLARGE), else "" */
    /* A large frame's body, read into a buffer of its own (core/conn_body.c). */
    struct arpc_buf_cache c_bufs; /* large buffers kept for reuse (bodies, and what owners give back) */
    uint8_t c_body_head[ARPC_FRAME_HEADER_SIZE]; /* that frame's header */
    uint8_t *c_body;              /* the body being read, or offered to on_frame; NULL: none */
    size_t c_body_cap;            /* c_body's capacity */
    uint32_t c_body_len, c_body_have; /* the body's length, and the bytes of it read so far */
    bool c_body_offered;          /* on_frame sees c_body's frame: arpc_conn_take_body may take it */
    bool c_cold;    /* reads served from the loop's cold set (arpc_conn_cool) */
    bool c_cold_on; /* c_rio is in that set now */
    bool c_held_hup; /* ... for its hangup only, while held input is not read (conn_watch_held_hangup) */
    /* The read buffer's bytes lent out (arpc_conn_pin, core/conn_rbuf.c). */
    unsigned c_rbuf_pins;         /* pins of the current read buffer since it was last reused */
    /* Written by other threads than the loop (workers writing replies, giving buffers back):
     * lines of their own, so that the loop's fields above stay in its cache. */
    ARPC_CACHELINE_GAP(c_gap_shared);
    struct arpc_conn_writer c_writer; /* who writes the socket (core/conn_write.h); any thread */
    atomic_uint c_rbuf_retired;   /* read buffers the loop left while lent, not yet given back */
    ARPC_CACHELINE_GAP(c_gap_end);
};

/* Takes ownership of fd (non-blocking) and starts reading. Returns ARPC_OK or ARPC_ENOMEM
 * (fd is then closed and on_close is NOT called; nothing it allocates now: the read buffer
 * comes with the first read, whose lack of memory closes the connection ARPC_ENOMEM). */
int arpc_conn_init(struct arpc_conn *conn, arpc_loop *loop, int fd, uint32_t max_body,
                   const struct arpc_conn_ops *ops, void *owner, const char *peer);

/* As arpc_conn_init over a stream (e.g. TLS, transport/tls.h) instead of a plain socket: takes
 * ownership of stream (closed with s_close on ARPC_ENOMEM too). */
int arpc_conn_init_stream(struct arpc_conn *conn, arpc_loop *loop, struct arpc_stream *stream, uint32_t max_body,
                          const struct arpc_conn_ops *ops, void *owner, const char *peer);

/* Whether a thread other than the loop's may write the connection's stream directly (when it
 * owns the connection's writing): a plain socket may, a TLS stream may not (its SSL object is
 * the loop thread's). */
static inline bool arpc_conn_stream_thread_safe(const struct arpc_conn *conn)
{
    return conn->c_stream->s_thread_safe;
}
/* Loop thread: how far the peer took its handshake (TLS; plain streams:
 * ARPC_STREAM_NO_HANDSHAKE), open or closed (then: as far as it had when it closed). */
static inline enum arpc_stream_handshake arpc_conn_handshake(const struct arpc_conn *conn)
{
    if (!conn->c_open)
        return conn->c_handshake;
    return conn->c_stream->s_ops->s_handshake != NULL ? conn->c_stream->s_ops->s_handshake(conn->c_stream)
                                                      : ARPC_STREAM_NO_HANDSHAKE;
}
/* Loop thread: the CPU time the connection's set-up took so far (its TLS handshake, and a
 * server's reads until it let the peer in; 0 for plain streams), open or closed. */
static inline uint64_t arpc_conn_setup_ns(const struct arpc_conn *conn)
{
    return conn->c_open ? conn->c_stream->s_setup_ns : conn->c_setup_ns;
}
/* Loop thread: the owner let the peer in (a server: its HELLO accepted). Its frames are
 * answered from now on (c_stranger) and its stream stops counting the set-up's cost. */
static inline void arpc_conn_let_in(struct arpc_conn *conn)
{
    conn->c_stranger = false;
    if (conn->c_open)
        conn->c_stream->s_let_in = true;
}
/* Large frames: a body of ARPC_CONN_BODY_MIN bytes or more is read into a buffer of its own
 * rather than through the read buffer (no copy out of it, no compaction, no growth of the
 * read buffer). Such a buffer is given its whole size on the header's word for bodies up to
 * ARPC_CONN_BODY_EAGER_MAX; a larger one grows as its bytes arrive (at most doubling), so a
 * peer must still send about N bytes to make us hold N. Buffers are kept for reuse in
 * c_bufs (at most ARPC_CONN_BUF_CACHE_BYTES; freed when the connection closes). */
#define ARPC_CONN_BODY_MIN (32u * 1024u)
#define ARPC_CONN_BODY_EAGER_MAX (2u << 20)
#define ARPC_CONN_BUF_CACHE_BYTES (8u << 20)

/* Inside on_frame only, for a frame whose body was read into a buffer of its own: takes that
 * buffer, so the frame's views (payload, method) stay valid for as long as the caller keeps
 * it. Returns the buffer, which starts at the body's first byte (for a REPLY: the payload's),
 * with its capacity in *cap; the caller gives it back with arpc_conn_buf_put or frees it with
 * arpc_free. NULL when the frame lies in the read buffer (then copy what must outlive
 * on_frame), or when it was taken already. */
uint8_t *arpc_conn_take_body(struct arpc_conn *conn, size_t *cap);
/* Whether the frame on_frame is looking at would be given by arpc_conn_take_body. */
bool arpc_conn_body_offered(const struct arpc_conn *conn);
/* A buffer of at least size bytes from the connection's cache (else freshly allocated), its
 * capacity in *cap; for a large outgoing frame. Any thread, while conn's memory lives. NULL
 * without memory. */
void *arpc_conn_buf_get(struct arpc_conn *conn, size_t size, size_t *cap);
/* Gives a taken buffer back for reuse: kept if the connection is open and its cache has
 * room, else freed. Any thread, before or after the close, while conn's memory lives. */
void arpc_conn_buf_put(struct arpc_conn *conn, void *block, size_t cap);

/* Lending: inside on_frame, for a frame parsed from the read buffer, the owner may keep bytes
 * of it [p, p + len) where they are instead of copying them (a server's request payload):
 * the read buffer is then not written over until they are given back; the loop reads on in
 * another buffer meanwhile. Returns the pin to give back with arpc_conn_unpin (any thread,
 * once, while conn's memory lives), or NULL: copy what must outlive on_frame. NULL when the
 * bytes are not in the read buffer, shorter than ARPC_CONN_PIN_MIN (a copy is cheaper than
 * the buffer it would hold), or the connection already left ARPC_CONN_RBUF_RETIRED_MAX read
 * buffers lent. So lending holds at most that many read buffers (64 KiB each while frames
 * pass through it) beyond the connection's own, whatever the borrowers do. */
#define ARPC_CONN_PIN_MIN 1024u
#define ARPC_CONN_RBUF_RETIRED_MAX 8u
struct conn_rbuf_head;
struct conn_rbuf_head *arpc_conn_pin(struct arpc_conn *conn, const void *p, size_t len);
void arpc_conn_unpin(struct conn_rbuf_head *pin);

/* Small control frames, encoded into a fresh buffer and queued. Each returns as
 * arpc_conn_send, or ARPC_ENOMEM when the buffer cannot be had (nothing queued). */
/* HELLO: id is the client id (from a client) or the epoch (from a server). */
int arpc_conn_send_hello(struct arpc_conn *conn, uint64_t id, uint32_t flags, uint32_t max_frame, uint32_t expiry_s);
/* PING with xid and no payload (the heartbeat's, core/conn_heartbeat.c). */
int arpc_conn_send_ping(struct arpc_conn *conn, uint64_t xid);
/* PONG echoing a PING's xid and payload. */
int arpc_conn_answer_ping(struct arpc_conn *conn, const struct arpc_frame *ping);
/* ERROR (for call xid) or GOAWAY (xid 0) with code, flags (core/frame.h: each kind's own) and
 * msg[0..msg_len). */
int arpc_conn_send_error(struct arpc_conn *conn, uint8_t kind, uint64_t xid, int code, uint16_t flags,
                         const char *msg, uint16_t msg_len);

/* Queues an encoded frame (the allocation base is freed once written). On error (connection
 * closed, or ARPC_ENOMEM) the buffer is freed here. */
int arpc_conn_send(struct arpc_conn *conn, void *base, uint8_t *data, size_t len);
/* As arpc_conn_send for a buffer the caller shares: released with release(base), on error too. */
int arpc_conn_send_shared(struct arpc_conn *conn, void *base, uint8_t *data, size_t len,
                          arpc_outq_release_fn release);
/* As arpc_conn_send_shared, at the front of the queue: the rest of a frame another thread began
 * writing (ARPC_DIRECT_PART, core/conn_write.h), which must be the next bytes on the wire; the
 * loop owns the socket from here. ARPC_ENOMEM closes the connection (its stream holds half a
 * frame). */
int arpc_conn_send_rest(struct arpc_conn *conn, void *base, uint8_t *data, size_t len,
                        arpc_outq_release_fn release);
/* As arpc_conn_send_shared and arpc_conn_send_rest, with head[0..head_len) written just before
 * data (copied into the queue's own ring, head_len <= ARPC_OUTQ_HEAD_MAX; core/outq.h): a
 * request whose header and fixed fields are made at each send, gathered with the method and
 * payload its call keeps. The frame is head and data together. */
int arpc_conn_send_headed(struct arpc_conn *conn, const uint8_t *head, size_t head_len, void *base, uint8_t *data,
                          size_t len, arpc_outq_release_fn release);
int arpc_conn_send_rest_headed(struct arpc_conn *conn, const uint8_t *head, size_t head_len, void *base,
                               uint8_t *data, size_t len, arpc_outq_release_fn release);

/* Inside a dispatch (a frame just handed up): whether a CANCEL naming xid (by its xid, not a
 * seq) waits in the read buffer, among the ARPC_CONN_CANCEL_LOOK complete frames after the one
 * handed up. Looked for only while a hold's look-through left CANCELs behind their calls
 * (c_cancels_behind): a call read once its hold ended may have been cancelled while it waited
 * in the buffer, and its worker must not start it before the loop reads that CANCEL. */
#define ARPC_CONN_CANCEL_LOOK 64
bool arpc_conn_cancel_behind(const struct arpc_conn *conn, uint64_t xid);
/* Inside a held connection's look-through (an owner's on_held_frame, core/conn_held.h): whether
 * a REQUEST under xid stays in the buffer ahead of the frame looked at; its seq into *seq. A
 * CANCEL naming it is its, not an answered call's (the server's: a numbered copy held behind
 * a call it copies). The walks of one look-through share a budget of as many frames as the
 * buffer can hold (c_held_walk), so a peer's CANCELs cost the loop at most twice the
 * look-through itself, not their number times the buffer's frames; past it, false. */
bool arpc_conn_held_request(struct arpc_conn *conn, uint64_t xid, uint64_t *seq);
/* The same, on the same budget: whether a one-way message stays in the buffer ahead of the
 * frame looked at (past the budget, true: one may). */
bool arpc_conn_held_oneway_ahead(struct arpc_conn *conn);

/* Loop thread: takes the frame whose buffer is base back out of the output queue if none of
 * it can have left yet (arpc_outq_withdraw: not the first frame, nor bytes the stream owes a
 * retry), looking at the ARPC_CONN_WITHDRAW_LOOK frames past those and as many newest, no
 * further; its buffer is released.
 * True if taken out: the peer will never see it. A client's call whose deadline came while
 * its request still waited behind a peer that does not read (client_call.c). */
#define ARPC_CONN_WITHDRAW_LOOK 64
bool arpc_conn_withdraw(struct arpc_conn *conn, const void *base);
/* The words of a call whose request was so taken back at its deadline (the arpc and JSON-RPC
 * clients alike). */
#define ARPC_CONN_WITHDRAWN_WHY                                                                                  \
    "its request was still waiting to be written at the call's deadline (the server was not reading): it was " \
    "not sent, so it did not run"

/* Why a connection's input is held. Each reason is set and let go on its own; input resumes
 * only once no reason holds it. The first two are the connection's own (below); the others
 * are its owner's. */
enum arpc_conn_hold {
    ARPC_CONN_HOLD_BACKLOG = 1u << 0, /* too much output waits (arpc_conn_limit_backlog) */
    ARPC_CONN_HOLD_BYTES = 1u << 1,   /* read + queued + owed over the bound (arpc_conn_limit_bytes) */
    ARPC_CONN_HOLD_PARKED = 1u << 2,  /* a request waits for room in its actor's mailbox */
    ARPC_CONN_HOLD_CALLS = 1u << 3,   /* the connection's calls in flight are at their limit */
    ARPC_CONN_HOLD_CLIENT_CALLS = 1u << 4, /* its client's calls (all connections) are at theirs */
};

/* On a connection whose input is not held at a backlog (arpc_conn_limit_backlog: a client's,
 * which must read its replies), a PING that finds more than this waiting to be written to its
 * sender goes unanswered: a peer that sends PINGs and reads nothing would otherwise queue
 * PONGs without bound (a hostile server made a client grow by 1.5 GB in 15 s). Its heartbeat
 * loses nothing: any frame counts as an answer (docs/PROTOCOL.md), and the frames waiting
 * come first. */
#define ARPC_CONN_PONG_BACKLOG_MAX (1u << 20)

/* Bounds a connection's memory when its peer sends requests but does not read replies: while
 * more than ARPC_CONN_BACKLOG_HIGH bytes wait to be written, hold input; let go below
 * ARPC_CONN_BACKLOG_LOW. For server connections (a client must always read its replies). */
#define ARPC_CONN_BACKLOG_HIGH (8u << 20)
#define ARPC_CONN_BACKLOG_LOW (1u << 20)
void arpc_conn_limit_backlog(struct arpc_conn *conn);

/* Bounds what a connection holds: its read buffer, its queued output and what its owner
 * says it owes (replies still to come for requests accepted, arpc_conn_owe). Over max, input
 * is held (ARPC_CONN_HOLD_BYTES); it is let go at 3/4 of max, or once nothing is owed or
 * queued (a frame being read is never held halfway for its own bytes alone). */
void arpc_conn_limit_bytes(struct arpc_conn *conn, size_t max);
/* The owner expects to queue n more bytes / queued them or no longer expects them (paid
 * lets go of the hold, which may hand up buffered frames, and so may close the connection:
 * the caller must hold what keeps the conn's memory alive). */
void arpc_conn_owe(struct arpc_conn *conn, size_t n);
void arpc_conn_paid(struct arpc_conn *conn, size_t n);
/* What arpc_conn_limit_bytes compares with its bound. */
size_t arpc_conn_bytes(const struct arpc_conn *conn);

/* Holds input for a reason (a bit of enum arpc_conn_hold): no further frame is handed to
 * on_frame (not even the rest of the current read batch) and the socket is not read. Frames
 * already buffered wait, in order. Letting go of the last reason hands them up first
 * (on_frame may hold again), then reads again. While held with no output waiting the
 * heartbeat counts the peer as alive (it is waiting for us, not we for it).
 * With arpc_conn_pass_control, control frames pass the hold (core/conn_held.c): the socket
 * is still read, into the read buffer as it is (never grown, no large body begun), and PINGs,
 * PONGs and what on_held_frame takes are handed up out of order; every other frame stays
 * buffered, in order. Once the buffer is full of those, or more output waits than
 * ARPC_CONN_BACKLOG_HIGH or the bytes bound (answers to PINGs would pile up), the socket is
 * not read.
 * Loop thread; either may be called from inside on_frame; idempotent per reason. Release may
 * close the connection (a buffered frame was bad): the caller must keep the conn's memory. */
void arpc_conn_hold_input(struct arpc_conn *conn, unsigned reason);
void arpc_conn_release_input(struct arpc_conn *conn, unsigned reason);
/* From now on control frames pass a hold (above): for an owner that speaks arpc frames, and
 * whose holds may wait for what a control frame brings (a cancel ending a handler). Loop
 * thread. */
void arpc_conn_pass_control(struct arpc_conn *conn);
/* From now on a hold that stops reading still watches the socket's hangup from its start, so
 * a peer that resets a held connection is closed at once (its calls cancelled, its memory
 * freed), not when the hold ends: for an owner whose holds stop reading at once (no control
 * frames pass them: a JSON-RPC server connection). Costs two epoll_ctl calls per hold. With
 * arpc_conn_pass_control the hangup is watched anyway once the held buffer is full. Loop
 * thread. */
void arpc_conn_hangup_when_held(struct arpc_conn *conn);

/* Heartbeat: after idle_ms without input from the peer, send a PING; after `misses` PINGs
 * in a row with still no input, close with ARPC_ECONNLOST (a peer that vanished without a
 * FIN or RST, or a network that drops everything, is detected in about
 * idle_ms * (misses + 1)). Any input counts as a sign of life, not just a PONG. idle_ms 0
 * turns it off. ARPC_ENOMEM (logged): no memory to arm it, and the connection has none; its
 * owner closes it, since nothing else would notice a peer gone silent. (core/conn_heartbeat.c) */
int arpc_conn_heartbeat(struct arpc_conn *conn, uint32_t idle_ms, unsigned misses);
void arpc_conn_heartbeat_init(struct arpc_conn *conn); /* at init: the heartbeat deadline, unarmed */
/* The heartbeat gave the peer up: as many PINGs in a row unanswered as it allows (it then
 * closes the connection with ARPC_ECONNLOST; its owner says why from this). */
static inline bool arpc_conn_heartbeat_gave_up(const struct arpc_conn *conn)
{
    return conn->c_hb_misses != 0 && conn->c_hb_sent >= conn->c_hb_misses;
}

/* Loop thread, from a frame's handler: when the bytes of the frame being handed up arrived
 * (arpc_now_ns clock), for deadlines counted from arrival and latencies. One clock read per
 * read that brought bytes, not one per frame: a pipelined batch shares it. */
uint64_t arpc_conn_arrival_ns(struct arpc_conn *conn);

/* Whether the frame being handed up waited in the buffer for a hold to end since it arrived
 * (so time may have passed since arpc_conn_arrival_ns). */
/* The level of the line saying the connection closes for its peer's bytes or stream: DEBUG
 * while the owner tells someone waiting (c_owner_tells: the user should not read it twice,
 * worded apart), else WARN. */
static inline enum arpc_log_level conn_fault_log_level(const struct arpc_conn *conn)
{
    return conn->c_owner_tells ? ARPC_LOG_DEBUG : ARPC_LOG_WARN;
}

static inline bool arpc_conn_input_waited(const struct arpc_conn *conn) { return conn->c_rx_waited; }
/* The frames after the current one will have waited (an inline handler runs first). */
static inline void arpc_conn_input_ages(struct arpc_conn *conn) { conn->c_rx_waited = true; }

/* Seconds since the first byte of a frame not yet whole arrived, at loop time now; 0 when
 * no frame is partly read, or while reading is paused (the wait is then ours, not the
 * peer's). */
double arpc_conn_frame_age(const struct arpc_conn *conn, double now);

/* What the kernel must hand on to the peer, or all it held, for output to count as moving. */
#define ARPC_CONN_WRITE_PROGRESS_MIN (64u * 1024u)

/* Seconds output has been waiting without moving, at loop time now; 0 when nothing is queued
 * (the write timeout: a peer that never reads, or reads a trickle). Moving: the kernel handed
 * ARPC_CONN_WRITE_PROGRESS_MIN bytes on to the peer (or all it held), seen by these calls
 * (bytes the stream sent less the socket's send queue). Not bytes written: a socket is reported
 * writable once a third of its send buffer is free (three quarters for unix), which takes a
 * peer reading through a buffer of megabytes seconds, and one with a small buffer a trickle.
 * Each call compares with the one that marked the clock's start. */
double arpc_conn_write_age(struct arpc_conn *conn, double now);

/* Over this many times its byte bound (arpc_conn_limit_bytes) of queued output, a
 * connection is closed rather than held: replies owed to calls accepted before the bound was
 * reached (their sizes were estimates) must not grow without end for a peer not reading.
 * Checked at each frame queued (one more frame is refused, and the close follows at the
 * loop's next prepare), so a turn that queues many replies cannot pass it by more than a
 * frame. */
#define ARPC_CONN_OUTPUT_HARD_FACTOR 4

/* Part of a frame is in: bytes in the read buffer not handed up yet, a large body being read
 * apart, or an oversized body being skipped. */
static inline bool arpc_conn_partial_frame(const struct arpc_conn *conn)
{
    return conn->c_rstart != conn->c_rend || conn->c_skip != 0 || conn->c_body != NULL;
}

/* The frame parser: hands every complete buffered frame to on_frame (see parse above). */
size_t arpc_conn_parse_frames(struct arpc_conn *conn);

/* A pipelined turn sends early: once the output queued holds a batch (ARPC_CONN_BATCH_FRAMES
 * frames or ARPC_CONN_BATCH_BYTES), the frame parser, the server's loop between the worker
 * replies it drains and the client's between the calls it drains, write it before going on, so the peer's loop works on the first part of a
 * window while this one handles the rest, instead of the two taking turns (one loop busy, the
 * other asleep; docs/PERFORMANCE.md, "Two loops at once"). Below the bounds nothing changes:
 * output waits for the prepare watcher, one gathered write per turn. Loop thread; the caller
 * may go on using the connection: a close the write decides (c_close_deferred) is carried out
 * at the end of the parse or by the prepare watcher, and the frames already read go up first,
 * as they did when the write waited for that watcher. */
/* 64: a window of 256 small calls is four parts in flight, not two, so that a loop which
 * finished one part finds the next already there more often instead of sleeping (a sleep
 * and its wake-up cost ~25 us on a VM); measured with small frames copied into one iovec
 * (core/outq.h), which made the extra sends cheap (docs/PERFORMANCE.md, "Small frames
 * written from one stage, and a batch of 64 frames"). */
#define ARPC_CONN_BATCH_FRAMES 64
/* 128 KiB: inline pipelined calls of 1-4 KiB went 14-17% faster than at 64 KiB (fewer, larger
 * sends; docs/PERFORMANCE.md, "A batch of 128 KiB"). */
#define ARPC_CONN_BATCH_BYTES (128 * 1024)
void arpc_conn_flush_batch(struct arpc_conn *conn);

/* A parser begins skipping an oversized frame (len bytes still to drop; a codec that cannot
 * know its length yet says 1 until it ends) at c_rstart; parsed_from is where this parse
 * began: the frame-progress clock starts at this read when a frame ended before it. */
void arpc_conn_begin_skip(struct arpc_conn *conn, uint64_t len, size_t parsed_from);

/* Cold connections (async/loop_cold.c): arpc_conn_cool serves this connection's reads from
 * the loop's cold set, a bounded slice of whose ready connections is read per loop turn, after
 * the loop's other watchers; arpc_conn_warm puts it back among them for good. A server cools
 * a connection until its first request, so that thousands of connections opening or closing
 * at once cost the clients with calls a slice of a turn, not whole turns of milliseconds.
 * Without room in the cold set the connection stays (or goes back) warm. A cold connection
 * holds no read buffer between its reads. Loop thread; may be called from inside on_frame;
 * idempotent. */
void arpc_conn_cool(struct arpc_conn *conn);
void arpc_conn_warm(struct arpc_conn *conn);

/* Writes what the socket takes right now (no waiting), e.g. last words before a close. */
void arpc_conn_flush_now(struct arpc_conn *conn);

/* Closes now, or after the current dispatch. Idempotent. */
void arpc_conn_close(struct arpc_conn *conn, int reason);
/* arpc_conn_close, dropping what the kernel still holds for the peer (a tcp reset), for a
 * peer that reads too little: closed gracefully, the kernel would go on sending it megabytes
 * for as long as it takes to read them (as nginx's reset_timedout_connection). */
void arpc_conn_close_reset(struct arpc_conn *conn, int reason);

/* Stops reading, and closes once every queued frame has been written (or at once if none is
 * queued). */
void arpc_conn_close_after_flush(struct arpc_conn *conn, int reason);

/* A close whose last frames must reach a peer that may be slow to read (a client's one-way
 * messages and goodbye): writes every queued frame as the socket takes it; then the stream
 * half-closes (s_shut_write: its end of stream follows the bytes; TLS says close_notify
 * first) and the connection waits for the
 * peer to end its stream too, reading on meanwhile: a socket closed with input unread, or
 * that input reaches after its close, makes the kernel answer with a reset and throw away
 * bytes not yet delivered. An arpc server, once it has read up to that end, closes or probes
 * with a PING: either ends the wait (a PING then is not answered; nothing is queued after the
 * half-close). A stream that cannot half-close closes once the queue drained. No
 * heartbeat any more: the owner bounds the wait, closing with arpc_conn_close (on_unwritten
 * then names the buffers not written whole). Frames read meanwhile still go to on_frame.
 * Loop thread, not inside a dispatch; may close at once (on_close runs inside). Idempotent. */
void arpc_conn_linger(struct arpc_conn *conn, int reason);

#endif
