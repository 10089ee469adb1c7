/*
 * Recovery: from the segment files to the live index, the active segment and the replay
 * callbacks (core/reply_log_internal.h, arpc_log_recover).
 *
 * Design notes
 * - Segments are mapped read-only (mmap), so every length is checked against the file's
 *   size by the decoder before a byte is read, nothing is allocated per record, and the
 *   callbacks get views straight into the file.
 * - Only the newest snapshot segment and the ones after it are read: a snapshot holds
 *   everything live at the moment it was written, so older segments are superseded.
 * - Torn or corrupt? A crash in the middle of a write can only damage the end of the last
 *   segment (we only ever append, and a new segment appears by rename, complete), and only
 *   what no fdatasync had covered yet. A segment's SYNCED records say how far that was
 *   (core/reply_log_tail.h): a damaged record (checksum mismatch, or running past the end of
 *   the file) that no later SYNCED record says was synced is cut, with everything after it,
 *   however much is intact (a power cut may keep a write's later pages without its earlier
 *   ones). In a segment without SYNCED records (written before them) it is a torn tail only
 *   when no valid record follows where it ends (core/reply_log_tail.c: never one inside its
 *   own extent, which is client bytes). Anywhere else it is corruption, and so is an intact
 *   record we do not understand: open refuses to start rather than serve a log that lost
 *   synced data in the middle.
 * - Nothing is changed on disk until the whole log has been read without a fatal problem:
 *   the truncation and the removal of superseded segments come after the scan.
 * - What was read is synced before it is replayed: a server killed between a write and its
 *   fdatasync leaves records in the page cache only, which this open reads like the rest. A
 *   duplicate answered from one of them, or an effect built on, would be undone by a power
 *   cut after (a power-loss review). So every segment read is fdatasync'ed and the directory
 *   fsync'ed (a name renamed or created by a killed predecessor, not yet synced), and that
 *   before superseded segments are removed: a predecessor killed between compaction's rename
 *   and its directory fsync left the snapshot's name unsynced, and a power cut could keep the
 *   unlink without the rename (no segment left: a refusal to start).
 * - The callbacks are issued from the finished index, which is what makes the replay
 *   semantics (acks, expiry, state covering effects) the same rules the writer keeps.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/file_io.h"
#include "base/log.h"
#include "core/reply_log_internal.h"
#include "core/reply_log_tail.h"

struct mapped_segment {
    uint64_t m_segment;
    int m_fd;
    const uint8_t *m_base;
    size_t m_size; /* the file's size */
    size_t m_good; /* the end of its last good record: m_size unless the tail is torn */
    bool m_claims; /* a SYNCED record was read: its writer says how far it synced */
    uint64_t m_nonce; /* the nonce of its SYNCED records */
};

struct recovery {
    struct arpc_reply_log *r_log;
    struct mapped_segment *r_segs; /* the newest snapshot, then every later segment */
    size_t r_nsegs;
    const char *r_torn_what; /* why the last segment's tail was dropped, if it was */
    bool r_torn_unsynced;    /* judged by its SYNCED records (core/reply_log_tail.h) */
    char *r_why;
    size_t r_whylen;
};

/* ---- errors ---- */

/* way_out: a second way out, said last (a 256-byte errbuf keeps the refusal and the first). */
static int corrupt_or(struct recovery *r, uint64_t segment, uint64_t off, const char *what, const char *more,
                      const char *way_out)
{
    char name[ARPC_LOG_NAME_MAX];
    arpc_log_segment_name(name, segment, false);
    arpc_log_why(r->r_why, r->r_whylen,
                 "reply log %s/%s is corrupt at offset %" PRIu64 ": %s%s; refusing to start (move the "
                 "directory away to start empty%s)",
                 r->r_log->lg_dir, name, off, what, more, way_out);
    return ARPC_EPROTO;
}

static int corrupt(struct recovery *r, uint64_t segment, uint64_t off, const char *what, const char *more)
{
    return corrupt_or(r, segment, off, what, more, "");
}

static int out_of_memory(struct recovery *r)
{
    arpc_log_why(r->r_why, r->r_whylen, "reply log %s: out of memory", r->r_log->lg_dir);
    return ARPC_ENOMEM;
}

