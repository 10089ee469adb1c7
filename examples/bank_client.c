/*
 * Moves money around a bank_server at random, then checks that none was made or lost.
 *   bank_client --connect ADDR --transfers N [--window W] [--seed S] [--deadline-ms D]
 *               [--progress-every P [--stop-at-progress]]
 *   bank_client --connect ADDR --balances      (prints every balance as one JSON array)
 *
 * --stop-at-progress: after each progress line the client stops itself (SIGSTOP) until it is
 * sent SIGCONT, so a script can act at an exact point of its run however it is scheduled
 * (scripts/bank-crash.sh kills the server there).
 *
 * N random transfers, W outstanding at a time, each at-most-once (the client's default) with a
 * deadline of D ms: long enough to ride through server restarts, which the client survives by
 * reconnecting by itself. Every outcome is put in one of four classes:
 *   ok        ARPC_OK: the transfer ran, exactly once
 *   refused   ARPC_EHANDLER: the bank said no (overdraft); nothing changed
 *   failed    the call did not run (ARPC_EUNREACHABLE, ARPC_EEXPIRED, ARPC_EOVERLOADED, ...)
 *   unknown   it may or may not have run (ARPC_ETIMEDOUT, ARPC_ECONNLOST, anything else)
 * Then it fetches the balances and compares them with the first balances it fetched plus the
 * ok transfers. With unknown > 0 the expected balances are ambiguous and a mismatch is
 * possible. The last line of stdout is one JSON object; the exit status is 0 only when the
 * balances match and no outcome is unknown.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "bank_args.h"
#include "bank_proto.h"

#define PROG "bank_client"

enum outcome { OK, REFUSED, FAILED, UNKNOWN, OUTCOMES };

static enum outcome classify(int status)
{
    switch (status) {
    case ARPC_OK:
        return OK;
    case ARPC_EHANDLER:
        return REFUSED;
    case ARPC_EUNREACHABLE:
    case ARPC_EEXPIRED:
    case ARPC_EOVERLOADED:
    case ARPC_EREJECTED:
    case ARPC_ESHUTDOWN:
    case ARPC_ENOMETHOD:
        return FAILED;
    default: /* ETIMEDOUT, ECONNLOST, and whatever does not say it did not run */
        return UNKNOWN;
    }
}

struct balances {
    uint32_t count;
    uint64_t *of;
};

static uint64_t balances_total(const struct balances *b)
{
    uint64_t total = 0;
    for (uint32_t i = 0; b->of != NULL && i < b->count; i++)
        total += b->of[i];
    return total;
}

/* Fetches every balance; on failure says why on stderr and returns the call's status. */
static int fetch_balances(arpc_client *c, int64_t deadline_ms, struct balances *out)
{
    void *reply = NULL;
    size_t len = 0;
    int rc = arpc_call(c, BANK_BALANCES, NULL, 0, &reply, &len, deadline_ms);
    int64_t count = rc == ARPC_OK ? bank_balances_count(reply, len) : -1;
    if (rc == ARPC_OK && count < 0)
        rc = ARPC_EPROTO;
    out->of = rc == ARPC_OK ? calloc(count ? (size_t)count : 1, sizeof(*out->of)) : NULL;
    if (rc == ARPC_OK && out->of == NULL)
        rc = ARPC_ENOMEM;
    if (rc == ARPC_OK) {
        out->count = (uint32_t)count;
        for (uint32_t i = 0; i < out->count; i++)
            out->of[i] = bank_balance_at(reply, i);
    } else {
        char why[ARPC_ERRBUF_SIZE] = "";
        arpc_client_last_error(c, why, sizeof(why));
        fprintf(stderr, PROG ": fetching the balances: %s (%s)%s%s\n", arpc_errname(rc),
                rc == ARPC_EPROTO ? "the reply is not a list of balances" : arpc_strerror(rc),
                why[0] ? "; last connection error: " : "",
                why);
    }
    arpc_free(reply);
    return rc;
}

/* xorshift64*: a small seeded generator, so a run can be replayed. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* n random transfers between distinct accounts, of 1 to half the average balance: early on
 * all go through; as balances spread, some from the poorer accounts are refused. */
static struct bank_transfer *plan_transfers(uint64_t n, const struct balances *b, uint64_t seed)
{
    struct bank_transfer *plan = calloc(n ? n : 1, sizeof(*plan));
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1, most = balances_total(b) / b->count / 2;
    for (uint64_t i = 0; plan != NULL && i < n; i++) {
        uint32_t from = (uint32_t)(rng_next(&s) % b->count), to = (uint32_t)(rng_next(&s) % (b->count - 1));
        plan[i] = (struct bank_transfer){
            .from = from, .to = to >= from ? to + 1 : to, .amount = 1 + rng_next(&s) % (most ? most : 1)};
    }
    return plan;
}

