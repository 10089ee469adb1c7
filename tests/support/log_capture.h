/*
 * The library's log lines caught for a test to read (arpc_set_logger), kept in order, up to
 * LOG_CAPTURE_MAX since the last clear. Any thread may log; the readers take the same lock.
 */
#ifndef ARPC_TEST_LOG_CAPTURE_H
#define ARPC_TEST_LOG_CAPTURE_H

#include <stdbool.h>
#include <stddef.h>

#include "arpc/log.h"

#define LOG_CAPTURE_MAX 32

/* Installs the hook for lines at level and above; call before other arpc calls. */
void log_capture_start(enum arpc_log_level level);
/* Forgets the lines caught so far. */
void log_capture_clear(void);
/* Lines caught since the last clear. */
size_t log_capture_count(void);
/* Lines caught that contain every one of the words (NULL-terminated; LOG_LINES_WITH). */
size_t log_capture_with(const char *const *words);
#define LOG_LINES_WITH(...) log_capture_with((const char *const[]){__VA_ARGS__, NULL})
/* Lines caught that are not printable ASCII throughout. */
size_t log_capture_unprintable(void);
/* A copy of the last line containing what (free it), NULL if none. */
char *log_capture_last_with(const char *what);
/* Prints every line caught (cmocka's print_message), to say what was logged when a check fails. */
void log_capture_print(void);

#endif
