/*
 * The reply log on the server (the log itself, its format, writer, recovery and compaction,
 * are core/reply_log*.c): recovery when the server is created, appending every finished
 * numbered call, answering its waiters once the record is durable, checkpoints and expiries.
 *
 * Order is what makes exactly-once work: records reach the log in the order replies reach
 * the loop (the job lane is FIFO per thread), the log is written in that order, and a crash
 * can only lose a tail of it. So the effects an application gets back at start-up are a
 * prefix of the ones it produced, in its own order, and every call whose effect is lost was
 * never answered: its client's retry runs it again on the recovered state.
 *
 * A record carries copies of its bytes (reply frame, effect), so the reply cache may drop
 * its entry (an ack) while the record is still on its way. The log hands each record back on
 * its writer thread; one that someone waits for comes back to the loop as a job (holding a
 * server reference), where its waiters are answered.
 *
 * A reply waiting for its record is counted (sv_logging) until its waiters are answered: a
 * stop waits for them (within its grace) before it closes the connections, so their callers
 * get their replies. Once the log is closed, every record has come back and its job is on the
 * lane: the stop runs one more step behind them, so none runs after arpc_server_stop returns
 * (arpc_server_destroy then frees the reply cache those jobs use).
 *
 * A record that could not be written stops the server's at-most-once service (fail-stop):
 * its calls are answered ARPC_EABANDONED (it may have run; never its reply, whose effect a
 * restart would forget), and new numbered calls, retries included, are refused ARPC_ESYSTEM.
 * Going on would answer calls whose effects a restart forgets.
 */
#include <stdio.h>
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "core/frame.h"
#include "core/request_internal.h" /* server_loop_hand */
#include "core/server_internal.h"

/* What arpc_reply_durable and arpc_server_checkpoint accept always fits one log record: the
 * rest of the room is the reply frame's header and the record's fixed fields. */
_Static_assert(ARPC_DURABLE_MAX + 4096 <= ARPC_LOG_PAYLOAD_MAX, "a durable reply must fit a log record");

enum journal_then {
    JR_NOTHING,  /* nobody waits: free it */
    JR_DURABLE,  /* a numbered call's waiters wait for it (the reply cache) */
    JR_SEND,     /* an unnumbered durable reply waits for it: send jr_rm to jr_conn */
};

struct journal_rec {
    struct arpc_log_record jr_rec;
    struct arpc_loop_job jr_job;
    arpc_server *jr_server;
    enum journal_then jr_then;
    struct server_conn *jr_conn; /* JR_SEND */
    struct reply_msg *jr_rm;     /* JR_SEND */
    uint8_t jr_bytes[];          /* copies of the reply and the effect */
};

static struct journal_rec *journal_rec_new(arpc_server *s, enum arpc_log_rtype type, const void *reply,
                                           size_t reply_len, const void *effect, size_t effect_len)
{
    struct journal_rec *r = arpc_malloc(sizeof(*r) + reply_len + effect_len);
    if (r == NULL)
        return NULL;
    memset(r, 0, sizeof(*r));
    r->jr_server = s;
    r->jr_rec.lr_type = type;
    r->jr_rec.lr_owner = r;
    if (reply_len)
        memcpy(r->jr_bytes, reply, reply_len);
    if (effect_len)
        memcpy(r->jr_bytes + reply_len, effect, effect_len);
    r->jr_rec.lr_reply = r->jr_bytes;
    r->jr_rec.lr_reply_len = reply_len;
    r->jr_rec.lr_effect = r->jr_bytes + reply_len;
    r->jr_rec.lr_effect_len = effect_len;
    return r;
}

/* A record could not be made durable: stop taking numbered calls (see the notes). */
static void journal_fail(arpc_server *s, const struct journal_rec *r)
{
    if (atomic_exchange(&s->sv_log_failed, true))
        return;
    if (r->jr_rec.lr_status == ARPC_ENOMEM)
        arpc_log(ARPC_LOG_ERROR, "no memory for a reply log record (or the reply carrying an effect): this "
                                 "server answers no more at-most-once calls; restart it");
    else
        arpc_log(ARPC_LOG_ERROR, "reply log record failed (%s): this server answers no more at-most-once "
                                 "calls; restart it once the disk is fixed",
                 arpc_errname(r->jr_rec.lr_status));
}