/* ---- mapping ---- */

static void unmap_all(struct recovery *r, bool keep_last_fd)
{
    for (size_t i = 0; i < r->r_nsegs; i++) {
        struct mapped_segment *m = &r->r_segs[i];
        munmap((void *)m->m_base, m->m_size);
        if (!(keep_last_fd && i + 1 == r->r_nsegs))
            close(m->m_fd);
    }
    arpc_free(r->r_segs);
    r->r_segs = NULL;
    r->r_nsegs = 0;
}

/* Maps a segment and checks its header; *snapshot says whether it is one. */
static int map_segment(struct recovery *r, uint64_t segment, struct mapped_segment *m, bool *snapshot)
{
    struct arpc_reply_log *log = r->r_log;
    int fd;
    int rc = arpc_log_segment_open(log->lg_dirfd, log->lg_dir, segment, &fd, r->r_why, r->r_whylen);
    if (rc != ARPC_OK)
        return rc;
    struct stat st;
    char name[ARPC_LOG_NAME_MAX];
    arpc_log_segment_name(name, segment, false);
    if (fstat(fd, &st) != 0) {
        rc = arpc_log_sys_fail(r->r_why, r->r_whylen, log->lg_dir, "fstat", name, errno);
        close(fd);
        return rc;
    }
    if ((uint64_t)st.st_size < ARPC_LOG_HEADER_SIZE) { /* segments appear whole (by rename) */
        close(fd);
        return corrupt(r, segment, 0, "file shorter than a segment header", "");
    }
    void *base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (base == MAP_FAILED) {
        rc = arpc_log_sys_fail(r->r_why, r->r_whylen, log->lg_dir, "mmap", name, errno);
        close(fd);
        return rc;
    }
    *m = (struct mapped_segment){
        .m_segment = segment, .m_fd = fd, .m_base = base, .m_size = (size_t)st.st_size, .m_good = (size_t)st.st_size};
    struct arpc_log_view v;
    const char *what = NULL;
    enum arpc_log_decode d = arpc_log_decode(m->m_base, m->m_size, &v, &what);
    if (d == ARPC_LOG_DECODE_OK && v.v_type != ARPC_LOG_HEADER)
        what = "the first record is not a segment header";
    else if (d == ARPC_LOG_DECODE_OK && v.v_segment != segment)
        what = "the header names another segment than the file";
    else if (d == ARPC_LOG_DECODE_OK && log->lg_epoch != 0 && v.v_epoch != log->lg_epoch)
        what = "the header's epoch differs from the newer segments'";
    if (d != ARPC_LOG_DECODE_OK || what != NULL) {
        munmap(base, m->m_size);
        close(fd);
        return corrupt(r, segment, 0, what, " (segment header)");
    }
    log->lg_epoch = v.v_epoch;
    *snapshot = (v.v_flags & ARPC_LOG_FLAG_SNAPSHOT) != 0;
    return ARPC_OK;
}

/* Maps the newest snapshot and the segments after it (segs ascending); *first is the
 * snapshot's index in segs. Whatever was mapped is in r_segs even on failure. */
static int map_live_segments(struct recovery *r, const uint64_t *segs, size_t n, size_t *first)
{
    struct mapped_segment *m = arpc_calloc(n, sizeof(*m));
    if (m == NULL)
        return out_of_memory(r);
    size_t lo = n; /* [lo, n) mapped, newest first, until a snapshot */
    bool snapshot = false;
    int rc = ARPC_OK;
    while (rc == ARPC_OK && !snapshot && lo > 0) {
        rc = map_segment(r, segs[lo - 1], &m[lo - 1], &snapshot);
        if (rc == ARPC_OK)
            lo--;
    }
    if (rc == ARPC_OK && !snapshot)
        rc = corrupt(r, segs[0], 0, "no snapshot segment (the oldest segments are missing)", "");
    memmove(m, m + lo, (n - lo) * sizeof(*m));
    r->r_segs = m;
    r->r_nsegs = n - lo;
    *first = lo;
    return rc;
}

/* ---- reading ---- */

