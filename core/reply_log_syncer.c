/*
 * BATCH's fdatasync, off the writer thread.
 *
 * With ARPC_LOG_FSYNC_BATCH a record is handed back once written; fdatasync only has to follow
 * within batch_ms or batch_records. Done on the writer thread, the fdatasync (half a
 * millisecond on a loaded disk) held up every record behind it, and with them every reply
 * that waits for its record's write. So the writer only asks for a sync: this thread takes a
 * duplicate of the active segment's descriptor (it stays valid even if compaction moves on to
 * a new segment meanwhile) and syncs it while the writer keeps writing. A request made while
 * a sync runs is left for the next trigger: the writer keeps its records counted as unsynced.
 *
 * The hand-off is a mutex and a condition variable: once per batch_records records or batch_ms,
 * never per record. A failed fdatasync is reported to the writer, which fails the log
 * (fail-stop), as when it syncs itself.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/file_io.h"
#include "base/thread.h"
#include "core/reply_log_internal.h"

static void *syncer_main(void *arg)
{
    struct arpc_reply_log *log = arg;
    struct arpc_log_syncer *sy = &log->lg_syncer;
    pthread_setname_np(pthread_self(), "arpc-log-sync");
    pthread_mutex_lock(&sy->sy_mtx);
    for (;;) {
        while (sy->sy_fd < 0 && !sy->sy_stop)
            pthread_cond_wait(&sy->sy_cv, &sy->sy_mtx);
        if (sy->sy_fd < 0)
            break; /* stopping, nothing asked */
        int fd = sy->sy_fd;
        pthread_mutex_unlock(&sy->sy_mtx);
        int err = arpc_file_sync(fd, true);
        close(fd);
        atomic_fetch_add_explicit(&log->lg_stat_fsyncs, 1, memory_order_relaxed);
        pthread_mutex_lock(&sy->sy_mtx);
        if (err != 0 && sy->sy_err == 0)
            sy->sy_err = err;
        if (err == 0) {
            sy->sy_done_segment = sy->sy_segment;
            sy->sy_synced = sy->sy_extent;
        }
        sy->sy_fd = -1;
    }
    pthread_mutex_unlock(&sy->sy_mtx);
    return NULL;
}

int arpc_log_syncer_start(struct arpc_reply_log *log)
{
    struct arpc_log_syncer *sy = &log->lg_syncer;
    sy->sy_fd = -1;
    sy->sy_err = 0;
    sy->sy_stop = false;
    sy->sy_done_segment = 0; /* no segment is numbered 0 */
    sy->sy_synced = 0;
    if (pthread_mutex_init(&sy->sy_mtx, NULL) != 0)
        return ARPC_ESYSTEM;
    if (pthread_cond_init(&sy->sy_cv, NULL) != 0) {
        pthread_mutex_destroy(&sy->sy_mtx);
        return ARPC_ESYSTEM;
    }
    if (arpc_thread_create(&sy->sy_thread, syncer_main, log) != 0) {
        pthread_cond_destroy(&sy->sy_cv);
        pthread_mutex_destroy(&sy->sy_mtx);
        return ARPC_ESYSTEM;
    }
    sy->sy_running = true;
    return ARPC_OK;
}

bool arpc_log_syncer_request(struct arpc_reply_log *log, char *why, size_t whylen)
{
    struct arpc_log_syncer *sy = &log->lg_syncer;
    pthread_mutex_lock(&sy->sy_mtx);
    int err = sy->sy_err;
    bool taken = false;
    if (err == 0 && sy->sy_fd < 0) {
        sy->sy_fd = fcntl(log->lg_out.o_fd, F_DUPFD_CLOEXEC, 0); /* a child's exec must not keep it */
        if (sy->sy_fd < 0) {
            err = errno;
        } else {
            taken = true;
            sy->sy_segment = log->lg_segment;
            sy->sy_extent = log->lg_out.o_size - log->lg_out.o_len; /* what was written */
        }
        pthread_cond_signal(&sy->sy_cv);
    }
    pthread_mutex_unlock(&sy->sy_mtx);
    if (err != 0) {
        snprintf(why, whylen, "reply log %s: fdatasync of %s failed: %s", log->lg_dir, log->lg_out.o_name,
                 strerror(err));
        arpc_log_fail(log, why);
    }
    return taken;
}

void arpc_log_syncer_synced(struct arpc_reply_log *log)
{
    struct arpc_log_syncer *sy = &log->lg_syncer;
    if (!sy->sy_running)
        return;
    /* Once per write of the writer's, not per record: the mutex the requests take anyway. */
    pthread_mutex_lock(&sy->sy_mtx);
    uint64_t synced = sy->sy_done_segment == log->lg_segment ? sy->sy_synced : 0;
    pthread_mutex_unlock(&sy->sy_mtx);
    if (synced > log->lg_out.o_synced)
        log->lg_out.o_synced = synced;
}

int arpc_log_syncer_stop(struct arpc_reply_log *log)
{
    struct arpc_log_syncer *sy = &log->lg_syncer;
    if (!sy->sy_running)
        return 0;
    pthread_mutex_lock(&sy->sy_mtx);
    sy->sy_stop = true;
    pthread_cond_signal(&sy->sy_cv);
    pthread_mutex_unlock(&sy->sy_mtx);
    pthread_join(sy->sy_thread, NULL); /* a sync in progress finishes first */
    pthread_cond_destroy(&sy->sy_cv);
    pthread_mutex_destroy(&sy->sy_mtx);
    sy->sy_running = false;
    return sy->sy_err;
}