/* Loop thread: an unnumbered durable reply whose record failed: its caller is told the call
 * may have run (ARPC_EABANDONED) instead of waiting for its deadline; rm is let go of. */
static void journal_refuse_lost(struct server_conn *sc, struct reply_msg *rm)
{
    static const char lost[] = SERVER_LOG_LOST_MSG;
    sconn_refuse_call(sc, arpc_frame_xid(rm->rm_frame), ARPC_EABANDONED, lost, sizeof(lost) - 1);
    reply_msg_put(rm);
}

/* A reply that waited for its record is done with it (its waiters answered, or nobody left
 * to answer): the last one a stop waits for lets the stop go on. */
static void journal_settled(arpc_server *s)
{
    if (atomic_fetch_sub(&s->sv_logging, 1) == 1 && atomic_load(&s->sv_logs_awaited))
        arpc_future_complete(s->sv_logged, ARPC_OK, NULL, 0);
}

bool journal_await_all(arpc_server *s)
{
    /* Stored before the count is read; the last settler reads the flag after its decrement
     * (both seq_cst): either we see 0 or it completes sv_logged. */
    atomic_store(&s->sv_logs_awaited, true);
    return atomic_load(&s->sv_logging) != 0;
}

/* Loop thread: a record someone waits for is done. */
static void journal_on_loop(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    struct journal_rec *r = (struct journal_rec *)((char *)job - offsetof(struct journal_rec, jr_job));
    arpc_server *s = r->jr_server;
    bool ok = r->jr_rec.lr_status == ARPC_OK;
    if (!ok)
        journal_fail(s, r);
    if (r->jr_then == JR_DURABLE) {
        if (ok)
            dedup_durable(s, r->jr_rec.lr_client_id, r->jr_rec.lr_seq);
        else
            dedup_log_failed(s, r->jr_rec.lr_client_id, r->jr_rec.lr_seq);
    }
    if (r->jr_then == JR_SEND) {
        if (ok)
            sconn_send_frame(r->jr_conn, r->jr_rm);
        else
            journal_refuse_lost(r->jr_conn, r->jr_rm);
        sconn_release(r->jr_conn);
    }
    arpc_free(r);
    journal_settled(s);
    server_release(s);
}

/* The log's writer thread: every record comes back here, in append order. */
static void journal_on_done(void *ctx, struct arpc_log_record *rec)
{
    (void)ctx;
    struct journal_rec *r = rec->lr_owner;
    arpc_server *s = r->jr_server;
    if (rec->lr_status == ARPC_OK)
        arpc_stat_inc(&s->sv_stats.ss_log_records);
    if (r->jr_then == JR_NOTHING) {
        if (rec->lr_status != ARPC_OK && rec->lr_status != ARPC_ESHUTDOWN)
            journal_fail(s, r);
        arpc_free(r);
        return;
    }
    arpc_loop_job_init(&r->jr_job, journal_on_loop);
    server_retain(s); /* the job's: the server may be released meanwhile */
    if (arpc_loop_post(s->sv_loop, &r->jr_job) != ARPC_OK) {
        /* No loop any more: nobody can be answered. */
        if (r->jr_then == JR_SEND) {
            reply_msg_put(r->jr_rm);
            sconn_release(r->jr_conn);
        }
        arpc_free(r);
        journal_settled(s);
        server_release(s);
    }
}

/* Loop thread: does a reply wait for its record? */
bool journal_waits(const arpc_server *s) { return s->sv_log != NULL && s->sv_fsync != ARPC_FSYNC_OFF; }

void journal_fail_enomem(arpc_server *s)
{
    struct journal_rec fake = {.jr_rec.lr_status = ARPC_ENOMEM};
    journal_fail(s, &fake);
}

bool journal_reply(arpc_server *s, uint64_t client_id, uint64_t seq, uint64_t ack, const struct reply_msg *rm,
                   bool waited_for)
{
    struct journal_rec *r = journal_rec_new(s, ARPC_LOG_REPLY, rm->rm_frame, rm->rm_len, rm->rm_effect,
                                            rm->rm_effect_len);
    if (r == NULL) {
        journal_fail_enomem(s);
        return false;
    }
    r->jr_rec.lr_client_id = client_id;
    r->jr_rec.lr_seq = seq;
    r->jr_rec.lr_ack = ack;
    r->jr_then = waited_for ? JR_DURABLE : JR_NOTHING;
    if (waited_for)
        atomic_fetch_add(&s->sv_logging, 1);
    arpc_reply_log_append(s->sv_log, &r->jr_rec);
    return true;
}

