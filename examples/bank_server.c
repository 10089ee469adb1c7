/*
 * A bank whose balances survive crashes: every transfer is logged before it is answered, and
 * a restart on the same data directory rebuilds the balances from the latest checkpoint plus
 * the transfers logged after it.
 *   bank_server --listen ADDR --data DIR [--accounts N] [--initial M] [--fsync always|batch|off]
 *               [--checkpoint-every K] [--compact-bytes B]
 * N accounts (default 100) of M each (default 1000) on first start; after that the directory
 * decides, and --accounts or --initial given then is said to be ignored (a first start that
 * could not listen has made the directory already). Every K transfers (default 1000) the balances are checkpointed, so the log stays
 * small; the log compacts once its segment passes B bytes (default 64 MiB: a small B makes
 * compaction happen in a short run, for crash tests). Runs until SIGINT or SIGTERM. Methods
 * and bytes: bank_proto.h.
 *
 * The balances live on one actor: both methods run there, one call at a time, so they need no
 * lock. Exactly once across crashes: a transfer is answered with arpc_reply_durable, whose
 * effect (the transfer itself) goes into the server's reply log in the same record as the
 * reply; at start-up the server hands back the latest checkpoint and every effect after it
 * (the recover callback), so the balances reflect exactly the transfers whose records reached
 * the disk -- and those are exactly the ones any client may have been told succeeded. A retry of
 * a transfer whose record made it is answered from the log; one whose record did not is run
 * again, on balances that never saw it.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "bank_args.h"
#include "bank_proto.h"

#define PROG "bank_server"
#define MAX_ACCOUNTS (1u << 20)
#define MAX_INITIAL 1000000000000ull /* 1e12 per account: the total fits 2^63 with room */

/* Touched by recovery (before the server starts) and then only by the bank actor. */
struct bank {
    uint32_t count;
    uint64_t *balances;
    uint8_t *encoded; /* bank_balances_len(count) bytes: replies and checkpoints */
    arpc_server *server;
    uint64_t checkpoint_every, since_checkpoint;
    /* recovery */
    bool has_state;
    uint64_t recovered_effects;
    char recover_error[256]; /* non-empty: the log does not make sense as a bank's */
};

static bool bank_alloc(struct bank *b, uint32_t count)
{
    b->count = count;
    b->balances = calloc(count, sizeof(*b->balances));
    b->encoded = malloc(bank_balances_len(count));
    return b->balances != NULL && b->encoded != NULL;
}

static uint64_t bank_total(const struct bank *b)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < b->count; i++)
        total += b->balances[i];
    return total;
}

/* Applies t, or says in why (and changes nothing) why it is refused. */
static bool bank_apply(struct bank *b, const struct bank_transfer *t, char *why, size_t whylen)
{
    if (t->from >= b->count || t->to >= b->count)
        snprintf(why, whylen, "no such account: %" PRIu32 " (accounts are 0 to %" PRIu32 ")",
                 t->from >= b->count ? t->from : t->to, b->count - 1);
    else if (t->from == t->to)
        snprintf(why, whylen, "from and to are the same account (%" PRIu32 ")", t->from);
    else if (t->amount == 0)
        snprintf(why, whylen, "nothing to transfer (amount 0)");
    else if (b->balances[t->from] < t->amount)
        snprintf(why, whylen, "insufficient funds: account %" PRIu32 " holds %" PRIu64 ", not %" PRIu64, t->from,
                 b->balances[t->from], t->amount);
    else {
        b->balances[t->from] -= t->amount;
        b->balances[t->to] += t->amount;
        return true;
    }
    return false;
}

static void bank_checkpoint_now(struct bank *b)
{
    bank_balances_encode(b->balances, b->count, b->encoded);
    /* It covers every transfer this actor answered durably before it: log order is ours. */
    if (arpc_server_checkpoint(b->server, b->encoded, bank_balances_len(b->count)) == ARPC_OK)
        b->since_checkpoint = 0;
}

