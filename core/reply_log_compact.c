/*
 * Compaction: the live index written out as a new snapshot segment, which then replaces
 * every older segment (core/reply_log_internal.h, arpc_log_compact).
 *
 * Design notes
 * - The snapshot, in this order: header (SNAPSHOT flag); the latest STATE record; for each
 *   client that came back after a goodbye, a GOODBYE with its floor and an ACK (so it comes
 *   back with that floor again); every record whose effect is listed (after that STATE), in
 *   log order; the live replies not already written with their effects; one ACK record per
 *   client, each followed by its claim beyond that ack (ACK_BEYOND) if it has one; one
 *   GOODBYE record per client still among the gone, oldest first. Replaying it
 *   gives the same index as replaying the segments it replaces: the state, then the effects
 *   in the same order, the same live replies, the same acks (a copied REPLY's own ack is never
 *   above its client's current ack, so it drops nothing that is still live), the same floors
 *   in the same order (no gone client is live, so a GOODBYE forgets nothing there).
 * - Records are copied from the old files (pread, checksum verified again), not from
 *   memory. Most are copied byte for byte; two kinds are rewritten smaller:
 *     - a listed effect whose reply is no longer live becomes an effect-only REPLY (client
 *       id 0), so replaying it cannot bring back an acked reply or an expired client;
 *     - a live reply whose effect a STATE already covers is written without its effect, so
 *       replaying it after that STATE cannot apply the effect twice.
 * - Crash safety: the snapshot is written as a .tmp file, synced, renamed, and the directory
 *   synced before any old segment is removed. A crash before the rename leaves the old
 *   segments (open removes the .tmp); after it, open finds the newer snapshot and removes
 *   the superseded segments itself.
 * - The index learns its new positions only once the snapshot is durable: compaction writes
 *   them into scratch fields and arpc_log_index_moved() switches over, so a compaction that
 *   fails leaves the log exactly as it was.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/log.h"
#include "core/reply_log_internal.h"

struct compaction {
    struct arpc_reply_log *c_log;
    struct arpc_log_out c_out; /* the new snapshot */
    int *c_older_fds;          /* read side of log->lg_older, same order */
    uint8_t *c_rec;            /* one old record at a time */
    size_t c_rec_cap;
    char *c_why;
    size_t c_whylen;
};

/* ---- reading the old records ---- */

static int open_older(struct compaction *c)
{
    struct arpc_reply_log *log = c->c_log;
    if (log->lg_nolder == 0)
        return ARPC_OK;
    c->c_older_fds = arpc_malloc(log->lg_nolder * sizeof(*c->c_older_fds));
    if (c->c_older_fds == NULL)
        return ARPC_ENOMEM;
    for (size_t i = 0; i < log->lg_nolder; i++)
        c->c_older_fds[i] = -1;
    for (size_t i = 0; i < log->lg_nolder; i++) {
        int rc = arpc_log_segment_open(log->lg_dirfd, log->lg_dir, log->lg_older[i], &c->c_older_fds[i], c->c_why,
                                       c->c_whylen);
        if (rc != ARPC_OK)
            return rc;
    }
    return ARPC_OK;
}

static void close_older(struct compaction *c)
{
    for (size_t i = 0; c->c_older_fds != NULL && i < c->c_log->lg_nolder; i++)
        if (c->c_older_fds[i] >= 0)
            close(c->c_older_fds[i]);
    arpc_free(c->c_older_fds);
    c->c_older_fds = NULL;
}

static int fd_of(const struct compaction *c, uint64_t segment)
{
    const struct arpc_reply_log *log = c->c_log;
    for (size_t i = 0; i < log->lg_nolder; i++)
        if (log->lg_older[i] == segment)
            return c->c_older_fds[i];
    return log->lg_out.o_fd; /* the index points at no other segment */
}

