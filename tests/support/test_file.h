/*
 * Whole files for tests that build and damage files by hand (the reply log's segments): each
 * fails the test (a cmocka assertion) on any error, so a call site needs no checks.
 */
#ifndef ARPC_TEST_FILE_H
#define ARPC_TEST_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The whole file in a new buffer (free it; one byte more than *len, for a caller's NUL). */
uint8_t *test_file_read(const char *path, size_t *len);
/* path made (0600) or truncated to hold exactly b[0..len). */
void test_file_write(const char *path, const uint8_t *b, size_t len);
off_t test_file_size(const char *path);

#endif