/* A SYNCED record read in order: it only tells the judgement of damage after it. One that
 * claims bytes after itself, or carries another nonce than the segment's first, is no writer's
 * of this segment. */
static int read_claim(struct recovery *r, struct mapped_segment *m, size_t off, const struct arpc_log_view *v)
{
    if (v->v_synced > off)
        return corrupt(r, m->m_segment, off, "a SYNCED record that claims bytes after itself", "");
    if (m->m_claims && v->v_nonce != m->m_nonce)
        return corrupt(r, m->m_segment, off, "a SYNCED record with another nonce than the segment's", "");
    m->m_claims = true;
    m->m_nonce = v->v_nonce;
    return ARPC_OK;
}

/* The first damaged record of the last segment, at off: a torn (or unsynced) tail to cut, or
 * corruption (core/reply_log_tail.h). */
static int judge_damage(struct recovery *r, struct mapped_segment *m, size_t off, const char *what)
{
    struct arpc_log_tail t;
    char more[200];
    if (m->m_claims) {
        arpc_log_tail_judge_synced(m->m_base, m->m_size, off, m->m_nonce, &t);
        if (!t.t_torn) {
            snprintf(more, sizeof(more),
                     ", in bytes a later record (at offset %zu) says were synced (up to offset %" PRIu64 ")",
                     t.t_evidence, t.t_claimed);
            return corrupt(r, m->m_segment, off, what, more);
        }
    } else {
        arpc_log_tail_judge(m->m_base, m->m_size, off, &t);
        if (!t.t_torn && t.t_evidence != 0) { /* a power cut can leave this too: the operator's other way out */
            snprintf(more, sizeof(more), ", with a valid record after it (at offset %zu)", t.t_evidence);
            return corrupt_or(r, m->m_segment, off, what, more,
                              "; after a power cut, cutting the segment there may be the smaller loss: "
                              "docs/SEMANTICS.md, \"Durability\"");
        }
        if (!t.t_torn) {
            snprintf(more, sizeof(more),
                     ", followed by more record-like bytes than can be checked (%" PRIu64
                     " bytes checksummed) to tell a torn tail from corruption",
                     t.t_checksummed);
            return corrupt(r, m->m_segment, off, what, more);
        }
    }
    m->m_good = off;
    r->r_torn_what = what;
    r->r_torn_unsynced = m->m_claims;
    return ARPC_OK;
}

static int scan_segment(struct recovery *r, struct mapped_segment *m, bool last)
{
    size_t off = ARPC_LOG_HEADER_SIZE;
    while (off < m->m_size) {
        struct arpc_log_view v;
        const char *what;
        int rc;
        switch (arpc_log_decode(m->m_base + off, m->m_size - off, &v, &what)) {
        case ARPC_LOG_DECODE_OK:
            if (v.v_type == ARPC_LOG_HEADER)
                return corrupt(r, m->m_segment, off, "a segment header in the middle of a segment", "");
            if (v.v_type == ARPC_LOG_SYNCED) {
                if ((rc = read_claim(r, m, off, &v)) != ARPC_OK)
                    return rc;
                off += v.v_size;
                continue;
            }
            if (arpc_log_index_apply(&r->r_log->lg_index, &v, (struct arpc_log_pos){m->m_segment, off, v.v_size}) !=
                ARPC_OK)
                return out_of_memory(r);
            off += v.v_size;
            continue;
        case ARPC_LOG_DECODE_INVALID:
            return corrupt(r, m->m_segment, off, what, "");
        default: /* SHORT or DAMAGED */
            if (!last)
                return corrupt(r, m->m_segment, off, what, " (not in the last segment)");
            return judge_damage(r, m, off, what);
        }
    }
    return ARPC_OK;
}

/* ---- after a clean scan ---- */

/* The bytes cut off go to NAME.torn first (the last cut's only): a torn write is what a crash
 * leaves, but a record damaged in the middle whose two lengths changed together looks the
 * same (core/reply_log_tail.c believes them), and cutting it drops every record after it.
 * The copy keeps what an operator needs to tell the two apart. A copy that cannot be made is
 * said and the cut goes on: a crash's tail must not keep the server down. */
