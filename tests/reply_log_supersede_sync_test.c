/*
 * Recovery makes the newest snapshot's name durable before it removes the segments it
 * supersedes (core/reply_log_replay.c). A server killed between compaction's rename and its
 * directory fsync leaves the snapshot's name unsynced; the next open unlinked the older
 * segments first and fsynced the directory only after, so a power cut in between could keep
 * the unlink and not the rename: no segment left, and the log refused to start (a power-loss
 * harness on bank_server found it). The test watches the order: by the time open unlinks a
 * superseded segment, it must have fsynced the directory.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
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

/* ---- the directory's syncs, and the segment unlinks that came before one ---- */

static pthread_mutex_t mtx = PTHREAD_MUTEX_INITIALIZER;
static ino_t watched_dir;
static bool dir_synced;
static int unlinks, unlinks_before_sync;

int fsync(int fd)
{
    static _Atomic(void *) next;
    int rc = ((int (*)(int))interpose_next("fsync", &next))(fd);
    struct stat st;
    if (rc == 0 && fstat(fd, &st) == 0) {
        pthread_mutex_lock(&mtx);
        if (watched_dir != 0 && st.st_ino == watched_dir)
            dir_synced = true;
        pthread_mutex_unlock(&mtx);
    }
    return rc;
}

int unlinkat(int dirfd, const char *name, int flags)
{
    static _Atomic(void *) next;
    int (*f)(int, const char *, int) = (int (*)(int, const char *, int))interpose_next("unlinkat", &next);
    size_t len = strlen(name);
    if (len > 8 && strcmp(name + len - 8, ".arpclog") == 0) {
        pthread_mutex_lock(&mtx);
        if (watched_dir != 0) {
            unlinks++;
            unlinks_before_sync += !dir_synced;
        }
        pthread_mutex_unlock(&mtx);
    }
    return f(dirfd, name, flags);
}

/* ---- the log ---- */

static void done(void *ctx, struct arpc_log_record *rec)
{
    *(int *)ctx = rec->lr_status;
}

/* The highest segment number in dir (0: none). */
static unsigned long long newest_segment(const char *dir)
{
    unsigned long long best = 0, n;
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (strlen(e->d_name) == 24 && strcmp(e->d_name + 16, ".arpclog") == 0 &&
            sscanf(e->d_name, "%16llx", &n) == 1 && n > best)
            best = n;
    closedir(d);
    return best;
}

static void copy_file(const char *from, const char *to)
{
    static char buf[1 << 16];
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(in >= 0 && out >= 0);
    for (ssize_t n; (n = read(in, buf, sizeof(buf))) > 0;)
        assert_int_equal(n, write(out, buf, (size_t)n));
    close(in);
    close(out);
}

static void test_snapshot_name_synced_before_removal(void **state)
{
    (void)state;
    char root[] = "/tmp/arpc-supersede-sync-XXXXXX", dir[64], path[128], newest[128];
    assert_non_null(mkdtemp(root));
    snprintf(dir, sizeof(dir), "%s/log", root);
    struct arpc_reply_log_options o = {.dir = dir, .fsync = ARPC_LOG_FSYNC_ALWAYS, .compact_bytes = 1};
    struct arpc_reply_log *log;
    char why[256];
    int status = -1;
    assert_int_equal(ARPC_OK, arpc_reply_log_open(&log, &o, NULL, NULL, done, &status, why, sizeof(why)));
    static struct arpc_log_record recs[20]; /* the log's until done */
    for (uint64_t seq = 1; seq <= 20; seq++) { /* enough to compact: the snapshot is segment 2 or later */
        recs[seq - 1] = (struct arpc_log_record){
            .lr_type = ARPC_LOG_REPLY, .lr_client_id = 7, .lr_seq = seq, .lr_ack = seq - 1, .lr_reply = "r",
            .lr_reply_len = 1};
        arpc_reply_log_append(log, &recs[seq - 1]);
    }
    arpc_reply_log_close(log);
    assert_int_equal(ARPC_OK, status);
    unsigned long long top = newest_segment(dir);
    assert_true(top >= 2);

    /* What a kill between compaction's rename and its directory fsync leaves: the older
     * segment still there (a copy of the snapshot will do: same epoch, superseded by name). */
    snprintf(newest, sizeof(newest), "%s/%016llx.arpclog", dir, top);
    snprintf(path, sizeof(path), "%s/%016llx.arpclog", dir, top - 1);
    copy_file(newest, path);

    struct stat st;
    assert_int_equal(0, stat(dir, &st));
    pthread_mutex_lock(&mtx);
    watched_dir = st.st_ino;
    pthread_mutex_unlock(&mtx);
    assert_int_equal(ARPC_OK, arpc_reply_log_open(&log, &o, NULL, NULL, done, &status, why, sizeof(why)));
    pthread_mutex_lock(&mtx);
    watched_dir = 0;
    int removed = unlinks, early = unlinks_before_sync;
    pthread_mutex_unlock(&mtx);
    arpc_reply_log_close(log);
    assert_int_equal(1, removed);
    assert_int_equal(0, early);

    server_proc_rmdir(dir);
    assert_int_equal(0, rmdir(root));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_snapshot_name_synced_before_removal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