/* Reads the record at pos into c_rec and decodes it into *v (views into c_rec). */
static int read_record(struct compaction *c, struct arpc_log_pos pos, struct arpc_log_view *v)
{
    struct arpc_reply_log *log = c->c_log;
    if (pos.p_size > c->c_rec_cap) {
        uint8_t *grown = arpc_realloc(c->c_rec, pos.p_size);
        if (grown == NULL)
            return ARPC_ENOMEM;
        c->c_rec = grown;
        c->c_rec_cap = pos.p_size;
    }
    int rc = arpc_log_read_at(fd_of(c, pos.p_segment), log->lg_dir, pos.p_segment, c->c_rec, pos.p_size,
                              pos.p_offset, c->c_why, c->c_whylen);
    if (rc != ARPC_OK)
        return rc;
    const char *what = "record of another size than when it was written";
    if (arpc_log_decode(c->c_rec, pos.p_size, v, &what) != ARPC_LOG_DECODE_OK || v->v_size != pos.p_size) {
        char name[ARPC_LOG_NAME_MAX];
        arpc_log_segment_name(name, pos.p_segment, false);
        arpc_log_why(c->c_why, c->c_whylen,
                     "reply log %s/%s is corrupt at offset %" PRIu64 ": %s (found while compacting)", log->lg_dir,
                     name, pos.p_offset, what);
        return ARPC_EPROTO;
    }
    return ARPC_OK;
}

/* ---- writing the snapshot ---- */

/* Appends the record v; *offset and *size say where it went. */
static int put_view(struct compaction *c, const struct arpc_log_view *v, uint64_t *offset, uint32_t *size)
{
    uint8_t head[ARPC_LOG_HEAD_MAX];
    struct iovec parts[3] = {
        {head, arpc_log_encode_head(head, v)},
        {(void *)v->v_reply, v->v_reply_len},
        {(void *)v->v_data, v->v_data_len},
    };
    *offset = c->c_out.o_size;
    *size = arpc_log_record_size(v);
    return arpc_log_out_put(&c->c_out, parts, 3, c->c_why, c->c_whylen);
}

/* Copies the record at pos byte for byte. */
static int copy_record(struct compaction *c, struct arpc_log_pos pos, uint64_t *offset, uint32_t *size)
{
    struct arpc_log_view v;
    int rc = read_record(c, pos, &v);
    if (rc != ARPC_OK)
        return rc;
    struct iovec part = {c->c_rec, pos.p_size};
    *offset = c->c_out.o_size;
    *size = pos.p_size;
    return arpc_log_out_put(&c->c_out, &part, 1, c->c_why, c->c_whylen);
}

static int write_effects(struct compaction *c)
{
    struct arpc_log_index *ix = &c->c_log->lg_index;
    for (size_t i = 0; i < ix->ix_neffects; i++) {
        struct arpc_log_effect *e = &ix->ix_effects[i];
        struct arpc_log_live_reply *r = e->e_client_id ? arpc_log_index_find(ix, e->e_client_id, e->e_seq) : NULL;
        int rc;
        if (r != NULL && r->r_pos.p_segment == e->e_pos.p_segment && r->r_pos.p_offset == e->e_pos.p_offset) {
            rc = copy_record(c, e->e_pos, &e->e_new_offset, &e->e_new_size); /* still a live reply too */
            r->r_new_offset = e->e_new_offset;
            r->r_new_size = e->e_new_size;
        } else {
            struct arpc_log_view v;
            rc = read_record(c, e->e_pos, &v);
            if (rc == ARPC_OK) { /* its reply is gone: keep only the effect */
                struct arpc_log_view effect_only = {
                    .v_type = ARPC_LOG_REPLY, .v_seq = v.v_seq, .v_data = v.v_data, .v_data_len = v.v_data_len};
                rc = put_view(c, &effect_only, &e->e_new_offset, &e->e_new_size);
            }
        }
        if (rc != ARPC_OK)
            return rc;
    }
    return ARPC_OK;
}

