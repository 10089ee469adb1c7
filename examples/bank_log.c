/*
 * INTERIM: bank_log.h over the library's internal reply log (core/reply_log.h); see the header
 * for why this file exists and what it leaves out.
 *
 * A transfer's effect goes in as an effect-only REPLY record (client id 0: there is no reply
 * for the log to keep for deduplication), a checkpoint as a STATE record. The log writes
 * records in the order they were appended and hands each back on its writer thread once it is
 * durable per the policy; that is where the request waiting for it gets its reply.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bank_log.h"
#include "core/reply_log.h"

/* The log compacts (drops what the latest checkpoint covers) once its active segment is this
 * big: small, so a demo's log stays small. */
#define BANK_LOG_COMPACT_BYTES (1u << 20)

struct bank_log {
    struct arpc_reply_log *bl_log;
    bank_recover_fn bl_recover;
    void *bl_ctx;
};

/* One record on its way to disk, with the bytes it points to. */
struct bank_entry {
    struct arpc_log_record e_rec;
    arpc_request *e_req; /* answered when the record is durable; NULL for a checkpoint */
    size_t e_reply_len;
    unsigned char e_bytes[]; /* the effect (or state), then the reply */
};

static void on_state(void *ctx, const void *state, size_t len)
{
    struct bank_log *l = ctx;
    l->bl_recover(l->bl_ctx, BANK_RECOVER_STATE, state, len);
}

static void on_effect(void *ctx, const void *effect, size_t len)
{
    struct bank_log *l = ctx;
    l->bl_recover(l->bl_ctx, BANK_RECOVER_EFFECT, effect, len);
}

/* On the log's writer thread, once per record, in append order. */
static void on_done(void *ctx, struct arpc_log_record *rec)
{
    (void)ctx;
    struct bank_entry *e = rec->lr_owner;
    if (rec->lr_status != ARPC_OK) {
        /* Fail-stop: the state in memory already holds this record's change. The log said
         * why on stderr; a restart recovers what is on disk. */
        fprintf(stderr, "bank_server: a record could not be logged (%s): stopping\n", arpc_strerror(rec->lr_status));
        _exit(1);
    }
    if (e->e_req != NULL)
        arpc_reply(e->e_req, e->e_bytes + rec->lr_effect_len, e->e_reply_len);
    free(e);
}

int bank_log_open(struct bank_log **out, const struct bank_log_options *o, char *why, size_t whylen)
{
    static const enum arpc_log_fsync policy[] = {
        [BANK_FSYNC_ALWAYS] = ARPC_LOG_FSYNC_ALWAYS,
        [BANK_FSYNC_BATCH] = ARPC_LOG_FSYNC_BATCH,
        [BANK_FSYNC_OFF] = ARPC_LOG_FSYNC_OFF,
    };
    struct bank_log *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        snprintf(why, whylen, "out of memory");
        return ARPC_ENOMEM;
    }
    l->bl_recover = o->recover;
    l->bl_ctx = o->ctx;
    struct arpc_reply_log_options lo = {
        .dir = o->dir, .fsync = policy[o->fsync], .compact_bytes = BANK_LOG_COMPACT_BYTES};
    struct arpc_log_replay_ops replay = {.on_state = on_state, .on_effect = on_effect};
    int rc = arpc_reply_log_open(&l->bl_log, &lo, &replay, l, on_done, l, why, whylen);
    if (rc != ARPC_OK) {
        free(l);
        return rc;
    }
    *out = l;
    return ARPC_OK;
}

static void append(struct bank_log *l, enum arpc_log_rtype type, arpc_request *req, const void *data,
                   size_t len, const void *reply, size_t reply_len)
{
    struct bank_entry *e = malloc(sizeof(*e) + len + reply_len);
    if (e == NULL) {
        fprintf(stderr, "bank_server: out of memory for a log record: stopping\n");
        _exit(1);
    }
    if (len > 0)
        memcpy(e->e_bytes, data, len);
    if (reply_len > 0)
        memcpy(e->e_bytes + len, reply, reply_len);
    e->e_req = req;
    e->e_reply_len = reply_len;
    e->e_rec = (struct arpc_log_record){
        .lr_type = type, .lr_effect = e->e_bytes, .lr_effect_len = len, .lr_owner = e};
    arpc_reply_log_append(l->bl_log, &e->e_rec);
}

void bank_reply_durable(struct bank_log *log, arpc_request *req, const void *effect, size_t effect_len,
                        const void *reply, size_t reply_len)
{
    append(log, ARPC_LOG_REPLY, req, effect, effect_len, reply, reply_len);
}

void bank_checkpoint(struct bank_log *log, const void *state, size_t len)
{
    append(log, ARPC_LOG_STATE, NULL, state, len, NULL, 0);
}

void bank_log_close(struct bank_log *log)
{
    if (log == NULL)
        return;
    arpc_reply_log_close(log->bl_log);
    free(log);
}
