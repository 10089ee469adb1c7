/* Keeping data that different threads write apart, so that one thread's writes do not keep
 * taking the cache line away from another (false sharing). */
#ifndef ARPC_BASE_CACHELINE_H
#define ARPC_BASE_CACHELINE_H

/* The line size of the machines we run on (x86-64, most arm64). */
#define ARPC_CACHELINE 64

/* A gap of one whole line between two groups of struct members: members before it and after it
 * never share a line, whatever the struct's alignment (padding rather than alignas, which
 * malloc's 16-byte alignment and UBSan's alignment check would not allow). */
#define ARPC_CACHELINE_GAP(name) char name[ARPC_CACHELINE]

#endif
