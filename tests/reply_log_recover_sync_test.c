/*
 * Recovery syncs what it read before it replays it (core/reply_log_replay.c). A server killed
 * between a write and its fdatasync leaves records in the page cache only; the next open
 * read them and replayed them unsynced, so a duplicate answered from one was undone by a
 * power cut after (a power-loss review: a crash-state harness lost such replies, and nothing
 * synced the file until the next record came).
 *
 * The page cache cannot be dropped from a test, so the test watches the syncs instead, by
 * interposing fdatasync and fsync: a reopened log must have fdatasync'ed its segment, and
 * fsync'ed its directory, by the time a replayed reply reaches the caller.
 *
 * The same for the directory's own name: open fsynced the parent only when it made the
 * directory itself, so a directory made by hand (mkdir -p in a unit file) could vanish in a
 * power cut with every segment in it. Open fsyncs the parent whoever made it.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arpc/error.h"
#include "core/reply_log.h"
#include "support/interpose.h"
#include "support/server_proc.h"
#include "support/test_util.h"

/* ---- the syncs this process makes ---- */

#define SYNCED_MAX 64

static pthread_mutex_t synced_mtx = PTHREAD_MUTEX_INITIALIZER;
static ino_t synced[SYNCED_MAX];
static size_t nsynced;

static void note_synced(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return;
    ino_t ino = st.st_ino;
    pthread_mutex_lock(&synced_mtx);
    if (nsynced < SYNCED_MAX)
        synced[nsynced++] = ino;
    pthread_mutex_unlock(&synced_mtx);
}

static bool was_synced(const char *path)
{
    struct stat st;
    assert_int_equal(0, stat(path, &st));
    bool found = false;
    pthread_mutex_lock(&synced_mtx);
    for (size_t i = 0; i < nsynced && !found; i++)
        found = synced[i] == st.st_ino;
    pthread_mutex_unlock(&synced_mtx);
    return found;
}

static void forget_synced(void)
{
    pthread_mutex_lock(&synced_mtx);
    nsynced = 0;
    pthread_mutex_unlock(&synced_mtx);
}

static _Atomic ino_t failing; /* a sync of this inode fails EIO (0: none) */

/* The real sync, noted when it succeeds. */
static int sync_noted(const char *name, _Atomic(void *) *next, int fd)
{
    struct stat st;
    if (atomic_load(&failing) != 0 && fstat(fd, &st) == 0 && st.st_ino == atomic_load(&failing)) {
        errno = EIO;
        return -1;
    }
    int rc = ((int (*)(int))interpose_next(name, next))(fd);
    if (rc == 0)
        note_synced(fd);
    return rc;
}

int fdatasync(int fd)
{
    static _Atomic(void *) next;
    return sync_noted("fdatasync", &next, fd);
}

int fsync(int fd)
{
    static _Atomic(void *) next;
    return sync_noted("fsync", &next, fd);
}

/* ---- the log ---- */

struct replayed {
    const char *segment, *dir;
    int replies;
    bool segment_synced, dir_synced; /* when the first reply was replayed */
};

static void on_reply(void *ctx, uint64_t client_id, uint64_t seq, const void *reply, size_t len)
{
    (void)client_id, (void)seq, (void)reply, (void)len;
    struct replayed *r = ctx;
    if (r->replies++ == 0) {
        r->segment_synced = was_synced(r->segment);
        r->dir_synced = was_synced(r->dir);
    }
}

static void done(void *ctx, struct arpc_log_record *rec)
{
    *(int *)ctx = rec->lr_status;
}

static void test_reopen_syncs_before_replay(void **state)
{
    (void)state;
    char root[] = "/tmp/arpc-recover-sync-XXXXXX", dir[64], seg[128];
    assert_non_null(mkdtemp(root));
    snprintf(dir, sizeof(dir), "%s/log", root);
    snprintf(seg, sizeof(seg), "%s/0000000000000001.arpclog", dir);
    struct arpc_reply_log_options o = {.dir = dir, .fsync = ARPC_LOG_FSYNC_ALWAYS};
    struct arpc_reply_log *log;
    char why[256];
    int status = -1;
    assert_int_equal(ARPC_OK, arpc_reply_log_open(&log, &o, NULL, NULL, done, &status, why, sizeof(why)));
    struct arpc_log_record rec = {
        .lr_type = ARPC_LOG_REPLY, .lr_client_id = 7, .lr_seq = 1, .lr_reply = "r", .lr_reply_len = 1};
    arpc_reply_log_append(log, &rec);
    arpc_reply_log_close(log); /* hands it back */
    assert_int_equal(ARPC_OK, status);

    forget_synced(); /* as if the first server had been killed before its fdatasync */
    struct replayed r = {.segment = seg, .dir = dir};
    struct arpc_log_replay_ops ops = {.on_reply = on_reply};
    assert_int_equal(ARPC_OK, arpc_reply_log_open(&log, &o, &ops, &r, done, &status, why, sizeof(why)));
    assert_int_equal(1, r.replies);
    assert_true(r.segment_synced);
    assert_true(r.dir_synced);
    arpc_reply_log_close(log);

    server_proc_rmdir(dir);
    assert_int_equal(0, rmdir(root));
}

static void test_open_syncs_parent_of_existing_dir(void **state)
{
    (void)state;
    char root[] = "/tmp/arpc-recover-sync-XXXXXX", dir[64];
    assert_non_null(mkdtemp(root));
    snprintf(dir, sizeof(dir), "%s/log", root);
    assert_int_equal(0, mkdir(dir, 0700)); /* by hand, never synced */
    forget_synced();
    struct arpc_reply_log_options o = {.dir = dir, .fsync = ARPC_LOG_FSYNC_ALWAYS};
    struct arpc_reply_log *log;
    char why[256];
    int status = -1;
    assert_int_equal(ARPC_OK, arpc_reply_log_open(&log, &o, NULL, NULL, done, &status, why, sizeof(why)));
    assert_true(was_synced(root));
    arpc_reply_log_close(log);

    server_proc_rmdir(dir);
    assert_int_equal(0, rmdir(root));
}

/* A directory open made and could not sync into its parent is taken back: the next start
 * fails the same way, instead of finding it and only warning. */
static void test_made_dir_not_synced_is_taken_back(void **state)
{
    (void)state;
    char root[] = "/tmp/arpc-recover-sync-XXXXXX", dir[64];
    assert_non_null(mkdtemp(root));
    snprintf(dir, sizeof(dir), "%s/log", root);
    struct stat st;
    assert_int_equal(0, stat(root, &st));
    atomic_store(&failing, st.st_ino);
    struct arpc_reply_log_options o = {.dir = dir, .fsync = ARPC_LOG_FSYNC_ALWAYS};
    struct arpc_reply_log *log;
    char why[256];
    int status = -1;
    for (int start = 0; start < 2; start++) {
        assert_int_equal(ARPC_ESYSTEM, arpc_reply_log_open(&log, &o, NULL, NULL, done, &status, why, sizeof(why)));
        assert_non_null(strstr(why, "fsync"));
        assert_int_equal(-1, stat(dir, &st)); /* gone again */
    }
    atomic_store(&failing, 0);
    assert_int_equal(0, rmdir(root));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_reopen_syncs_before_replay),
        cmocka_unit_test_no_leak(test_open_syncs_parent_of_existing_dir),
        cmocka_unit_test_no_leak(test_made_dir_not_synced_is_taken_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
