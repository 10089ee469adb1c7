/*
 * Calls cancelled while the client had no connection, told to the server on the next one.
 *
 * A numbered call waiting to be sent again (its connection broke after it was sent) may still
 * run on the server, where a lost connection cancels only unnumbered calls: the server keeps a
 * numbered one for the re-send that would attach to it. When its caller cancels it, the call
 * ends here at once (ARPC_ECANCELLED) and is never sent again, so no copy could carry a CANCEL
 * by xid (the original's xid died with its connection). Its seq is remembered instead, and
 * right after the next connection's HELLO, before the re-sends, one CANCEL naming each seq goes
 * out (docs/PROTOCOL.md, CANCEL): the server cancels the call wherever it runs.
 *
 * Told is not heard: the next connection may break as silently as the last, before the server
 * read them. So they are kept until the server answers anything sent on that connection after
 * them (a reply or an error to a call: it reads a connection's frames in order, and a CANCEL
 * passes even a held connection's queue, never falls behind it); lost first, the connection's
 * next successor names them again. A CANCEL by seq the server has already heard, or for a seq
 * it has forgotten, does nothing, so naming one twice is harmless. A seq cancelled while the
 * told ones wait (a call waiting for its re-send) is told at once and joins them.
 *
 * Bounded: CANCEL_SEQ_MAX seqs (8 KiB, allocated at the first and freed once heard); beyond,
 * the oldest are dropped, said once in a WARN line (docs/SEMANTICS.md). Told only to a server
 * with the CANCEL and DEDUP flags (an older one would take the CANCEL for a protocol error, or
 * never kept the call); forgotten otherwise. Loop thread only.
 *
 * A cancel made while connected goes as a CANCEL by xid on that connection, which may have
 * broken already without the client knowing (a silent peer: no end of stream yet, the
 * heartbeat not due). So the call's seq is kept, by its xid (cs_unanswered), until a frame
 * answering that xid arrives (the server answers every call it heard cancelled: its handler's
 * reply, or ARPC_ECANCELLED for one that had not started; a reply already on its way does as
 * well, the call being over). If the connection is lost first, the seqs still kept join the
 * ring and are named on the next connection like the others: a CANCEL by seq the server had
 * already heard by xid does nothing more (the call ended, or is cancelled already). Bounded as
 * the ring; past the bound a cancel is not kept (one WARN per connection), and a silent break
 * then leaves that call running, as before.
 *
 * The ack: call_finish counts the seq as finished, so the ack may cover it before the server
 * hears the CANCEL. That is safe: an ack frees only finished results (a running call's entry
 * stays until its handler ends, and its CANCEL still finds it), and every request carrying
 * that ack leaves after these CANCELs on the same connection.
 */
#include "arpc/error.h"
#include "base/alloc.h"
#include "base/log.h"
#include "base/u64_map.h"
#include "core/client_internal.h"
#include "core/frame.h"

#define CANCEL_SEQ_MAX 1024u
#define CANCEL_SEQ_FRAME (ARPC_FRAME_HEADER_SIZE + ARPC_CANCEL_SEQ_SIZE)

/* Sends CANCELs naming n seqs of the ring from its i-th on, in one piece; false if no memory. */
static bool cancel_seq_send(arpc_client *c, uint32_t i, uint32_t n)
{
    struct client_cancelled *cs = &c->cl_cancelled;
    uint8_t *frames = arpc_malloc((size_t)n * CANCEL_SEQ_FRAME);
    if (frames == NULL)
        return false;
    size_t len = 0;
    for (uint32_t k = i; k < i + n; k++)
        len += arpc_frame_encode_cancel_seq(frames + len, cs->cs_seqs[(cs->cs_first + k) % CANCEL_SEQ_MAX]);
    (void)arpc_conn_send(&c->cl_conn, frames, frames, len); /* best effort, as any CANCEL */
    return true;
}

