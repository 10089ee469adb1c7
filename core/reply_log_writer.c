/*
 * The reply log's writer thread: appends, group commit, hand-back (core/reply_log.h).
 *
 * Design notes
 * - Hand-off: appenders push onto an intrusive CK stack (base/stack_fifo.h: lock-free, one
 *   CAS, no appender waits for another) and bump an event count (ck_ec32: one atomic add; a
 *   futex wake only when the writer sleeps). The writer snapshots the count before it takes
 *   the stack and sleeps only while the count still equals the snapshot, so no append is
 *   missed, and an idle log sleeps in the kernel at no CPU cost.
 * - Batching: the writer takes everything pending at once, encodes it into one buffer, and
 *   writes it with one pwrite (a batch larger than the 512 KiB buffer takes one per
 *   buffer-full; a record larger than a quarter of it is written on its own, in order).
 *   ALWAYS is group commit: one fdatasync per batch, and every record that queued while the
 *   previous fdatasync ran rides the next one. BATCH hands records back after the write and
 *   asks its syncer thread (reply_log_syncer.c) for an fdatasync when batch_records have
 *   accumulated or batch_ms after the first of them (the sleep has that deadline), so writing
 *   never waits for the disk. OFF never syncs until close.
 * - The index is updated before a record's bytes are buffered, all or nothing: a record the
 *   index cannot hold (ENOMEM) is refused and never written, so the index always describes
 *   exactly what is on disk, which is what compaction relies on. It also fails the log, as a
 *   failed write does, and so does any record refused (too large, bad type): the records
 *   are a sequence (each effect was made on the state the ones before it left), so none
 *   after a missing one may be written (a restart would rebuild a state with a hole in it,
 *   and their callers would have been told they were done).
 * - Fail-stop: after a failed write or fdatasync nothing more is written. Linux may drop the
 *   dirty pages of a failed write and report success on a later fdatasync, so retrying would
 *   claim durability it does not have. Every record of the failing batch, and every later
 *   one, comes back ARPC_ESYSTEM. (Records a BATCH or OFF log already handed back are written
 *   but were not synced; the ERROR line says so.)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>

#include "arpc/error.h"
#include "async/futex.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/stack_fifo.h"
#include "base/thread.h"
#include "core/frame.h"
#include "core/reply_log_internal.h"

CK_STACK_CONTAINER(struct arpc_log_record, lr_link, record_of)

void arpc_reply_log_append(struct arpc_reply_log *log, struct arpc_log_record *rec)
{
    arpc_stack_push(&log->lg_pending, &rec->lr_link);
    ck_ec32_inc(&log->lg_wake, &arpc_ec_mode_mp); /* after the push: see the notes */
}

void arpc_log_fail(struct arpc_reply_log *log, const char *why)
{
    if (log->lg_failed)
        return;
    log->lg_failed = true;
    arpc_log(ARPC_LOG_ERROR, "%s; the reply log refuses every record from now on%s", why,
             log->lg_policy == ARPC_LOG_FSYNC_ALWAYS ? "" : " (records already handed back may not be synced)");
}

void arpc_log_publish_sizes(struct arpc_reply_log *log)
{
    atomic_store_explicit(&log->lg_stat_segment_bytes, log->lg_out.o_size, memory_order_relaxed);
    atomic_store_explicit(&log->lg_stat_live_bytes, arpc_log_index_live_bytes(&log->lg_index), memory_order_relaxed);
}

void arpc_log_stat_add(_Atomic uint64_t *counter, uint64_t n)
{
    /* Single writer: a plain load and store, no locked instruction. */
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + n, memory_order_relaxed);
}

/* BATCH: hand the sync to the syncer; the records count as synced once it took it (a failed
 * sync fails the log). If the syncer is busy, they stay unsynced for the next trigger. */
static void sync_batch(struct arpc_reply_log *log)
{
    char why[ARPC_LOG_WHY_MAX];
    if (arpc_log_syncer_request(log, why, sizeof(why))) {
        log->lg_dirty = false;
        log->lg_unsynced = 0;
    }
}

static int sync_active(struct arpc_reply_log *log)
{
    char why[ARPC_LOG_WHY_MAX];
    if (arpc_log_out_sync(&log->lg_out, why, sizeof(why)) != ARPC_OK) {
        arpc_log_fail(log, why);
        return ARPC_ESYSTEM;
    }
    atomic_fetch_add_explicit(&log->lg_stat_fsyncs, 1, memory_order_relaxed); /* the syncer counts too */
    log->lg_dirty = false;
    log->lg_unsynced = 0;
    return ARPC_OK;
}