bool journal_send_durable(arpc_server *s, struct server_conn *sc, struct reply_msg *rm)
{
    /* The log lost a record before this one (fail-stop): this effect was made on a state that
     * held what the log lost; logged behind the hole it would rebuild a state that never was. */
    if (atomic_load(&s->sv_log_failed)) {
        journal_refuse_lost(sc, rm);
        return true;
    }
    /* An unnumbered call's effect: a record with no client (nothing to deduplicate). */
    struct journal_rec *r = journal_rec_new(s, ARPC_LOG_REPLY, NULL, 0, rm->rm_effect, rm->rm_effect_len);
    if (r == NULL) {
        /* Its effect cannot be logged: the reply must not leave (fail-stop). */
        journal_fail_enomem(s);
        journal_refuse_lost(sc, rm);
        return true;
    }
    if (!journal_waits(s)) {
        r->jr_then = JR_NOTHING;
        arpc_reply_log_append(s->sv_log, &r->jr_rec);
        return false; /* the caller sends now */
    }
    r->jr_then = JR_SEND;
    r->jr_conn = sc;
    r->jr_rm = rm;
    sconn_retain(sc);
    atomic_fetch_add(&s->sv_logging, 1);
    arpc_reply_log_append(s->sv_log, &r->jr_rec);
    return true;
}

struct journal_rec *journal_effect_new(arpc_server *s, const void *effect, size_t len)
{
    struct journal_rec *r = journal_rec_new(s, ARPC_LOG_REPLY, NULL, 0, effect, len); /* no client */
    if (r != NULL)
        r->jr_then = JR_NOTHING; /* a one-way message: nobody waits (a failed record fails the log) */
    return r;
}

void journal_effect_append(arpc_server *s, struct journal_rec *r)
{
    if (s->sv_log == NULL || atomic_load(&s->sv_log_failed)) {
        arpc_free(r);
        return;
    }
    arpc_reply_log_append(s->sv_log, &r->jr_rec);
}

void journal_effect_free(struct journal_rec *r) { arpc_free(r); }

void journal_late_effect(arpc_server *s, const void *effect, size_t len)
{
    if (effect == NULL || s->sv_log == NULL)
        return; /* none, or the stop closed the log: a restart rebuilds the state without it */
    struct journal_rec *r = journal_effect_new(s, effect, len);
    if (r == NULL)
        journal_fail_enomem(s); /* an effect the log will never have: fail-stop */
    else
        journal_effect_append(s, r);
}

/* Without the record the log still holds the client's replies as alive (compaction keeps
 * them too): a restart replays them, and they stay until the client's idle expiry passes
 * again. Never a second run of a call; only memory, so it is counted and told, not fatal. */
static void journal_expire_lost(arpc_server *s, uint64_t client_id)
{
    arpc_stat_inc(&s->sv_stats.ss_expiries_unlogged);
    if (arpc_stat_get(&s->sv_stats.ss_expiries_unlogged) == 1)
        arpc_log(ARPC_LOG_WARN, "reply log: out of memory recording that client %016llx was forgotten; a restart "
                 "keeps its replies until it expires again (counted in log_expiries_lost, logged once)",
                 (unsigned long long)client_id);
}

void journal_forget(arpc_server *s, uint64_t client_id, uint64_t floor, uint64_t owner)
{
    if (s->sv_log == NULL)
        return;
    /* A floor makes it a GOODBYE: replay keeps refusing the client's calls up to it. */
    struct journal_rec *r = journal_rec_new(s, floor != 0 ? ARPC_LOG_GOODBYE : ARPC_LOG_EXPIRE, NULL, 0, NULL, 0);
    if (r == NULL) {
        journal_expire_lost(s, client_id);
        return;
    }
    r->jr_rec.lr_client_id = client_id;
    r->jr_rec.lr_seq = floor;
    r->jr_rec.lr_identity = owner;
    arpc_reply_log_append(s->sv_log, &r->jr_rec);
}