void cancel_seq_remember(arpc_client *c, uint64_t seq)
{
    struct client_cancelled *cs = &c->cl_cancelled;
    if (cs->cs_seqs == NULL && (cs->cs_seqs = arpc_malloc(CANCEL_SEQ_MAX * sizeof(uint64_t))) == NULL) {
        arpc_log(ARPC_LOG_WARN, "client: out of memory: the server will not hear that call %llu was cancelled",
                 (unsigned long long)seq);
        return;
    }
    if (cs->cs_count == CANCEL_SEQ_MAX) {
        if (!cs->cs_warned)
            arpc_log(ARPC_LOG_WARN,
                     "client: over %u calls cancelled while disconnected from %s: the server will not hear of "
                     "the oldest (they may run on there until they end)",
                     CANCEL_SEQ_MAX, c->cl_target.t_addr);
        cs->cs_warned = true;
        cs->cs_first = (cs->cs_first + 1) % CANCEL_SEQ_MAX;
        cs->cs_count--;
    }
    cs->cs_seqs[(cs->cs_first + cs->cs_count) % CANCEL_SEQ_MAX] = seq;
    cs->cs_count++;
    if (cs->cs_told && !cancel_seq_send(c, cs->cs_count - 1, 1))
        cs->cs_told = false; /* not all told: kept for the next connection as they are */
}

/* The ring only (the calls cancelled on the current connection stay kept). */
static void cancel_seq_ring_forget(struct client_cancelled *cs)
{
    arpc_free(cs->cs_seqs);
    cs->cs_seqs = NULL;
    cs->cs_first = cs->cs_count = 0;
    cs->cs_warned = false;
    cs->cs_told = false;
}

void cancel_seq_forget(arpc_client *c)
{
    struct client_cancelled *cs = &c->cl_cancelled;
    cancel_seq_ring_forget(cs);
    if (cs->cs_unanswered.p_slots != NULL)
        arpc_u64_map_fini(&cs->cs_unanswered);
    *cs = (struct client_cancelled){0};
}

void cancel_seq_sent(arpc_client *c, uint64_t xid, uint64_t seq)
{
    struct client_cancelled *cs = &c->cl_cancelled;
    if (cs->cs_unanswered.p_slots == NULL && arpc_u64_map_init(&cs->cs_unanswered, 16) != ARPC_OK)
        cs->cs_unanswered = (struct arpc_u64_map){0};
    bool kept = cs->cs_unanswered.p_slots != NULL && arpc_u64_map_count(&cs->cs_unanswered) < CANCEL_SEQ_MAX &&
                arpc_u64_map_put(&cs->cs_unanswered, xid, (void *)(uintptr_t)seq) == ARPC_OK;
    if (!kept && !cs->cs_unanswered_warned) {
        cs->cs_unanswered_warned = true;
        arpc_log(ARPC_LOG_WARN,
                 "client: %u cancelled calls wait for %s to confirm their cancel, and no more are remembered (or "
                 "out of memory): if this connection has broken without a word, the server never hears that call "
                 "%llu was cancelled, and it may go on running there (once; it is not run again)",
                 CANCEL_SEQ_MAX, c->cl_target.t_addr, (unsigned long long)seq);
    }
}

void cancel_seq_answered(arpc_client *c, uint64_t xid)
{
    struct client_cancelled *cs = &c->cl_cancelled;
    if (arpc_u64_map_count(&cs->cs_unanswered) != 0)
        (void)arpc_u64_map_take(&cs->cs_unanswered, xid);
}

void cancel_seq_unanswered(arpc_client *c)
{
    struct client_cancelled *cs = &c->cl_cancelled;
    cs->cs_told = false; /* told on a connection now lost, perhaps unread: named on the next */
    cs->cs_unanswered_warned = false; /* a new connection, a new bound */
    if (arpc_u64_map_count(&cs->cs_unanswered) == 0)
        return;
    size_t pos = 0;
    uint64_t xid;
    void *seq;
    while (arpc_u64_map_next(&cs->cs_unanswered, &pos, &xid, &seq))
        cancel_seq_remember(c, (uint64_t)(uintptr_t)seq);
    arpc_u64_map_fini(&cs->cs_unanswered);
    cs->cs_unanswered = (struct arpc_u64_map){0};
}

void cancel_seq_tell(arpc_client *c)
{
    struct client_cancelled *cs = &c->cl_cancelled;
    uint32_t need = ARPC_HELLO_CANCEL | ARPC_HELLO_DEDUP;
    if (cs->cs_count == 0)
        return;
    if ((c->cl_server_flags & need) != need) {
        cancel_seq_ring_forget(cs); /* a server that cannot hear them */
        return;
    }
    /* One buffer for them all: queued as one piece, in order, before the re-sends. */
    cs->cs_told = cancel_seq_send(c, 0, cs->cs_count);
    if (!cs->cs_told)
        arpc_log(ARPC_LOG_WARN, "client: out of memory: %u calls cancelled while disconnected are named on the "
                 "next connection, not this one", cs->cs_count);
}

void cancel_seq_confirmed(arpc_client *c) { cancel_seq_ring_forget(&c->cl_cancelled); }
