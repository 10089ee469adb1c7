/*
 * Replacing the logger while other threads log (arpc/log.h): every line reaches exactly one
 * logger, whole (one hook's function with that hook's context, never another's), and once
 * arpc_set_logger returns the previous context is not used again, so its owner may free it.
 * Two threads log without pause while the test replaces the logger thousands of times; each
 * context is freed as soon as its replacement returns (ASan sees a late use) and marked
 * retired first (a late use counts in any build). Under ThreadSanitizer a hook read without
 * its hand-over is a reported race. A child forked while a line was being delivered replaces
 * the logger without waiting for that line (its thread is not in the child), and a line is
 * checked against the minimum of the logger it reaches.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "arpc/log.h"
#include "base/log.h"

enum { LOGGING_THREADS = 2, REPLACEMENTS = 3000 };

struct sink {
    int kind; /* which function it belongs to: 'A' or 'B' */
    atomic_bool retired;
    atomic_ulong lines;
};

static atomic_ulong lines_delivered; /* summed from each sink as it retires */
static atomic_ulong late_uses;       /* a line in a retired sink's logger */
static atomic_ulong mixed;           /* a function given another function's context */
static atomic_bool stop_logging;
static atomic_int threads_logging;

static void sink_take(struct sink *s, int kind)
{
    if (s->kind != kind)
        atomic_fetch_add(&mixed, 1);
    if (atomic_load(&s->retired))
        atomic_fetch_add(&late_uses, 1);
    atomic_fetch_add(&s->lines, 1);
    /* A little work, so that a replacement often lands while a line is inside the logger. */
    for (volatile int i = 0; i < 64; i++)
        ;
    if (atomic_load(&s->retired))
        atomic_fetch_add(&late_uses, 1);
}

static void logger_a(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)level;
    (void)line;
    sink_take(ctx, 'A');
}

static void logger_b(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)level;
    (void)line;
    sink_take(ctx, 'B');
}

static void *log_lines(void *arg)
{
    unsigned long *count = arg;
    atomic_fetch_add(&threads_logging, 1);
    while (!atomic_load(&stop_logging)) {
        arpc_log(ARPC_LOG_WARN, "line %lu", *count);
        (*count)++;
    }
    return NULL;
}

static struct sink *sink_new(int kind)
{
    struct sink *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    s->kind = kind;
    return s;
}

/* The sink no line reaches any more: counted, then freed. */
static void sink_retire(struct sink *s)
{
    atomic_store(&s->retired, true);
    atomic_fetch_add(&lines_delivered, atomic_load(&s->lines));
    free(s);
}

static void test_each_line_reaches_one_logger_and_none_a_replaced_one(void **state)
{
    (void)state;
    struct sink *current = sink_new('A');
    arpc_set_logger(logger_a, current, ARPC_LOG_INFO);
    pthread_t threads[LOGGING_THREADS];
    unsigned long counts[LOGGING_THREADS] = {0};
    for (int t = 0; t < LOGGING_THREADS; t++)
        assert_int_equal(pthread_create(&threads[t], NULL, log_lines, &counts[t]), 0);
    while (atomic_load(&threads_logging) < LOGGING_THREADS)
        sched_yield(); /* both log before the first replacement */

    for (int r = 0; r < REPLACEMENTS; r++) {
        int kind = r % 2 ? 'A' : 'B';
        struct sink *next = sink_new(kind);
        arpc_set_logger(kind == 'A' ? logger_a : logger_b, next, ARPC_LOG_INFO);
        sink_retire(current);
        current = next;
    }
    atomic_store(&stop_logging, true);
    for (int t = 0; t < LOGGING_THREADS; t++)
        assert_int_equal(pthread_join(threads[t], NULL), 0);
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
    sink_retire(current);

    unsigned long logged = 0;
    for (int t = 0; t < LOGGING_THREADS; t++)
        logged += counts[t];
    print_message("%lu lines across %d replacements\n", logged, REPLACEMENTS);
    assert_int_equal(atomic_load(&mixed), 0);
    assert_int_equal(atomic_load(&late_uses), 0);
    assert_int_equal(atomic_load(&lines_delivered), logged); /* none lost, none twice */
    assert_true(logged > 0);
}

