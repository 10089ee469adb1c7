/*
 * Torn tail or corruption (core/reply_log_tail.h).
 *
 * Design notes (the judgement without SYNCED records; with them, see the header)
 * - We only ever append, one record after the other, so a crash in the middle of a write
 *   leaves the record being written as the last thing in the file, followed by nothing it did
 *   not itself contain. Whatever lies inside its own extent is its payload: reply bytes a
 *   client chose (an echo hands back what it was sent), which can hold perfectly intact
 *   records. So an intact record counts as evidence of damage in the middle only if it lies
 *   beyond where the damaged record ends.
 * - Where it ends is its length, which the checksum does not cover (the format's choice).
 *   The head has other witnesses: ACK, EXPIRE and GOODBYE have a fixed size, REPLY's two
 *   lengths must add up to its length, and ACK_BEYOND's count must make it (arpc_log_head_size). A bit flipped in a length breaks
 *   that, so a head they confirm is believed, and the search starts at its end: for a torn
 *   record that is past the end of the file, and nothing is searched (or checksummed) at all.
 *   A head nothing confirms (STATE, or one they contradict: the length itself may be what is
 *   damaged) tells nothing, and every later offset is searched, as before.
 * - That search is bounded: the cheap head checks pass random bytes rarely, but crafted ones
 *   (a checkpoint of client bytes) can pass at every offset, each claiming megabytes to
 *   checksum. Past ARPC_LOG_TAIL_BUDGET the judgement gives up and says "not torn": refusing
 *   to start is the side that loses nothing silently, and real damage in the middle is found
 *   within the budget (the next real record is at most the rest of the file).
 */
#include "core/reply_log_tail.h"

#include "base/le.h"
#include "core/reply_log_format.h"

void arpc_log_tail_judge(const uint8_t *seg, size_t size, size_t off, struct arpc_log_tail *out)
{
    uint64_t claimed;
    size_t from = off + 1;
    if (arpc_log_head_size(seg + off, size - off, &claimed) == ARPC_LOG_HEAD_CHECKED)
        from = claimed >= size - off ? size : off + (size_t)claimed;
    *out = (struct arpc_log_tail){.t_torn = true, .t_from = from};
    uint64_t budget = ARPC_LOG_TAIL_BUDGET(size - off);
    for (size_t p = from; p + ARPC_LOG_RECORD_HEAD <= size; p++) {
        uint64_t cost;
        if (arpc_log_head_size(seg + p, size - p, &cost) == ARPC_LOG_HEAD_BAD || cost > size - p)
            continue; /* no checksum needed to rule it out */
        if (out->t_checksummed + cost > budget) {
            out->t_torn = false; /* cannot tell: refuse rather than guess */
            return;
        }
        bool intact = arpc_log_is_record(seg + p, size - p, &cost);
        out->t_checksummed += cost;
        if (intact) {
            out->t_torn = false;
            out->t_evidence = p;
            return;
        }
    }
}

void arpc_log_tail_judge_synced(const uint8_t *seg, size_t size, size_t off, uint64_t nonce,
                                struct arpc_log_tail *out)
{
    *out = (struct arpc_log_tail){.t_torn = true, .t_from = off + 1};
    for (size_t p = off + 1; p + ARPC_LOG_SYNCED_SIZE <= size; p++) {
        const uint8_t *r = seg + p; /* len, crc, type, then the extent and the nonce */
        if (r[8] != ARPC_LOG_SYNCED || le_ld32(r) != ARPC_LOG_SYNCED_PAYLOAD ||
            le_ld64(r + ARPC_LOG_RECORD_HEAD + 8) != nonce)
            continue;
        struct arpc_log_view v;
        const char *what;
        out->t_checksummed += ARPC_LOG_SYNCED_SIZE - 8;
        if (arpc_log_decode(r, ARPC_LOG_SYNCED_SIZE, &v, &what) == ARPC_LOG_DECODE_OK && v.v_synced > off) {
            out->t_torn = false;
            out->t_evidence = p;
            out->t_claimed = v.v_synced;
            return;
        }
    }
}