/* A client's acknowledgement beyond its ack (an ACK frame, checked): logged so that the log's
 * index drops those replies too (and compaction with them), and a restart knows the claim.
 * waiting: the frame's list as it came, little-endian. Without memory it is not logged: the log
 * keeps those replies longer, never a call too few. */
void journal_ack_beyond(arpc_server *s, uint64_t client_id, uint64_t ack, uint64_t high, const void *waiting,
                        size_t waiting_len)
{
    if (s->sv_log == NULL || atomic_load(&s->sv_log_failed))
        return;
    struct journal_rec *r = journal_rec_new(s, ARPC_LOG_ACK_BEYOND, NULL, 0, waiting, waiting_len);
    if (r == NULL)
        return;
    r->jr_rec.lr_client_id = client_id;
    r->jr_rec.lr_ack = ack;
    r->jr_rec.lr_seq = high;
    arpc_reply_log_append(s->sv_log, &r->jr_rec);
}

/* ---- checkpoints ---- */

struct checkpoint_job {
    struct arpc_loop_job cj_job;
    struct journal_rec *cj_rec;
};

static void checkpoint_on_loop(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    struct checkpoint_job *cj = (struct checkpoint_job *)job;
    arpc_server *s = cj->cj_rec->jr_server;
    /* Appended on the loop, so it follows every reply the same thread handed over before, and
     * precedes every one it hands over after. */
    if (s->sv_log != NULL)
        arpc_reply_log_append(s->sv_log, &cj->cj_rec->jr_rec);
    else
        arpc_free(cj->cj_rec); /* the server stopped meanwhile */
    arpc_free(cj);
    server_release(s);
}

int arpc_server_checkpoint(arpc_server *s, const void *state, size_t len)
{
    if (!server_live(s, __func__) || (state == NULL && len != 0) || !s->sv_has_log)
        return ARPC_EINVAL;
    if (len > ARPC_DURABLE_MAX)
        return ARPC_ETOOLARGE; /* the log would refuse it, and stop (core/reply_log_writer.c) */
    if (atomic_load(&s->sv_state) == SV_STOPPED)
        return ARPC_ESHUTDOWN;
    struct journal_rec *r = journal_rec_new(s, ARPC_LOG_STATE, NULL, 0, state, len);
    struct checkpoint_job *cj = arpc_malloc(sizeof(*cj));
    if (r == NULL || cj == NULL) {
        arpc_free(r);
        arpc_free(cj);
        return ARPC_ENOMEM;
    }
    r->jr_then = JR_NOTHING;
    cj->cj_rec = r;
    arpc_loop_job_init(&cj->cj_job, checkpoint_on_loop);
    server_retain(s);
    /* The way a reply goes (server_loop_hand): on the loop's thread (an inline handler) it is
     * appended here and now, as a reply made there is; posted, it would follow the effects
     * that thread logs before the lane is drained, which this state does not hold. */
    if (server_loop_hand(s, &cj->cj_job, NULL, NULL) != ARPC_OK) {
        server_release(s);
        arpc_free(r);
        arpc_free(cj);
        return ARPC_ESHUTDOWN;
    }
    return ARPC_OK;
}

/* ---- open and recovery ---- */

struct journal_replay {
    arpc_server *jp_server;
    const arpc_server_options *jp_opts;
    int jp_rc;
};

static void replay_state(void *ctx, const void *state, size_t len)
{
    struct journal_replay *jp = ctx;
    if (jp->jp_opts->recover != NULL)
        jp->jp_opts->recover(jp->jp_opts->recover_ctx, ARPC_RECOVER_STATE, state, len);
}

static void replay_effect(void *ctx, const void *effect, size_t len)
{
    struct journal_replay *jp = ctx;
    if (jp->jp_opts->recover != NULL)
        jp->jp_opts->recover(jp->jp_opts->recover_ctx, ARPC_RECOVER_EFFECT, effect, len);
}