/* ---- recovery (inside arpc_server_create) ---- */

static void recover(void *ctx, enum arpc_recover_kind kind, const void *data, size_t len)
{
    struct bank *b = ctx;
    if (b->recover_error[0] != '\0')
        return;
    if (kind == ARPC_RECOVER_STATE) {
        int64_t count = bank_balances_count(data, len);
        if (count < 1 || count > MAX_ACCOUNTS || !bank_alloc(b, (uint32_t)count)) {
            snprintf(b->recover_error, sizeof(b->recover_error), "a checkpoint of %zu bytes is not a bank's", len);
            return;
        }
        for (uint32_t i = 0; i < b->count; i++)
            b->balances[i] = bank_balance_at(data, i);
        b->has_state = true;
        return;
    }
    struct bank_transfer t;
    char why[128];
    if (!b->has_state)
        snprintf(b->recover_error, sizeof(b->recover_error), "a transfer logged before any checkpoint");
    else if (!bank_transfer_decode(data, len, &t))
        snprintf(b->recover_error, sizeof(b->recover_error), "a logged transfer of %zu bytes", len);
    else if (!bank_apply(b, &t, why, sizeof(why)))
        snprintf(b->recover_error, sizeof(b->recover_error), "logged transfer %" PRIu64 " replays as refused: %s",
                 b->recovered_effects + 1, why);
    else
        b->recovered_effects++;
}

/* ---- methods (on the bank actor) ---- */

static void on_transfer(arpc_request *req, void *ctx)
{
    struct bank *b = ctx;
    size_t len;
    const void *data = arpc_request_data(req, &len);
    struct bank_transfer t;
    char why[128];
    if (!bank_transfer_decode(data, len, &t)) {
        arpc_reply_error(req, "malformed transfer: want from u32, to u32, amount u64, little-endian");
        return;
    }
    if (!bank_apply(b, &t, why, sizeof(why))) {
        arpc_reply_error(req, why); /* changed nothing */
        return;
    }
    arpc_reply_durable(req, data, len, NULL, 0); /* the effect: the transfer itself */
    if (++b->since_checkpoint >= b->checkpoint_every)
        bank_checkpoint_now(b);
}

static void on_balances(arpc_request *req, void *ctx)
{
    struct bank *b = ctx;
    bank_balances_encode(b->balances, b->count, b->encoded);
    arpc_reply(req, b->encoded, bank_balances_len(b->count));
}

/* ---- main ---- */

static int usage(void)
{
    fprintf(stderr, "usage: " PROG " --listen ADDR --data DIR [--accounts N] [--initial M]\n"
                    "                   [--fsync always|batch|off] [--checkpoint-every K] [--compact-bytes B]\n");
    return 2;
}

static bool parse_fsync(const char *s, enum arpc_fsync *out)
{
    static const char *const names[] = {[ARPC_FSYNC_ALWAYS] = "always", [ARPC_FSYNC_BATCH] = "batch",
                                        [ARPC_FSYNC_OFF] = "off"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (enum arpc_fsync)i;
            return true;
        }
    return false;
}

/* Creates the server on the log in dir, which rebuilds the balances (recover), or makes them
 * fresh (and checkpoints them at once, so the directory alone decides the accounts from then
 * on). */
static bool open_bank(struct bank *b, const char *dir, enum arpc_fsync policy, uint64_t compact_bytes,
                      uint32_t accounts, uint64_t initial)
{
    char why[ARPC_ERRBUF_SIZE] = "";
    arpc_server_options so = {
        .workers = 1, /* the methods run on the bank actor; the pool has nothing to do */
        .log_dir = dir,
        .fsync = policy,
        .log_compact_bytes = compact_bytes,
        .recover = recover,
        .recover_ctx = b,
        .errbuf = why,
        .errbuf_len = sizeof(why),
    };
    int rc = arpc_server_create(&b->server, &so);
    if (rc != ARPC_OK) {
        fprintf(stderr, PROG ": %s: %s\n", arpc_errname(rc), why);
        return false;
    }
    if (b->recover_error[0] != '\0') {
        fprintf(stderr, PROG ": refusing the log in %s: %s\n", dir, b->recover_error);
        return false;
    }
    if (b->has_state)
        return true;
    if (!bank_alloc(b, accounts)) {
        fprintf(stderr, PROG ": out of memory\n");
        return false;
    }
    for (uint32_t i = 0; i < b->count; i++)
        b->balances[i] = initial;
    bank_checkpoint_now(b);
    return true;
}

