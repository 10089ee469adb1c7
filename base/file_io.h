/*
 * Reading and writing a file whole and syncing it, through what the kernel may interrupt or
 * cut short: a read or write of a regular file may return fewer bytes than asked (a disk
 * filling, a signal; NFS and FUSE), and an fsync on NFS or FUSE may fail EINTR when a signal
 * comes. Callers that wrote, then synced,
 * then said "write failed" from one errno read the wrong call's errno, or a stale one.
 */
#ifndef ARPC_BASE_FILE_IO_H
#define ARPC_BASE_FILE_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* n bytes of p at offset off of fd, however many writes that takes. 0, or the errno of the
 * write that failed (EIO for one that made no progress and said nothing). */
int arpc_file_write_all(int fd, const void *p, size_t n, uint64_t off);

/* n bytes at offset off of fd into p, however many reads that takes, stopping early at the
 * end of the file: *got says how many came. 0, or the errno of the read that failed. */
int arpc_file_read_all(int fd, void *p, size_t n, uint64_t off, size_t *got);

/* fsync (data_only: fdatasync) of fd, again after EINTR. 0, or the errno. */
int arpc_file_sync(int fd, bool data_only);

#endif