static int write_replies(struct compaction *c)
{
    struct arpc_log_index *ix = &c->c_log->lg_index;
    struct arpc_log_client *cl;
    for (size_t it = 0; (cl = arpc_log_index_next_client(ix, &it)) != NULL;) {
        for (size_t i = cl->c_head; i < cl->c_len; i++) {
            struct arpc_log_live_reply *r = &cl->c_replies[i];
            if (arpc_log_index_listed(ix, r))
                continue; /* written with the effects */
            int rc;
            if (r->r_effect_gen == 0) {
                rc = copy_record(c, r->r_pos, &r->r_new_offset, &r->r_new_size);
            } else { /* its effect is covered by the STATE: keep only the reply */
                struct arpc_log_view v;
                rc = read_record(c, r->r_pos, &v);
                v.v_data = NULL;
                v.v_data_len = 0;
                if (rc == ARPC_OK)
                    rc = put_view(c, &v, &r->r_new_offset, &r->r_new_size);
            }
            if (rc != ARPC_OK)
                return rc;
        }
    }
    return ARPC_OK;
}

/* One ACK per client, and after it the client's claim beyond that ack, if it has one. */
static int write_acks(struct compaction *c)
{
    struct arpc_log_client *cl;
    for (size_t it = 0; (cl = arpc_log_index_next_client(&c->c_log->lg_index, &it)) != NULL;) {
        struct arpc_log_view v = {.v_type = ARPC_LOG_ACK, .v_client_id = cl->c_id, .v_ack = cl->c_ack};
        uint64_t offset;
        uint32_t size;
        int rc = put_view(c, &v, &offset, &size);
        if (rc != ARPC_OK)
            return rc;
        if (cl->c_claim.ac_high <= cl->c_ack)
            continue;
        uint8_t waiting[8 * ARPC_ACK_WAITING_MAX];
        arpc_frame_ack_list_store(waiting, cl->c_claim.ac_waiting, cl->c_claim.ac_n);
        struct arpc_log_view beyond = {.v_type = ARPC_LOG_ACK_BEYOND, .v_client_id = cl->c_id, .v_ack = cl->c_ack,
                                       .v_seq = cl->c_claim.ac_high, .v_data = waiting,
                                       .v_data_len = cl->c_claim.ac_n * 8};
        rc = put_view(c, &beyond, &offset, &size);
        if (rc != ARPC_OK)
            return rc;
    }
    return ARPC_OK;
}

/* The clients that came back after a goodbye (a late call above its floor), each as the log
 * said it: a GOODBYE with its floor, then an ACK that brings it back. Written before anything
 * that names a client, so the record that brings it back follows its floor; the set of floors
 * is empty there, so a floor put and taken at once drops no other. */
static int write_comebacks(struct compaction *c)
{
    struct arpc_log_client *cl;
    for (size_t it = 0; (cl = arpc_log_index_next_client(&c->c_log->lg_index, &it)) != NULL;) {
        if (cl->c_floor == 0)
            continue;
        struct arpc_log_view gone = {.v_type = ARPC_LOG_GOODBYE, .v_client_id = cl->c_id, .v_seq = cl->c_floor};
        struct arpc_log_view back = {.v_type = ARPC_LOG_ACK, .v_client_id = cl->c_id, .v_ack = cl->c_ack};
        uint64_t offset;
        uint32_t size;
        int rc = put_view(c, &gone, &offset, &size);
        if (rc == ARPC_OK)
            rc = put_view(c, &back, &offset, &size);
        if (rc != ARPC_OK)
            return rc;
    }
    return ARPC_OK;
}

/* The floors of the clients that said goodbye, so they outlive the segments that said so. */
static int write_goodbyes(struct compaction *c)
{
    uint64_t id, floor, owner;
    for (size_t it = 0; arpc_rc_gone_next(&c->c_log->lg_index.ix_gone, &it, &id, &floor, &owner);) {
        struct arpc_log_view v = {.v_type = ARPC_LOG_GOODBYE, .v_client_id = id, .v_seq = floor, .v_owner = owner};
        uint64_t offset;
        uint32_t size;
        int rc = put_view(c, &v, &offset, &size);
        if (rc != ARPC_OK)
            return rc;
    }
    return ARPC_OK;
}

