/*
 * Starting the library's own threads (loops, actors, the reply log's writer and syncer).
 */
#ifndef ARPC_BASE_THREAD_H
#define ARPC_BASE_THREAD_H

#include <pthread.h>

/* pthread_create with every asynchronous signal blocked in the new thread: signals belong to
 * the application's threads (a handler of its own, sigwait, pause), never to a thread of
 * arpc's that the kernel might otherwise pick. Faults (SIGSEGV, SIGABRT, ...) stay unblocked,
 * so a crash is reported where it happened. The caller's mask is left as it was. Returns
 * pthread_create's result. */
int arpc_thread_create(pthread_t *thread, void *(*fn)(void *), void *arg);

#endif