/* ---- one record ---- */

static int check_record(const struct arpc_log_record *rec)
{
    switch (rec->lr_type) {
    case ARPC_LOG_REPLY:
    case ARPC_LOG_STATE:
        break;
    case ARPC_LOG_ACK:
    case ARPC_LOG_EXPIRE:
    case ARPC_LOG_GOODBYE:
        if (rec->lr_client_id == 0)
            return ARPC_EINVAL;
        break;
    case ARPC_LOG_ACK_BEYOND: /* its list judged as an ACK frame's: the index trusts it */
        if (rec->lr_client_id == 0 || rec->lr_effect_len % 8 != 0 || rec->lr_effect_len > ARPC_ACK_WAITING_MAX * 8 ||
            !arpc_frame_ack_list_ok(rec->lr_ack, rec->lr_seq, rec->lr_effect, (uint32_t)(rec->lr_effect_len / 8)))
            return ARPC_EINVAL;
        break;
    default:
        return ARPC_EINVAL;
    }
    bool has_data = rec->lr_type == ARPC_LOG_REPLY || rec->lr_type == ARPC_LOG_STATE ||
                    rec->lr_type == ARPC_LOG_ACK_BEYOND;
    if (!arpc_log_payload_fits((uint8_t)rec->lr_type, rec->lr_type == ARPC_LOG_REPLY ? rec->lr_reply_len : 0,
                               has_data ? rec->lr_effect_len : 0))
        return ARPC_ETOOLARGE;
    return ARPC_OK;
}

static struct arpc_log_view view_of(const struct arpc_log_record *rec)
{
    struct arpc_log_view v = {.v_type = (uint8_t)rec->lr_type};
    switch (rec->lr_type) {
    case ARPC_LOG_REPLY:
        v.v_client_id = rec->lr_client_id;
        v.v_seq = rec->lr_seq;
        v.v_ack = rec->lr_ack;
        v.v_reply = rec->lr_reply;
        v.v_reply_len = (uint32_t)rec->lr_reply_len;
        v.v_data = rec->lr_effect;
        v.v_data_len = (uint32_t)rec->lr_effect_len;
        break;
    case ARPC_LOG_ACK:
        v.v_client_id = rec->lr_client_id;
        v.v_ack = rec->lr_ack;
        break;
    case ARPC_LOG_EXPIRE:
        v.v_client_id = rec->lr_client_id;
        break;
    case ARPC_LOG_GOODBYE:
        v.v_client_id = rec->lr_client_id;
        v.v_seq = rec->lr_seq;
        v.v_owner = rec->lr_identity;
        break;
    case ARPC_LOG_ACK_BEYOND:
        v.v_client_id = rec->lr_client_id;
        v.v_seq = rec->lr_seq;
        v.v_ack = rec->lr_ack;
        v.v_data = rec->lr_effect;
        v.v_data_len = (uint32_t)rec->lr_effect_len;
        break;
    default: /* STATE */
        v.v_data = rec->lr_effect;
        v.v_data_len = (uint32_t)rec->lr_effect_len;
        break;
    }
    return v;
}

/* Indexes and buffers one record; its status. */
static int write_record(struct arpc_reply_log *log, const struct arpc_log_record *rec)
{
    if (log->lg_failed)
        return ARPC_ESYSTEM;
    int rc = check_record(rec);
    if (rc != ARPC_OK) {
        /* Refused, and so is everything after it, as for ENOMEM below: its caller's effect
         * (or checkpoint) is in memory but not in the log, and later records were made on
         * a state that holds it. */
        char why[ARPC_LOG_WHY_MAX];
        snprintf(why, sizeof(why), "reply log %s: a record refused (%s: %s)", log->lg_dir, arpc_errname(rc),
                 rc == ARPC_ETOOLARGE ? "its payload is over 1 GiB" : "bad type or client id 0");
        arpc_log_fail(log, why);
        return rc;
    }
    struct arpc_log_view v = view_of(rec);
    uint32_t size = arpc_log_record_size(&v);
    struct arpc_log_pos pos = {log->lg_segment, log->lg_out.o_size, size};
    if (arpc_log_index_apply(&log->lg_index, &v, pos) != ARPC_OK) {
        /* Refused, and nothing after it may be written either: a later record (a later
         * effect, made on a state that held this one) must not be durable without it. */
        char why[ARPC_LOG_WHY_MAX];
        snprintf(why, sizeof(why), "reply log %s: out of memory indexing a record", log->lg_dir);
        arpc_log_fail(log, why);
        return ARPC_ENOMEM;
    }
    uint8_t head[ARPC_LOG_HEAD_MAX];
    struct iovec parts[3] = {
        {head, arpc_log_encode_head(head, &v)},
        {(void *)v.v_reply, v.v_reply_len},
        {(void *)v.v_data, v.v_data_len},
    };
    char why[ARPC_LOG_WHY_MAX];
    if (arpc_log_out_put(&log->lg_out, parts, 3, why, sizeof(why)) != ARPC_OK) {
        arpc_log_fail(log, why);
        return ARPC_ESYSTEM;
    }
    arpc_log_stat_add(&log->lg_stat_records, 1);
    arpc_log_stat_add(&log->lg_stat_bytes, size);
    return ARPC_OK;
}

