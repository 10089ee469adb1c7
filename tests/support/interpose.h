/*
 * A test that interposes a libc function defines it in the test program, so the library's
 * calls reach the test's definition first; the test's definition reaches the real one through
 * interpose_next.
 */
#ifndef ARPC_TEST_INTERPOSE_H
#define ARPC_TEST_INTERPOSE_H

#include <stdatomic.h>

/* The definition of name after the program's own (libc's, or a sanitizer's interceptor),
 * looked up at the first call and kept in *cache (a static of the caller's). Any thread may
 * call it: a race looks the same function up twice. Aborts, saying so, if there is none. */
void *interpose_next(const char *name, _Atomic(void *) *cache);

#endif
