/*
 * The reply log's files (core/reply_log_io.h).
 *
 * Design notes
 * - A segment only ever appears under its final name complete and synced: it is written as
 *   NAME.tmp, fdatasync'ed, renamed, and the directory fsync'ed. Recovery can therefore
 *   treat a bad segment header as corruption, never as a crash in the middle of creating it.
 * - Writes go through pwrite at an offset we track rather than the file position, so a
 *   failed or short write leaves no doubt about where the next one goes, and reading the
 *   same file (compaction) never moves anything.
 * - The lock is flock(2) on the directory itself (its descriptor, which the log keeps open),
 *   and on a file in it, LOCK, which names the holder's pid. The file alone was not enough:
 *   an operator removing LOCK as a stale pid file let a second server lock a new LOCK and run
 *   on the same log (a trial lost 500 answered calls that way, or found the log corrupt). A
 *   directory is only unlinked empty, and a new one is another log. Where the filesystem
 *   does not lock directories (flock fails other than EWOULDBLOCK), the file's lock alone
 *   holds, as before. flock locks belong to an open file description, so a second open in
 *   the same process is refused like another process.
 */
#define _GNU_SOURCE
#include "core/reply_log_io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/file_io.h"
#include "base/log.h"

#define LOCK_NAME "LOCK"

