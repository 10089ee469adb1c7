/*
 * The reply log's lifecycle: open (options, directory, lock, recovery, writer), close,
 * and the read-only accessors (core/reply_log.h). The parts: reply_log_replay.c,
 * reply_log_writer.c, reply_log_compact.c, on the files of reply_log_io.c in the format of
 * reply_log_format.c.
 */
#include <string.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "core/reply_log_internal.h"

#define DEFAULT_BATCH_MS 10
#define DEFAULT_BATCH_RECORDS 1024
#define DEFAULT_COMPACT_BYTES (64ull * 1024 * 1024)

static void log_free(struct arpc_reply_log *log)
{
    if (log->lg_out.o_fd >= 0)
        close(log->lg_out.o_fd);
    if (log->lg_lockfd >= 0)
        close(log->lg_lockfd); /* releases the flock */
    if (log->lg_dirfd >= 0)
        close(log->lg_dirfd);
    arpc_log_index_fini(&log->lg_index);
    arpc_free(log->lg_older);
    arpc_free(log->lg_buf);
    arpc_free(log->lg_dir);
    arpc_free(log);
}

static bool options_valid(const struct arpc_reply_log_options *o, arpc_log_done_fn done)
{
    return o != NULL && o->dir != NULL && o->dir[0] != '\0' && done != NULL &&
           (o->fsync == ARPC_LOG_FSYNC_ALWAYS || o->fsync == ARPC_LOG_FSYNC_BATCH || o->fsync == ARPC_LOG_FSYNC_OFF);
}

/* Everything that can be set up without touching the disk. */
static struct arpc_reply_log *log_new(const struct arpc_reply_log_options *o, arpc_log_done_fn done, void *done_ctx)
{
    struct arpc_reply_log *log = arpc_calloc(1, sizeof(*log));
    if (log == NULL)
        return NULL;
    log->lg_dirfd = log->lg_lockfd = -1;
    log->lg_out.o_fd = -1;
    if (arpc_log_index_init(&log->lg_index) != ARPC_OK) {
        arpc_free(log);
        return NULL;
    }
    size_t dirlen = strlen(o->dir);
    log->lg_dir = arpc_malloc(dirlen + 1);
    log->lg_buf = arpc_malloc(ARPC_LOG_BUF_SIZE);
    if (log->lg_dir == NULL || log->lg_buf == NULL) {
        log_free(log);
        return NULL;
    }
    memcpy(log->lg_dir, o->dir, dirlen + 1);
    ck_stack_init(&log->lg_pending);
    ck_ec32_init(&log->lg_wake, 0);
    atomic_init(&log->lg_closing, false);
    log->lg_policy = o->fsync;
    log->lg_expected_why = o->expected_why;
    log->lg_batch_ns = (uint64_t)(o->batch_ms ? o->batch_ms : DEFAULT_BATCH_MS) * ARPC_NS_PER_MS;
    log->lg_batch_records = o->batch_records ? o->batch_records : DEFAULT_BATCH_RECORDS;
    log->lg_compact_bytes = o->compact_bytes ? o->compact_bytes : DEFAULT_COMPACT_BYTES;
    log->lg_done = done;
    log->lg_done_ctx = done_ctx;
    return log;
}

int arpc_reply_log_open(struct arpc_reply_log **out, const struct arpc_reply_log_options *o,
                        const struct arpc_log_replay_ops *replay, void *replay_ctx, arpc_log_done_fn done,
                        void *done_ctx, char *why, size_t whylen)
{
    arpc_log_why(why, whylen, "%s", "");
    if (out == NULL || !options_valid(o, done)) {
        /* The one option a user gives (the server's log_dir); the rest are the server's own. */
        bool no_dir = o != NULL && (o->dir == NULL || o->dir[0] == '\0');
        arpc_log_why(why, whylen, "%s", no_dir ? "reply log: log_dir is empty (give a directory, or NULL for no log)"
                                               : "reply log: invalid options");
        return ARPC_EINVAL;
    }
    struct arpc_reply_log *log = log_new(o, done, done_ctx);
    if (log == NULL) {
        arpc_log_why(why, whylen, "reply log %s: out of memory", o->dir);
        return ARPC_ENOMEM;
    }
    int rc = arpc_log_dir_open(log->lg_dir, &log->lg_dirfd, why, whylen);
    if (rc == ARPC_OK)
        rc = arpc_log_dir_lock(log->lg_dirfd, log->lg_dir, &log->lg_lockfd, why, whylen);
    if (rc == ARPC_OK)
        rc = arpc_log_recover(log, replay, replay_ctx, why, whylen);
    if (rc == ARPC_OK) {
        /* Twice the live size at least: a log whose live part alone passes compact_bytes
         * must not compact after every batch. */
        uint64_t twice_live = 2 * arpc_log_index_live_bytes(&log->lg_index);
        log->lg_compact_at = log->lg_compact_bytes > twice_live ? log->lg_compact_bytes : twice_live;
        arpc_log_publish_sizes(log);
        rc = arpc_log_writer_start(log);
        if (rc != ARPC_OK)
            arpc_log_why(why, whylen, "reply log %s: cannot start the writer thread", log->lg_dir);
    }
    if (rc != ARPC_OK) {
        log_free(log);
        return rc;
    }
    *out = log;
    return ARPC_OK;
}

void arpc_reply_log_close(struct arpc_reply_log *log)
{
    if (log == NULL)
        return;
    arpc_log_writer_stop(log);
    log_free(log);
}

uint64_t arpc_reply_log_epoch(const struct arpc_reply_log *log) { return log->lg_epoch; }

bool arpc_reply_log_had_clients(const struct arpc_reply_log *log) { return log->lg_had_clients; }

void arpc_reply_log_stats(const struct arpc_reply_log *log, struct arpc_reply_log_stats *out)
{
    const struct arpc_reply_log *l = log;
    *out = (struct arpc_reply_log_stats){
        .records = atomic_load_explicit(&l->lg_stat_records, memory_order_relaxed),
        .bytes = atomic_load_explicit(&l->lg_stat_bytes, memory_order_relaxed),
        .fsyncs = atomic_load_explicit(&l->lg_stat_fsyncs, memory_order_relaxed),
        .compactions = atomic_load_explicit(&l->lg_stat_compactions, memory_order_relaxed),
        .segment_bytes = atomic_load_explicit(&l->lg_stat_segment_bytes, memory_order_relaxed),
        .live_bytes = atomic_load_explicit(&l->lg_stat_live_bytes, memory_order_relaxed),
    };
}
