/*
 * The reply log object, shared by its parts: open/close (reply_log.c), recovery
 * (reply_log_replay.c), the writer thread (reply_log_writer.c) and compaction
 * (reply_log_compact.c). Not for anyone else.
 *
 * Who touches what:
 *   - appenders (any thread): lg_pending and lg_wake only;
 *   - the opener: everything, until the writer thread starts (pthread_create is the edge);
 *   - the writer thread: the "writer's" fields, until close joins it (the join is the edge);
 *   - anyone: the stats atomics (relaxed: each counter is exact, not a snapshot of all).
 */
#ifndef ARPC_CORE_REPLY_LOG_INTERNAL_H
#define ARPC_CORE_REPLY_LOG_INTERNAL_H

#include <ck_ec.h>
#include <ck_stack.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "core/reply_log.h"
#include "core/reply_log_index.h"
#include "core/reply_log_io.h"

#define ARPC_LOG_WHY_MAX 512

/* BATCH's syncer thread (reply_log_syncer.c): under sy_mtx. */
struct arpc_log_syncer {
    pthread_t sy_thread;
    pthread_mutex_t sy_mtx;
    pthread_cond_t sy_cv;
    int sy_fd;       /* a sync asked for: a duplicate of the segment's fd; -1: none */
    uint64_t sy_segment, sy_extent;      /* what that sync covers: the segment, its bytes */
    uint64_t sy_done_segment, sy_synced; /* what the last sync that succeeded covered */
    int sy_err;      /* the errno of a failed fdatasync (0: none) */
    bool sy_stop;
    bool sy_running;
};

struct arpc_reply_log {
    /* Appenders. */
    ck_stack_t lg_pending;  /* appended records, newest first (base/stack_fifo.h) */
    struct ck_ec32 lg_wake; /* bumped after each append and at close; the writer sleeps on it */
    atomic_bool lg_closing;

    /* Set at open, read-only after. */
    char *lg_dir;
    int lg_dirfd;
    int lg_lockfd;
    uint64_t lg_epoch;
    bool lg_had_clients;    /* open found a client in the log (arpc_reply_log_had_clients) */
    const char *lg_expected_why; /* the option expected_why, during open only */
    enum arpc_log_fsync lg_policy;
    uint64_t lg_batch_ns;
    uint32_t lg_batch_records;
    uint64_t lg_compact_bytes;
    arpc_log_done_fn lg_done;
    void *lg_done_ctx;
    pthread_t lg_thread;

    /* The writer's. */
    struct arpc_log_index lg_index;
    struct arpc_log_out lg_out;  /* the active segment (the newest) */
    uint64_t lg_segment;         /* its number */
    uint64_t *lg_older;          /* older segments still in the directory (live positions may
                                  * point into them until the next compaction), ascending */
    size_t lg_nolder;
    uint8_t *lg_buf;             /* lg_out's buffer, and compaction's output buffer */
    uint64_t lg_compact_at;      /* compact once the active segment passes this size */
    bool lg_failed;              /* a write or sync failed: every record is refused */
    bool lg_dirty;               /* written since the last fdatasync */
    bool lg_wrote;               /* the active segment grew since open (close then says how far
                                  * it is synced: a SYNCED record) */
    bool lg_unclaimed;           /* the active segment holds no SYNCED record yet (written before
                                  * them): the first one is synced before any record follows it,
                                  * or damage after it would still be judged the old way */
    uint32_t lg_unsynced;        /* BATCH: records written since the last fdatasync */
    uint64_t lg_unsynced_since;  /* BATCH: when the first of them was written */
    struct arpc_log_syncer lg_syncer; /* BATCH: syncs off the writer thread */

    /* Statistics (arpc_reply_log_stats). */
    _Atomic uint64_t lg_stat_records, lg_stat_bytes, lg_stat_fsyncs, lg_stat_compactions;
    _Atomic uint64_t lg_stat_segment_bytes, lg_stat_live_bytes;
};

#define ARPC_LOG_BUF_SIZE (512u * 1024u)

/* Recovery (reply_log_replay.c): reads the directory (lg_dirfd, locked), creating its first
 * segment if it has none, and fills lg_epoch, lg_index, lg_out (the active segment, open for
 * appending, with o_buf = lg_buf), lg_segment and lg_older; replays through ops. On failure
 * everything it opened or allocated is released again. */
int arpc_log_recover(struct arpc_reply_log *log, const struct arpc_log_replay_ops *ops, void *ctx, char *why,
                     size_t whylen);

/* The writer thread (reply_log_writer.c). start: ARPC_OK or ARPC_ESYSTEM. stop: makes the
 * writer write and sync everything appended so far, joins it, and hands back with
 * ARPC_ESHUTDOWN whatever was appended after it finished. */
int arpc_log_writer_start(struct arpc_reply_log *log);
void arpc_log_writer_stop(struct arpc_reply_log *log);

/* Compaction (reply_log_compact.c), on the writer thread between batches (lg_out flushed).
 * ARPC_OK; or an error after which nothing changed (the log goes on with its old segments);
 * or an error with lg_failed set when the directory may no longer say which segment is newest. */
int arpc_log_compact(struct arpc_reply_log *log, char *why, size_t whylen);

/* BATCH's syncer (reply_log_syncer.c). request (writer thread): asks for an fdatasync of the
 * active segment; true when the syncer took it (false: it is busy, or failed: then the log is
 * failed, why says it). stop: waits for a sync in progress; returns its errno if one failed. */
int arpc_log_syncer_start(struct arpc_reply_log *log);
bool arpc_log_syncer_request(struct arpc_reply_log *log, char *why, size_t whylen);
int arpc_log_syncer_stop(struct arpc_reply_log *log);
/* Writer thread: raises lg_out.o_synced to what the syncer's syncs of the active segment
 * have covered (for its SYNCED records). */
void arpc_log_syncer_synced(struct arpc_reply_log *log);

/* Marks the log failed (fail-stop) and logs why at ERROR. Writer thread. */
void arpc_log_fail(struct arpc_reply_log *log, const char *why);

/* Publishes the writer's counters derived from its state. Writer thread (or opener). */
void arpc_log_publish_sizes(struct arpc_reply_log *log);

/* Adds n to a statistics counter. Writer thread only (its single writer). */
void arpc_log_stat_add(_Atomic uint64_t *counter, uint64_t n);

#endif