static int write_snapshot(struct compaction *c)
{
    struct arpc_log_index *ix = &c->c_log->lg_index;
    int rc = open_older(c);
    if (rc == ARPC_OK && ix->ix_has_state)
        rc = copy_record(c, ix->ix_state, &ix->ix_state_new_offset, &ix->ix_state_new_size);
    if (rc == ARPC_OK)
        rc = write_comebacks(c);
    if (rc == ARPC_OK)
        rc = write_effects(c);
    if (rc == ARPC_OK)
        rc = write_replies(c);
    if (rc == ARPC_OK)
        rc = write_acks(c);
    if (rc == ARPC_OK)
        rc = write_goodbyes(c);
    if (rc == ARPC_ENOMEM)
        arpc_log_why(c->c_why, c->c_whylen, "reply log %s: out of memory while compacting", c->c_log->lg_dir);
    return rc;
}

/* ---- switching over ---- */

/* The snapshot is durable: the log moves to it and the older segments go. */
static void switch_to(struct arpc_reply_log *log, struct compaction *c, uint64_t segment)
{
    char why[ARPC_LOG_WHY_MAX];
    arpc_log_index_moved(&log->lg_index, segment);
    close(log->lg_out.o_fd);
    int rc = arpc_log_segment_remove(log->lg_dirfd, log->lg_dir, log->lg_segment, why, sizeof(why));
    for (size_t i = 0; rc == ARPC_OK && i < log->lg_nolder; i++)
        rc = arpc_log_segment_remove(log->lg_dirfd, log->lg_dir, log->lg_older[i], why, sizeof(why));
    if (rc == ARPC_OK)
        rc = arpc_log_dir_sync(log->lg_dirfd, log->lg_dir, why, sizeof(why));
    if (rc != ARPC_OK) /* harmless: the next open removes superseded segments itself */
        arpc_log(ARPC_LOG_WARN, "%s (after compaction)", why);
    arpc_free(log->lg_older);
    log->lg_older = NULL;
    log->lg_nolder = 0;
    log->lg_out = c->c_out;
    log->lg_segment = segment;
    log->lg_wrote = true;
    log->lg_unclaimed = false; /* it begins with its SYNCED record, synced */
    log->lg_dirty = false; /* the snapshot was synced: it holds everything */
    log->lg_unsynced = 0;
    uint64_t twice = 2 * log->lg_out.o_size;
    log->lg_compact_at = log->lg_compact_bytes > twice ? log->lg_compact_bytes : twice;
    arpc_log_stat_add(&log->lg_stat_compactions, 1);
}

int arpc_log_compact(struct arpc_reply_log *log, char *why, size_t whylen)
{
    uint64_t segment = log->lg_segment + 1;
    struct compaction c = {.c_log = log, .c_why = why, .c_whylen = whylen};
    c.c_out.o_buf = log->lg_buf; /* free between batches: lg_out is flushed */
    c.c_out.o_cap = ARPC_LOG_BUF_SIZE;
    c.c_out.o_nonce = log->lg_out.o_nonce;
    int rc = arpc_log_segment_start(log->lg_dirfd, log->lg_dir, segment, log->lg_epoch, ARPC_LOG_FLAG_SNAPSHOT,
                                    &c.c_out, why, whylen);
    if (rc == ARPC_OK)
        rc = write_snapshot(&c);
    if (rc != ARPC_OK)
        arpc_log_segment_abandon(log->lg_dirfd, &c.c_out);
    else
        rc = arpc_log_segment_publish(log->lg_dirfd, segment, &c.c_out, why, whylen);
    close_older(&c);
    arpc_free(c.c_rec);
    if (rc == ARPC_OK) {
        switch_to(log, &c, segment);
    } else if (c.c_out.o_fd >= 0) {
        /* Renamed, but the directory sync failed: whether the snapshot survives a crash, and
         * so which segment is the newest, is unknown. Writing on could lose records. */
        close(c.c_out.o_fd);
        arpc_log_fail(log, why);
    }
    return rc;
}