static int drop_torn_tail(struct recovery *r)
{
    struct mapped_segment *m = &r->r_segs[r->r_nsegs - 1];
    if (m->m_good == m->m_size)
        return ARPC_OK;
    char name[ARPC_LOG_NAME_MAX], copy[ARPC_LOG_NAME_MAX + 8], why[256];
    arpc_log_segment_name(name, m->m_segment, false);
    snprintf(copy, sizeof(copy), "%s.torn", name);
    const char *dir = r->r_log->lg_dir;
    bool kept = arpc_log_keep_file(r->r_log->lg_dirfd, dir, copy, m->m_base + m->m_good, m->m_size - m->m_good, why,
                                   sizeof(why)) == ARPC_OK;
    if (!kept)
        arpc_log(ARPC_LOG_WARN, "reply log %s/%s: no copy kept of the torn record's bytes: %s", dir, name, why);
    if (ftruncate(m->m_fd, (off_t)m->m_good) != 0)
        return arpc_log_sys_fail(r->r_why, r->r_whylen, dir, "truncate", name, errno);
    int err = arpc_file_sync(m->m_fd, true);
    if (err != 0)
        return arpc_log_sys_fail(r->r_why, r->r_whylen, dir, "fdatasync", name, err);
    arpc_log(ARPC_LOG_WARN,
             "reply log %s/%s: dropped a torn record at offset %zu (%s, %zu bytes%s); truncated the file there%s%s%s",
             dir, name, m->m_good, r->r_torn_what, m->m_size - m->m_good,
             r->r_torn_unsynced ? " to the end of the file, none of them known to have been synced" : "",
             kept ? " (the bytes cut are in " : "", kept ? copy : "", kept ? ")" : "");
    return ARPC_OK;
}

/* Makes durable what the scan read (see the notes): the segments' bytes and their names. */
static int sync_read(struct recovery *r)
{
    struct arpc_reply_log *log = r->r_log;
    for (size_t i = 0; i < r->r_nsegs; i++) {
        int err = arpc_file_sync(r->r_segs[i].m_fd, true);
        if (err != 0) {
            char name[ARPC_LOG_NAME_MAX];
            arpc_log_segment_name(name, r->r_segs[i].m_segment, false);
            return arpc_log_sys_fail(r->r_why, r->r_whylen, log->lg_dir, "fdatasync", name, err);
        }
    }
    return arpc_log_dir_sync(log->lg_dirfd, log->lg_dir, r->r_why, r->r_whylen);
}

/* A superseded segment is removed only if it is this log's: one whose header names another
 * epoch means the newest snapshot, or it, came from another log's directory, and which is
 * this server's memory of its calls cannot be told. A header that does not decode is left to
 * the removal, as before (a superseded segment is never read). */
static int check_superseded(struct recovery *r, const uint64_t *segs, size_t first)
{
    struct arpc_reply_log *log = r->r_log;
    for (size_t i = 0; i < first; i++) {
        int fd;
        int rc = arpc_log_segment_open(log->lg_dirfd, log->lg_dir, segs[i], &fd, r->r_why, r->r_whylen);
        if (rc != ARPC_OK)
            return rc;
        uint8_t head[ARPC_LOG_HEADER_SIZE];
        char ignored[8];
        struct arpc_log_view v;
        const char *what;
        bool other = arpc_log_read_at(fd, log->lg_dir, segs[i], head, sizeof(head), 0, ignored, sizeof(ignored)) ==
                         ARPC_OK &&
                     arpc_log_decode(head, sizeof(head), &v, &what) == ARPC_LOG_DECODE_OK &&
                     v.v_type == ARPC_LOG_HEADER && v.v_epoch != log->lg_epoch;
        close(fd);
        if (other)
            return corrupt(r, segs[i], 0, "the header's epoch differs from the newer segments'",
                           " (a segment of another log's directory?)");
    }
    return ARPC_OK;
}

