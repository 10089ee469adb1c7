/*
 * Replacing the logger while other threads log (arpc/log.h): every line reaches exactly one
 * logger, whole (one hook's function with that hook's context, never another's), and once
 * arpc_set_logger returns the previous context is not used again, so its owner may free it.
 * Two threads log without pause while the test replaces the logger thousands of times; each
 * context is freed as soon as its replacement returns (ASan sees a late use) and marked
 * retired first (a late use counts in any build). Under ThreadSanitizer a hook read without
 * its hand-over is a reported race.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_line_reaches_one_logger_and_none_a_replaced_one),
        cmocka_unit_test(test_level_applies_with_the_replacement),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
