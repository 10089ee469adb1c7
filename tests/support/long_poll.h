/*
 * A long poll for tests: a method handler that replies only when its call is cancelled (its
 * on_cancel callback replies arpc_reply_error "cancelled", so its caller sees ARPC_EHANDLER),
 * with counts and semaphores a test waits on instead of sleeping. One set per test program:
 * reset it in each test's setup.
 */
#ifndef ARPC_TEST_LONG_POLL_H
#define ARPC_TEST_LONG_POLL_H

#include <stdbool.h>

struct arpc_request;

/* Zeroes the counts and makes the semaphores afresh (after long_poll_fini, or at start). */
void long_poll_reset(void);
/* Destroys the semaphores (a test's teardown, once the server that ran the handler is gone). */
void long_poll_fini(void);
/* The handler (arpc_handler_fn; ctx unused): counts a run, posts "started", and waits for the
 * cancel. Any thread. */
void long_poll(struct arpc_request *req, void *ctx);
/* Runs so far / cancel callbacks so far. */
int long_poll_runs(void);
int long_poll_cancelled(void);
/* Waits for the next start / the next cancel callback for up to secs seconds; false if none. */
bool long_poll_wait_started(int secs);
bool long_poll_wait_cancelled(int secs);

#endif