static int remove_superseded(struct recovery *r, const uint64_t *segs, size_t first)
{
    struct arpc_reply_log *log = r->r_log;
    for (size_t i = 0; i < first; i++) {
        int rc = arpc_log_segment_remove(log->lg_dirfd, log->lg_dir, segs[i], r->r_why, r->r_whylen);
        if (rc != ARPC_OK)
            return rc;
    }
    return first > 0 ? arpc_log_dir_sync(log->lg_dirfd, log->lg_dir, r->r_why, r->r_whylen) : ARPC_OK;
}

/* The record at pos, which the scan found intact. */
static struct arpc_log_view view_at(const struct recovery *r, struct arpc_log_pos pos)
{
    struct arpc_log_view v = {0};
    const char *what;
    for (size_t i = 0; i < r->r_nsegs; i++) {
        const struct mapped_segment *m = &r->r_segs[i];
        if (m->m_segment == pos.p_segment) {
            arpc_log_decode(m->m_base + pos.p_offset, pos.p_size, &v, &what);
            break;
        }
    }
    return v;
}

static void replay(const struct recovery *r, const struct arpc_log_replay_ops *ops, void *ctx)
{
    const struct arpc_log_index *ix = &r->r_log->lg_index;
    if (ops->on_state != NULL && ix->ix_has_state) {
        struct arpc_log_view v = view_at(r, ix->ix_state);
        ops->on_state(ctx, v.v_data, v.v_data_len);
    }
    for (size_t i = 0; ops->on_effect != NULL && i < ix->ix_neffects; i++) {
        struct arpc_log_view v = view_at(r, ix->ix_effects[i].e_pos);
        ops->on_effect(ctx, v.v_data, v.v_data_len);
    }
    const struct arpc_log_client *c;
    for (size_t it = 0; ops->on_reply != NULL && (c = arpc_log_index_next_client(ix, &it)) != NULL;)
        for (size_t i = c->c_head; i < c->c_len; i++) {
            struct arpc_log_view v = view_at(r, c->c_replies[i].r_pos);
            ops->on_reply(ctx, c->c_id, v.v_seq, v.v_reply, v.v_reply_len);
        }
    for (size_t it = 0; ops->on_ack != NULL && (c = arpc_log_index_next_client(ix, &it)) != NULL;)
        ops->on_ack(ctx, c->c_id, c->c_ack);
    for (size_t it = 0; ops->on_ack_beyond != NULL && (c = arpc_log_index_next_client(ix, &it)) != NULL;)
        if (c->c_claim.ac_high > c->c_ack)
            ops->on_ack_beyond(ctx, c->c_id, c->c_claim.ac_high, c->c_claim.ac_waiting, c->c_claim.ac_n);
    /* Live clients that came back after a goodbye: their floors, kept again at their expiry. */
    for (size_t it = 0; ops->on_gone != NULL && (c = arpc_log_index_next_client(ix, &it)) != NULL;)
        if (c->c_floor != 0)
            ops->on_gone(ctx, c->c_id, c->c_floor, 0);
    uint64_t id, floor, owner;
    for (size_t it = 0; ops->on_gone != NULL && arpc_rc_gone_next(&ix->ix_gone, &it, &id, &floor, &owner);)
        ops->on_gone(ctx, id, floor, owner);
}

/* ---- a new directory ---- */

/* A random non-zero number: an epoch, a nonce. */
static int random_nonzero(struct arpc_reply_log *log, uint64_t *out, char *why, size_t whylen)
{
    *out = 0;
    while (*out == 0) {
        if (getrandom(out, sizeof(*out), 0) != (ssize_t)sizeof(*out))
            return arpc_log_sys_fail(why, whylen, log->lg_dir, "getrandom", "", errno);
    }
    return ARPC_OK;
}

static int create_first_segment(struct arpc_reply_log *log, char *why, size_t whylen)
{
    int rc = random_nonzero(log, &log->lg_epoch, why, whylen);
    if (rc == ARPC_OK)
        rc = random_nonzero(log, &log->lg_out.o_nonce, why, whylen);
    if (rc != ARPC_OK)
        return rc;
    /* An empty snapshot: the state of a log that has seen nothing. */
    rc = arpc_log_segment_start(log->lg_dirfd, log->lg_dir, 1, log->lg_epoch, ARPC_LOG_FLAG_SNAPSHOT, &log->lg_out,
                                why, whylen);
    if (rc == ARPC_OK)
        rc = arpc_log_segment_publish(log->lg_dirfd, 1, &log->lg_out, why, whylen);
    else
        arpc_log_segment_abandon(log->lg_dirfd, &log->lg_out);
    if (rc != ARPC_OK) {
        if (log->lg_out.o_fd >= 0) { /* published, but the directory sync failed */
            close(log->lg_out.o_fd);
            log->lg_out.o_fd = -1;
        }
        return rc;
    }
    log->lg_segment = 1;
    return ARPC_OK;
}