/* ---- one batch ---- */

/* Before a write's first record: a SYNCED record saying how far the segment is on disk, if a
 * sync covered more since the last one said (core/reply_log_tail.h: what start-up makes of it). */
static void claim_synced(struct arpc_reply_log *log)
{
    if (log->lg_failed)
        return;
    if (log->lg_policy == ARPC_LOG_FSYNC_BATCH)
        arpc_log_syncer_synced(log);
    char why[ARPC_LOG_WHY_MAX];
    if (arpc_log_out_claim(&log->lg_out, why, sizeof(why)) != ARPC_OK) {
        arpc_log_fail(log, why);
        return;
    }
    /* A segment written before SYNCED records: recovery judges damage before its first one
     * the old way (an intact record after it is corruption), so that one must be on disk
     * before an unsynced write can follow it, or a power cut that loses its page and keeps a
     * later one would refuse to start. Once per such segment. */
    if (log->lg_unclaimed) {
        if (arpc_log_out_flush(&log->lg_out, why, sizeof(why)) != ARPC_OK) {
            arpc_log_fail(log, why);
            return;
        }
        if (sync_active(log) == ARPC_OK)
            log->lg_unclaimed = false;
    }
}

static void hand_back(struct arpc_reply_log *log, ck_stack_entry_t *batch)
{
    while (batch != NULL) {
        ck_stack_entry_t *next = batch->next; /* the callee may free the record */
        log->lg_done(log->lg_done_ctx, record_of(batch));
        batch = next;
    }
}

static void maybe_compact(struct arpc_reply_log *log)
{
    if (log->lg_failed || log->lg_out.o_size <= log->lg_compact_at)
        return;
    char why[ARPC_LOG_WHY_MAX];
    if (arpc_log_compact(log, why, sizeof(why)) != ARPC_OK && !log->lg_failed) {
        arpc_log(ARPC_LOG_ERROR, "%s; compaction abandoned, the log goes on in its current segment", why);
        log->lg_compact_at = log->lg_out.o_size + log->lg_compact_bytes; /* not again at once */
    }
    arpc_log_publish_sizes(log);
}

/* Whether the segment being written was removed (its directory deleted by hand, say): its
 * records would then be answered as kept and be gone at the next start (a durability trial
 * answered 5,000 calls so). One fstat a batch, beside its write. */
static bool segment_removed(struct arpc_reply_log *log, char *why, size_t whylen)
{
    struct stat st;
    if (fstat(log->lg_out.o_fd, &st) != 0 || st.st_nlink != 0)
        return false;
    snprintf(why, whylen, "reply log %s: its segment %s was removed (the directory deleted?)", log->lg_dir,
             log->lg_out.o_name);
    return true;
}

static void write_batch(struct arpc_reply_log *log, ck_stack_entry_t *batch)
{
    uint32_t written = 0;
    claim_synced(log);
    for (ck_stack_entry_t *e = batch; e != NULL; e = e->next) {
        struct arpc_log_record *rec = record_of(e);
        rec->lr_status = write_record(log, rec);
        written += rec->lr_status == ARPC_OK;
    }
    char why[ARPC_LOG_WHY_MAX];
    if (written > 0 && !log->lg_failed &&
        (arpc_log_out_flush(&log->lg_out, why, sizeof(why)) != ARPC_OK || segment_removed(log, why, sizeof(why))))
        arpc_log_fail(log, why);
    if (written > 0 && !log->lg_failed) {
        log->lg_wrote = true;
        if (!log->lg_dirty)
            log->lg_unsynced_since = arpc_now_ns();
        log->lg_dirty = true;
        log->lg_unsynced += written;
        if (log->lg_policy == ARPC_LOG_FSYNC_ALWAYS)
            sync_active(log);
    }
    if (log->lg_failed) /* nothing of a failing batch can be trusted to be there */
        for (ck_stack_entry_t *e = batch; e != NULL; e = e->next)
            if (record_of(e)->lr_status == ARPC_OK)
                record_of(e)->lr_status = ARPC_ESYSTEM;
    arpc_log_publish_sizes(log); /* the stats count a record by the time it is handed back */
    hand_back(log, batch);
    if (log->lg_policy == ARPC_LOG_FSYNC_BATCH && log->lg_unsynced >= log->lg_batch_records && !log->lg_failed)
        sync_batch(log);
    maybe_compact(log);
}

