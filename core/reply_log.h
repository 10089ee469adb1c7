/*
 * The server's reply log: durability for at-most-once and exactly-once calls.
 *
 * Every completed numbered call is appended as a REPLY record (client id, seq, the client's
 * ack at the time, the encoded reply, and optionally the application's "effect": what the
 * call changed, in the application's own encoding). After a crash, a restart on the same
 * directory replays the log: the reply cache gets back every reply still live, so a retried
 * call is answered from the log and its handler does not run again; and an application that
 * rebuilds its state from its latest checkpoint (STATE) plus the effects logged after it
 * applies every call exactly once across crashes.
 *
 * This module owns the disk format (core/reply_log_format.h), the writer thread and group
 * commit, recovery and compaction. It knows nothing of sockets, connections or the cache.
 *
 * Threads. open, close, epoch and stats run on the caller's thread; the replay callbacks run
 * inside open, on the caller's thread. append may be called from any thread at any time
 * between open and close. The done callback runs on the log's writer thread ("arpc-log").
 *
 * Ownership. A record belongs to the log from append until the log hands it back through the
 * done callback, exactly once, with lr_status set; the reply and effect bytes it points to must
 * stay valid and unchanged until then. The log copies nothing it needs later: what it keeps
 * is on disk.
 *
 * Directory. DIR holds LOCK (an exclusive flock while a log is open, with the holder's pid in
 * it) and the segment files; DIR/NNNNNNNNNNNNNNNN.arpclog.tmp is a compaction in progress
 * (removed at open). Nothing else in DIR is touched.
 */
#ifndef ARPC_CORE_REPLY_LOG_H
#define ARPC_CORE_REPLY_LOG_H

#include <ck_stack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* When an appended record counts as done (handed back through the done callback). */
enum arpc_log_fsync {
    ARPC_LOG_FSYNC_ALWAYS, /* written and fdatasync'ed: survives a power loss. Group commit:
                            * one fdatasync covers every record that queued during the last */
    ARPC_LOG_FSYNC_BATCH,  /* written (a process crash no longer loses it); an fdatasync follows
                            * within batch_ms or batch_records */
    ARPC_LOG_FSYNC_OFF,    /* written; never synced until close */
};

struct arpc_reply_log_options {
    const char *dir;          /* created (mode 0700) if missing; its parent must exist */
    enum arpc_log_fsync fsync;
    uint32_t batch_ms;        /* BATCH: fdatasync at most this long after a write; 0: 10 */
    uint32_t batch_records;   /* BATCH: or once this many records are unsynced; 0: 1024 */
    uint64_t compact_bytes;   /* compact once the active segment passes this (and twice the
                               * size of the last snapshot); 0: 64 MiB */
    const char *expected_why; /* non-NULL: a log must be there already (why, for the error):
                               * a directory without a segment is refused ARPC_EPROTO, not
                               * started empty */
};

/* The largest record payload: the fixed fields plus reply and effect (or the state). */
#define ARPC_LOG_PAYLOAD_MAX (1u << 30)

/* Record types; the numbers are the on-disk type byte (only ever append). */
enum arpc_log_rtype {
    ARPC_LOG_REPLY = 1,  /* a completed call (client id 0: only an effect, no reply to keep) */
    ARPC_LOG_ACK = 2,    /* a client's ack rose without a reply to carry it */
    ARPC_LOG_EXPIRE = 3, /* a client expired: forget it */
    ARPC_LOG_STATE = 4,  /* the application's checkpoint: covers every effect before it */
    ARPC_LOG_GOODBYE = 5, /* a client said goodbye: forget it, but keep its highest seq (its
                           * floor) so a late copy of its calls is refused after a restart */
    ARPC_LOG_ACK_BEYOND = 9, /* what a client acknowledged beyond its ack (an ACK frame:
                              * core/ack_claim.h): its replies there are no longer live */
};

/* One record on its way to disk; the caller allocates and owns it (see Ownership). */
struct arpc_log_record {
    ck_stack_entry_t lr_link; /* the log's */
    enum arpc_log_rtype lr_type;
    uint64_t lr_client_id; /* REPLY (0: effect only), ACK, EXPIRE, GOODBYE, ACK_BEYOND (non-zero) */
    uint64_t lr_seq;       /* REPLY; GOODBYE: the floor, the highest seq the client used;
                            * ACK_BEYOND: the claim's high */
    uint64_t lr_identity;  /* GOODBYE: whose share the floor is held against (the client's
                            * identity; 0: none known) */
    uint64_t lr_ack;       /* REPLY: the client's ack when the reply was made (so rising acks
                            * need no records of their own); ACK, ACK_BEYOND: the new ack */
    const void *lr_reply;  /* REPLY: opaque reply bytes (an encoded frame); may be empty */
    size_t lr_reply_len;
    const void *lr_effect; /* REPLY: the application's effect (may be empty);
                            * STATE: the application's checkpoint; ACK_BEYOND: the waiting
                            * seqs, little-endian u64s, ascending in (ack, high], at most
                            * ARPC_ACK_WAITING_MAX (as an ACK frame lists them) */
    size_t lr_effect_len;
    int lr_status;         /* set by the log before it hands the record back:
                            * ARPC_OK, or ARPC_ESYSTEM (a write or sync failed, or the log
                            * stopped after one), ARPC_ETOOLARGE (payload above
                            * ARPC_LOG_PAYLOAD_MAX), ARPC_EINVAL (bad type, client id 0 on
                            * ACK/EXPIRE/GOODBYE), ARPC_ENOMEM (the live index could not grow).
                            * After any of these three the log stops, as after a failed
                            * write: every later record comes back ARPC_ESYSTEM (a record
                            * after a missing one must not be durable without it);
                            * ARPC_ESHUTDOWN (appended after close began). Only ARPC_OK means
                            * the record is in the log. */
    void *lr_owner;        /* the caller's */
};

