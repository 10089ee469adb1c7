/*
 * INTERIM: bank_server's durable state, until the server gains it.
 *
 * arpc/server.h was meant to offer arpc_server_options.log_dir / .fsync / .recover,
 * arpc_reply_durable and arpc_server_checkpoint (commit aa85180 says so), but only the reply
 * log itself (core/reply_log.h) was merged: the server never opens it. This file gives the
 * bank those calls' shapes over core/reply_log.h, so bank_server.c reads as it will with the
 * real API, and switching is a rename.
 *
 * What it does NOT do, and the server will: log the reply under the caller's (client id, seq)
 * and keep the server's epoch across restarts. So a server killed here comes back as a new
 * server to its clients: their calls in flight end with ARPC_ECONNLOST (outcome unknown),
 * while the transfers those calls made are kept or lost with the log, as they should be.
 */
#ifndef BANK_LOG_H
#define BANK_LOG_H

#include <stddef.h>

#include "arpc/arpc.h"

struct bank_log;

enum bank_fsync {
    BANK_FSYNC_ALWAYS, /* a record is durable once fdatasync'ed (group commit) */
    BANK_FSYNC_BATCH,  /* once written: survives a process crash; synced within 10 ms */
    BANK_FSYNC_OFF,    /* once written; never synced until close */
};

/* What recovery hands the application, in this order: the latest checkpoint, if there is one,
 * then every effect logged after it. data is valid only during the call. */
enum bank_recover_kind { BANK_RECOVER_STATE, BANK_RECOVER_EFFECT };
typedef void (*bank_recover_fn)(void *ctx, enum bank_recover_kind kind, const void *data, size_t len);

struct bank_log_options {
    const char *dir; /* created if missing */
    enum bank_fsync fsync;
    bank_recover_fn recover; /* runs inside bank_log_open, on its thread */
    void *ctx;
};

/* Opens (or creates) the log in o->dir and recovers it through o->recover. On failure returns
 * the arpc_error and writes one line into why (e.g. the directory is used by another server). */
int bank_log_open(struct bank_log **out, const struct bank_log_options *o, char *why, size_t whylen);

/* Logs effect (what the call changed, to re-apply at recovery), and replies reply to req once
 * the record is durable per the fsync policy. Any thread; records keep the order of the calls.
 * The bytes are copied. A log that cannot write stops the process: the state in memory is
 * then ahead of the disk, and no reply may promise what the disk does not hold. */
void bank_reply_durable(struct bank_log *log, arpc_request *req, const void *effect, size_t effect_len,
                        const void *reply, size_t reply_len);

/* Logs state as the checkpoint covering every effect logged before it (copied). */
void bank_checkpoint(struct bank_log *log, const void *state, size_t len);

/* Writes and syncs what was logged, answers every request still waiting, frees the log. Call it
 * once nothing logs any more (after the server and the actor that logs have stopped). */
void bank_log_close(struct bank_log *log);

#endif