/* A line under the minimum level is not delivered, and a level change applies at once. */
static void test_level_applies_with_the_replacement(void **state)
{
    (void)state;
    struct sink *s = sink_new('A');
    arpc_set_logger(logger_a, s, ARPC_LOG_ERROR);
    arpc_log(ARPC_LOG_WARN, "under the minimum");
    assert_int_equal(atomic_load(&s->lines), 0);
    arpc_set_logger(logger_a, s, ARPC_LOG_WARN);
    arpc_log(ARPC_LOG_WARN, "at the minimum");
    assert_int_equal(atomic_load(&s->lines), 1);
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
    free(s);
}

/* Lines at WARN while loggers of ERROR and of DEBUG take turns: one that reaches the ERROR
 * logger (let through by the DEBUG one's minimum, read before the replacement) is counted. */
static atomic_ulong under_minimum;

static void logger_error_only(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)line;
    if (level < ARPC_LOG_ERROR)
        atomic_fetch_add(&under_minimum, 1);
    sink_take(ctx, 'A');
}

static void test_each_line_meets_its_loggers_minimum(void **state)
{
    (void)state;
    struct sink *s = sink_new('A');
    atomic_store(&stop_logging, false);
    atomic_store(&threads_logging, 0);
    pthread_t threads[LOGGING_THREADS];
    unsigned long counts[LOGGING_THREADS] = {0};
    for (int t = 0; t < LOGGING_THREADS; t++)
        assert_int_equal(pthread_create(&threads[t], NULL, log_lines, &counts[t]), 0);
    while (atomic_load(&threads_logging) < LOGGING_THREADS)
        sched_yield();
    for (int r = 0; r < REPLACEMENTS; r++)
        arpc_set_logger(r % 2 ? logger_error_only : logger_a, s, r % 2 ? ARPC_LOG_ERROR : ARPC_LOG_DEBUG);
    atomic_store(&stop_logging, true);
    for (int t = 0; t < LOGGING_THREADS; t++)
        assert_int_equal(pthread_join(threads[t], NULL), 0);
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
    assert_int_equal(atomic_load(&under_minimum), 0);
    assert_int_equal(atomic_load(&mixed), 0);
    free(s);
}

/* A logger that takes its time: a fork almost always lands inside it. */
static void logger_slow(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)level;
    (void)line;
    struct timespec pause = {0, 200000};
    nanosleep(&pause, NULL);
    atomic_fetch_add((atomic_ulong *)ctx, 1);
}

static void *log_lines_until_stopped(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_logging))
        arpc_log(ARPC_LOG_WARN, "a line");
    return NULL;
}

/* A child forked while another thread was delivering a line replaces the logger, and exits,
 * at once: that thread is not in the child, so neither is its line (before, the child waited
 * for it for ever). Each child is given 30 s, then killed. */
static void test_a_child_of_a_fork_replaces_the_logger(void **state)
{
    (void)state;
    atomic_ulong delivered = 0;
    arpc_set_logger(logger_slow, &delivered, ARPC_LOG_INFO);
    atomic_store(&stop_logging, false);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, log_lines_until_stopped, NULL), 0);
    while (atomic_load(&delivered) == 0)
        sched_yield();
    int hung = 0;
    for (int i = 0; i < 20; i++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            arpc_set_logger(NULL, NULL, ARPC_LOG_NONE);
            _exit(0);
        }
        int status = 0, waited_ms = 0;
        pid_t got;
        while ((got = waitpid(pid, &status, WNOHANG)) == 0 && waited_ms < 30000) {
            struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
            waited_ms++;
        }
        if (got == 0) { /* still there: it waits for the line of a thread it does not have */
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            hung++;
            break;
        } else {
            assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
    }
    atomic_store(&stop_logging, true);
    assert_int_equal(pthread_join(thread, NULL), 0);
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
    assert_int_equal(hung, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_line_reaches_one_logger_and_none_a_replaced_one),
        cmocka_unit_test(test_level_applies_with_the_replacement),
        cmocka_unit_test(test_each_line_meets_its_loggers_minimum),
        cmocka_unit_test(test_a_child_of_a_fork_replaces_the_logger),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
