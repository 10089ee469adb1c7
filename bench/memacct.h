/*
 * bench/memacct.h: counting the heap arpc uses on the client's side.
 *
 * Installs an arpc allocator hook (arpc/alloc.h) that tags each block with the side of the
 * thread that allocated it. Threads that call bench_memacct_tag_client() (the bench's main
 * thread and the client loop threads) are the client side; every other thread (the embedded
 * server's loop and actors) is not counted. The count is the glibc chunk size each request
 * would get without the tag, so it is the footprint arpc would have under plain malloc; the
 * 16-byte tag itself is left out.
 *
 * bench_memacct_install() must run before any other arpc function (the hook's rule).
 */
#ifndef ARPC_BENCH_MEMACCT_H
#define ARPC_BENCH_MEMACCT_H

#include <stdint.h>

void bench_memacct_install(void);

/* Marks the calling thread as client side, for the rest of its life. */
void bench_memacct_tag_client(void);

/* Bytes currently allocated by client-side threads and not yet freed (from any thread). */
int64_t bench_memacct_client_bytes(void);

/* The whole process's heap in use (mallinfo2: arena chunks in use + mmapped blocks). */
int64_t bench_memacct_process_bytes(void);

#endif
