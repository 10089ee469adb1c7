/*
 * arpc-call's log hook (tools/call_log.h). The library logs on its loop thread and the failure
 * line is written on the main one, so the lines kept are behind a mutex; once the failure line
 * has taken them (or the program ends) the hook drops every line, so none can follow it.
 *
 * Kept lines are already escaped by the library (arpc/log.h: peer bytes as \xNN); a control
 * byte is still escaped here, so that nothing folded can break the line.
 */
#include "call_log.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "arpc/log.h"

#define KEPT_MAX 4       /* lines kept; more are counted */
#define KEPT_LEN 1024    /* as long as arpc_log makes a line */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char kept[KEPT_MAX][KEPT_LEN];
static unsigned nkept, nlost;
static bool closed;

static void keep(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)ctx;
    (void)level;
    pthread_mutex_lock(&mu);
    if (!closed && nkept < KEPT_MAX)
        snprintf(kept[nkept++], KEPT_LEN, "%s", line);
    else if (!closed)
        nlost++;
    pthread_mutex_unlock(&mu);
}

void call_log_start(void)
{
    pthread_mutex_lock(&mu);
    nkept = nlost = 0;
    closed = false;
    pthread_mutex_unlock(&mu);
    arpc_set_logger(keep, NULL, ARPC_LOG_INFO);
}

/* Appends s to line[0..cap), control and non-ASCII bytes as \xNN, cut (never mid-escape) with
 * "..." if it does not fit. */
static void append(char *line, size_t cap, const char *s)
{
    static const char cut[] = "...";
    size_t n = strlen(line);
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        char esc[5];
        int w = ch >= 0x20 && ch < 0x7f ? snprintf(esc, sizeof(esc), "%c", ch) : snprintf(esc, sizeof(esc), "\\x%02x", ch);
        if (n + (size_t)w + sizeof(cut) > cap) {
            if (n + sizeof(cut) <= cap)
                memcpy(line + n, cut, sizeof(cut));
            return;
        }
        memcpy(line + n, esc, (size_t)w + 1);
        n += (size_t)w;
    }
}

/* Whether text says what line says: line past its first ": " (its context) is in text. */
static bool said(const char *text, const char *line)
{
    const char *colon = strstr(line, ": ");
    return strstr(text, colon != NULL ? colon + 2 : line) != NULL;
}

void call_log_fold(char *line, size_t cap, const char *text)
{
    pthread_mutex_lock(&mu);
    for (unsigned i = 0; i < nkept && !closed; i++) {
        if (said(text, kept[i]))
            continue;
        append(line, cap, " (arpc: ");
        append(line, cap, kept[i]);
        append(line, cap, ")");
    }
    if (!closed && nlost > 0) {
        char more[48];
        snprintf(more, sizeof(more), " (and %u more arpc log lines)", nlost);
        append(line, cap, more);
    }
    closed = true;
    pthread_mutex_unlock(&mu);
}

void call_log_end(bool print)
{
    pthread_mutex_lock(&mu);
    for (unsigned i = 0; print && !closed && i < nkept; i++)
        fprintf(stderr, "arpc: %s\n", kept[i]);
    if (print && !closed && nlost > 0)
        fprintf(stderr, "arpc: (%u more lines)\n", nlost);
    closed = true;
    pthread_mutex_unlock(&mu);
}