static void replay_reply(void *ctx, uint64_t client_id, uint64_t seq, const void *reply, size_t len)
{
    struct journal_replay *jp = ctx;
    if (jp->jp_rc != ARPC_OK)
        return;
    struct reply_msg *rm = reply_msg_from_frame(reply, len);
    int rc = rm == NULL ? ARPC_ENOMEM
                        : arpc_reply_cache_restore(&jp->jp_server->sv_cache, client_id, seq, rm, reply_msg_cost(rm),
                                                   arpc_now_ns());
    if (rc != ARPC_OK) {
        if (rm != NULL)
            reply_msg_free(rm);
        if (rc == ARPC_ENOMEM)
            jp->jp_rc = rc; /* a reply we cannot keep: refuse to start rather than forget it */
    }
}

static void replay_ack(void *ctx, uint64_t client_id, uint64_t ack)
{
    struct journal_replay *jp = ctx;
    if (jp->jp_rc == ARPC_OK && arpc_reply_cache_restore_ack(&jp->jp_server->sv_cache, client_id, ack,
                                                             arpc_now_ns()) == ARPC_ENOMEM)
        jp->jp_rc = ARPC_ENOMEM;
}

static void replay_ack_beyond(void *ctx, uint64_t client_id, uint64_t high, const uint64_t *waiting, uint32_t n)
{
    struct journal_replay *jp = ctx;
    if (jp->jp_rc == ARPC_OK && arpc_reply_cache_ack_beyond(&jp->jp_server->sv_cache, client_id, 0, high, waiting, n,
                                                            arpc_now_ns(), NULL) == ARPC_ENOMEM)
        jp->jp_rc = ARPC_ENOMEM;
}

/* A goodbye's floor: without it a late copy of that client's call would run again. */
static void replay_gone(void *ctx, uint64_t client_id, uint64_t floor, uint64_t owner)
{
    struct journal_replay *jp = ctx;
    if (jp->jp_rc == ARPC_OK &&
        arpc_reply_cache_restore_gone(&jp->jp_server->sv_cache, client_id, floor, owner) == ARPC_ENOMEM)
        jp->jp_rc = ARPC_ENOMEM;
}

int journal_open(arpc_server *s, const arpc_server_options *o, char *why, size_t whylen)
{
    static const enum arpc_log_fsync policy[] = {
        [ARPC_FSYNC_ALWAYS] = ARPC_LOG_FSYNC_ALWAYS,
        [ARPC_FSYNC_BATCH] = ARPC_LOG_FSYNC_BATCH,
        [ARPC_FSYNC_OFF] = ARPC_LOG_FSYNC_OFF,
    };
    s->sv_fsync = o->fsync; /* a known policy: server_options_refusal */
    struct arpc_reply_log_options lo = {
        .dir = o->log_dir,
        .fsync = policy[o->fsync],
        .batch_ms = o->fsync_batch_ms,
        .batch_records = o->fsync_batch_records,
        .compact_bytes = o->log_compact_bytes,
        .expected_why = namespace_expected(o->log_dir) ? "its namespace.key, written after the first one, is there"
                                                       : NULL,
    };
    static const struct arpc_log_replay_ops ops = {
        .on_state = replay_state,
        .on_effect = replay_effect,
        .on_reply = replay_reply,
        .on_ack = replay_ack,
        .on_gone = replay_gone,
        .on_ack_beyond = replay_ack_beyond,
    };
    struct journal_replay jp = {s, o, ARPC_OK};
    int rc = arpc_reply_log_open(&s->sv_log, &lo, &ops, &jp, journal_on_done, s, why, whylen);
    if (rc == ARPC_OK && jp.jp_rc != ARPC_OK) {
        snprintf(why, whylen, "out of memory replaying the reply log %s", o->log_dir);
        arpc_reply_log_close(s->sv_log);
        s->sv_log = NULL;
        rc = jp.jp_rc;
    }
    if (rc == ARPC_OK) {
        s->sv_epoch = arpc_reply_log_epoch(s->sv_log); /* the same after every restart */
        s->sv_has_log = true;
    }
    return rc;
}

/* On the loop (a stop step), after every reply handed over before the stop: nothing appends
 * after it. The records come back before it returns; those waited for queue jobs behind this
 * step, which the stop runs before it returns (see the notes). */
void journal_close(arpc_loop *loop, void *arg)
{
    (void)loop;
    arpc_server *s = arg;
    arpc_reply_log_close(s->sv_log);
    s->sv_log = NULL;
}
