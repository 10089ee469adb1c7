/* Whole writes and syncs of files (base/file_io.h). */
#include "base/file_io.h"

#include <errno.h>
#include <unistd.h>

int arpc_file_write_all(int fd, const void *p, size_t n, uint64_t off)
{
    const unsigned char *b = p;
    while (n > 0) {
        ssize_t w = pwrite(fd, b, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return errno;
        if (w == 0)
            return EIO; /* no progress and no error: do not spin */
        b += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

int arpc_file_read_all(int fd, void *p, size_t n, uint64_t off, size_t *got)
{
    unsigned char *b = p;
    *got = 0;
    while (*got < n) {
        ssize_t r = pread(fd, b + *got, n - *got, (off_t)(off + *got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return errno;
        if (r == 0)
            break; /* the end of the file */
        *got += (size_t)r;
    }
    return 0;
}

int arpc_file_sync(int fd, bool data_only)
{
    while ((data_only ? fdatasync(fd) : fsync(fd)) != 0)
        if (errno != EINTR)
            return errno;
    return 0;
}
