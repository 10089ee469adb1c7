/*
 * Torn tail or corruption? The judgement recovery makes on the first damaged record of the
 * last segment (a checksum mismatch, an impossible length, or a record running past the end
 * of the file). Pure: no I/O, no allocation; any thread.
 *
 * Two judgements, by what the segment's writer left:
 * - A segment with SYNCED records before the damage (every segment written since 2026-12-06):
 *   each write that follows a completed fdatasync begins with a SYNCED record giving how far
 *   the segment was on disk (core/reply_log_format.h). Damage is corruption if an intact
 *   SYNCED record after it, with the segment's nonce, gives an extent past its offset: those
 *   bytes had been synced. Otherwise it lies in what no sync was known to cover, which a power
 *   cut may leave in any state (the disk may keep a later page of a write and not an earlier
 *   one, so intact records can follow the damage), and which no reply of ARPC_FSYNC_ALWAYS
 *   waited for: it is cut, all of it, as a torn record is. The nonce is the segment's own and
 *   never leaves the server, so a client's bytes (an echoed reply) cannot make a claim.
 * - Without (older segments, or damage before the first SYNCED record): a torn tail when
 *   nothing intact follows it, as before; a power cut's out-of-order pages make it refuse.
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
    uint64_t t_claimed;     /* arpc_log_tail_judge_synced, !t_torn: the extent the SYNCED
                             * record at t_evidence gave */
};

/*
 * Judges the damaged record at seg[off] (off < size; seg[0..size) a whole segment file).
 * Torn when no intact record starts at or after t_from; not torn when one does, or when the
 * search gave up (too many record-like bytes to tell: refusing is the safe side).
 */
void arpc_log_tail_judge(const uint8_t *seg, size_t size, size_t off, struct arpc_log_tail *out);

/*
 * Judges the damaged record at seg[off] (off < size) of a segment whose SYNCED records carry
 * `nonce`: torn (to be cut from off) unless an intact SYNCED record with that nonce, anywhere
 * after off, gives an extent past off; then t_evidence is where it is and t_claimed what it
 * gave. Every offset is looked at (a damaged length cannot hide one); only heads of SYNCED's
 * size, type and nonce are checksummed.
 */
void arpc_log_tail_judge_synced(const uint8_t *seg, size_t size, size_t off, uint64_t nonce,
                                struct arpc_log_tail *out);

#endif