struct tally {
    uint64_t by_class[OUTCOMES];
    uint64_t by_status[ARPC_ERROR_COUNT_ + 1]; /* the last slot: codes outside the table */
};

/* Runs the plan, W calls outstanding, applying the ok ones to expected. False if a call
 * could not even be started (out of memory): then the calls started are waited for. */
static bool run_transfers(arpc_client *c, const struct bank_transfer *plan, uint64_t n, uint64_t window,
                          int64_t deadline_ms, uint64_t progress_every, bool stop_at_progress,
                          struct balances *expected, struct tally *t)
{
    arpc_cq *cq;
    if (arpc_cq_create(&cq) != ARPC_OK)
        return false;
    uint64_t started = 0, done = 0;
    bool starting = true;
    for (;;) {
        while (starting && started < n && started - done < window) {
            uint8_t req[BANK_TRANSFER_LEN];
            bank_transfer_encode(&plan[started], req);
            starting = arpc_go(c, BANK_TRANSFER, req, sizeof(req), deadline_ms, cq, (void *)(uintptr_t)started) == ARPC_OK;
            if (starting)
                started++;
            else
                fprintf(stderr, PROG ": out of memory starting transfer %" PRIu64 "\n", started);
        }
        arpc_future *f;
        void *tag;
        if (done == started || arpc_cq_next(cq, &f, &tag) != ARPC_OK) /* each call ends by its deadline */
            break;
        int status = arpc_future_poll(f);
        arpc_future_release(f);
        const struct bank_transfer *tr = &plan[(uintptr_t)tag];
        enum outcome o = classify(status);
        if (o == OK) {
            expected->of[tr->from] -= tr->amount;
            expected->of[tr->to] += tr->amount;
        }
        t->by_class[o]++;
        t->by_status[status >= 0 && status < ARPC_ERROR_COUNT_ ? status : ARPC_ERROR_COUNT_]++;
        done++;
        if (progress_every > 0 && done % progress_every == 0) {
            fprintf(stderr, PROG ": progress %" PRIu64 "/%" PRIu64 "\n", done, n);
            if (stop_at_progress)
                raise(SIGSTOP); /* every thread of the client stops until SIGCONT */
        }
    }
    arpc_cq_destroy(cq);
    return starting && done == n;
}

static uint32_t count_mismatches(const struct balances *expected, const struct balances *actual)
{
    if (actual->count != expected->count)
        return expected->count > actual->count ? expected->count : actual->count;
    uint32_t bad = 0;
    for (uint32_t i = 0; i < expected->count; i++)
        bad += expected->of[i] != actual->of[i];
    return bad;
}

static void print_balances_json(const struct balances *b)
{
    printf("[");
    for (uint32_t i = 0; i < b->count; i++)
        printf("%s%" PRIu64, i ? "," : "", b->of[i]);
    printf("]\n");
}

struct report {
    uint64_t transfers, seed, window, reconnects;
    struct tally tally;
    double seconds;
    bool fetched;        /* the balances after the run could be read */
    uint32_t mismatched; /* accounts whose balance is not the expected one */
    uint64_t initial_total, expected_total, actual_total;
};

/* A line for people, then the JSON object (the last line of stdout). */
static void print_report(const struct report *r)
{
    const uint64_t *by = r->tally.by_class;
    bool match = r->fetched && r->mismatched == 0;
    printf(PROG ": %" PRIu64 " transfers in %.2f s: %" PRIu64 " ok, %" PRIu64 " refused, %" PRIu64 " failed, %" PRIu64
                " unknown; %" PRIu64 " reconnects; balances %s\n",
           r->transfers, r->seconds, by[OK], by[REFUSED], by[FAILED], by[UNKNOWN], r->reconnects,
           !r->fetched ? "not fetched" : match ? "match" : "DO NOT MATCH");
    printf("{\"transfers\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"refused\":%" PRIu64 ",\"failed\":%" PRIu64
           ",\"unknown\":%" PRIu64 ",\"expected_total\":%" PRIu64 ",\"actual_total\":",
           r->transfers, by[OK], by[REFUSED], by[FAILED], by[UNKNOWN], r->expected_total);
    if (r->fetched)
        printf("%" PRIu64, r->actual_total);
    else
        printf("null");
    printf(",\"initial_total\":%" PRIu64 ",\"balances_match\":%s,\"mismatched_accounts\":%" PRIu32
           ",\"reconnects\":%" PRIu64 ",\"seconds\":%.3f,\"seed\":%" PRIu64 ",\"window\":%" PRIu64 ",\"outcomes\":{",
           r->initial_total, match ? "true" : "false", r->mismatched, r->reconnects, r->seconds, r->seed, r->window);
    for (int s = 0, first = 1; s <= ARPC_ERROR_COUNT_; s++)
        if (r->tally.by_status[s] > 0) {
            printf("%s\"%s\":%" PRIu64, first ? "" : ",", arpc_errname(s), r->tally.by_status[s]);
            first = 0;
        }
    printf("}}\n");
}

