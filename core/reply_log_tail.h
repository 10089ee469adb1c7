/*
 * Torn tail or corruption? The judgement recovery makes on the first damaged record of the
 * last segment (a checksum mismatch, an impossible length, or a record running past the end
 * of the file). Pure: no I/O, no allocation; any thread.
 */
#ifndef ARPC_CORE_REPLY_LOG_TAIL_H
#define ARPC_CORE_REPLY_LOG_TAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The most the judgement checksums: twice the bytes from the damaged record to the end of
 * the file, and 1 MiB more. */
#define ARPC_LOG_TAIL_BUDGET(tail) (2 * (uint64_t)(tail) + ((uint64_t)1 << 20))

struct arpc_log_tail {
    bool t_torn;            /* a torn tail: seg[off..size) is to be dropped */
    size_t t_from;          /* where the search for intact records began: the end the damaged
                             * record's head claims when its type or lengths confirm it, else
                             * off + 1 */
    size_t t_evidence;      /* !t_torn: the intact record found at or after t_from; or 0 when
                             * the budget ran out before the search could tell */
    uint64_t t_checksummed; /* bytes checksummed: at most ARPC_LOG_TAIL_BUDGET(size - off) */
};

/*
 * Judges the damaged record at seg[off] (off < size; seg[0..size) a whole segment file).
 * Torn when no intact record starts at or after t_from; not torn when one does, or when the
 * search gave up (too many record-like bytes to tell: refusing is the safe side).
 */
void arpc_log_tail_judge(const uint8_t *seg, size_t size, size_t off, struct arpc_log_tail *out);

#endif
