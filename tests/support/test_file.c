/* Whole files for tests (support/test_file.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support/test_file.h"

uint8_t *test_file_read(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(0, fstat(fd, &st));
    uint8_t *b = malloc((size_t)st.st_size + 1);
    assert_non_null(b);
    assert_int_equal(st.st_size, pread(fd, b, (size_t)st.st_size, 0));
    close(fd);
    *len = (size_t)st.st_size;
    return b;
}

void test_file_write(const char *path, const uint8_t *b, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal((ssize_t)len, pwrite(fd, b, len, 0));
    assert_int_equal(0, close(fd));
}

off_t test_file_size(const char *path)
{
    struct stat st;
    assert_int_equal(0, stat(path, &st));
    return st.st_size;
}