void arpc_log_why(char *why, size_t whylen, const char *fmt, ...)
{
    if (why == NULL || whylen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

/* errno's text, thread-safe (GNU strerror_r may return a static string instead of buf). */
static const char *err_text(int err, char *buf, size_t n) { return strerror_r(err, buf, n); }

int arpc_log_sys_fail(char *why, size_t whylen, const char *dir, const char *call, const char *what, int err)
{
    char text[128];
    arpc_log_why(why, whylen, "reply log %s: %s%s%s: %s", dir, call, what[0] ? " " : "", what,
                 err_text(err, text, sizeof(text)));
    return ARPC_ESYSTEM;
}

int arpc_log_keep_file(int dirfd, const char *dir, const char *name, const void *bytes, size_t len, char *why,
                       size_t whylen)
{
    int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return arpc_log_sys_fail(why, whylen, dir, "create", name, errno);
    int err = arpc_file_write_all(fd, bytes, len, 0);
    if (err != 0) {
        close(fd);
        return arpc_log_sys_fail(why, whylen, dir, "write", name, err);
    }
    err = arpc_file_sync(fd, true);
    close(fd);
    if (err != 0)
        return arpc_log_sys_fail(why, whylen, dir, "fdatasync", name, err);
    return arpc_log_dir_sync(dirfd, dir, why, whylen);
}

/* ---- the directory ---- */

int arpc_log_dir_open(const char *dir, int *dirfd, char *why, size_t whylen)
{
    bool created = mkdir(dir, 0700) == 0;
    if (!created && errno != EEXIST)
        return arpc_log_sys_fail(why, whylen, dir, "mkdir", "", errno);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return arpc_log_sys_fail(why, whylen, dir, "open", "", errno);
    /* Its name must survive a power cut too, whoever made it: a directory made by hand (or
     * by a predecessor killed before this fsync) may not be in its parent on disk yet, and
     * with it would go every segment synced inside it (the parent's own entry, a level up,
     * is left to whoever made the parent). One we did not make, under a parent we may not
     * read (root's 0711), only warns: it started there before. One we made is taken back on
     * failure, so that the next start fails the same way instead of finding it and warning. */
    int parent = openat(fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int err = parent < 0 ? errno : arpc_file_sync(parent, false);
    if (parent >= 0)
        close(parent);
    if (err != 0 && created) {
        close(fd);
        (void)rmdir(dir); /* empty: just made */
        return arpc_log_sys_fail(why, whylen, dir, "fsync", "..", err);
    }
    if (err != 0) {
        char text[512];
        (void)arpc_log_sys_fail(text, sizeof(text), dir, "fsync", "..", err);
        arpc_log(ARPC_LOG_WARN, "%s (its name may not survive a power cut)", text);
    }
    *dirfd = fd;
    return ARPC_OK;
}

/* The holder's pid, from its LOCK file (0: not known). */
static long lock_holder(int dirfd)
{
    int fd = openat(dirfd, LOCK_NAME, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char pid[24] = {0};
    ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
    close(fd);
    return n > 0 ? strtol(pid, NULL, 10) : 0;
}

static int in_use(const char *dir, long holder, char *why, size_t whylen)
{
    if (holder > 0)
        arpc_log_why(why, whylen, "reply log %s is in use by another server (pid %ld)", dir, holder);
    else /* it has the lock but has not written its pid yet (or its LOCK was removed) */
        arpc_log_why(why, whylen, "reply log %s is in use by another server (pid unknown)", dir);
    return ARPC_EADDRINUSE;
}

int arpc_log_dir_lock(int dirfd, const char *dir, int *lockfd, char *why, size_t whylen)
{
    while (flock(dirfd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EINTR)
            continue;
        if (errno == EWOULDBLOCK)
            return in_use(dir, lock_holder(dirfd), why, whylen);
        /* A filesystem that does not lock directories: the file's lock alone. */
        arpc_log(ARPC_LOG_INFO, "reply log %s: the directory cannot be locked (%s): LOCK alone keeps a second "
                 "server off it, so do not remove it while a server runs", dir, strerror(errno));
        break;
    }
    int fd = openat(dirfd, LOCK_NAME, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return arpc_log_sys_fail(why, whylen, dir, "open", LOCK_NAME, errno);
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        if (err == EINTR)
            continue;
        if (err != EWOULDBLOCK) {
            close(fd);
            return arpc_log_sys_fail(why, whylen, dir, "flock", LOCK_NAME, err);
        }
        close(fd);
        return in_use(dir, lock_holder(dirfd), why, whylen);
    }
    char pid[24];
    int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    int err = ftruncate(fd, 0) != 0 ? errno : arpc_file_write_all(fd, pid, (size_t)n, 0);
    if (err != 0) {
        close(fd);
        return arpc_log_sys_fail(why, whylen, dir, "write", LOCK_NAME, err);
    }
    *lockfd = fd;
    return ARPC_OK;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int arpc_log_dir_segments(int dirfd, const char *dir, uint64_t **segs, size_t *nsegs, char *why, size_t whylen)
{
    int fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0); /* closedir closes it; dirfd stays ours */
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (d == NULL) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        return arpc_log_sys_fail(why, whylen, dir, "opendir", "", err);
    }
    rewinddir(d); /* the dup shares dirfd's position, which an earlier listing moved */
    uint64_t *list = NULL;
    size_t n = 0, cap = 0;
    int rc = ARPC_OK;
    struct dirent *e;
    while (rc == ARPC_OK && (e = readdir(d)) != NULL) {
        uint64_t seg;
        bool tmp;
        if (!arpc_log_segment_parse(e->d_name, &seg, &tmp))
            continue;
        if (tmp) {
            if (unlinkat(dirfd, e->d_name, 0) != 0 && errno != ENOENT)
                rc = arpc_log_sys_fail(why, whylen, dir, "unlink", e->d_name, errno);
            continue;
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            uint64_t *grown = arpc_realloc(list, ncap * sizeof(*grown));
            if (grown == NULL) {
                arpc_log_why(why, whylen, "reply log %s: out of memory", dir);
                rc = ARPC_ENOMEM;
                break;
            }
            list = grown;
            cap = ncap;
        }
        list[n++] = seg;
    }
    closedir(d);
    if (rc != ARPC_OK) {
        arpc_free(list);
        return rc;
    }
    if (n > 1)
        qsort(list, n, sizeof(*list), cmp_u64);
    *segs = list;
    *nsegs = n;
    return ARPC_OK;
}

int arpc_log_dir_sync(int dirfd, const char *dir, char *why, size_t whylen)
{
    int err = arpc_file_sync(dirfd, false);
    if (err != 0)
        return arpc_log_sys_fail(why, whylen, dir, "fsync", "", err);
    return ARPC_OK;
}

int arpc_log_segment_remove(int dirfd, const char *dir, uint64_t segment, char *why, size_t whylen)
{
    char name[ARPC_LOG_NAME_MAX];
    arpc_log_segment_name(name, segment, false);
    if (unlinkat(dirfd, name, 0) != 0 && errno != ENOENT)
        return arpc_log_sys_fail(why, whylen, dir, "unlink", name, errno);
    return ARPC_OK;
}

int arpc_log_segment_open(int dirfd, const char *dir, uint64_t segment, int *fd, char *why, size_t whylen)
{
    char name[ARPC_LOG_NAME_MAX];
    arpc_log_segment_name(name, segment, false);
    int f = openat(dirfd, name, O_RDWR | O_CLOEXEC);
    if (f < 0)
        return arpc_log_sys_fail(why, whylen, dir, "open", name, errno);
    *fd = f;
    return ARPC_OK;
}

/* ---- appending ---- */

int arpc_log_out_flush(struct arpc_log_out *o, char *why, size_t whylen)
{
    if (o->o_len == 0)
        return ARPC_OK;
    int err = arpc_file_write_all(o->o_fd, o->o_buf, o->o_len, o->o_size - o->o_len);
    if (err != 0)
        return arpc_log_sys_fail(why, whylen, o->o_dir, "write", o->o_name, err);
    o->o_len = 0;
    return ARPC_OK;
}

int arpc_log_out_put(struct arpc_log_out *o, const struct iovec *parts, int nparts, char *why, size_t whylen)
{
    size_t total = 0;
    for (int i = 0; i < nparts; i++)
        total += parts[i].iov_len;
    if (total <= o->o_cap / 4) {
        if (o->o_len + total > o->o_cap && arpc_log_out_flush(o, why, whylen) != ARPC_OK)
            return ARPC_ESYSTEM;
        for (int i = 0; i < nparts; i++) {
            if (parts[i].iov_len > 0) /* an empty part's base may be NULL */
                memcpy(o->o_buf + o->o_len, parts[i].iov_base, parts[i].iov_len);
            o->o_len += parts[i].iov_len;
        }
        o->o_size += total;
        return ARPC_OK;
    }
    /* Large: written in place, after what is buffered (order on disk is append order). */
    if (arpc_log_out_flush(o, why, whylen) != ARPC_OK)
        return ARPC_ESYSTEM;
    for (int i = 0; i < nparts; i++) {
        int err = arpc_file_write_all(o->o_fd, parts[i].iov_base, parts[i].iov_len, o->o_size);
        if (err != 0)
            return arpc_log_sys_fail(why, whylen, o->o_dir, "write", o->o_name, err);
        o->o_size += parts[i].iov_len;
    }
    return ARPC_OK;
}

int arpc_log_out_sync(struct arpc_log_out *o, char *why, size_t whylen)
{
    uint64_t written = o->o_size - o->o_len;
    int err = arpc_file_sync(o->o_fd, true);
    if (err != 0)
        return arpc_log_sys_fail(why, whylen, o->o_dir, "fdatasync", o->o_name, err);
    o->o_synced = written;
    return ARPC_OK;
}

int arpc_log_out_claim(struct arpc_log_out *o, char *why, size_t whylen)
{
    if (o->o_synced <= o->o_claimed)
        return ARPC_OK;
    uint8_t rec[ARPC_LOG_SYNCED_SIZE];
    struct arpc_log_view v = {.v_type = ARPC_LOG_SYNCED, .v_synced = o->o_synced, .v_nonce = o->o_nonce};
    struct iovec part = {rec, arpc_log_encode(rec, &v)};
    int rc = arpc_log_out_put(o, &part, 1, why, whylen);
    if (rc == ARPC_OK)
        o->o_claimed = o->o_synced;
    return rc;
}

int arpc_log_segment_start(int dirfd, const char *dir, uint64_t segment, uint64_t epoch, uint32_t flags,
                           struct arpc_log_out *o, char *why, size_t whylen)
{
    arpc_log_segment_name(o->o_name, segment, true);
    o->o_dir = dir;
    o->o_fd = openat(dirfd, o->o_name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (o->o_fd < 0)
        return arpc_log_sys_fail(why, whylen, dir, "create", o->o_name, errno);
    o->o_size = 0;
    o->o_len = 0;
    o->o_synced = 0;
    o->o_claimed = 0;
    uint8_t head[ARPC_LOG_HEADER_SIZE + ARPC_LOG_SYNCED_SIZE];
    struct arpc_log_view v = {.v_type = ARPC_LOG_HEADER, .v_flags = flags, .v_epoch = epoch, .v_segment = segment};
    struct arpc_log_view intro = {.v_type = ARPC_LOG_SYNCED, .v_nonce = o->o_nonce};
    size_t n = arpc_log_encode(head, &v);
    n += arpc_log_encode(head + n, &intro);
    struct iovec part = {head, n};
    return arpc_log_out_put(o, &part, 1, why, whylen); /* fits: the buffer is far larger */
}

int arpc_log_segment_publish(int dirfd, uint64_t segment, struct arpc_log_out *o, char *why, size_t whylen)
{
    if (arpc_log_out_flush(o, why, whylen) != ARPC_OK || arpc_log_out_sync(o, why, whylen) != ARPC_OK) {
        arpc_log_segment_abandon(dirfd, o);
        return ARPC_ESYSTEM;
    }
    char name[ARPC_LOG_NAME_MAX];
    arpc_log_segment_name(name, segment, false);
    if (renameat(dirfd, o->o_name, dirfd, name) != 0) {
        int rc = arpc_log_sys_fail(why, whylen, o->o_dir, "rename", o->o_name, errno);
        arpc_log_segment_abandon(dirfd, o);
        return rc;
    }
    memcpy(o->o_name, name, sizeof(name));
    return arpc_log_dir_sync(dirfd, o->o_dir, why, whylen);
}

void arpc_log_segment_abandon(int dirfd, struct arpc_log_out *o)
{
    close(o->o_fd);
    o->o_fd = -1;
    unlinkat(dirfd, o->o_name, 0); /* best effort: open removes leftovers too */
}

int arpc_log_read_at(int fd, const char *dir, uint64_t segment, void *buf, size_t n, uint64_t off, char *why,
                     size_t whylen)
{
    char name[ARPC_LOG_NAME_MAX];
    arpc_log_segment_name(name, segment, false);
    size_t got;
    int err = arpc_file_read_all(fd, buf, n, off, &got);
    if (err != 0)
        return arpc_log_sys_fail(why, whylen, dir, "read", name, err);
    if (got < n) {
        arpc_log_why(why, whylen, "reply log %s/%s ends at offset %llu, inside a live record", dir, name,
                     (unsigned long long)(off + got));
        return ARPC_EPROTO;
    }
    return ARPC_OK;
}
