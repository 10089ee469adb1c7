/*
 * The default logger (no arpc_set_logger hook): each line on stderr says when (UTC, to the
 * millisecond) and how bad, before arpc's words, so an operator reading a server's stderr can
 * order its lines against other logs; lines under the minimum level are not written. stderr
 * is a temporary file for the test's span.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "arpc/log.h"
#include "base/log.h"

/* Runs the lines' logging with stderr sent to a file; returns what was written (free it). */
static char *stderr_of(void (*log_lines)(void))
{
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
    log_lines();
    fflush(stderr);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    off_t n = lseek(fileno(tmp), 0, SEEK_END);
    assert_true(n >= 0);
    char *out = calloc(1, (size_t)n + 1);
    assert_non_null(out);
    assert_int_equal(pread(fileno(tmp), out, (size_t)n, 0), n);
    fclose(tmp);
    return out;
}

static void two_lines(void)
{
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
    arpc_log(ARPC_LOG_DEBUG, "not written: under the minimum");
    arpc_log(ARPC_LOG_WARN, "connection to %s lost: %s", "tcp://127.0.0.1:1", "reset");
    arpc_log(ARPC_LOG_ERROR, "second");
}

/* Seconds since the epoch of "YYYY-MM-DDTHH:MM:SS.mmmZ", or -1 if the line does not start so. */
static time_t stamp_of(const char *line)
{
    struct tm tm = {0};
    int ms = -1, used = 0;
    if (sscanf(line, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ %n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec, &ms, &used) != 7 ||
        used != 25 || ms < 0 || ms > 999)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return timegm(&tm);
}

/* The wall clock's seconds as the logger reads it (time() may lag it by a tick). */
static time_t now_s(void)
{
    struct timespec ts;
    assert_int_equal(clock_gettime(CLOCK_REALTIME, &ts), 0);
    return ts.tv_sec;
}

static void test_default_lines_say_when_and_how_bad(void **state)
{
    (void)state;
    time_t before = now_s();
    char *out = stderr_of(two_lines);
    time_t after = now_s();
    char *second = strchr(out, '\n');
    assert_non_null(second);
    *second++ = '\0';
    time_t when = stamp_of(out);
    assert_true(when >= before && when <= after);
    assert_string_equal(out + 25, "arpc WARN: connection to tcp://127.0.0.1:1 lost: reset");
    assert_true(stamp_of(second) >= when);
    assert_string_equal(second + 25, "arpc ERROR: second\n"); /* and nothing else: DEBUG was not written */
    assert_null(strstr(out, "not written"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_lines_say_when_and_how_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