/*
 * Called on the writer thread for every appended record, in append order (a total order
 * across appending threads), exactly once, when the record is done per the policy, or at
 * once with an error status. The callee may free the record and the buffers it points to,
 * and may append; it must not close the log, and should be quick: the next batch waits.
 */
typedef void (*arpc_log_done_fn)(void *ctx, struct arpc_log_record *rec);

/*
 * Recovery, called from arpc_reply_log_open on the calling thread, in this order. Any member
 * may be NULL. Pointers are valid only during the call (they point into the mapped log).
 */
struct arpc_log_replay_ops {
    /* The latest checkpoint, if there is one. */
    void (*on_state)(void *ctx, const void *state, size_t len);
    /* Every non-empty effect logged after it, in log order (acked or not: effects are
     * permanent). */
    void (*on_effect)(void *ctx, const void *effect, size_t len);
    /* Every reply still live: seq > its client's latest ack, client not expired. Ascending
     * seq within a client; clients in no particular order. */
    void (*on_reply)(void *ctx, uint64_t client_id, uint64_t seq, const void *reply, size_t len);
    /* Each live (not expired) client's latest ack. */
    void (*on_ack)(void *ctx, uint64_t client_id, uint64_t ack);
    /* First each live client above that came back after a goodbye (a late call above its
     * floor), with that floor and identity 0: to be kept again at its expiry
     * (arpc_reply_cache_restore_gone). Then each client that said goodbye (GOODBYE) and was
     * not heard from again, with its floor and its identity (0: none), oldest goodbye first:
     * ARPC_RC_GONE_MAX at most, shared among identities as the reply cache shares them
     * (core/reply_cache_gone.h). None of those is also a live client above. */
    void (*on_gone)(void *ctx, uint64_t client_id, uint64_t floor, uint64_t identity);
    /* After on_ack: each live client's acknowledgement beyond its ack, if it has one: every
     * seq <= high but waiting[0..n) (ascending). Its replies there were not passed to on_reply. */
    void (*on_ack_beyond)(void *ctx, uint64_t client_id, uint64_t high, const uint64_t *waiting, uint32_t n);
};

struct arpc_reply_log;

/*
 * Opens (creating if needed) the log in o->dir, replays it through replay (may be NULL), and
 * starts the writer. On success *out is the log. On failure *out is untouched, nothing is
 * left running, whatever the replay callbacks delivered is to be discarded (a failure can
 * still follow them), and why (if not NULL and whylen > 0) holds one line saying what went
 * wrong:
 *   ARPC_EINVAL      bad options
 *   ARPC_EADDRINUSE  another open log holds DIR (this process or another):
 *                    "reply log DIR is in use by another server (pid N)"
 *   ARPC_EPROTO      the log is damaged in a way a crash cannot explain (a bad record in
 *                    bytes a later SYNCED record says were synced; in a segment without
 *                    SYNCED records, one with valid records after where it ends, or too many
 *                    record-like bytes after it to tell: core/reply_log_tail.h; a bad segment
 *                    header; a segment
 *                    whose epoch is not the newest one's, superseded or not: a file of
 *                    another log's directory; an unknown record type):
 *                    "reply log DIR/FILE is corrupt at offset N: <what>; refusing to start
 *                    (move the directory away to start empty)". The segments are left as
 *                    they were.
 *   ARPC_ESYSTEM     a system call failed (the line names it, the path and errno's text)
 *   ARPC_ENOMEM
 * A torn last record (what a crash in the middle of a write leaves), or damage no sync was
 * known to cover (what a power cut leaves of unsynced writes), is not an error: it is dropped
 * with everything after it, the file truncated to the record before it, and a warning logged.
 */
int arpc_reply_log_open(struct arpc_reply_log **out, const struct arpc_reply_log_options *o,
                        const struct arpc_log_replay_ops *replay, void *replay_ctx,
                        arpc_log_done_fn done, void *done_ctx, char *why, size_t whylen);

/* A random non-zero id made when the directory's first segment was created, the same after
 * every restart on that directory (a client can tell a restarted server from a new one). */
uint64_t arpc_reply_log_epoch(const struct arpc_reply_log *log);

/* Whether open found any client in the log: a live reply or ack, or a goodbye's floor. These
 * are what the log keeps by client key, so what a change of the keys would lose (a new
 * directory: false). Any thread. */
bool arpc_reply_log_had_clients(const struct arpc_reply_log *log);

/* Any thread, between open and close; never blocks, never fails: every outcome comes back
 * through the done callback as lr_status. */
void arpc_reply_log_append(struct arpc_reply_log *log, struct arpc_log_record *rec);

/*
 * Writes and syncs everything appended before the call (whatever the policy), hands every
 * record back, joins the writer and unlocks the directory. Not from the done callback, and
 * with no append running or following. NULL is ignored.
 */
void arpc_reply_log_close(struct arpc_reply_log *log);

/* Counters since open, read without stopping the writer (each exact, not a snapshot of all). */
struct arpc_reply_log_stats {
    uint64_t records;       /* records written */
    uint64_t bytes;         /* bytes written for them */
    uint64_t fsyncs;        /* fdatasync calls on the active segment */
    uint64_t compactions;   /* snapshots written */
    uint64_t segment_bytes; /* the active segment's size */
    uint64_t live_bytes;    /* bytes of records a compaction would keep (an upper bound) */
};
void arpc_reply_log_stats(const struct arpc_reply_log *log, struct arpc_reply_log_stats *out);

#endif
