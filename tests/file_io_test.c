/*
 * base/file_io.c through what the kernel may do to a read, a write or a sync: pread, pwrite,
 * fsync and fdatasync are interposed, and each call takes the next step of a script (an errno, a short
 * count, or the real call). The reply log and the namespace file write through these two
 * helpers; a partial write taken as whole, or an EINTR taken as a failure, would lose a record
 * or refuse a server for a signal.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/file_io.h"
#include "support/interpose.h"

/* One step: fail with err, or (err 0) write at most max bytes (0: as many as asked). */
struct step {
    int err;
    size_t max;
};

#define STEPS_MAX 16
static struct step script[STEPS_MAX];
static size_t script_len, script_at;
static unsigned calls; /* interposed calls while a script ran */

static void play(const struct step *steps, size_t n)
{
    assert_true(n <= STEPS_MAX);
    if (n > 0)
        memcpy(script, steps, n * sizeof(*steps));
    script_len = n;
    script_at = 0;
    calls = 0;
}

/* The next step, or the real call's when the script is over. */
static const struct step *next_step(void)
{
    static const struct step real = {0, 0};
    calls++;
    return script_at < script_len ? &script[script_at++] : &real;
}

ssize_t pwrite(int fd, const void *p, size_t n, off_t off)
{
    static _Atomic(void *) next;
    ssize_t (*real)(int, const void *, size_t, off_t) =
        (ssize_t(*)(int, const void *, size_t, off_t))interpose_next("pwrite", &next);
    const struct step *s = next_step();
    if (s->err != 0) {
        errno = s->err;
        return -1;
    }
    if (s->max == SIZE_MAX)
        return 0; /* no progress, no error */
    return real(fd, p, s->max != 0 && s->max < n ? s->max : n, off);
}

/* As pwrite: a step's errno, or the real read of at most its max bytes. */
ssize_t pread(int fd, void *p, size_t n, off_t off)
{
    static _Atomic(void *) next;
    ssize_t (*real)(int, void *, size_t, off_t) = (ssize_t(*)(int, void *, size_t, off_t))interpose_next("pread", &next);
    const struct step *s = next_step();
    if (s->err != 0) {
        errno = s->err;
        return -1;
    }
    return real(fd, p, s->max != 0 && s->max < n ? s->max : n, off);
}

static int sync_step(const char *name, _Atomic(void *) *next, int fd)
{
    const struct step *s = next_step();
    if (s->err != 0) {
        errno = s->err;
        return -1;
    }
    int (*real)(int) = (int (*)(int))interpose_next(name, next);
    return real(fd);
}

int fsync(int fd)
{
    static _Atomic(void *) next;
    return sync_step("fsync", &next, fd);
}

int fdatasync(int fd)
{
    static _Atomic(void *) next;
    return sync_step("fdatasync", &next, fd);
}

static int temp_file(void)
{
    char path[] = "/tmp/arpc-file-io-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    return fd;
}

static void assert_file_holds(int fd, const char *want, size_t off)
{
    char got[256];
    size_t n = strlen(want);
    assert_true(n <= sizeof(got));
    assert_int_equal((ssize_t)n, pread(fd, got, n, (off_t)off));
    assert_memory_equal(want, got, n);
}

static void test_short_writes_and_signals_write_it_all(void **state)
{
    (void)state;
    int fd = temp_file();
    const char *text = "a record, written in pieces between signals";
    play((const struct step[]){{EINTR, 0}, {0, 3}, {EINTR, 0}, {0, 1}, {0, 10}}, 5);
    assert_int_equal(0, arpc_file_write_all(fd, text, strlen(text), 100));
    assert_int_equal(6, calls); /* the script's five, then the rest at once */
    assert_file_holds(fd, text, 100);
    close(fd);
}

static void test_write_errors_are_the_failed_writes(void **state)
{
    (void)state;
    int fd = temp_file();
    play((const struct step[]){{0, 4}, {ENOSPC, 0}}, 2); /* a disk filling mid-record */
    assert_int_equal(ENOSPC, arpc_file_write_all(fd, "0123456789", 10, 0));
    assert_int_equal(2, calls);
    play((const struct step[]){{0, SIZE_MAX}}, 1); /* no progress, and nothing said */
    assert_int_equal(EIO, arpc_file_write_all(fd, "0123456789", 10, 0));
    assert_int_equal(1, calls);
    close(fd);
}

/* Reads come back short and interrupted (NFS, FUSE): all of it is read, and the end of the
 * file is told apart from an error (the namespace secret's read was one read(): a trial's
 * short read refused a server's start, "namespace.key holds 1 bytes"). */
static void test_short_reads_and_signals_read_it_all(void **state)
{
    (void)state;
    int fd = temp_file();
    const char *text = "sixteen bytes!!!";
    play(NULL, 0);
    assert_int_equal(0, arpc_file_write_all(fd, text, 16, 0));
    char got[32];
    size_t n;
    play((const struct step[]){{EINTR, 0}, {0, 1}, {EINTR, 0}, {0, 5}}, 4);
    assert_int_equal(0, arpc_file_read_all(fd, got, 16, 0, &n));
    assert_int_equal(16, n);
    assert_memory_equal(text, got, 16);
    assert_int_equal(5, calls); /* the script's four, then the rest at once */
    play((const struct step[]){{0, 3}}, 1); /* past the end: what there is, and no error */
    assert_int_equal(0, arpc_file_read_all(fd, got, sizeof(got), 10, &n));
    assert_int_equal(6, n);
    assert_memory_equal(text + 10, got, 6);
    play((const struct step[]){{0, 2}, {EIO, 0}}, 2); /* the disk's failure is said */
    assert_int_equal(EIO, arpc_file_read_all(fd, got, 16, 0, &n));
    close(fd);
}

static void test_syncs_go_again_after_a_signal(void **state)
{
    (void)state;
    int fd = temp_file();
    play((const struct step[]){{EINTR, 0}, {EINTR, 0}}, 2);
    assert_int_equal(0, arpc_file_sync(fd, true));
    assert_int_equal(3, calls);
    play((const struct step[]){{EINTR, 0}, {EIO, 0}}, 2); /* the disk's own failure is said */
    assert_int_equal(EIO, arpc_file_sync(fd, false));
    assert_int_equal(2, calls);
    play(NULL, 0);
    assert_int_equal(0, arpc_file_sync(fd, false));
    assert_int_equal(1, calls);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_short_writes_and_signals_write_it_all),
        cmocka_unit_test(test_write_errors_are_the_failed_writes),
        cmocka_unit_test(test_syncs_go_again_after_a_signal),
        cmocka_unit_test(test_short_reads_and_signals_read_it_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
