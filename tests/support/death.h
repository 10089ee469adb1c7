/*
 * Death tests: run code that must abort in a child process and check how it died.
 */
#ifndef ARPC_TEST_DEATH_H
#define ARPC_TEST_DEATH_H

#include <stdbool.h>

/* Forks; the child logs to stderr (the default logger, ERROR and up) and runs fn(arg).
 * True when the child was killed by SIGABRT and its stderr contains needle. Call it while
 * the test runs no other threads of its own (a fork copies only the calling thread). A child
 * that returns from fn exits 0 without its leak checks: the parent reports that as false. */
bool dies_with_abort(void (*fn)(void *arg), void *arg, const char *needle);

#endif
