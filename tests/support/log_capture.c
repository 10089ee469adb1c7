/* The tests' catch of the library's log lines (support/log_capture.h). */
#include "support/log_capture.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t lines_mtx = PTHREAD_MUTEX_INITIALIZER;
static char *lines[LOG_CAPTURE_MAX];
static size_t nlines;

static void capture(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)ctx;
    (void)level;
    pthread_mutex_lock(&lines_mtx);
    if (nlines < LOG_CAPTURE_MAX)
        lines[nlines++] = strdup(line);
    pthread_mutex_unlock(&lines_mtx);
}

void log_capture_start(enum arpc_log_level level) { arpc_set_logger(capture, NULL, level); }

void log_capture_clear(void)
{
    pthread_mutex_lock(&lines_mtx);
    for (size_t i = 0; i < nlines; i++)
        free(lines[i]);
    nlines = 0;
    pthread_mutex_unlock(&lines_mtx);
}

size_t log_capture_count(void)
{
    pthread_mutex_lock(&lines_mtx);
    size_t n = nlines;
    pthread_mutex_unlock(&lines_mtx);
    return n;
}

size_t log_capture_with(const char *const *words)
{
    size_t n = 0;
    pthread_mutex_lock(&lines_mtx);
    for (size_t i = 0; i < nlines; i++) {
        bool all = lines[i] != NULL;
        for (size_t w = 0; words[w] != NULL && all; w++)
            all = strstr(lines[i], words[w]) != NULL;
        n += all;
    }
    pthread_mutex_unlock(&lines_mtx);
    return n;
}

size_t log_capture_unprintable(void)
{
    size_t n = 0;
    pthread_mutex_lock(&lines_mtx);
    for (size_t i = 0; i < nlines; i++)
        for (const char *p = lines[i]; p != NULL && *p != '\0'; p++)
            if (*p < 0x20 || *p > 0x7e) {
                n++;
                break;
            }
    pthread_mutex_unlock(&lines_mtx);
    return n;
}

char *log_capture_last_with(const char *what)
{
    char *found = NULL;
    pthread_mutex_lock(&lines_mtx);
    for (size_t i = nlines; i-- > 0 && found == NULL;)
        if (lines[i] != NULL && strstr(lines[i], what) != NULL)
            found = strdup(lines[i]);
    pthread_mutex_unlock(&lines_mtx);
    return found;
}

void log_capture_print(void)
{
    pthread_mutex_lock(&lines_mtx);
    for (size_t i = 0; i < nlines; i++)
        print_message("logged: %s\n", lines[i] != NULL ? lines[i] : "(no memory)");
    pthread_mutex_unlock(&lines_mtx);
}