/* ---- the whole of it ---- */

int arpc_log_recover(struct arpc_reply_log *log, const struct arpc_log_replay_ops *ops, void *ctx, char *why,
                     size_t whylen)
{
    log->lg_out = (struct arpc_log_out){
        .o_fd = -1, .o_dir = log->lg_dir, .o_buf = log->lg_buf, .o_cap = ARPC_LOG_BUF_SIZE};
    uint64_t *segs = NULL;
    size_t n = 0;
    int rc = arpc_log_dir_segments(log->lg_dirfd, log->lg_dir, &segs, &n, why, whylen);
    if (rc != ARPC_OK)
        return rc;
    if (n == 0 && log->lg_expected_why != NULL) {
        arpc_log_why(why, whylen,
                     "reply log %s holds no segment (*.arpclog), but %s: its segments were removed, and starting "
                     "empty would run again the calls they remembered; refusing to start (restore them from a "
                     "backup; or move the directory away to start empty)",
                     log->lg_dir, log->lg_expected_why);
        return ARPC_EPROTO;
    }
    if (n == 0)
        return create_first_segment(log, why, whylen);

    struct recovery r = {.r_log = log, .r_why = why, .r_whylen = whylen};
    size_t first = 0;
    rc = map_live_segments(&r, segs, n, &first);
    for (size_t i = 0; rc == ARPC_OK && i < r.r_nsegs; i++)
        rc = scan_segment(&r, &r.r_segs[i], i + 1 == r.r_nsegs);
    if (rc == ARPC_OK)
        rc = check_superseded(&r, segs, first);
    if (rc == ARPC_OK)
        rc = drop_torn_tail(&r);
    if (rc == ARPC_OK) /* first: the newest snapshot's name durable before what it supersedes goes */
        rc = sync_read(&r);
    if (rc == ARPC_OK)
        rc = remove_superseded(&r, segs, first);
    if (rc == ARPC_OK && r.r_nsegs > 1) {
        log->lg_nolder = r.r_nsegs - 1;
        log->lg_older = arpc_malloc(log->lg_nolder * sizeof(*log->lg_older));
        if (log->lg_older == NULL)
            rc = out_of_memory(&r);
        for (size_t i = 0; rc == ARPC_OK && i < log->lg_nolder; i++)
            log->lg_older[i] = r.r_segs[i].m_segment;
    }
    arpc_free(segs);
    if (rc != ARPC_OK) {
        unmap_all(&r, false);
        return rc;
    }
    struct mapped_segment *active = &r.r_segs[r.r_nsegs - 1];
    log->lg_out.o_nonce = active->m_nonce; /* its SYNCED records go on with the segment's nonce */
    if (!active->m_claims && (rc = random_nonzero(log, &log->lg_out.o_nonce, why, whylen)) != ARPC_OK) {
        unmap_all(&r, false);
        return rc;
    }
    size_t it = 0;
    log->lg_had_clients = arpc_log_index_next_client(&log->lg_index, &it) != NULL ||
                          arpc_rc_gone_count(&log->lg_index.ix_gone) > 0;
    if (ops != NULL)
        replay(&r, ops, ctx);
    log->lg_segment = active->m_segment;
    log->lg_out.o_fd = active->m_fd;
    log->lg_out.o_size = active->m_good;
    log->lg_out.o_synced = active->m_good; /* sync_read: the first write says so */
    log->lg_unclaimed = !active->m_claims;
    arpc_log_segment_name(log->lg_out.o_name, active->m_segment, false);
    unmap_all(&r, true);
    return ARPC_OK;
}
