/*
 * The reply log's files: the directory and its lock, segment files (created whole, by
 * rename), and a buffered appender that turns many records into few writes.
 *
 * Every function that can fail returns ARPC_OK or an arpc error (ARPC_ESYSTEM unless said)
 * and then writes one line to why[0..whylen) naming the operation, the file and errno's text,
 * e.g. "reply log /srv/log: fdatasync 0000000000000003.arpclog: Input/output error". Paths
 * are relative to the directory's fd (openat and friends): no path is ever built.
 * Single-threaded: the opener, then the writer thread.
 */
#ifndef ARPC_CORE_REPLY_LOG_IO_H
#define ARPC_CORE_REPLY_LOG_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/reply_log_format.h"

/* Formats a why line (always NUL-terminated when whylen > 0; why may be NULL). */
void arpc_log_why(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Formats the why line of a failed system call `call` on `what` (a file name in dir, or ""
 * for dir itself) with err's text; returns ARPC_ESYSTEM. */
int arpc_log_sys_fail(char *why, size_t whylen, const char *dir, const char *call, const char *what, int err);

/* ---- the directory ---- */

/* Creates dir (mode 0700) if it is missing, fsyncs its parent (so its name is durable, made
 * now or not; for one made before, a failure to only warns) and opens it (O_DIRECTORY) into
 * *dirfd. */
int arpc_log_dir_open(const char *dir, int *dirfd, char *why, size_t whylen);

/* Takes an exclusive flock on the directory (dirfd: held until it is closed) and on DIR/LOCK
 * (without waiting), and writes our pid in LOCK. A lock held elsewhere, by any open log in this
 * process or another: ARPC_EADDRINUSE, "reply log DIR is in use by another server (pid N)",
 * LOCK removed meanwhile or not. On success *lockfd holds the file's lock until closed. */
int arpc_log_dir_lock(int dirfd, const char *dir, int *lockfd, char *why, size_t whylen);

/* The segment numbers in the directory, ascending, in a new array (arpc_free it; NULL when
 * there are none). Leftover ".tmp" segments (a compaction cut short) are removed. */
int arpc_log_dir_segments(int dirfd, const char *dir, uint64_t **segs, size_t *nsegs, char *why,
                          size_t whylen);

/* fsync of the directory itself: makes created, renamed and removed names durable. */
int arpc_log_dir_sync(int dirfd, const char *dir, char *why, size_t whylen);

/* Writes bytes[0..len) as DIR/name (created, or replaced), synced with its name: a file kept
 * beside the segments for an operator (never read by the log; its name is no segment's). */
int arpc_log_keep_file(int dirfd, const char *dir, const char *name, const void *bytes, size_t len, char *why,
                       size_t whylen);

/* Removes the segment's file; a missing file is fine. */
int arpc_log_segment_remove(int dirfd, const char *dir, uint64_t segment, char *why, size_t whylen);

/* Opens an existing segment (read and write: recovery may truncate it, compaction reads it,
 * the writer appends to it). */
int arpc_log_segment_open(int dirfd, const char *dir, uint64_t segment, int *fd, char *why, size_t whylen);

/* ---- appending ---- */

/* A file being appended to, through a buffer that gathers small records into one write.
 * Records larger than a quarter of the buffer are written directly, after what is buffered.
 * It also keeps what its SYNCED records need (core/reply_log_tail.h): how far the file is
 * known to be on disk, and how far its last SYNCED record said. */
struct arpc_log_out {
    int o_fd;
    const char *o_dir;           /* for why lines */
    char o_name[ARPC_LOG_NAME_MAX];
    uint64_t o_size;             /* the file's size once the buffer is written */
    uint8_t *o_buf;              /* not owned */
    size_t o_len, o_cap;
    uint64_t o_synced;           /* the file's first o_synced bytes were fdatasync'ed */
    uint64_t o_claimed;          /* the extent its last SYNCED record gave (0: none since open) */
    uint64_t o_nonce;            /* its SYNCED records' nonce (set by the caller) */
};

/* Appends one record given as parts (head, reply, data; empty parts allowed). The bytes of
 * parts may be reused once it returns. */
int arpc_log_out_put(struct arpc_log_out *o, const struct iovec *parts, int nparts, char *why, size_t whylen);
/* Writes whatever is buffered. */
int arpc_log_out_flush(struct arpc_log_out *o, char *why, size_t whylen);
/* fdatasync of the file (what a record needs to survive a power loss); on success o_synced
 * covers every byte written before it. */
int arpc_log_out_sync(struct arpc_log_out *o, char *why, size_t whylen);
/* Appends a SYNCED record giving o_synced if that is past o_claimed (else nothing): how far a
 * later recovery may trust damage after it to be corruption rather than an unsynced tail.
 * Call it before the first record of a write that follows a sync. */
int arpc_log_out_claim(struct arpc_log_out *o, char *why, size_t whylen);

/*
 * Starts segment `segment` as DIR/NAME.tmp with its header (epoch, flags) and a first SYNCED
 * record (extent 0, o_nonce) buffered in *o (whose o_buf, o_cap and o_nonce the caller set).
 * Append to it, then publish.
 */
int arpc_log_segment_start(int dirfd, const char *dir, uint64_t segment, uint64_t epoch, uint32_t flags,
                           struct arpc_log_out *o, char *why, size_t whylen);
/* Flushes and fdatasyncs the started segment, renames it to its final name and syncs the
 * directory: from here on it survives a crash. A failure before the rename removes the
 * temporary file and closes o->o_fd (-1). A failure to sync the directory after it leaves
 * o->o_fd open: the segment exists under its final name but may or may not survive a crash,
 * so the caller can no longer trust which segment is newest (the reply log fail-stops). */
int arpc_log_segment_publish(int dirfd, uint64_t segment, struct arpc_log_out *o, char *why, size_t whylen);
/* Abandons a started segment: closes it and removes the temporary file. */
void arpc_log_segment_abandon(int dirfd, struct arpc_log_out *o);

/* pread of exactly n bytes at off (a short read means the file is shorter: ARPC_EPROTO). */
int arpc_log_read_at(int fd, const char *dir, uint64_t segment, void *buf, size_t n, uint64_t off, char *why,
                     size_t whylen);

#endif
