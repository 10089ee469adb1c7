/*
 * ThreadSanitizer annotations for Concurrency Kit hand-offs.
 *
 * Concurrency Kit implements its atomics with inline assembly and plain fences, which TSan
 * does not see: a pointer handed from one thread to another through a ck_stack looks to TSan
 * like an unsynchronised write and read. Rather than silencing whole files, we state the real
 * happens-before edge at each hand-off:
 *
 *   producer: ARPC_TSAN_RELEASE(q)   after writing the item, before publishing it
 *             ARPC_TSAN_IGNORE_WRITES_BEGIN/END around the CK publish call itself
 *   consumer: ARPC_TSAN_IGNORE_READS_BEGIN/END around the CK take call
 *             ARPC_TSAN_ACQUIRE(q)   after taking the item, before reading it
 *
 * The ignore brackets cover only the structure's own link words (the `next` link of a stack
 * node), which CK orders with its fences; everything the producer wrote before the release is
 * checked by TSan as usual.
 *
 * Outside TSan builds every macro compiles to nothing.
 */
#ifndef ARPC_ASYNC_TSAN_H
#define ARPC_ASYNC_TSAN_H

#if defined(ARPC_TSAN)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
void AnnotateIgnoreWritesBegin(const char *file, int line);
void AnnotateIgnoreWritesEnd(const char *file, int line);
#define ARPC_TSAN_ACQUIRE(addr) __tsan_acquire((void *)(addr))
#define ARPC_TSAN_RELEASE(addr) __tsan_release((void *)(addr))
#define ARPC_TSAN_IGNORE_READS_BEGIN() AnnotateIgnoreReadsBegin(__FILE__, __LINE__)
#define ARPC_TSAN_IGNORE_READS_END() AnnotateIgnoreReadsEnd(__FILE__, __LINE__)
#define ARPC_TSAN_IGNORE_WRITES_BEGIN() AnnotateIgnoreWritesBegin(__FILE__, __LINE__)
#define ARPC_TSAN_IGNORE_WRITES_END() AnnotateIgnoreWritesEnd(__FILE__, __LINE__)
#else
#define ARPC_TSAN_ACQUIRE(addr) ((void)0)
#define ARPC_TSAN_RELEASE(addr) ((void)0)
#define ARPC_TSAN_IGNORE_READS_BEGIN() ((void)0)
#define ARPC_TSAN_IGNORE_READS_END() ((void)0)
#define ARPC_TSAN_IGNORE_WRITES_BEGIN() ((void)0)
#define ARPC_TSAN_IGNORE_WRITES_END() ((void)0)
#endif

#endif