static int usage(void)
{
    fprintf(stderr, "usage: " PROG " --connect ADDR --transfers N [--window W] [--seed S] [--deadline-ms D]\n"
                    "                   [--progress-every P [--stop-at-progress]]\n"
                    "       " PROG " --connect ADDR --balances\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *addr = NULL;
    uint64_t n = 0, window = 16, seed = 1, deadline_ms = 30000, progress_every = 0;
    bool stop_at_progress = false;
    bool transfers = false, show_balances = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--connect") == 0)
            addr = bank_arg(argc, argv, &i, PROG);
        else if (strcmp(argv[i], "--transfers") == 0)
            n = bank_arg_u64(argc, argv, &i, PROG, 0, UINT32_MAX), transfers = true;
        else if (strcmp(argv[i], "--window") == 0)
            window = bank_arg_u64(argc, argv, &i, PROG, 1, 1u << 16);
        else if (strcmp(argv[i], "--seed") == 0)
            seed = bank_arg_u64(argc, argv, &i, PROG, 0, UINT64_MAX);
        else if (strcmp(argv[i], "--deadline-ms") == 0)
            deadline_ms = bank_arg_u64(argc, argv, &i, PROG, 1, INT64_MAX);
        else if (strcmp(argv[i], "--progress-every") == 0)
            progress_every = bank_arg_u64(argc, argv, &i, PROG, 0, UINT64_MAX);
        else if (strcmp(argv[i], "--stop-at-progress") == 0)
            stop_at_progress = true;
        else if (strcmp(argv[i], "--balances") == 0)
            show_balances = true;
        else
            return usage();
    }
    if (addr == NULL || transfers == show_balances)
        return usage();

    char why[ARPC_ERRBUF_SIZE] = "";
    arpc_client_options o = {
        .errbuf = why,
        .errbuf_len = sizeof(why),
        .reconnect_give_up_ms = (int64_t)deadline_ms, /* a call waits for a connection up to its deadline */
        .reconnect_max_ms = 250,                       /* a restarted server is found again quickly */
    };
    arpc_client *c;
    int rc = arpc_client_connect(&c, addr, &o);
    if (rc != ARPC_OK) {
        fprintf(stderr, PROG ": cannot connect to %s: %s\n", addr, why[0] ? why : arpc_strerror(rc));
        return 1;
    }
    struct balances initial = {0}, expected = {0}, actual = {0};
    rc = fetch_balances(c, (int64_t)deadline_ms, &initial);
    if (rc != ARPC_OK || show_balances) {
        if (rc == ARPC_OK)
            print_balances_json(&initial);
        free(initial.of);
        arpc_client_close(c);
        return rc == ARPC_OK ? 0 : 1;
    }
    if (initial.count < 2) {
        fprintf(stderr, PROG ": the bank has %" PRIu32 " accounts: nothing to transfer between\n", initial.count);
        free(initial.of);
        arpc_client_close(c);
        return 1;
    }
    expected = (struct balances){.count = initial.count, .of = malloc(initial.count * sizeof(uint64_t))};
    struct bank_transfer *plan = plan_transfers(n, &initial, seed);
    struct report r = {.transfers = n, .seed = seed, .window = window, .initial_total = balances_total(&initial)};
    bool ran = false;
    if (expected.of != NULL && plan != NULL) {
        memcpy(expected.of, initial.of, initial.count * sizeof(uint64_t));
        uint64_t t0 = arpc_now_ns();
        ran = run_transfers(c, plan, n, window, (int64_t)deadline_ms, progress_every, stop_at_progress, &expected,
                            &r.tally);
        r.seconds = (double)(arpc_now_ns() - t0) / 1e9;
    } else {
        fprintf(stderr, PROG ": out of memory for %" PRIu64 " transfers\n", n);
    }
    r.fetched = ran && fetch_balances(c, (int64_t)deadline_ms, &actual) == ARPC_OK;
    r.mismatched = r.fetched ? count_mismatches(&expected, &actual) : initial.count;
    r.expected_total = balances_total(&expected);
    r.actual_total = balances_total(&actual);
    r.reconnects = arpc_client_connections(c) - 1;
    print_report(&r);
    free(plan);
    free(initial.of);
    free(expected.of);
    free(actual.of);
    arpc_client_close(c);
    return r.fetched && r.mismatched == 0 && r.tally.by_class[UNKNOWN] == 0 ? 0 : 1;
}