/* ---- the thread ---- */

/* When the writer must wake up by itself: BATCH's sync deadline, if records wait for one. */
static uint64_t next_sync_due(const struct arpc_reply_log *log)
{
    if (log->lg_policy != ARPC_LOG_FSYNC_BATCH || !log->lg_dirty || log->lg_failed)
        return ARPC_NEVER;
    return log->lg_unsynced_since + log->lg_batch_ns;
}

static void *writer_main(void *arg)
{
    struct arpc_reply_log *log = arg;
    pthread_setname_np(pthread_self(), "arpc-log");
    for (;;) {
        uint32_t seen = ck_ec32_value(&log->lg_wake); /* before the take: see the notes */
        /* Acquire pairs with close's release: every append before close is in the take. */
        bool closing = atomic_load_explicit(&log->lg_closing, memory_order_acquire);
        ck_stack_entry_t *batch = arpc_stack_take_fifo(&log->lg_pending);
        if (batch != NULL) {
            write_batch(log, batch);
            continue;
        }
        uint64_t due = next_sync_due(log);
        if (due != ARPC_NEVER && arpc_now_ns() >= due) {
            sync_batch(log);
            if (log->lg_dirty) /* the syncer is busy: look again a little later */
                log->lg_unsynced_since = arpc_now_ns() - log->lg_batch_ns / 2;
            continue;
        }
        if (closing)
            break;
        struct timespec ts;
        if (due != ARPC_NEVER)
            ts = arpc_timespec_of(due);
        ck_ec32_wait(&log->lg_wake, &arpc_ec_mode_mp, seen, due == ARPC_NEVER ? NULL : &ts);
    }
    if (arpc_log_syncer_stop(log) != 0 && !log->lg_failed) {
        char why[ARPC_LOG_WHY_MAX];
        snprintf(why, sizeof(why), "reply log %s: an fdatasync of %s failed", log->lg_dir, log->lg_out.o_name);
        arpc_log_fail(log, why);
    }
    if (!log->lg_failed) /* close syncs whatever the policy (and after the syncer's last) */
        sync_active(log);
    if (log->lg_wrote && !log->lg_failed) { /* and says so: damage in the last write is then never cut as unsynced */
        char why[ARPC_LOG_WHY_MAX];
        claim_synced(log);
        if (!log->lg_failed && arpc_log_out_flush(&log->lg_out, why, sizeof(why)) != ARPC_OK)
            arpc_log_fail(log, why);
        if (!log->lg_failed)
            sync_active(log);
    }
    arpc_log_publish_sizes(log);
    return NULL;
}

int arpc_log_writer_start(struct arpc_reply_log *log)
{
    if (log->lg_policy == ARPC_LOG_FSYNC_BATCH && arpc_log_syncer_start(log) != ARPC_OK)
        return ARPC_ESYSTEM;
    if (arpc_thread_create(&log->lg_thread, writer_main, log) != 0) {
        arpc_log_syncer_stop(log);
        return ARPC_ESYSTEM;
    }
    return ARPC_OK;
}

void arpc_log_writer_stop(struct arpc_reply_log *log)
{
    atomic_store_explicit(&log->lg_closing, true, memory_order_release);
    ck_ec32_inc(&log->lg_wake, &arpc_ec_mode_mp);
    pthread_join(log->lg_thread, NULL);
    /* Appended while close ran (the contract forbids it): too late to be written. */
    ck_stack_entry_t *late = arpc_stack_take_fifo(&log->lg_pending);
    for (ck_stack_entry_t *e = late; e != NULL; e = e->next)
        record_of(e)->lr_status = ARPC_ESHUTDOWN;
    hand_back(log, late);
}