int main(int argc, char **argv)
{
    const char *listen = NULL, *dir = NULL;
    uint64_t accounts = 100, initial = 1000, compact_bytes = 0;
    bool sized = false; /* --accounts or --initial given */
    enum arpc_fsync policy = ARPC_FSYNC_ALWAYS;
    struct bank b = {.checkpoint_every = 1000};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0)
            listen = bank_arg(argc, argv, &i, PROG);
        else if (strcmp(argv[i], "--data") == 0)
            dir = bank_arg(argc, argv, &i, PROG);
        else if (strcmp(argv[i], "--accounts") == 0)
            accounts = bank_arg_u64(argc, argv, &i, PROG, 2, MAX_ACCOUNTS), sized = true;
        else if (strcmp(argv[i], "--initial") == 0)
            initial = bank_arg_u64(argc, argv, &i, PROG, 0, MAX_INITIAL), sized = true;
        else if (strcmp(argv[i], "--checkpoint-every") == 0)
            b.checkpoint_every = bank_arg_u64(argc, argv, &i, PROG, 1, UINT32_MAX);
        else if (strcmp(argv[i], "--compact-bytes") == 0)
            compact_bytes = bank_arg_u64(argc, argv, &i, PROG, 4096, UINT64_MAX);
        else if (strcmp(argv[i], "--fsync") == 0) {
            if (!parse_fsync(bank_arg(argc, argv, &i, PROG), &policy))
                return usage();
        } else
            return usage();
    }
    if (listen == NULL || dir == NULL)
        return usage();

    /* SIGINT and SIGTERM wait for sigwait below: blocked before any thread starts, so no
     * arpc thread takes them. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    if (!open_bank(&b, dir, policy, compact_bytes, (uint32_t)accounts, initial)) {
        arpc_server_destroy(b.server);
        return 1;
    }
    if (sized && b.has_state)
        fprintf(stderr, PROG ": --accounts and --initial ignored: %s holds %" PRIu32
                " accounts from an earlier start (a new directory starts afresh)\n", dir, b.count);
    uint64_t total = bank_total(&b); /* once the server listens, only the actor reads b */
    arpc_server *server = b.server;
    arpc_actor *actor = NULL;
    char bound[256];
    int rc = arpc_actor_create(&actor, &(arpc_actor_options){.name = "bank"});
    arpc_method_options on_actor = {.actor = actor};
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, BANK_TRANSFER, on_transfer, &b, &on_actor);
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, BANK_BALANCES, on_balances, &b, &on_actor);
    if (rc == ARPC_OK)
        rc = arpc_server_listen(server, listen, bound, sizeof(bound));
    if (rc == ARPC_OK) {
        printf(PROG ": listening on %s, %" PRIu32 " accounts, total %" PRIu64 ", recovered %" PRIu64 " effects\n",
               bound, b.count, total, b.recovered_effects);
        fflush(stdout);
        int sig;
        sigwait(&stop_signals, &sig);
    } else {
        fprintf(stderr, PROG ": %s: %s\n", listen, arpc_strerror(rc));
    }
    /* The server (no new calls, every logged transfer on disk), then the actor. */
    arpc_server_destroy(server);
    if (actor != NULL)
        arpc_actor_destroy(actor);
    if (rc == ARPC_OK)
        printf(PROG ": stopped, total %" PRIu64 "\n", bank_total(&b));
    free(b.balances);
    free(b.encoded);
    return rc == ARPC_OK ? 0 : 1;
}
