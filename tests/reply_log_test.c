/*
 * The reply log (core/reply_log.h): the record codec; every record type through close and
 * reopen; the replay rules against a reference model, across many compactions; torn tails cut
 * at every byte; flipped bits everywhere else; the directory lock; done callbacks exactly once
 * and in order under four appending threads for each policy; fsync policies and an idle
 * writer; kill -9; out of memory; a failing write.
 *
 * Every test works in its own directory under /tmp (mkdtemp), removed at the end, and ends
 * with nothing allocated through arpc's allocator.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "arpc/error.h"
#include "arpc/log.h"
#include "base/crc32c.h"
#include "base/le.h"
#include "core/reply_log.h"
#include "core/reply_log_format.h"
#include "core/reply_log_internal.h"
#include "support/server_proc.h"
#include "support/test_file.h"
#include "support/test_util.h"

/* ---- files and directories ---- */

struct tdir {
    char root[64];
    char log[96];
};

static void tdir_make(struct tdir *t)
{
    strcpy(t->root, "/tmp/arpc-log-test-XXXXXX");
    assert_non_null(mkdtemp(t->root));
    snprintf(t->log, sizeof(t->log), "%s/log", t->root); /* open creates it */
}

static void tdir_remove(struct tdir *t)
{
    server_proc_rmdir(t->log);
    assert_int_equal(0, rmdir(t->root));
}

/* The fixture of most tests: a fresh directory in *state, removed after the test, which must
 * also leave nothing allocated through arpc's allocator. */
static int dir_setup(void **state)
{
    struct tdir *t = malloc(sizeof(*t));
    tdir_make(t);
    *state = t;
    return 0;
}

static int dir_teardown(void **state)
{
    struct tdir *t = *state;
    tdir_remove(t);
    free(t);
    return test_alloc_check_no_leak(state);
}

#define dir_test(f) cmocka_unit_test_setup_teardown(f, dir_setup, dir_teardown)

static const char *seg_path(const struct tdir *t, uint64_t seg, char *buf, size_t n)
{
    snprintf(buf, n, "%s/%016llx.arpclog", t->log, (unsigned long long)seg);
    return buf;
}

/* Total size of the segment files, and how many there are. The writer may be compacting
 * meanwhile: a file gone between readdir and stat counts for nothing. */
static uint64_t segments_bytes(const struct tdir *t, int *count)
{
    DIR *d = opendir(t->log);
    assert_non_null(d);
    uint64_t total = 0;
    *count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strstr(e->d_name, ".arpclog") == NULL)
            continue;
        char p[512];
        struct stat st;
        snprintf(p, sizeof(p), "%s/%s", t->log, e->d_name);
        if (stat(p, &st) != 0) {
            assert_int_equal(ENOENT, errno);
            continue;
        }
        total += (uint64_t)st.st_size;
        (*count)++;
    }
    closedir(d);
    return total;
}

/* ---- log lines ---- */

static pthread_mutex_t lines_lock = PTHREAD_MUTEX_INITIALIZER;
static char lines[8192];
static int lines_count[ARPC_LOG_NONE];

static void capture_line(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)ctx;
    pthread_mutex_lock(&lines_lock);
    lines_count[level]++;
    size_t used = strlen(lines);
    snprintf(lines + used, sizeof(lines) - used, "%s\n", line);
    pthread_mutex_unlock(&lines_lock);
}

static void capture_start(void)
{
    pthread_mutex_lock(&lines_lock);
    lines[0] = '\0';
    memset(lines_count, 0, sizeof(lines_count));
    pthread_mutex_unlock(&lines_lock);
    arpc_set_logger(capture_line, NULL, ARPC_LOG_DEBUG);
}

static int captured(enum arpc_log_level level, const char *needle)
{
    pthread_mutex_lock(&lines_lock);
    int n = lines_count[level];
    bool found = needle == NULL || strstr(lines, needle) != NULL;
    pthread_mutex_unlock(&lines_lock);
    return found ? n : -1;
}

static void capture_stop(void) { arpc_set_logger(NULL, NULL, ARPC_LOG_INFO); }

/* ---- records ---- */

/* Deterministic bytes for a tag: lengths 0..96, content varying with the tag. */
static size_t tag_len(uint32_t tag) { return tag % 97; }

static void tag_fill(uint8_t *p, uint32_t tag)
{
    for (size_t i = 0; i < tag_len(tag); i++)
        p[i] = (uint8_t)(tag * 31u + i * 7u);
}

/* A record with its own reply and effect bytes, allocated with malloc (the test's memory). */
struct trec {
    struct arpc_log_record r; /* first: a done callback may free(rec) */
    uint32_t reply_tag, effect_tag;
    uint8_t reply[100];
    uint8_t effect[100];
};

static struct trec *trec_new(enum arpc_log_rtype type, uint64_t client, uint64_t seq, uint64_t ack,
                             uint32_t reply_tag, uint32_t effect_tag)
{
    struct trec *t = calloc(1, sizeof(*t));
    t->r.lr_type = type;
    t->r.lr_client_id = client;
    t->r.lr_seq = seq;
    t->r.lr_ack = ack;
    t->r.lr_status = -1;
    t->reply_tag = reply_tag;
    t->effect_tag = effect_tag;
    if (type == ARPC_LOG_REPLY) {
        tag_fill(t->reply, reply_tag);
        t->r.lr_reply = t->reply;
        t->r.lr_reply_len = tag_len(reply_tag);
    }
    if (type == ARPC_LOG_REPLY || type == ARPC_LOG_STATE) {
        tag_fill(t->effect, effect_tag);
        t->r.lr_effect = t->effect;
        t->r.lr_effect_len = tag_len(effect_tag);
    }
    return t;
}

/* Done callback: counts (and frees, when asked) every record handed back. */
struct sink {
    atomic_long calls;
    atomic_long not_ok;
    bool free_records;
};

static void sink_done(void *ctx, struct arpc_log_record *rec)
{
    struct sink *s = ctx;
    if (rec->lr_status != ARPC_OK)
        atomic_fetch_add(&s->not_ok, 1);
    if (s->free_records)
        free(rec); /* r is the first member of struct trec */
    atomic_fetch_add(&s->calls, 1);
    latch_add();
}

/* ---- what a replay delivered ---- */

struct blob {
    uint8_t *p;
    size_t len;
};

struct got_reply {
    uint64_t client, seq;
    struct blob reply;
};

struct got_ack {
    uint64_t client, ack;
};

struct got_gone {
    uint64_t client, floor, owner;
};

struct got_beyond {
    uint64_t client, high;
    uint64_t waiting[8];
    uint32_t n;
};

struct replayed {
    int phase; /* 1 state, 2 effects, 3 replies, 4 acks, 5 gone: callbacks come in this order */
    bool has_state;
    struct blob state;
    struct blob *effects;
    size_t neffects;
    struct got_reply *replies;
    size_t nreplies;
    struct got_ack *acks;
    size_t nacks;
    struct got_gone *gones; /* in the order replayed: oldest goodbye first */
    size_t ngones;
    struct got_gone *comebacks; /* floors of live clients that came back after a goodbye */
    size_t ncomebacks;
    struct got_beyond *beyonds; /* claims beyond the acks */
    size_t nbeyonds;
};

static struct blob blob_of(const void *p, size_t len)
{
    struct blob b = {malloc(len + 1), len};
    if (len > 0)
        memcpy(b.p, p, len);
    return b;
}

static void enter_phase(struct replayed *r, int phase)
{
    assert_true(r->phase <= phase);
    r->phase = phase;
}

static void on_state(void *ctx, const void *state, size_t len)
{
    struct replayed *r = ctx;
    enter_phase(r, 1);
    assert_false(r->has_state);
    r->has_state = true;
    r->state = blob_of(state, len);
}

static void on_effect(void *ctx, const void *effect, size_t len)
{
    struct replayed *r = ctx;
    enter_phase(r, 2);
    assert_true(len > 0);
    r->effects = realloc(r->effects, (r->neffects + 1) * sizeof(*r->effects));
    r->effects[r->neffects++] = blob_of(effect, len);
}

static void on_reply(void *ctx, uint64_t client, uint64_t seq, const void *reply, size_t len)
{
    struct replayed *r = ctx;
    enter_phase(r, 3);
    r->replies = realloc(r->replies, (r->nreplies + 1) * sizeof(*r->replies));
    r->replies[r->nreplies++] = (struct got_reply){client, seq, blob_of(reply, len)};
}

static void on_ack(void *ctx, uint64_t client, uint64_t ack)
{
    struct replayed *r = ctx;
    enter_phase(r, 4);
    r->acks = realloc(r->acks, (r->nacks + 1) * sizeof(*r->acks));
    r->acks[r->nacks++] = (struct got_ack){client, ack};
}

static int64_t find_ack(const struct replayed *r, uint64_t client);

static void on_gone(void *ctx, uint64_t client, uint64_t floor, uint64_t owner)
{
    struct replayed *r = ctx;
    enter_phase(r, 5);
    assert_true(floor > 0);
    if (find_ack(r, client) >= 0) { /* a live client: one that came back, which come first */
        assert_int_equal(0, r->ngones);
        assert_int_equal(0, owner);
        r->comebacks = realloc(r->comebacks, (r->ncomebacks + 1) * sizeof(*r->comebacks));
        r->comebacks[r->ncomebacks++] = (struct got_gone){client, floor, owner};
        return;
    }
    r->gones = realloc(r->gones, (r->ngones + 1) * sizeof(*r->gones));
    r->gones[r->ngones++] = (struct got_gone){client, floor, owner};
}

static void on_ack_beyond(void *ctx, uint64_t client, uint64_t high, const uint64_t *waiting, uint32_t n)
{
    struct replayed *r = ctx;
    assert_int_equal(4, r->phase); /* with the acks, after them: before any gone */
    assert_true(find_ack(r, client) >= 0);
    r->beyonds = realloc(r->beyonds, (r->nbeyonds + 1) * sizeof(*r->beyonds));
    struct got_beyond *b = &r->beyonds[r->nbeyonds++];
    *b = (struct got_beyond){client, high, {0}, n};
    for (uint32_t i = 0; i < n && i < 8; i++)
        b->waiting[i] = waiting[i];
}

static const struct arpc_log_replay_ops replay_ops = {on_state, on_effect, on_reply, on_ack, on_gone, on_ack_beyond};

static void replayed_free(struct replayed *r)
{
    free(r->state.p);
    for (size_t i = 0; i < r->neffects; i++)
        free(r->effects[i].p);
    for (size_t i = 0; i < r->nreplies; i++)
        free(r->replies[i].reply.p);
    free(r->effects);
    free(r->replies);
    free(r->acks);
    free(r->gones);
    free(r->comebacks);
    free(r->beyonds);
    memset(r, 0, sizeof(*r));
}

static const struct got_reply *find_reply(const struct replayed *r, uint64_t client, uint64_t seq)
{
    for (size_t i = 0; i < r->nreplies; i++)
        if (r->replies[i].client == client && r->replies[i].seq == seq)
            return &r->replies[i];
    return NULL;
}

/* The ack replayed for client, or -1 when the client was not replayed. */
static int64_t find_ack(const struct replayed *r, uint64_t client)
{
    for (size_t i = 0; i < r->nacks; i++)
        if (r->acks[i].client == client)
            return (int64_t)r->acks[i].ack;
    return -1;
}

static void assert_blob_tag(struct blob b, uint32_t tag)
{
    uint8_t want[100];
    tag_fill(want, tag);
    assert_int_equal(tag_len(tag), b.len);
    if (b.len > 0)
        assert_memory_equal(want, b.p, b.len);
}

/* What a replay should deliver: the state's tag (-1: none), the effects' tags in order, the
 * live replies, and every replayed client's ack. */
struct want_reply {
    uint64_t client, seq;
    uint32_t tag;
};

struct want_ack {
    uint64_t client, ack;
};

struct want_gone {
    uint64_t client, floor, owner; /* owner 0 unless said */
};

struct want {
    int64_t state;
    const uint32_t *effects;
    size_t neffects;
    const struct want_reply *replies;
    size_t nreplies;
    const struct want_ack *acks;
    size_t nacks;
    const struct want_gone *gones; /* in order, oldest goodbye first */
    size_t ngones;
    const struct want_gone *comebacks; /* in any order (clients come in no particular order) */
    size_t ncomebacks;
};

static void expect_replayed(const struct replayed *r, const struct want *w)
{
    assert_int_equal(w->state >= 0, r->has_state);
    if (w->state >= 0)
        assert_blob_tag(r->state, (uint32_t)w->state);
    assert_int_equal(w->neffects, r->neffects);
    for (size_t i = 0; i < w->neffects; i++)
        assert_blob_tag(r->effects[i], w->effects[i]);
    assert_int_equal(w->nreplies, r->nreplies);
    for (size_t i = 0; i < w->nreplies; i++) {
        const struct got_reply *g = find_reply(r, w->replies[i].client, w->replies[i].seq);
        assert_non_null(g);
        assert_blob_tag(g->reply, w->replies[i].tag);
    }
    assert_int_equal(w->nacks, r->nacks);
    for (size_t i = 0; i < w->nacks; i++)
        assert_int_equal((int64_t)w->acks[i].ack, find_ack(r, w->acks[i].client));
    assert_int_equal(w->ngones, r->ngones);
    for (size_t i = 0; i < w->ngones; i++) {
        assert_int_equal(w->gones[i].client, r->gones[i].client);
        assert_int_equal(w->gones[i].floor, r->gones[i].floor);
        assert_int_equal(w->gones[i].owner, r->gones[i].owner);
    }
    assert_int_equal(w->ncomebacks, r->ncomebacks);
    for (size_t i = 0; i < w->ncomebacks; i++) {
        size_t k = 0;
        while (k < r->ncomebacks && r->comebacks[k].client != w->comebacks[i].client)
            k++;
        assert_true(k < r->ncomebacks);
        assert_int_equal(w->comebacks[i].floor, r->comebacks[k].floor);
    }
}

/* ---- opening ---- */

static int try_open(struct arpc_reply_log **log, const char *dir, enum arpc_log_fsync policy, uint64_t compact,
                    struct replayed *r, struct sink *s, char *why, size_t whylen)
{
    struct arpc_reply_log_options o = {.dir = dir, .fsync = policy, .compact_bytes = compact};
    return arpc_reply_log_open(log, &o, r ? &replay_ops : NULL, r, sink_done, s, why, whylen);
}

static struct arpc_reply_log *open_ok(const char *dir, enum arpc_log_fsync policy, uint64_t compact,
                                      struct replayed *r, struct sink *s)
{
    struct arpc_reply_log *log = NULL;
    char why[512];
    int rc = try_open(&log, dir, policy, compact, r, s, why, sizeof(why));
    if (rc != ARPC_OK)
        print_message("open: %s\n", why);
    assert_int_equal(ARPC_OK, rc);
    return log;
}

/* Opens dir, collecting its replay in *r, and closes it again. */
static void replay_dir(const char *dir, struct replayed *r)
{
    struct sink s = {0};
    arpc_reply_log_close(open_ok(dir, ARPC_LOG_FSYNC_OFF, 0, r, &s));
}

/* Appends records and closes the log (which hands every record back); all must be OK. */
static void append_all_and_close(struct arpc_reply_log *log, struct trec **recs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        arpc_reply_log_append(log, &recs[i]->r);
    arpc_reply_log_close(log);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ARPC_OK, recs[i]->r.lr_status);
        free(recs[i]);
    }
}

/* ---- the codec ---- */

static void test_codec_round_trip_and_prefixes(void **state)
{
    (void)state;
    const uint8_t reply[] = "reply bytes", effect[] = "effect";
    const struct arpc_log_view views[] = {
        {.v_type = ARPC_LOG_HEADER, .v_flags = ARPC_LOG_FLAG_SNAPSHOT, .v_epoch = 0x1122334455667788u, .v_segment = 7},
        {.v_type = ARPC_LOG_REPLY, .v_client_id = 9, .v_seq = 10, .v_ack = 8, .v_reply = reply, .v_reply_len = 11,
         .v_data = effect, .v_data_len = 6},
        {.v_type = ARPC_LOG_REPLY, .v_client_id = 9, .v_seq = 11},
        {.v_type = ARPC_LOG_ACK, .v_client_id = 3, .v_ack = UINT64_MAX},
        {.v_type = ARPC_LOG_EXPIRE, .v_client_id = 4},
        {.v_type = ARPC_LOG_GOODBYE, .v_client_id = 5, .v_seq = UINT64_MAX - 1},
        {.v_type = ARPC_LOG_GOODBYE, .v_client_id = 6, .v_seq = 3, .v_owner = UINT64_MAX}, /* written OWNED */
        {.v_type = ARPC_LOG_STATE, .v_data = effect, .v_data_len = 6}, /* written sized */
        {.v_type = ARPC_LOG_STATE},
    };
    for (size_t i = 0; i < sizeof(views) / sizeof(views[0]); i++) {
        const struct arpc_log_view *w = &views[i];
        uint32_t size = arpc_log_record_size(w);
        uint8_t *buf = malloc(size); /* exactly the record: ASan catches any overread */
        assert_int_equal(size, arpc_log_encode(buf, w));
        struct arpc_log_view v;
        const char *what = NULL;
        assert_int_equal(ARPC_LOG_DECODE_OK, arpc_log_decode(buf, size, &v, &what));
        assert_int_equal(w->v_type, v.v_type);
        assert_int_equal(size, v.v_size);
        assert_int_equal(w->v_client_id, v.v_client_id);
        assert_int_equal(w->v_seq, v.v_seq);
        assert_int_equal(w->v_owner, v.v_owner);
        assert_int_equal(w->v_ack, v.v_ack);
        assert_int_equal(w->v_reply_len, v.v_reply_len);
        assert_int_equal(w->v_data_len, v.v_data_len);
        if (w->v_reply_len)
            assert_memory_equal(w->v_reply, v.v_reply, w->v_reply_len);
        if (w->v_data_len)
            assert_memory_equal(w->v_data, v.v_data, w->v_data_len);
        assert_int_equal(w->v_flags, v.v_flags);
        assert_int_equal(w->v_epoch, v.v_epoch);
        assert_int_equal(w->v_segment, v.v_segment);
        assert_int_equal(w->v_type != ARPC_LOG_HEADER, arpc_log_is_record(buf, size, NULL));
        if (w->v_type == ARPC_LOG_GOODBYE) /* without an owner as before, so older servers read it */
            assert_int_equal(w->v_owner != 0 ? ARPC_LOG_GOODBYE_OWNED : ARPC_LOG_GOODBYE, buf[8]);
        /* Every prefix is SHORT, never OK, and never read past its end. */
        for (uint32_t n = 0; n < size; n++) {
            uint8_t *prefix = malloc(n + 1);
            memcpy(prefix, buf, n);
            assert_int_equal(ARPC_LOG_DECODE_SHORT, arpc_log_decode(prefix, n, &v, &what));
            assert_false(arpc_log_is_record(prefix, n, NULL));
            free(prefix);
        }
        free(buf);
    }
}

static void test_codec_rejects(void **state)
{
    (void)state;
    struct arpc_log_view v;
    const char *what;
    /* An impossible length is judged from its 4 bytes alone. */
    uint8_t huge[4];
    le_st32(huge, ARPC_LOG_PAYLOAD_MAX + 1);
    assert_int_equal(ARPC_LOG_DECODE_DAMAGED, arpc_log_decode(huge, sizeof(huge), &v, &what));
    /* An intact record of an unknown type, and intact records of the wrong size. */
    uint8_t rec[ARPC_LOG_RECORD_HEAD + 24] = {0};
    const struct {
        uint8_t type;
        uint32_t plen;
    } bad[] = {{9, 0}, {0, 0}, {ARPC_LOG_ACK, 8}, {ARPC_LOG_EXPIRE, 16}, {ARPC_LOG_REPLY, 16}, {ARPC_LOG_HEADER, 16},
               {ARPC_LOG_ACK, 16} /* client 0 */, {ARPC_LOG_GOODBYE, 8}, {ARPC_LOG_GOODBYE, 24},
               {ARPC_LOG_GOODBYE, 16} /* client 0 */, {ARPC_LOG_GOODBYE_OWNED, 16},
               {ARPC_LOG_GOODBYE_OWNED, 24} /* client 0 */};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        le_st32(rec, bad[i].plen);
        rec[8] = bad[i].type;
        le_st32(rec + 4, arpc_crc32c(0, rec + 8, 1 + bad[i].plen));
        assert_int_equal(ARPC_LOG_DECODE_INVALID, arpc_log_decode(rec, ARPC_LOG_RECORD_HEAD + bad[i].plen, &v, &what));
        assert_false(arpc_log_is_record(rec, ARPC_LOG_RECORD_HEAD + bad[i].plen, NULL));
        rec[8] ^= 0x40; /* and damaged, the checksum speaks first */
        assert_int_equal(ARPC_LOG_DECODE_DAMAGED, arpc_log_decode(rec, ARPC_LOG_RECORD_HEAD + bad[i].plen, &v, &what));
    }
    /* An owned GOODBYE of owner 0 (a plain GOODBYE's). */
    memset(rec, 0, sizeof(rec));
    le_st32(rec, ARPC_LOG_GOODBYE_OWNED_PAYLOAD);
    rec[8] = ARPC_LOG_GOODBYE_OWNED;
    rec[ARPC_LOG_RECORD_HEAD] = 5; /* client 5, floor 0, owner 0 */
    le_st32(rec + 4, arpc_crc32c(0, rec + 8, 1 + ARPC_LOG_GOODBYE_OWNED_PAYLOAD));
    assert_int_equal(ARPC_LOG_DECODE_INVALID, arpc_log_decode(rec, sizeof(rec), &v, &what));
    rec[ARPC_LOG_RECORD_HEAD + 16] = 1; /* owner 1 */
    le_st32(rec + 4, arpc_crc32c(0, rec + 8, 1 + ARPC_LOG_GOODBYE_OWNED_PAYLOAD));
    assert_int_equal(ARPC_LOG_DECODE_OK, arpc_log_decode(rec, sizeof(rec), &v, &what));
    assert_int_equal(1, v.v_owner);
    /* REPLY lengths that do not add up. */
    uint8_t reply[ARPC_LOG_RECORD_HEAD + ARPC_LOG_REPLY_FIXED + 4] = {0};
    le_st32(reply, ARPC_LOG_REPLY_FIXED + 4);
    reply[8] = ARPC_LOG_REPLY;
    le_st32(reply + ARPC_LOG_RECORD_HEAD + 24, 3);
    le_st32(reply + ARPC_LOG_RECORD_HEAD + 28, 2);
    le_st32(reply + 4, arpc_crc32c(0, reply + 8, 1 + ARPC_LOG_REPLY_FIXED + 4));
    assert_int_equal(ARPC_LOG_DECODE_INVALID, arpc_log_decode(reply, sizeof(reply), &v, &what));

    /* A sized STATE whose state_len does not match its size (and one too short to hold it). */
    uint8_t st[ARPC_LOG_RECORD_HEAD + ARPC_LOG_STATE_FIXED + 3] = {0};
    for (uint32_t plen = 0; plen <= ARPC_LOG_STATE_FIXED + 3; plen += ARPC_LOG_STATE_FIXED + 3) {
        le_st32(st, plen);
        st[8] = ARPC_LOG_STATE_SIZED;
        if (plen > 0)
            le_st32(st + ARPC_LOG_RECORD_HEAD, 2);
        le_st32(st + 4, arpc_crc32c(0, st + 8, 1 + plen));
        assert_int_equal(ARPC_LOG_DECODE_INVALID, arpc_log_decode(st, ARPC_LOG_RECORD_HEAD + plen, &v, &what));
        uint64_t size;
        assert_int_equal(ARPC_LOG_HEAD_BAD, arpc_log_head_size(st, ARPC_LOG_RECORD_HEAD + plen, &size));
    }
    /* A STATE as written before it was sized (type 4, the state alone) still reads. */
    uint8_t old[ARPC_LOG_RECORD_HEAD + 5] = {0};
    le_st32(old, 5);
    old[8] = ARPC_LOG_STATE;
    memcpy(old + ARPC_LOG_RECORD_HEAD, "state", 5);
    le_st32(old + 4, arpc_crc32c(0, old + 8, 1 + 5));
    assert_int_equal(ARPC_LOG_DECODE_OK, arpc_log_decode(old, sizeof(old), &v, &what));
    assert_int_equal(ARPC_LOG_STATE, v.v_type);
    assert_int_equal(5, v.v_data_len);
    assert_memory_equal("state", v.v_data, 5);

    assert_false(arpc_log_payload_fits(ARPC_LOG_REPLY, ARPC_LOG_PAYLOAD_MAX, 0));
    assert_false(arpc_log_payload_fits(ARPC_LOG_STATE, 0, (size_t)ARPC_LOG_PAYLOAD_MAX - ARPC_LOG_STATE_FIXED + 1));
    assert_true(arpc_log_payload_fits(ARPC_LOG_STATE, 0, ARPC_LOG_PAYLOAD_MAX - ARPC_LOG_STATE_FIXED));
    assert_false(arpc_log_payload_fits(10, 0, 0));
}

static void test_segment_names(void **state)
{
    (void)state;
    char name[ARPC_LOG_NAME_MAX];
    uint64_t seg;
    bool tmp;
    arpc_log_segment_name(name, 0x1a2bu, false);
    assert_string_equal("0000000000001a2b.arpclog", name);
    assert_true(arpc_log_segment_parse(name, &seg, &tmp));
    assert_int_equal(0x1a2b, seg);
    assert_false(tmp);
    arpc_log_segment_name(name, UINT64_MAX, true);
    assert_string_equal("ffffffffffffffff.arpclog.tmp", name);
    assert_true(arpc_log_segment_parse(name, &seg, &tmp));
    assert_int_equal(UINT64_MAX, seg);
    assert_true(tmp);
    const char *bad[] = {"LOCK", "", "0000000000001a2b.arpclo", "0000000000001A2B.arpclog", "000000000001a2b.arpclog",
                         "0000000000001a2b.arpclog.tmp2", "0000000000001a2b.arpclogx", "00000000000001a2b.arpclog"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(arpc_log_segment_parse(bad[i], &seg, &tmp));
}

/* ---- round trips and replay rules ---- */

static void test_every_type_round_trip(void **state)
{
    struct tdir *t = *state;
    struct sink s = {0};
    struct arpc_reply_log *log = open_ok(t->log, ARPC_LOG_FSYNC_ALWAYS, 0, NULL, &s);
    struct trec *recs[] = {
        trec_new(ARPC_LOG_STATE, 0, 0, 0, 0, 50),
        trec_new(ARPC_LOG_REPLY, 1, 1, 0, 10, 11),
        trec_new(ARPC_LOG_REPLY, 1, 2, 0, 12, 0), /* no effect */
        trec_new(ARPC_LOG_REPLY, 2, 7, 3, 13, 14),
        trec_new(ARPC_LOG_ACK, 3, 0, 5, 0, 0),
        trec_new(ARPC_LOG_REPLY, 4, 1, 0, 15, 0),
        trec_new(ARPC_LOG_EXPIRE, 4, 0, 0, 0, 0),
        trec_new(ARPC_LOG_REPLY, 1, 3, 0, 0, 0), /* an empty reply is a reply */
    };
    append_all_and_close(log, recs, sizeof(recs) / sizeof(recs[0]));
    assert_int_equal(8, atomic_load(&s.calls));

    struct replayed r = {0};
    replay_dir(t->log, &r);
    expect_replayed(&r, &(struct want){.state = 50,
                                       .effects = (uint32_t[]){11, 14},
                                       .neffects = 2,
                                       .replies = (struct want_reply[]){{1, 1, 10}, {1, 2, 12}, {2, 7, 13}, {1, 3, 0}},
                                       .nreplies = 4,
                                       .acks = (struct want_ack[]){{1, 0}, {2, 3}, {3, 5}}, /* 4 expired */
                                       .nacks = 3});
    replayed_free(&r);
}

static void test_replay_rules(void **state)
{
    struct tdir *t = *state;
    struct sink s = {0};
    struct arpc_reply_log *log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s);
    struct trec *recs[] = {
        trec_new(ARPC_LOG_REPLY, 1, 1, 0, 1, 21), /* effect before the STATE: covered by it */
        trec_new(ARPC_LOG_STATE, 0, 0, 0, 0, 30),
        trec_new(ARPC_LOG_REPLY, 1, 2, 0, 2, 22),
        trec_new(ARPC_LOG_STATE, 0, 0, 0, 0, 31), /* replaces the first; covers effect 22 */
        trec_new(ARPC_LOG_REPLY, 1, 3, 0, 3, 23),
        trec_new(ARPC_LOG_REPLY, 1, 4, 2, 4, 0),  /* its ack 2 drops seq 1 and 2 */
        trec_new(ARPC_LOG_REPLY, 2, 1, 0, 5, 0),  /* another client: untouched */
        trec_new(ARPC_LOG_ACK, 1, 0, 10, 0, 0),   /* drops 3 and 4 */
        trec_new(ARPC_LOG_ACK, 1, 0, 5, 0, 0),    /* never lowers */
        trec_new(ARPC_LOG_REPLY, 1, 9, 3, 6, 24), /* seq <= ack: not live, but its effect counts */
        trec_new(ARPC_LOG_REPLY, 1, 11, 0, 7, 0),
        trec_new(ARPC_LOG_REPLY, 1, 11, 0, 8, 0), /* logged again: the later one wins */
        trec_new(ARPC_LOG_REPLY, 0, 5, 0, 9, 25), /* client 0: an effect only */
        trec_new(ARPC_LOG_REPLY, 3, 1, 0, 10, 0),
        trec_new(ARPC_LOG_ACK, 3, 0, 4, 0, 0),
        trec_new(ARPC_LOG_EXPIRE, 3, 0, 0, 0, 0),
        trec_new(ARPC_LOG_REPLY, 3, 2, 0, 11, 0), /* back after expiring: a fresh client */
        trec_new(ARPC_LOG_EXPIRE, 5, 0, 0, 0, 0), /* a client never seen */
    };
    append_all_and_close(log, recs, sizeof(recs) / sizeof(recs[0]));

    struct replayed r = {0};
    replay_dir(t->log, &r);
    expect_replayed(&r, &(struct want){.state = 31,
                                       .effects = (uint32_t[]){23, 24, 25},
                                       .neffects = 3,
                                       .replies = (struct want_reply[]){{1, 11, 8}, {2, 1, 5}, {3, 2, 11}},
                                       .nreplies = 3,
                                       .acks = (struct want_ack[]){{1, 10}, {2, 0}, {3, 0}},
                                       .nacks = 3});
    replayed_free(&r);
}

/* A goodbye forgets the client as an expiry does, and keeps its floor across a reopen: the
 * record's, or the client's highest live seq if higher; a second goodbye keeps its place with
 * the higher floor; a client heard from again leaves the gone, its ack starting at its floor;
 * a floor of 0 keeps nothing. */
static void test_goodbye_rules(void **state)
{
    struct tdir *t = *state;
    struct sink s = {0};
    struct arpc_reply_log *log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s);
    struct trec *recs[] = {
        trec_new(ARPC_LOG_REPLY, 1, 1, 0, 1, 0),
        trec_new(ARPC_LOG_REPLY, 1, 2, 0, 2, 0),
        trec_new(ARPC_LOG_GOODBYE, 1, 2, 0, 0, 0), /* its replies go, floor 2 stays */
        trec_new(ARPC_LOG_REPLY, 2, 5, 0, 3, 0),
        trec_new(ARPC_LOG_GOODBYE, 2, 3, 0, 0, 0), /* below its live seq 5: floor 5 */
        trec_new(ARPC_LOG_GOODBYE, 3, 7, 0, 0, 0),
        trec_new(ARPC_LOG_REPLY, 3, 8, 0, 4, 0),   /* back: ack 7, seq 8 live */
        trec_new(ARPC_LOG_GOODBYE, 4, 4, 0, 0, 0),
        trec_new(ARPC_LOG_ACK, 4, 0, 2, 0, 0),     /* back by an ack: 4, not 2 */
        trec_new(ARPC_LOG_GOODBYE, 1, 1, 0, 0, 0), /* again, lower: 2, in its first place */
        trec_new(ARPC_LOG_GOODBYE, 5, 0, 0, 0, 0), /* no floor: as EXPIRE */
        trec_new(ARPC_LOG_GOODBYE, 6, 9, 0, 0, 0),
    };
    append_all_and_close(log, recs, sizeof(recs) / sizeof(recs[0]));

    struct replayed r = {0};
    replay_dir(t->log, &r);
    expect_replayed(&r, &(struct want){.state = -1,
                                       .replies = (struct want_reply[]){{3, 8, 4}},
                                       .nreplies = 1,
                                       .acks = (struct want_ack[]){{3, 7}, {4, 4}},
                                       .nacks = 2,
                                       .gones = (struct want_gone[]){{1, 2, 0}, {2, 5, 0}, {6, 9, 0}},
                                       .ngones = 3,
                                       /* back after their goodbyes: the floors, for their expiry */
                                       .comebacks = (struct want_gone[]){{3, 7, 0}, {4, 4, 0}},
                                       .ncomebacks = 2});
    replayed_free(&r);
}

/* An ACK_BEYOND record (what a client acknowledged beyond its ack) drops the replies it covers,
 * adds up with the client's earlier ones (an older, smaller claim takes nothing back), keeps
 * a later REPLY it covers from being live (a call the client gave up on, logged for its
 * effect), goes once the ack passes it, and survives a reopen and a compaction, which writes
 * it after the client's ACK: replaying the snapshot gives the same replies and claims. */
static struct arpc_reply_log_stats stats_of(struct arpc_reply_log *log);

static void ack_beyond_expect(const struct replayed *r)
{
    expect_replayed(r, &(struct want){.state = -1,
                                      .replies = (struct want_reply[]){{1, 4, 4}, {1, 9, 9}},
                                      .nreplies = 2,
                                      .acks = (struct want_ack[]){{1, 0}, {2, 3}, {3, 2}},
                                      .nacks = 3});
    assert_int_equal(2, r->nbeyonds);
    for (size_t i = 0; i < r->nbeyonds; i++) {
        const struct got_beyond *b = &r->beyonds[i];
        if (b->client == 1) {
            assert_true(b->high == 10 && b->n == 3);
            assert_true(b->waiting[0] == 1 && b->waiting[1] == 4 && b->waiting[2] == 9);
        } else {
            assert_true(b->client == 2 && b->high == 5 && b->n == 1 && b->waiting[0] == 5);
        }
    }
}

static struct trec *beyond_rec(uint64_t client, uint64_t ack, uint64_t high, const uint64_t *waiting, uint32_t n)
{
    struct trec *t = trec_new(ARPC_LOG_ACK_BEYOND, client, high, ack, 0, 0);
    for (uint32_t i = 0; i < n; i++)
        for (int b = 0; b < 8; b++)
            t->effect[i * 8 + b] = (uint8_t)(waiting[i] >> (8 * b));
    t->r.lr_effect = t->effect;
    t->r.lr_effect_len = n * 8;
    return t;
}

static void test_ack_beyond_rules(void **state)
{
    struct tdir *t = *state;
    struct sink s = {0};
    struct arpc_reply_log *log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s);
    struct trec *recs[] = {
        trec_new(ARPC_LOG_REPLY, 1, 2, 0, 2, 0),
        trec_new(ARPC_LOG_REPLY, 1, 3, 0, 3, 0),
        trec_new(ARPC_LOG_REPLY, 1, 4, 0, 4, 0),
        trec_new(ARPC_LOG_REPLY, 1, 5, 0, 5, 0),
        trec_new(ARPC_LOG_REPLY, 1, 6, 0, 6, 0),
        beyond_rec(1, 0, 5, (uint64_t[]){1, 4}, 2),     /* drops 2, 3, 5 */
        trec_new(ARPC_LOG_REPLY, 1, 7, 0, 7, 0),
        beyond_rec(1, 0, 3, (uint64_t[]){1, 2, 3}, 3),  /* older and smaller: takes nothing back */
        beyond_rec(1, 0, 10, (uint64_t[]){1, 4, 9}, 3), /* drops 6, 7 */
        trec_new(ARPC_LOG_REPLY, 1, 8, 0, 8, 0),        /* covered: not live */
        trec_new(ARPC_LOG_REPLY, 1, 9, 0, 9, 0),        /* waited for: live */
        beyond_rec(2, 3, 5, (uint64_t[]){5}, 1),        /* a client made by its claim, ack 3 */
        trec_new(ARPC_LOG_REPLY, 3, 1, 0, 10, 0),
        beyond_rec(3, 0, 2, (uint64_t[]){2}, 1),
        trec_new(ARPC_LOG_ACK, 3, 0, 2, 0, 0),          /* passes the claim: it goes */
    };
    append_all_and_close(log, recs, sizeof(recs) / sizeof(recs[0]));
    struct replayed r = {0};
    replay_dir(t->log, &r);
    ack_beyond_expect(&r);
    replayed_free(&r);

    /* The codec judges the list whole, as an ACK frame's decoder does: in order, in (ack, high]. */
    uint8_t buf[ARPC_LOG_RECORD_HEAD + ARPC_LOG_ACK_BEYOND_FIXED + 16], list[16];
    struct arpc_log_view v = {.v_type = ARPC_LOG_ACK_BEYOND, .v_client_id = 1, .v_ack = 2, .v_seq = 5,
                              .v_data = list, .v_data_len = 16}, got;
    const char *what;
    uint64_t pairs[][2] = {{4, 3}, {3, 6}, {2, 4}, {4, 4}};
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        le_st64(list, pairs[i][0]);
        le_st64(list + 8, pairs[i][1]);
        assert_int_equal(ARPC_LOG_DECODE_INVALID, arpc_log_decode(buf, arpc_log_encode(buf, &v), &got, &what));
    }
    le_st64(list, 3);
    le_st64(list + 8, 5);
    assert_int_equal(ARPC_LOG_DECODE_OK, arpc_log_decode(buf, arpc_log_encode(buf, &v), &got, &what));
    assert_true(got.v_client_id == 1 && got.v_ack == 2 && got.v_seq == 5 && got.v_data_len == 16);
    le_st32(buf + ARPC_LOG_RECORD_HEAD + 24, 3); /* a count its length contradicts */
    uint64_t size;
    assert_int_equal(ARPC_LOG_HEAD_BAD, arpc_log_head_size(buf, sizeof(buf), &size));

    /* A compaction (started by a record that changes nothing) keeps all of it. */
    latch_reset();
    struct sink freeing = {.free_records = true};
    log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 64, NULL, &freeing);
    arpc_reply_log_append(log, &trec_new(ARPC_LOG_ACK, 1, 0, 0, 0, 0)->r);
    assert_true(latch_wait(1, TEST_WAIT_MS));
    assert_true(WAIT_UNTIL(stats_of(log).compactions != 0));
    arpc_reply_log_close(log);
    replay_dir(t->log, &r);
    ack_beyond_expect(&r);
    replayed_free(&r);
}

static void test_epoch(void **state)
{
    (void)state;
    struct tdir a, b;
    tdir_make(&a);
    tdir_make(&b);
    struct sink s = {0};
    struct arpc_reply_log *log = open_ok(a.log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s);
    uint64_t ea = arpc_reply_log_epoch(log);
    arpc_reply_log_close(log);
    log = open_ok(a.log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s);
    assert_int_equal(ea, arpc_reply_log_epoch(log));
    arpc_reply_log_close(log);
    log = open_ok(b.log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s);
    uint64_t eb = arpc_reply_log_epoch(log);
    arpc_reply_log_close(log);
    assert_true(ea != 0 && eb != 0);
    assert_true(ea != eb);
    tdir_remove(&a);
    tdir_remove(&b);
}

/* ---- the replay rules against a reference model, with compactions ---- */

#define MODEL_CLIENTS 6 /* ids 1..5 (0 unused) */
#define MODEL_MAX 4096

struct model {
    bool exists[MODEL_CLIENTS];
    uint64_t gone[MODEL_CLIENTS]; /* a goodbye's floor (0: none), for clients not live */
    uint64_t comeback[MODEL_CLIENTS]; /* that floor, for a live client that came back after it */
    uint64_t gone_order[MODEL_CLIENTS]; /* the gone clients, oldest goodbye first */
    size_t ngone;
    uint64_t ack[MODEL_CLIENTS];
    uint64_t next_seq[MODEL_CLIENTS];
    struct want_reply live[MODEL_MAX];
    size_t nlive;
    uint32_t effects[MODEL_MAX];
    size_t neffects;
    bool has_state;
    uint32_t state;
    uint64_t cl_high[MODEL_CLIENTS];
    uint64_t cl_wait[MODEL_CLIENTS][8];
    uint32_t cl_n[MODEL_CLIENTS];
};

static bool model_covered(const struct model *m, uint64_t c, uint64_t seq)
{
    if (seq <= m->ack[c])
        return true;
    if (seq > m->cl_high[c])
        return false;
    for (uint32_t i = 0; i < m->cl_n[c]; i++)
        if (m->cl_wait[c][i] == seq)
            return false;
    return true;
}

static void model_claim_clear(struct model *m, uint64_t c)
{
    m->cl_high[c] = 0;
    m->cl_n[c] = 0;
}

static void model_raise(struct model *m, uint64_t c, uint64_t ack)
{
    if (ack <= m->ack[c])
        return;
    m->ack[c] = ack;
    if (ack >= m->cl_high[c]) {
        model_claim_clear(m, c);
    } else {
        uint32_t k = 0;
        for (uint32_t i = 0; i < m->cl_n[c]; i++)
            if (m->cl_wait[c][i] > ack)
                m->cl_wait[c][k++] = m->cl_wait[c][i];
        m->cl_n[c] = k;
    }
    size_t k = 0;
    for (size_t i = 0; i < m->nlive; i++)
        if (!(m->live[i].client == c && m->live[i].seq <= ack))
            m->live[k++] = m->live[i];
    m->nlive = k;
}

/* A client heard from (REPLY, ACK): one that said goodbye comes back with its floor as ack. */
static void model_hear(struct model *m, uint64_t c)
{
    if (m->exists[c])
        return;
    m->exists[c] = true;
    if (m->gone[c] == 0)
        return;
    m->ack[c] = m->gone[c];
    m->comeback[c] = m->gone[c];
    m->gone[c] = 0;
    size_t k = 0;
    for (size_t i = 0; i < m->ngone; i++)
        if (m->gone_order[i] != c)
            m->gone_order[k++] = m->gone_order[i];
    m->ngone = k;
}

static void model_goodbye(struct model *m, uint64_t c, uint64_t floor)
{
    if (m->exists[c] && m->ack[c] > floor)
        floor = m->ack[c];
    if (m->exists[c] && m->cl_high[c] > floor)
        floor = m->cl_high[c]; /* the claim's high: seqs it used */
    for (size_t i = 0; i < m->nlive; i++)
        if (m->live[i].client == c && m->live[i].seq > floor)
            floor = m->live[i].seq;
    model_raise(m, c, UINT64_MAX);
    model_claim_clear(m, c);
    m->exists[c] = false;
    m->ack[c] = 0;
    m->comeback[c] = 0;
    if (floor == 0)
        return;
    if (m->gone[c] == 0)
        m->gone_order[m->ngone++] = c; /* a second goodbye keeps its place */
    if (floor > m->gone[c])
        m->gone[c] = floor;
}

static void model_apply(struct model *m, const struct arpc_log_record *rec, uint32_t reply_tag, uint32_t effect_tag)
{
    uint64_t c = rec->lr_client_id;
    switch (rec->lr_type) {
    case ARPC_LOG_REPLY:
        if (rec->lr_effect_len > 0)
            m->effects[m->neffects++] = effect_tag;
        if (c == 0)
            return;
        model_hear(m, c);
        model_raise(m, c, rec->lr_ack);
        if (model_covered(m, c, rec->lr_seq))
            return;
        for (size_t i = 0; i < m->nlive; i++)
            if (m->live[i].client == c && m->live[i].seq == rec->lr_seq) {
                m->live[i].tag = reply_tag;
                return;
            }
        m->live[m->nlive].client = c;
        m->live[m->nlive].seq = rec->lr_seq;
        m->live[m->nlive++].tag = reply_tag;
        return;
    case ARPC_LOG_ACK:
        model_hear(m, c);
        model_raise(m, c, rec->lr_ack);
        return;
    case ARPC_LOG_ACK_BEYOND: {
        model_hear(m, c);
        const uint8_t *w = rec->lr_effect;
        uint32_t n = (uint32_t)(rec->lr_effect_len / 8);
        uint64_t high = rec->lr_seq, nw[8];
        uint32_t k = 0;
        /* the brute-force union: a seq in (ack', max high] waits iff neither covers it */
        uint64_t ack2 = rec->lr_ack > m->ack[c] ? rec->lr_ack : m->ack[c];
        uint64_t top = high > m->cl_high[c] ? high : m->cl_high[c];
        if (high > ack2) {
            for (uint64_t s2 = ack2 + 1; s2 <= top; s2++) {
                bool new_cov = s2 <= high;
                for (uint32_t i = 0; i < n && new_cov; i++)
                    if (le_ld64(w + (size_t)i * 8) == s2)
                        new_cov = false;
                bool old_cov = model_covered(m, c, s2);
                if (!new_cov && !old_cov) {
                    assert_true(k < 8);
                    nw[k++] = s2;
                }
            }
            m->cl_high[c] = top;
            m->cl_n[c] = k;
            memcpy(m->cl_wait[c], nw, k * 8);
        }
        model_raise(m, c, rec->lr_ack);
        size_t kk = 0;
        for (size_t i = 0; i < m->nlive; i++)
            if (!(m->live[i].client == c && model_covered(m, c, m->live[i].seq)))
                m->live[kk++] = m->live[i];
        m->nlive = kk;
        return;
    }
    case ARPC_LOG_EXPIRE:
        model_claim_clear(m, c);
        model_raise(m, c, UINT64_MAX);
        m->exists[c] = false;
        m->ack[c] = 0;
        m->comeback[c] = 0;
        return;
    case ARPC_LOG_GOODBYE:
        model_goodbye(m, c, rec->lr_seq);
        return;
    default:
        m->has_state = true;
        m->state = effect_tag;
        m->neffects = 0;
        return;
    }
}

static void model_check(const struct model *m, const struct replayed *r)
{
    struct want_ack acks[MODEL_CLIENTS];
    size_t nacks = 0;
    for (uint64_t c = 1; c < MODEL_CLIENTS; c++)
        if (m->exists[c])
            acks[nacks++] = (struct want_ack){c, m->ack[c]};
    struct want_gone gones[MODEL_CLIENTS];
    for (size_t i = 0; i < m->ngone; i++)
        gones[i] = (struct want_gone){m->gone_order[i], m->gone[m->gone_order[i]], 0};
    struct want_gone comebacks[MODEL_CLIENTS];
    size_t ncomebacks = 0;
    for (uint64_t c = 1; c < MODEL_CLIENTS; c++)
        if (m->exists[c] && m->comeback[c] != 0)
            comebacks[ncomebacks++] = (struct want_gone){c, m->comeback[c], 0};
    struct want w = {m->has_state ? (int64_t)m->state : -1, m->effects, m->neffects, m->live, m->nlive, acks, nacks,
                     gones, m->ngone, comebacks, ncomebacks};
    expect_replayed(r, &w);
    size_t nb = 0;
    for (uint64_t c = 1; c < MODEL_CLIENTS; c++) {
        if (!m->exists[c] || m->cl_high[c] <= m->ack[c])
            continue;
        nb++;
        const struct got_beyond *b = NULL;
        for (size_t i = 0; i < r->nbeyonds; i++)
            if (r->beyonds[i].client == c)
                b = &r->beyonds[i];
        if (b == NULL || b->high != m->cl_high[c] || b->n != m->cl_n[c] ||
            memcmp(b->waiting, m->cl_wait[c], m->cl_n[c] * 8) != 0)
            fail_msg("claim of client %llu: model high %llu n %u, replayed %llu n %u", (unsigned long long)c,
                     (unsigned long long)m->cl_high[c], m->cl_n[c], b ? (unsigned long long)b->high : 0ULL,
                     b ? b->n : 0u);
    }
    assert_int_equal(nb, r->nbeyonds);
}

/* A random record: mostly replies near each client's frontier, with acks that move on. */
static struct trec *random_record(struct model *m, uint64_t *rng, uint32_t *tags)
{
    uint32_t dice = (uint32_t)(rng_next(rng) % 100);
    uint64_t c = 1 + rng_next(rng) % (MODEL_CLIENTS - 1);
    uint32_t rt = (*tags)++, et = (*tags)++;
    if (dice < 2)
        return trec_new(ARPC_LOG_STATE, 0, 0, 0, 0, et);
    if (dice < 3)
        return trec_new(ARPC_LOG_EXPIRE, c, 0, 0, 0, 0);
    if (dice < 5) /* the highest seq it used, or (a record older than its calls) below it */
        return trec_new(ARPC_LOG_GOODBYE, c, m->next_seq[c] - (dice == 4 && m->next_seq[c] > 0), 0, 0, 0);
    if (dice < 9)
        return trec_new(ARPC_LOG_ACK, c, 0, m->ack[c] + rng_next(rng) % 4, 0, 0);
    if (dice < 10)
        return trec_new(ARPC_LOG_REPLY, 0, 0, 0, 0, 1 + et % 96); /* effect only */
    if (dice < 14) { /* a claim beyond the ack: the model's ack or a little off it */
        uint64_t a = m->ack[c] + rng_next(rng) % 3;
        if (a > 0 && rng_next(rng) % 4 == 0)
            a--;
        uint64_t high = a + rng_next(rng) % 12;
        uint64_t w[8];
        uint32_t n = 0;
        for (uint64_t s2 = a + 1; s2 <= high && n < 8; s2++)
            if (rng_next(rng) % 3 == 0)
                w[n++] = s2;
        return beyond_rec(c, a, high, w, n);
    }
    /* seq: mostly new, sometimes a repeat or one below the ack */
    uint64_t seq = ++m->next_seq[c];
    if (dice < 20 && seq > 3)
        seq -= rng_next(rng) % 4;
    uint64_t ack = seq > 6 && dice % 2 ? seq - 1 - rng_next(rng) % 6 : m->ack[c];
    if (dice % 3 == 0)
        et = 0; /* no effect */
    return trec_new(ARPC_LOG_REPLY, c, seq, ack, rt, et);
}

static void test_random_against_model_with_compaction(void **state)
{
    struct tdir *t = *state;
    struct model *m = calloc(1, sizeof(*m));
    uint64_t rng = 12345;
    uint32_t tags = 1;
    struct sink s = {.free_records = true};
    uint64_t compactions = 0;
    enum { ROUNDS = 12, PER_ROUND = 300, PACE = 10 };
    for (int round = 0; round < ROUNDS; round++) {
        struct replayed r = {0};
        enum arpc_log_fsync policy = (enum arpc_log_fsync)(round % 3);
        latch_reset();
        struct arpc_reply_log *log = open_ok(t->log, policy, 2048, &r, &s);
        model_check(m, &r);
        replayed_free(&r);
        for (int i = 0; i < PER_ROUND; i++) {
            struct trec *rec = random_record(m, &rng, &tags);
            model_apply(m, &rec->r, rec->reply_tag, rec->effect_tag);
            arpc_reply_log_append(log, &rec->r);
            if (i % PACE == PACE - 1) /* separate batches, so compaction gets its chances */
                assert_true(latch_wait((unsigned)i + 1, TEST_WAIT_MS));
        }
        struct arpc_reply_log_stats st;
        assert_true(latch_wait(PER_ROUND, TEST_WAIT_MS));
        arpc_reply_log_stats(log, &st);
        compactions += st.compactions;
        arpc_reply_log_close(log);
        assert_int_equal(0, atomic_load(&s.not_ok));
    }
    assert_true(compactions >= 10);
    int count;
    segments_bytes(t, &count);
    assert_int_equal(1, count);
    free(m);
}

/* ---- torn tails and corruption ---- */

/* A segment of four records and a fifth: its bytes, their length, where the write of the
 * fifth begins (the SYNCED record a write after open starts with), where the fifth is, where
 * the SYNCED record the second close wrote is (the last), the file's path. */
struct five {
    uint8_t *bytes;
    size_t len, last_at, reply_at, claim_at;
    char path[256];
};

static void five_records(const struct tdir *t, struct five *f)
{
    struct sink s = {0};
    struct arpc_reply_log *log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s);
    struct trec *first[] = {
        trec_new(ARPC_LOG_STATE, 0, 0, 0, 0, 40),
        trec_new(ARPC_LOG_REPLY, 1, 1, 0, 41, 42),
        trec_new(ARPC_LOG_ACK, 2, 0, 7, 0, 0),
        trec_new(ARPC_LOG_REPLY, 1, 2, 0, 43, 44),
    };
    append_all_and_close(log, first, 4);
    f->last_at = (size_t)test_file_size(seg_path(t, 1, f->path, sizeof(f->path)));
    log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s);
    struct trec *last = trec_new(ARPC_LOG_REPLY, 3, 9, 0, 95, 45);
    append_all_and_close(log, &last, 1);
    f->bytes = test_file_read(f->path, &f->len);
    f->reply_at = f->last_at + ARPC_LOG_SYNCED_SIZE;
    f->claim_at = f->len - ARPC_LOG_SYNCED_SIZE;
    assert_int_equal(ARPC_LOG_SYNCED, f->bytes[f->last_at + 8]);
    assert_int_equal(ARPC_LOG_REPLY, f->bytes[f->reply_at + 8]);
    assert_int_equal(ARPC_LOG_SYNCED, f->bytes[f->claim_at + 8]);
}

/* What the first four of five_records() replay as. */
static void check_first_four(const struct replayed *r)
{
    assert_true(r->has_state);
    assert_blob_tag(r->state, 40);
    assert_true(r->neffects >= 2);
    assert_blob_tag(r->effects[0], 42);
    assert_blob_tag(r->effects[1], 44);
    assert_blob_tag(find_reply(r, 1, 1)->reply, 41);
    assert_blob_tag(find_reply(r, 1, 2)->reply, 43);
    assert_int_equal(7, find_ack(r, 2));
}

/* A claim torn at every byte of its record: the log opens, and the claim is there only once its
 * record is whole (the reply it drops is still live before). (Helper 227's test.) */
static void test_torn_ack_beyond_at_every_byte(void **state)
{
    struct tdir *t = *state;
    struct sink s = {0};
    char path[256];
    struct arpc_reply_log *log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s);
    struct trec *first[] = {trec_new(ARPC_LOG_REPLY, 1, 1, 0, 41, 42), trec_new(ARPC_LOG_REPLY, 1, 3, 0, 43, 0)};
    append_all_and_close(log, first, 2);
    size_t last_at = (size_t)test_file_size(seg_path(t, 1, path, sizeof(path)));
    log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s);
    struct trec *b = beyond_rec(1, 0, 6, (uint64_t[]){1, 2, 5}, 3);
    append_all_and_close(log, &b, 1);
    size_t len;
    uint8_t *bytes = test_file_read(path, &len);
    capture_start();
    for (size_t cut = last_at; cut <= len; cut++) {
        test_file_write(path, bytes, cut);
        struct replayed r = {0};
        log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 0, &r, &s);
        assert_non_null(find_reply(&r, 1, 1));
        bool whole = cut >= len - ARPC_LOG_SYNCED_SIZE;
        if (whole) {
            assert_null(find_reply(&r, 1, 3));
            assert_int_equal(1, r.nbeyonds);
        } else {
            assert_non_null(find_reply(&r, 1, 3));
            assert_int_equal(0, r.nbeyonds);
        }
        replayed_free(&r);
        arpc_reply_log_close(log);
        char torn[300];
        snprintf(torn, sizeof(torn), "%s.torn", path);
        unlink(torn);
    }
    capture_stop();
    free(bytes);
}

static void test_torn_tail_at_every_byte(void **state)
{
    struct tdir *t = *state;
    struct five f;
    five_records(t, &f);
    struct sink s = {0};
    capture_start();
    int torn_tails = 0;
    for (size_t cut = f.last_at; cut < f.claim_at; cut++) { /* the write of the fifth, cut anywhere */
        test_file_write(f.path, f.bytes, cut);
        struct replayed r = {0};
        struct arpc_reply_log *log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 0, &r, &s);
        check_first_four(&r);
        assert_int_equal(2, r.neffects);
        assert_null(find_reply(&r, 3, 9));
        size_t good = cut < f.reply_at ? f.last_at : f.reply_at;
        assert_int_equal((off_t)good, test_file_size(f.path)); /* truncated to the last good record */
        if (cut > good) { /* and the bytes cut are kept beside it, for an operator */
            char torn[300];
            size_t torn_len;
            snprintf(torn, sizeof(torn), "%s.torn", f.path);
            uint8_t *kept = test_file_read(torn, &torn_len);
            assert_int_equal(cut - good, torn_len);
            assert_memory_equal(f.bytes + good, kept, torn_len);
            torn_tails++;
            free(kept);
            assert_int_equal(0, unlink(torn));
        }
        replayed_free(&r);
        /* The log goes on from there, and what it appends next survives a reopen. */
        struct trec *next = trec_new(ARPC_LOG_REPLY, 4, 1, 0, 60, 61);
        append_all_and_close(log, &next, 1);
        replay_dir(t->log, &r);
        check_first_four(&r);
        assert_int_equal(3, r.neffects);
        assert_blob_tag(r.effects[2], 61);
        assert_blob_tag(find_reply(&r, 4, 1)->reply, 60);
        replayed_free(&r);
    }
    /* One warning per torn tail (a cut at a record's first byte left none). */
    assert_int_equal((int)(f.claim_at - f.last_at - 2), torn_tails);
    assert_int_equal(torn_tails, captured(ARPC_LOG_WARN, "dropped a torn record at offset"));
    capture_stop();
    /* The SYNCED record close wrote, cut anywhere: only it is dropped, the fifth is kept. */
    for (size_t cut = f.claim_at + 1; cut < f.len; cut++) {
        test_file_write(f.path, f.bytes, cut);
        struct replayed r = {0};
        struct arpc_reply_log *log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 0, &r, &s);
        check_first_four(&r);
        assert_blob_tag(find_reply(&r, 3, 9)->reply, 95);
        assert_int_equal((off_t)f.claim_at, test_file_size(f.path));
        replayed_free(&r);
        arpc_reply_log_close(log);
        char torn[300];
        snprintf(torn, sizeof(torn), "%s.torn", f.path);
        assert_int_equal(0, unlink(torn));
    }
    free(f.bytes);
}

/* Opening must fail with ARPC_EPROTO naming the file and offset, and change nothing. */
static void expect_corrupt(const struct tdir *t, const char *path, const uint8_t *bytes, size_t len, size_t at)
{
    test_file_write(path, bytes, len);
    struct arpc_reply_log *log = NULL;
    struct replayed r = {0};
    struct sink s = {0};
    char why[512], want[300];
    int rc = try_open(&log, t->log, ARPC_LOG_FSYNC_OFF, 0, &r, &s, why, sizeof(why));
    if (rc != ARPC_EPROTO)
        print_message("byte %zu: %s\n", at, rc == ARPC_OK ? "opened" : why);
    assert_int_equal(ARPC_EPROTO, rc);
    snprintf(want, sizeof(want), "reply log %s/0000000000000001.arpclog is corrupt at offset %zu: ", t->log, at);
    if (strstr(why, want) == NULL)
        print_message("want \"%s\" in \"%s\"\n", want, why);
    assert_non_null(strstr(why, want));
    /* A second way out may follow inside the parentheses. */
    assert_non_null(strstr(why, "; refusing to start (move the directory away to start empty"));
    assert_int_equal(0, r.phase); /* no callback ran */
    size_t after_len;
    uint8_t *after = test_file_read(path, &after_len);
    assert_int_equal(len, after_len);
    assert_memory_equal(bytes, after, len);
    free(after);
}

static void test_flipped_bit_anywhere_but_the_tail(void **state)
{
    struct tdir *t = *state;
    struct five f;
    five_records(t, &f);
    uint8_t *copy = malloc(f.len);
    /* Every byte before the last record: the header (offset 0) and four records. */
    size_t record_at = 0, next_at = ARPC_LOG_HEADER_SIZE, positions = 0;
    for (size_t i = 0; i < f.last_at; i++) {
        if (i == next_at) {
            record_at = i;
            next_at = i + ARPC_LOG_RECORD_HEAD + le_ld32(f.bytes + i);
        }
        memcpy(copy, f.bytes, f.len);
        copy[i] ^= (uint8_t)(1u << (i % 8));
        expect_corrupt(t, f.path, copy, f.len, record_at);
        positions++;
    }
    assert_true(positions >= 200);
    free(copy);
    free(f.bytes);
}

static void test_tail_that_is_not_torn(void **state)
{
    struct tdir *t = *state;
    struct five f;
    five_records(t, &f);
    /* An intact record of a type this version does not know, even at the very end. */
    uint8_t *more = malloc(f.len + ARPC_LOG_HEAD_MAX);
    memcpy(more, f.bytes, f.len);
    uint8_t *rec = more + f.len;
    le_st32(rec, 3);
    rec[8] = 77;
    memcpy(rec + 9, "abc", 3);
    le_st32(rec + 4, arpc_crc32c(0, rec + 8, 4));
    expect_corrupt(t, f.path, more, f.len + ARPC_LOG_RECORD_HEAD + 3, f.len);
    /* A damaged last record with a good one after it: corruption, not a torn tail. */
    struct arpc_log_view v = {.v_type = ARPC_LOG_EXPIRE, .v_client_id = 1};
    memcpy(more, f.bytes, f.len);
    more[f.reply_at + 20] ^= 0x10;
    size_t n = f.len + arpc_log_encode(more + f.len, &v);
    expect_corrupt(t, f.path, more, n, f.reply_at);
    free(more);

    /* Zeros where the tail should be (what some file systems leave after a crash): torn. */
    uint8_t *zeros = calloc(1, f.len + 4096);
    memcpy(zeros, f.bytes, f.len);
    test_file_write(f.path, zeros, f.len + 4096);
    capture_start();
    struct replayed r = {0};
    replay_dir(t->log, &r);
    assert_int_equal(1, captured(ARPC_LOG_WARN, "dropped a torn record"));
    capture_stop();
    check_first_four(&r);
    assert_blob_tag(find_reply(&r, 3, 9)->reply, 95);
    assert_int_equal((off_t)f.len, test_file_size(f.path));
    replayed_free(&r);
    free(zeros);
    free(f.bytes);
}

/* ---- the lock ---- */

static void test_lock(void **state)
{
    struct tdir *t = *state;
    struct sink s = {0};
    struct arpc_reply_log *log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s);
    struct arpc_reply_log *second = NULL;
    char why[512], want[300];
    assert_int_equal(ARPC_EADDRINUSE, try_open(&second, t->log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s, why, sizeof(why)));
    assert_null(second);
    snprintf(want, sizeof(want), "reply log %s is in use by another server (pid %ld)", t->log, (long)getpid());
    assert_string_equal(want, why);

    /* Another process is refused too. */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        struct arpc_reply_log *other = NULL;
        char cwhy[512];
        int rc = try_open(&other, t->log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s, cwhy, sizeof(cwhy));
        _exit(rc == ARPC_EADDRINUSE && strstr(cwhy, want) != NULL ? 0 : 1);
    }
    int status;
    assert_int_equal(child, waitpid(child, &status, 0));
    assert_true(WIFEXITED(status));
    assert_int_equal(0, WEXITSTATUS(status));

    /* LOCK removed (taken for a stale pid file): still refused, the directory itself being
     * locked (a trial ran two servers on one log that way, losing answered calls). */
    char lock[1024];
    snprintf(lock, sizeof(lock), "%s/LOCK", t->log);
    assert_int_equal(0, unlink(lock));
    assert_int_equal(ARPC_EADDRINUSE, try_open(&second, t->log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s, why, sizeof(why)));
    assert_null(second);
    assert_non_null(strstr(why, "is in use by another server (pid unknown)"));

    arpc_reply_log_close(log);
    second = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s); /* free again once closed */
    arpc_reply_log_close(second);
}

/* ---- hand-back: exactly once, in order, from four threads ---- */

#define PRODUCERS 4
#define PER_PRODUCER 12500

struct producer {
    struct arpc_reply_log *p_log;
    struct arpc_log_record *p_recs;
    uint64_t p_id;
    pthread_t p_thread;
    uint64_t p_last_done; /* the writer thread's, read after close */
};

static const uint8_t reply64[64] = "a 64-byte reply, the size of a small encoded REPLY frame.......";

static void *producer_main(void *arg)
{
    struct producer *p = arg;
    for (uint64_t i = 0; i < PER_PRODUCER; i++) {
        struct arpc_log_record *rec = &p->p_recs[i];
        *rec = (struct arpc_log_record){.lr_type = ARPC_LOG_REPLY, .lr_client_id = p->p_id, .lr_seq = i + 1,
                                        .lr_ack = i, .lr_reply = reply64, .lr_reply_len = sizeof(reply64),
                                        .lr_status = -1, .lr_owner = p};
        arpc_reply_log_append(p->p_log, rec);
    }
    return NULL;
}

static atomic_long order_calls;

static void order_done(void *ctx, struct arpc_log_record *rec)
{
    (void)ctx;
    struct producer *p = rec->lr_owner;
    CHECK(rec->lr_status == ARPC_OK);
    CHECK(rec->lr_seq == p->p_last_done + 1); /* each producer's records in its order, once */
    p->p_last_done = rec->lr_seq;
    atomic_fetch_add(&order_calls, 1);
}

static void run_producers(const struct tdir *t, enum arpc_log_fsync policy)
{
    struct arpc_reply_log_options o = {.dir = t->log, .fsync = policy};
    struct arpc_reply_log *log = NULL;
    assert_int_equal(ARPC_OK, arpc_reply_log_open(&log, &o, NULL, NULL, order_done, NULL, NULL, 0));
    struct producer p[PRODUCERS];
    atomic_store(&order_calls, 0);
    atomic_store(&bad_line, 0);
    for (int i = 0; i < PRODUCERS; i++) {
        p[i] = (struct producer){.p_log = log, .p_id = (uint64_t)i + 1};
        p[i].p_recs = malloc(PER_PRODUCER * sizeof(*p[i].p_recs));
        assert_int_equal(0, pthread_create(&p[i].p_thread, NULL, producer_main, &p[i]));
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(p[i].p_thread, NULL);
    struct arpc_reply_log_stats st;
    arpc_reply_log_close(log);
    assert_int_equal(0, atomic_load(&bad_line));
    assert_int_equal(PRODUCERS * PER_PRODUCER, atomic_load(&order_calls));
    for (int i = 0; i < PRODUCERS; i++) {
        assert_int_equal(PER_PRODUCER, p[i].p_last_done);
        free(p[i].p_recs);
    }
    (void)st;
}

static void test_done_once_in_order_each_policy(void **state)
{
    (void)state;
    const enum arpc_log_fsync policies[] = {ARPC_LOG_FSYNC_ALWAYS, ARPC_LOG_FSYNC_BATCH, ARPC_LOG_FSYNC_OFF};
    for (size_t k = 0; k < 3; k++) {
        struct tdir t;
        tdir_make(&t);
        run_producers(&t, policies[k]);
        /* Durable across close and reopen, whatever the policy. */
        struct replayed r = {0};
        replay_dir(t.log, &r);
        assert_int_equal(PRODUCERS, r.nreplies);
        assert_int_equal(PRODUCERS, r.nacks);
        for (uint64_t c = 1; c <= PRODUCERS; c++) {
            assert_int_equal(PER_PRODUCER - 1, find_ack(&r, c));
            assert_memory_equal(reply64, find_reply(&r, c, PER_PRODUCER)->reply.p, sizeof(reply64));
        }
        replayed_free(&r);
        tdir_remove(&t);
    }
}

/* ---- policies and the idle writer ---- */

static struct arpc_reply_log_stats stats_of(struct arpc_reply_log *log)
{
    struct arpc_reply_log_stats st;
    arpc_reply_log_stats(log, &st);
    return st;
}

static bool wait_fsyncs(struct arpc_reply_log *log, uint64_t n)
{
    return WAIT_UNTIL(stats_of(log).fsyncs >= n);
}

/* CPU time the writer thread has used, in microseconds. */
static int64_t writer_cpu_us(struct arpc_reply_log *log)
{
    clockid_t cid;
    assert_int_equal(0, pthread_getcpuclockid(log->lg_thread, &cid));
    struct timespec ts;
    assert_int_equal(0, clock_gettime(cid, &ts));
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static struct arpc_reply_log *open_policy(const struct tdir *t, enum arpc_log_fsync policy, uint32_t batch_ms,
                                          uint32_t batch_records, struct sink *s)
{
    struct arpc_reply_log_options o = {.dir = t->log, .fsync = policy, .batch_ms = batch_ms,
                                       .batch_records = batch_records};
    struct arpc_reply_log *log = NULL;
    assert_int_equal(ARPC_OK, arpc_reply_log_open(&log, &o, NULL, NULL, sink_done, s, NULL, 0));
    return log;
}

static void test_policies_sync_when_they_say(void **state)
{
    struct tdir *t = *state;
    struct sink s = {.free_records = true};

    /* ALWAYS: a record is handed back after the fdatasync that covers it. */
    latch_reset();
    struct arpc_reply_log *log = open_policy(t, ARPC_LOG_FSYNC_ALWAYS, 0, 0, &s);
    arpc_reply_log_append(log, &trec_new(ARPC_LOG_REPLY, 1, 1, 0, 1, 2)->r);
    assert_true(latch_wait(1, TEST_WAIT_MS));
    assert_int_equal(1, stats_of(log).fsyncs);
    arpc_reply_log_close(log);

    /* BATCH by time: written and handed back first, synced batch_ms later. */
    latch_reset();
    log = open_policy(t, ARPC_LOG_FSYNC_BATCH, 50, 1000000, &s);
    int64_t t0 = now_ms();
    arpc_reply_log_append(log, &trec_new(ARPC_LOG_REPLY, 1, 2, 0, 1, 2)->r);
    assert_true(latch_wait(1, TEST_WAIT_MS));
    assert_int_equal(1, stats_of(log).records);
    assert_true(wait_fsyncs(log, 1));
    assert_true(now_ms() - t0 >= 45);
    /* Once synced, an idle writer sleeps: no CPU to speak of. */
    int64_t cpu0 = writer_cpu_us(log);
    sleep_ms(300); /* the window watched: the subject, not a wait */
    int64_t idle_us = writer_cpu_us(log) - cpu0;
    print_message("idle writer: %lld us of CPU in 300 ms\n", (long long)idle_us);
    assert_true(idle_us < 5000);
    assert_int_equal(1, stats_of(log).fsyncs);
    arpc_reply_log_close(log);

    /* BATCH by count: batch_records records trigger a sync long before batch_ms. */
    latch_reset();
    log = open_policy(t, ARPC_LOG_FSYNC_BATCH, 60000, 8, &s);
    for (uint64_t i = 0; i < 8; i++)
        arpc_reply_log_append(log, &trec_new(ARPC_LOG_REPLY, 1, 3 + i, 0, 1, 2)->r);
    assert_true(wait_fsyncs(log, 1));
    arpc_reply_log_close(log);

    /* OFF: never synced while open. */
    latch_reset();
    log = open_policy(t, ARPC_LOG_FSYNC_OFF, 1, 1, &s);
    for (uint64_t i = 0; i < 10; i++)
        arpc_reply_log_append(log, &trec_new(ARPC_LOG_REPLY, 1, 20 + i, 0, 1, 2)->r);
    assert_true(latch_wait(10, TEST_WAIT_MS));
    sleep_ms(30); /* only lets a wrong sync show: the right outcome needs none */
    assert_int_equal(0, stats_of(log).fsyncs);
    assert_int_equal(10, stats_of(log).records);
    arpc_reply_log_close(log);
    assert_int_equal(0, atomic_load(&s.not_ok));

    /* Everything above is there. */
    struct replayed r = {0};
    replay_dir(t->log, &r);
    assert_int_equal(20, r.nreplies);
    replayed_free(&r);
}

/* ---- kill -9 ---- */

static void test_kill9_keeps_what_was_handed_back(void **state)
{
    (void)state;
    const enum arpc_log_fsync policies[] = {ARPC_LOG_FSYNC_ALWAYS, ARPC_LOG_FSYNC_BATCH, ARPC_LOG_FSYNC_OFF};
    enum { N = 200 };
    for (size_t k = 0; k < 3; k++) {
        struct tdir t;
        tdir_make(&t);
        pid_t child = fork();
        assert_true(child >= 0);
        if (child == 0) {
            struct sink s = {.free_records = true};
            latch_reset();
            struct arpc_reply_log *log = open_policy(&t, policies[k], 60000, 1000000, &s);
            for (uint64_t i = 1; i <= N; i++)
                arpc_reply_log_append(log, &trec_new(ARPC_LOG_REPLY, 1, i, 0, (uint32_t)i, 0)->r);
            if (!latch_wait(N, TEST_WAIT_MS) || atomic_load(&s.not_ok) != 0)
                _exit(1);
            raise(SIGKILL); /* no close: what was handed back must already be in the file */
            _exit(2);
        }
        int status;
        assert_int_equal(child, waitpid(child, &status, 0));
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        struct replayed r = {0};
        replay_dir(t.log, &r);
        assert_int_equal(N, r.nreplies);
        for (uint64_t i = 1; i <= N; i++)
            assert_blob_tag(find_reply(&r, 1, i)->reply, (uint32_t)i);
        replayed_free(&r);
        tdir_remove(&t);
    }
}

/* ---- compaction ---- */

static void test_compaction_keeps_directory_bounded(void **state)
{
    struct tdir *t = *state;
    struct sink s = {.free_records = true};
    enum { CLIENTS = 8, TOTAL = 25000, WINDOW = 4, PACE = 50, COMPACT = 32 * 1024 };
    latch_reset();
    struct arpc_reply_log *log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, COMPACT, NULL, &s);
    uint64_t seq[CLIENTS + 1] = {0};
    uint64_t most = 0, live_most = 0;
    uint32_t state_tag = 0, effects_since = 0;
    for (unsigned i = 1; i <= TOTAL; i++) {
        uint64_t c = 1 + i % CLIENTS;
        seq[c]++;
        uint64_t ack = seq[c] > WINDOW ? seq[c] - WINDOW : 0;
        struct trec *rec;
        if (i % 4000 == 0) {
            rec = trec_new(ARPC_LOG_STATE, 0, 0, 0, 0, state_tag = i % 97 ? i : i + 1);
            effects_since = 0;
        } else {
            uint32_t et = i % 10 == 0 ? 1 + i % 96 : 0; /* every tenth call has an effect */
            effects_since += et != 0;
            rec = trec_new(ARPC_LOG_REPLY, c, seq[c], ack, 1 + i % 96, et);
        }
        arpc_reply_log_append(log, &rec->r);
        if (i % PACE == 0) {
            assert_true(latch_wait(i, TEST_WAIT_MS));
            int count;
            uint64_t bytes = segments_bytes(t, &count);
            uint64_t live = stats_of(log).live_bytes;
            most = bytes > most ? bytes : most;
            live_most = live > live_most ? live : live_most;
        }
    }
    struct arpc_reply_log_stats st = stats_of(log);
    arpc_reply_log_close(log);
    print_message("%llu records, %llu compactions; directory at most %llu bytes, live at most %llu, "
                  "compact_bytes %u\n",
                  (unsigned long long)st.records, (unsigned long long)st.compactions, (unsigned long long)most,
                  (unsigned long long)live_most, COMPACT);
    assert_true(st.compactions >= 10);
    /* At most: a segment at its threshold (compact_bytes, or twice the live size) plus the
     * batch that passed it, and the snapshot being written beside it. */
    uint64_t threshold = COMPACT > 2 * live_most ? COMPACT : 2 * live_most;
    assert_true(most <= threshold + PACE * 300 + live_most);
    int count;
    segments_bytes(t, &count);
    assert_int_equal(1, count);

    struct replayed r = {0};
    replay_dir(t->log, &r);
    assert_true(r.has_state);
    assert_blob_tag(r.state, state_tag);
    assert_int_equal(effects_since, r.neffects);
    assert_int_equal(CLIENTS * WINDOW, r.nreplies);
    assert_int_equal(CLIENTS, r.nacks);
    replayed_free(&r);
}

/* Replays dir and checks it delivers what *a holds. */
static void expect_replay_same(const char *dir, const struct replayed *a)
{
    struct replayed got = {0}, *b = &got;
    replay_dir(dir, b);
    assert_int_equal(a->has_state, b->has_state);
    assert_int_equal(a->state.len, b->state.len);
    assert_int_equal(a->neffects, b->neffects);
    for (size_t i = 0; i < a->neffects; i++) {
        assert_int_equal(a->effects[i].len, b->effects[i].len);
        assert_memory_equal(a->effects[i].p, b->effects[i].p, a->effects[i].len);
    }
    assert_int_equal(a->nreplies, b->nreplies);
    for (size_t i = 0; i < a->nreplies; i++) {
        const struct got_reply *g = find_reply(b, a->replies[i].client, a->replies[i].seq);
        assert_non_null(g);
        assert_int_equal(a->replies[i].reply.len, g->reply.len);
        if (g->reply.len)
            assert_memory_equal(a->replies[i].reply.p, g->reply.p, g->reply.len);
    }
    assert_int_equal(a->nacks, b->nacks);
    for (size_t i = 0; i < a->nacks; i++)
        assert_int_equal(a->acks[i].ack, find_ack(b, a->acks[i].client));
    assert_int_equal(a->ngones, b->ngones);
    for (size_t i = 0; i < a->ngones; i++) {
        assert_int_equal(a->gones[i].client, b->gones[i].client);
        assert_int_equal(a->gones[i].floor, b->gones[i].floor);
    }
    replayed_free(&got);
}

/* Recovery after a compaction gives what recovery before it gave; superseded segments and a
 * compaction's leftover are removed at open. */
static void test_compaction_same_state_and_superseded_segments(void **state)
{
    struct tdir *t = *state;
    struct sink s = {.free_records = true};
    uint64_t rng = 99;
    uint32_t tags = 1;
    struct model *m = calloc(1, sizeof(*m));
    struct arpc_reply_log *log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 1ull << 40, NULL, &s);
    for (int i = 0; i < 2000; i++) {
        struct trec *rec = random_record(m, &rng, &tags);
        model_apply(m, &rec->r, rec->reply_tag, rec->effect_tag);
        arpc_reply_log_append(log, &rec->r);
    }
    arpc_reply_log_close(log);
    char path1[256], path2[256];
    size_t old_len;
    uint8_t *old = test_file_read(seg_path(t, 1, path1, sizeof(path1)), &old_len);

    struct replayed before = {0}, after = {0};
    latch_reset();
    log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 1024, &before, &s);
    model_check(m, &before);
    /* A record that changes nothing (a known client's ack, no higher) starts the compaction. */
    uint64_t known = 1;
    while (!m->exists[known])
        known++;
    arpc_reply_log_append(log, &trec_new(ARPC_LOG_ACK, known, 0, 0, 0, 0)->r);
    assert_true(latch_wait(1, TEST_WAIT_MS));
    assert_true(WAIT_UNTIL(stats_of(log).compactions != 0)); /* it runs after the record is handed back */
    struct arpc_reply_log_stats st = stats_of(log);
    assert_int_equal(1, st.compactions);
    assert_true(st.segment_bytes < (uint64_t)old_len);
    arpc_reply_log_close(log);
    assert_int_equal(-1, access(path1, F_OK)); /* superseded, removed */

    expect_replay_same(t->log, &before);
    replay_dir(t->log, &after);
    model_check(m, &after);
    replayed_free(&after);

    /* An older segment that reappears, and a compaction's leftover: both removed at open. */
    test_file_write(path1, old, old_len);
    char tmp[300];
    snprintf(tmp, sizeof(tmp), "%s/0000000000000003.arpclog.tmp", t->log);
    test_file_write(tmp, old, 100);
    expect_replay_same(t->log, &before);
    assert_int_equal(-1, access(path1, F_OK));
    assert_int_equal(-1, access(tmp, F_OK));
    assert_int_equal(0, access(seg_path(t, 2, path2, sizeof(path2)), F_OK));
    replayed_free(&before);
    free(old);
    free(m);
}

/* The newest ARPC_RC_GONE_MAX floors are kept, oldest first, through a reopen and through a
 * compaction, which writes them into its snapshot (before, the floors were never logged: a
 * restart let a late copy of a goodbye'd client's call run again). */
static void test_goodbyes_bounded_and_compacted(void **state)
{
    struct tdir *t = *state;
    struct sink s = {.free_records = true};
    enum { EXTRA = 100, BACK = 4000, DEAD = 3000, DEAD_ID = 1000000 };
    latch_reset();
    struct arpc_reply_log *log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 1ull << 40, NULL, &s);
    for (uint64_t id = 1; id <= ARPC_RC_GONE_MAX + EXTRA; id++)
        arpc_reply_log_append(log, &trec_new(ARPC_LOG_GOODBYE, id, id * 2, 0, 0, 0)->r);
    arpc_reply_log_append(log, &trec_new(ARPC_LOG_REPLY, BACK, 3 * BACK, 0, 5, 0)->r); /* back */
    /* Dead weight, so the segment is well above twice what a snapshot keeps: it compacts. */
    for (uint64_t seq = 1; seq <= DEAD; seq++)
        arpc_reply_log_append(log, &trec_new(ARPC_LOG_REPLY, DEAD_ID, seq, 0, 96, 0)->r);
    arpc_reply_log_append(log, &trec_new(ARPC_LOG_EXPIRE, DEAD_ID, 0, 0, 0, 0)->r);
    arpc_reply_log_close(log);
    size_t n = ARPC_RC_GONE_MAX - 1;
    struct want_gone *gones = malloc(n * sizeof(*gones));
    size_t k = 0;
    for (uint64_t id = EXTRA + 1; id <= ARPC_RC_GONE_MAX + EXTRA; id++)
        if (id != BACK)
            gones[k++] = (struct want_gone){id, id * 2, 0};
    struct want w = {.state = -1,
                     .replies = (struct want_reply[]){{BACK, 3 * BACK, 5}},
                     .nreplies = 1,
                     .acks = (struct want_ack[]){{BACK, 2 * BACK}},
                     .nacks = 1,
                     .gones = gones,
                     .ngones = n,
                     .comebacks = (struct want_gone[]){{BACK, 2 * BACK, 0}},
                     .ncomebacks = 1};
    struct replayed r = {0};
    log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 1, &r, &s);
    expect_replayed(&r, &w);
    replayed_free(&r);
    /* A record that changes nothing starts the compaction. */
    arpc_reply_log_append(log, &trec_new(ARPC_LOG_ACK, BACK, 0, 0, 0, 0)->r);
    assert_true(latch_wait(ARPC_RC_GONE_MAX + EXTRA + DEAD + 3, TEST_WAIT_MS));
    assert_true(WAIT_UNTIL(stats_of(log).compactions != 0)); /* it runs after the record is handed back */
    assert_int_equal(1, stats_of(log).compactions);
    arpc_reply_log_close(log);
    int count;
    segments_bytes(t, &count);
    assert_int_equal(1, count); /* the snapshot alone: the floors are in it */
    replay_dir(t->log, &r);
    expect_replayed(&r, &w);
    replayed_free(&r);
    free(gones);
}

/* A goodbye is held against its client's identity (owner) through a reopen and a compaction,
 * as the reply cache holds it: one identity's goodbyes under made-up client ids, logged
 * before a restart, drop only its own floors, never another's. Before, the record had no
 * owner and a restart brought back the newest 4,096 whoever said them (an attacker's
 * goodbyes pushed identity 100's floor out, and a late copy of its call ran again). */
static struct trec *goodbye_of(uint64_t client, uint64_t floor, uint64_t owner)
{
    struct trec *t = trec_new(ARPC_LOG_GOODBYE, client, floor, 0, 0, 0);
    t->r.lr_identity = owner;
    return t;
}

static void test_goodbye_owners_kept_across_restart(void **state)
{
    struct tdir *t = *state;
    struct sink s = {.free_records = true};
    enum { FLOOD = 2 * ARPC_RC_GONE_MAX, FLOOD_ID = 1000, DEAD = 3000, DEAD_ID = 1000000 };
    latch_reset();
    struct arpc_reply_log *log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 1ull << 40, NULL, &s);
    arpc_reply_log_append(log, &goodbye_of(1, 5, 100)->r);
    arpc_reply_log_append(log, &goodbye_of(2, 6, 0)->r); /* a client without an identity */
    for (uint64_t id = FLOOD_ID; id < FLOOD_ID + FLOOD; id++)
        arpc_reply_log_append(log, &goodbye_of(id, 1, 200)->r);
    /* Dead weight, so that a reopen with a small compaction size compacts. */
    for (uint64_t seq = 1; seq <= DEAD; seq++)
        arpc_reply_log_append(log, &trec_new(ARPC_LOG_REPLY, DEAD_ID, seq, 0, 96, 0)->r);
    arpc_reply_log_append(log, &trec_new(ARPC_LOG_EXPIRE, DEAD_ID, 0, 0, 0, 0)->r);
    arpc_reply_log_close(log);
    size_t n = ARPC_RC_GONE_MAX;
    struct want_gone *gones = malloc(n * sizeof(*gones));
    gones[0] = (struct want_gone){1, 5, 100};
    gones[1] = (struct want_gone){2, 6, 0};
    for (size_t k = 2; k < n; k++) /* identity 200's newest */
        gones[k] = (struct want_gone){FLOOD_ID + FLOOD - (n - k), 1, 200};
    struct want w = {.state = -1, .gones = gones, .ngones = n};
    struct replayed r = {0};
    log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 1, &r, &s);
    expect_replayed(&r, &w);
    replayed_free(&r);
    arpc_reply_log_append(log, &trec_new(ARPC_LOG_ACK, 3, 0, 1, 0, 0)->r); /* starts the compaction */
    assert_true(latch_wait(FLOOD + DEAD + 4, TEST_WAIT_MS));
    assert_true(WAIT_UNTIL(stats_of(log).compactions != 0));
    arpc_reply_log_close(log);
    int count;
    segments_bytes(t, &count);
    assert_int_equal(1, count); /* the snapshot alone: floors and owners are in it */
    w.acks = (struct want_ack[]){{3, 1}};
    w.nacks = 1;
    replay_dir(t->log, &r);
    expect_replayed(&r, &w);
    replayed_free(&r);
    free(gones);
}

/* A client that said goodbye and came back (a late call above its floor) is replayed live,
 * with its floor after the acks, through a reopen and a compaction (whose snapshot writes the
 * goodbye and the ack that brings it back first), so that a restarted server keeps the floor
 * at the client's expiry. Its expiry is then a goodbye again: the client is among the gone. */
static void test_comeback_floor_kept_across_restart(void **state)
{
    struct tdir *t = *state;
    struct sink s = {.free_records = true};
    enum { DEAD = 3000, DEAD_ID = 1000000 };
    latch_reset();
    struct arpc_reply_log *log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 1ull << 40, NULL, &s);
    for (uint64_t seq = 1; seq <= 3; seq++)
        arpc_reply_log_append(log, &trec_new(ARPC_LOG_REPLY, 1, seq, 0, 10 + (uint32_t)seq, 0)->r);
    arpc_reply_log_append(log, &goodbye_of(1, 3, 100)->r);
    arpc_reply_log_append(log, &trec_new(ARPC_LOG_REPLY, 1, 4, 0, 14, 0)->r); /* the late call: back */
    arpc_reply_log_append(log, &goodbye_of(2, 7, 0)->r);                   /* another, gone for good */
    for (uint64_t seq = 1; seq <= DEAD; seq++) /* dead weight, for the compaction */
        arpc_reply_log_append(log, &trec_new(ARPC_LOG_REPLY, DEAD_ID, seq, 0, 96, 0)->r);
    arpc_reply_log_append(log, &trec_new(ARPC_LOG_EXPIRE, DEAD_ID, 0, 0, 0, 0)->r);
    arpc_reply_log_close(log);
    struct want w = {.state = -1,
                     .replies = (struct want_reply[]){{1, 4, 14}},
                     .nreplies = 1,
                     .acks = (struct want_ack[]){{1, 3}},
                     .nacks = 1,
                     .gones = (struct want_gone[]){{2, 7, 0}},
                     .ngones = 1,
                     .comebacks = (struct want_gone[]){{1, 3, 0}},
                     .ncomebacks = 1};
    struct replayed r = {0};
    log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 1, &r, &s);
    expect_replayed(&r, &w);
    replayed_free(&r);
    arpc_reply_log_append(log, &trec_new(ARPC_LOG_ACK, 3, 0, 1, 0, 0)->r); /* starts the compaction */
    assert_true(latch_wait(DEAD + 7, TEST_WAIT_MS));
    assert_true(WAIT_UNTIL(stats_of(log).compactions != 0));
    arpc_reply_log_close(log);
    int count;
    segments_bytes(t, &count);
    assert_int_equal(1, count); /* the snapshot alone */
    w.acks = (struct want_ack[]){{1, 3}, {3, 1}};
    w.nacks = 2;
    replay_dir(t->log, &r);
    expect_replayed(&r, &w);
    replayed_free(&r);
    /* Its expiry on the restarted server: a goodbye with its highest seq. */
    log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 1ull << 40, NULL, &s);
    arpc_reply_log_append(log, &goodbye_of(1, 4, 100)->r);
    arpc_reply_log_close(log);
    w.replies = NULL;
    w.nreplies = 0;
    w.acks = (struct want_ack[]){{3, 1}};
    w.nacks = 1;
    w.gones = (struct want_gone[]){{2, 7, 0}, {1, 4, 100}};
    w.ngones = 2;
    w.comebacks = NULL;
    w.ncomebacks = 0;
    replay_dir(t->log, &r);
    expect_replayed(&r, &w);
    replayed_free(&r);
}

/* Appends a hand-made segment: header (not a snapshot) and the records in views. */
static void write_segment(const struct tdir *t, uint64_t seg, uint64_t epoch, const struct arpc_log_view *views,
                          size_t n)
{
    uint8_t *buf = malloc(ARPC_LOG_HEADER_SIZE + n * 256);
    struct arpc_log_view h = {.v_type = ARPC_LOG_HEADER, .v_epoch = epoch, .v_segment = seg};
    size_t len = arpc_log_encode(buf, &h);
    for (size_t i = 0; i < n; i++)
        len += arpc_log_encode(buf + len, &views[i]);
    char path[256];
    test_file_write(seg_path(t, seg, path, sizeof(path)), buf, len);
    free(buf);
}

/* Segments after the newest snapshot are replayed in order, appended to (the newest), folded
 * into the next snapshot by compaction; a torn tail anywhere but in the newest is corruption,
 * and so is a segment from another directory. */
static void test_segments_after_the_snapshot(void **state)
{
    struct tdir *t = *state;
    struct sink s = {.free_records = true};
    struct arpc_reply_log *log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s);
    uint64_t epoch = arpc_reply_log_epoch(log);
    struct trec *first[] = {trec_new(ARPC_LOG_REPLY, 1, 1, 0, 1, 2), trec_new(ARPC_LOG_STATE, 0, 0, 0, 0, 3)};
    s.free_records = false;
    append_all_and_close(log, first, 2);
    s.free_records = true;

    /* Segment 2: a live reply with an effect, and 100 dead replies of client 3. */
    uint8_t reply[8] = "abcdefgh", effect[4] = "eff!";
    struct arpc_log_view views[103] = {
        {.v_type = ARPC_LOG_REPLY, .v_client_id = 1, .v_seq = 2, .v_reply = reply, .v_reply_len = 8,
         .v_data = effect, .v_data_len = 4},
        {.v_type = ARPC_LOG_ACK, .v_client_id = 2, .v_ack = 4},
    };
    for (int i = 0; i < 100; i++)
        views[2 + i] = (struct arpc_log_view){.v_type = ARPC_LOG_REPLY, .v_client_id = 3, .v_seq = (uint64_t)i + 1,
                                              .v_reply = reply, .v_reply_len = 8};
    views[102] = (struct arpc_log_view){.v_type = ARPC_LOG_ACK, .v_client_id = 3, .v_ack = 100};
    write_segment(t, 2, epoch, views, 103);

    struct replayed before = {0};
    replay_dir(t->log, &before);
    assert_blob_tag(before.state, 3);
    assert_int_equal(1, before.neffects);
    assert_memory_equal("eff!", before.effects[0].p, 4);
    assert_int_equal(2, before.nreplies);
    assert_non_null(find_reply(&before, 1, 2));
    assert_int_equal(4, find_ack(&before, 2));
    assert_int_equal(100, find_ack(&before, 3));

    /* A torn tail in segment 1, which is not the newest: corruption. */
    char path1[256];
    size_t len1;
    uint8_t *seg1 = test_file_read(seg_path(t, 1, path1, sizeof(path1)), &len1);
    test_file_write(path1, seg1, len1 - 3);
    char why[512];
    struct arpc_reply_log *none = NULL;
    assert_int_equal(ARPC_EPROTO, try_open(&none, t->log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s, why, sizeof(why)));
    assert_non_null(strstr(why, "(not in the last segment)"));
    test_file_write(path1, seg1, len1);
    free(seg1);
    /* A newest segment of another epoch: corruption. */
    write_segment(t, 3, epoch + 1, views, 1);
    assert_int_equal(ARPC_EPROTO, try_open(&none, t->log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s, why, sizeof(why)));
    assert_non_null(strstr(why, "0000000000000002.arpclog is corrupt at offset 0: the header's epoch differs"));
    char path3[256];
    unlink(seg_path(t, 3, path3, sizeof(path3)));

    /* Compaction reads from both segments and leaves one snapshot that replays the same. */
    latch_reset();
    log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 1, NULL, &s);
    arpc_reply_log_append(log, &trec_new(ARPC_LOG_ACK, 2, 0, 4, 0, 0)->r);
    assert_true(latch_wait(1, TEST_WAIT_MS));
    assert_true(WAIT_UNTIL(stats_of(log).compactions != 0));
    assert_int_equal(1, stats_of(log).compactions);
    arpc_reply_log_close(log);
    int count;
    segments_bytes(t, &count);
    assert_int_equal(1, count);
    assert_int_equal(0, access(seg_path(t, 3, path3, sizeof(path3)), F_OK));
    expect_replay_same(t->log, &before);
    replayed_free(&before);
}

/* A newest snapshot of another log (another epoch: a file copied in from another server's
 * directory) is refused, naming this log's segment, and nothing is removed. Before, it was
 * taken as the newest state: this log's own segments were deleted as superseded and the
 * server went on under the other log's epoch, with the other log's memory of calls. */
static void test_snapshot_of_another_log(void **state)
{
    struct tdir *t = *state;
    struct sink s = {.free_records = true};
    struct arpc_reply_log *log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s);
    uint64_t epoch = arpc_reply_log_epoch(log);
    struct trec *recs[] = {trec_new(ARPC_LOG_REPLY, 1, 1, 0, 1, 2)};
    s.free_records = false;
    append_all_and_close(log, recs, 1);
    s.free_records = true;

    struct arpc_log_view h = {
        .v_type = ARPC_LOG_HEADER, .v_flags = ARPC_LOG_FLAG_SNAPSHOT, .v_epoch = epoch + 1, .v_segment = 2};
    uint8_t head[ARPC_LOG_HEADER_SIZE];
    char path2[256];
    test_file_write(seg_path(t, 2, path2, sizeof(path2)), head, arpc_log_encode(head, &h));
    char why[512];
    struct arpc_reply_log *none = NULL;
    assert_int_equal(ARPC_EPROTO, try_open(&none, t->log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s, why, sizeof(why)));
    assert_non_null(strstr(why, "0000000000000001.arpclog is corrupt at offset 0: the header's epoch differs"));
    char path1[256];
    assert_int_equal(0, access(seg_path(t, 1, path1, sizeof(path1)), F_OK)); /* was removed */

    /* The stray file gone, the log is what it was. */
    unlink(path2);
    struct replayed r = {0};
    replay_dir(t->log, &r);
    assert_int_equal(1, r.nreplies);
    assert_non_null(find_reply(&r, 1, 1));
    replayed_free(&r);
}

/* ---- failures ---- */

static void test_bad_options_and_records(void **state)
{
    struct tdir *t = *state;
    struct sink s = {0};
    struct arpc_reply_log *log = NULL;
    char why[512];
    assert_int_equal(ARPC_EINVAL, try_open(&log, NULL, ARPC_LOG_FSYNC_OFF, 0, NULL, &s, why, sizeof(why)));
    assert_int_equal(ARPC_EINVAL, try_open(&log, "", ARPC_LOG_FSYNC_OFF, 0, NULL, &s, why, sizeof(why)));
    assert_int_equal(ARPC_EINVAL, try_open(&log, t->log, (enum arpc_log_fsync)7, 0, NULL, &s, why, sizeof(why)));
    struct arpc_reply_log_options o = {.dir = t->log};
    assert_int_equal(ARPC_EINVAL, arpc_reply_log_open(&log, &o, NULL, NULL, NULL, NULL, why, sizeof(why)));
    assert_null(log);
    char missing[256];
    snprintf(missing, sizeof(missing), "%s/no/such/parent", t->root);
    assert_int_equal(ARPC_ESYSTEM, try_open(&log, missing, ARPC_LOG_FSYNC_OFF, 0, NULL, &s, why, sizeof(why)));
    assert_non_null(strstr(why, "mkdir"));

    /* A record the log cannot take comes back with its reason, and stops the log: the record
     * after it comes back ARPC_ESYSTEM and is not written (test_refused_record_stops_the_log
     * says why). Before, the log went on. */
    struct trec *huge = trec_new(ARPC_LOG_REPLY, 1, 1, 0, 0, 0);
    huge->r.lr_reply_len = ARPC_LOG_PAYLOAD_MAX; /* never read: refused from its length */
    struct trec *huge_state = trec_new(ARPC_LOG_STATE, 0, 0, 0, 0, 0);
    huge_state->r.lr_effect_len = ARPC_LOG_PAYLOAD_MAX + 1;
    struct trec *bad_type = trec_new(ARPC_LOG_REPLY, 1, 2, 0, 0, 0);
    bad_type->r.lr_type = (enum arpc_log_rtype)10;
    struct trec *ack0 = trec_new(ARPC_LOG_ACK, 0, 0, 3, 0, 0);
    struct trec *expire0 = trec_new(ARPC_LOG_EXPIRE, 0, 0, 0, 0, 0);
    struct trec *beyond0 = beyond_rec(0, 0, 5, (uint64_t[]){1}, 1);
    struct trec *beyond_ragged = beyond_rec(1, 0, 5, (uint64_t[]){1}, 1);
    beyond_ragged->r.lr_effect_len = 7; /* not a list of u64s */
    struct trec *beyond_low = beyond_rec(1, 6, 5, NULL, 0); /* high under ack */
    struct trec *beyond_disorder = beyond_rec(1, 0, 5, (uint64_t[]){3, 2}, 2); /* as an ACK frame's list */
    struct {
        struct trec *bad;
        int status;
    } cases[] = {{huge, ARPC_ETOOLARGE}, {huge_state, ARPC_ETOOLARGE}, {bad_type, ARPC_EINVAL},
                 {ack0, ARPC_EINVAL}, {expire0, ARPC_EINVAL}, {beyond0, ARPC_EINVAL},
                 {beyond_ragged, ARPC_EINVAL}, {beyond_low, ARPC_EINVAL}, {beyond_disorder, ARPC_EINVAL}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s);
        struct trec *good = trec_new(ARPC_LOG_REPLY, 1, 3, 0, 5, 6);
        arpc_reply_log_append(log, &cases[i].bad->r);
        arpc_reply_log_append(log, &good->r);
        arpc_reply_log_close(log);
        assert_int_equal(cases[i].status, cases[i].bad->r.lr_status);
        assert_int_equal(ARPC_ESYSTEM, good->r.lr_status); /* was ARPC_OK */
        free(good);
        free(cases[i].bad);
        struct replayed r = {0};
        replay_dir(t->log, &r);
        assert_int_equal(0, r.nreplies);
        replayed_free(&r);
    }
}

static void test_out_of_memory(void **state)
{
    struct tdir *t = *state;
    struct sink s = {0};
    /* A log with something of everything, so recovery allocates all it ever does. */
    struct arpc_reply_log *log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 0, NULL, &s);
    uint64_t rng = 5;
    uint32_t tags = 1;
    struct model *m = calloc(1, sizeof(*m));
    struct trec *recs[600];
    for (int i = 0; i < 600; i++)
        recs[i] = random_record(m, &rng, &tags);
    append_all_and_close(log, recs, 600);

    /* Open with n allocations allowed, for every n until it succeeds. */
    int failures = 0;
    for (long budget = 0;; budget++) {
        atomic_store(&test_alloc_budget, budget);
        struct replayed r = {0};
        char why[512];
        log = NULL;
        int rc = try_open(&log, t->log, ARPC_LOG_FSYNC_OFF, 0, &r, &s, why, sizeof(why));
        atomic_store(&test_alloc_budget, -1);
        replayed_free(&r);
        if (rc == ARPC_OK)
            break;
        assert_int_equal(ARPC_ENOMEM, rc);
        assert_non_null(strstr(why, "out of memory"));
        assert_null(log);
        assert_int_equal(0, atomic_load(&test_alloc_live));
        failures++;
    }
    assert_true(failures >= 5);

    /* An append the index cannot hold comes back ARPC_ENOMEM, unwritten, and stops the log:
     * every later record comes back ARPC_ESYSTEM (test_refused_record_stops_the_log). */
    latch_reset();
    atomic_store(&test_alloc_budget, 0);
    struct trec *refused = trec_new(ARPC_LOG_REPLY, 1000, 1, 0, 3, 4); /* a new client */
    struct trec *refused_ack = trec_new(ARPC_LOG_ACK, 1001, 0, 1, 0, 0);
    struct trec *fine = trec_new(ARPC_LOG_EXPIRE, 1, 0, 0, 0, 0); /* needs nothing */
    arpc_reply_log_append(log, &refused->r);
    arpc_reply_log_append(log, &refused_ack->r);
    arpc_reply_log_append(log, &fine->r);
    assert_true(latch_wait(3, TEST_WAIT_MS));
    atomic_store(&test_alloc_budget, -1);
    struct trec *later = trec_new(ARPC_LOG_REPLY, 1000, 2, 0, 5, 0);
    arpc_reply_log_append(log, &later->r);
    arpc_reply_log_close(log);
    assert_int_equal(ARPC_ENOMEM, refused->r.lr_status);
    assert_int_equal(ARPC_ESYSTEM, refused_ack->r.lr_status);
    assert_int_equal(ARPC_ESYSTEM, fine->r.lr_status);
    assert_int_equal(ARPC_ESYSTEM, later->r.lr_status);
    free(refused);
    free(refused_ack);
    free(fine);
    free(later);

    struct replayed r = {0};
    replay_dir(t->log, &r);
    assert_null(find_reply(&r, 1000, 1));
    assert_null(find_reply(&r, 1000, 2));
    assert_int_equal(-1, find_ack(&r, 1001));
    assert_int_not_equal(-1, find_ack(&r, 1)); /* its EXPIRE came after the refusal: not written */
    replayed_free(&r);
    free(m);
}

/* A record the index cannot hold (ENOMEM) stops the log, as a failed write does: a record after
 * it must not become durable without it. Its caller's effect was applied in memory (the server
 * fail-stops when it hears), and a later call ran on that state: were the later record written,
 * a restart would rebuild a state holding the later effect but not the one it depended on, and
 * that later call's client would have been told it was done. Before, the log went on. */
static void test_refused_record_stops_the_log(void **state)
{
    struct tdir *t = *state;
    struct sink s = {0};
    struct arpc_reply_log *log = open_ok(t->log, ARPC_LOG_FSYNC_ALWAYS, 0, NULL, &s);
    latch_reset();
    struct trec *first = trec_new(ARPC_LOG_REPLY, 7, 1, 0, 3, 11); /* makes client 7, the effect list */
    arpc_reply_log_append(log, &first->r);
    assert_true(latch_wait(1, TEST_WAIT_MS));
    assert_int_equal(ARPC_OK, first->r.lr_status);

    atomic_store(&test_alloc_budget, 0);
    struct trec *refused = trec_new(ARPC_LOG_REPLY, 8, 1, 0, 4, 12); /* a new client: no memory */
    arpc_reply_log_append(log, &refused->r);
    assert_true(latch_wait(2, TEST_WAIT_MS));
    /* Needs no memory (client 7 and the effect list have room): only the rule refuses it. */
    struct trec *after = trec_new(ARPC_LOG_REPLY, 7, 2, 0, 5, 13);
    arpc_reply_log_append(log, &after->r);
    assert_true(latch_wait(3, TEST_WAIT_MS));
    atomic_store(&test_alloc_budget, -1);
    arpc_reply_log_close(log);
    assert_int_equal(ARPC_ENOMEM, refused->r.lr_status);
    assert_int_equal(ARPC_ESYSTEM, after->r.lr_status); /* was ARPC_OK */

    struct replayed r = {0};
    replay_dir(t->log, &r);
    assert_int_equal(1, r.neffects); /* the first call's only: a prefix of what was appended */
    assert_non_null(find_reply(&r, 7, 1));
    assert_null(find_reply(&r, 7, 2));
    replayed_free(&r);
    free(first);
    free(refused);
    free(after);
}

/* The segment being written removed under the log (its directory deleted by hand): the next
 * batch fails the log, rather than be answered as kept and be gone at the next start (a
 * durability trial answered 5,000 calls so). */
static void test_removed_segment_stops_the_log(void **state)
{
    struct tdir *t = *state;
    struct sink s = {0};
    latch_reset();
    struct arpc_reply_log *log = open_ok(t->log, ARPC_LOG_FSYNC_ALWAYS, 0, NULL, &s);
    struct trec *before = trec_new(ARPC_LOG_REPLY, 1, 1, 0, 90, 91);
    arpc_reply_log_append(log, &before->r);
    assert_true(latch_wait(1, TEST_WAIT_MS));
    char path[256];
    assert_int_equal(0, unlink(seg_path(t, 1, path, sizeof(path))));
    capture_start();
    struct trec *after = trec_new(ARPC_LOG_REPLY, 1, 2, 0, 90, 91);
    arpc_reply_log_append(log, &after->r);
    assert_true(latch_wait(2, TEST_WAIT_MS));
    arpc_reply_log_close(log);
    assert_int_equal(1, captured(ARPC_LOG_ERROR, "was removed (the directory deleted?)"));
    capture_stop();
    assert_int_equal(ARPC_OK, before->r.lr_status);
    assert_int_equal(ARPC_ESYSTEM, after->r.lr_status);
    free(before);
    free(after);
}

/* A compaction that runs out of memory is abandoned: the log goes on in its segment, and the
 * next compaction succeeds. */
static void test_compaction_out_of_memory(void **state)
{
    struct tdir *t = *state;
    struct sink s = {.free_records = true};
    struct arpc_reply_log *log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 1ull << 40, NULL, &s);
    for (uint64_t i = 1; i <= 500; i++) /* mostly dead: a compaction would shrink it */
        arpc_reply_log_append(log, &trec_new(ARPC_LOG_REPLY, 1, i, i - 1, (uint32_t)i, i % 7 ? 0 : 5)->r);
    arpc_reply_log_close(log);
    struct replayed before = {0};
    replay_dir(t->log, &before);

    capture_start();
    latch_reset();
    log = open_ok(t->log, ARPC_LOG_FSYNC_OFF, 1, NULL, &s);
    atomic_store(&test_alloc_budget, 0); /* an ACK of a known client needs no memory itself */
    arpc_reply_log_append(log, &trec_new(ARPC_LOG_ACK, 1, 0, 1, 0, 0)->r);
    assert_true(latch_wait(1, TEST_WAIT_MS));
    bool said = WAIT_UNTIL(captured(ARPC_LOG_ERROR, NULL) != 0);
    atomic_store(&test_alloc_budget, -1);
    assert_true(said);
    assert_int_equal(1, captured(ARPC_LOG_ERROR, "out of memory while compacting; compaction abandoned"));
    assert_int_equal(0, stats_of(log).compactions);
    arpc_reply_log_append(log, &trec_new(ARPC_LOG_ACK, 1, 0, 1, 0, 0)->r);
    assert_true(latch_wait(2, TEST_WAIT_MS));
    assert_true(WAIT_UNTIL(stats_of(log).compactions != 0));
    assert_int_equal(1, stats_of(log).compactions);
    arpc_reply_log_close(log);
    capture_stop();
    assert_int_equal(0, atomic_load(&s.not_ok));
    expect_replay_same(t->log, &before);
    replayed_free(&before);
}

/* Random damage of every kind (bytes overwritten, cut, appended): open either recovers or
 * refuses, and never reads outside the file (ASan) or crashes. */
static void test_random_damage_never_crashes(void **state)
{
    struct tdir *t = *state;
    struct five f;
    five_records(t, &f);
    uint8_t *copy = malloc(f.len + 64);
    uint64_t rng = 77;
    capture_start(); /* torn-tail warnings */
    int opened = 0, refused = 0;
    for (int round = 0; round < 200; round++) {
        memcpy(copy, f.bytes, f.len);
        size_t n = f.len;
        for (int k = 1 + (int)(rng_next(&rng) % 4); k > 0; k--) {
            size_t at = rng_next(&rng) % n;
            switch (rng_next(&rng) % 3) {
            case 0:
                copy[at] = (uint8_t)rng_next(&rng);
                break;
            case 1:
                n = at > ARPC_LOG_HEADER_SIZE ? at : n;
                break;
            default:
                while (n < f.len + 64 && rng_next(&rng) % 8)
                    copy[n++] = (uint8_t)rng_next(&rng);
                break;
            }
        }
        test_file_write(f.path, copy, n);
        struct arpc_reply_log *log = NULL;
        struct replayed r = {0};
        struct sink s = {0};
        char why[512];
        int rc = try_open(&log, t->log, ARPC_LOG_FSYNC_OFF, 0, &r, &s, why, sizeof(why));
        assert_true(rc == ARPC_OK || rc == ARPC_EPROTO);
        if (rc == ARPC_OK) {
            arpc_reply_log_close(log);
            opened++;
        } else {
            refused++;
        }
        replayed_free(&r);
    }
    capture_stop();
    print_message("random damage: %d recovered, %d refused\n", opened, refused);
    assert_true(opened > 0 && refused > 0);
    free(copy);
    free(f.bytes);
}

/* A write that fails (here: past RLIMIT_FSIZE, with SIGXFSZ ignored) fails the records of its
 * batch and every later one; what was handed back OK before is still there after a reopen. */
static void test_write_failure_stops_the_log(void **state)
{
    struct tdir *t = *state;
    struct sink s = {0};
    latch_reset();
    struct arpc_reply_log *log = open_ok(t->log, ARPC_LOG_FSYNC_ALWAYS, 0, NULL, &s);
    struct trec *before[3];
    for (int i = 0; i < 3; i++) {
        before[i] = trec_new(ARPC_LOG_REPLY, 1, (uint64_t)i + 1, 0, 90, 91);
        arpc_reply_log_append(log, &before[i]->r);
    }
    assert_true(latch_wait(3, TEST_WAIT_MS));
    char path[256];
    off_t size = test_file_size(seg_path(t, 1, path, sizeof(path)));

    capture_start();
    struct sigaction ignore = {.sa_handler = SIG_IGN}, old_action;
    sigaction(SIGXFSZ, &ignore, &old_action);
    struct rlimit old_limit, limit;
    getrlimit(RLIMIT_FSIZE, &old_limit);
    limit = old_limit;
    limit.rlim_cur = (rlim_t)size + 40; /* inside the next record: a short write, then EFBIG */
    assert_int_equal(0, setrlimit(RLIMIT_FSIZE, &limit));
    struct trec *failing[10];
    for (int i = 0; i < 10; i++) {
        failing[i] = trec_new(ARPC_LOG_REPLY, 1, (uint64_t)i + 10, 0, 90, 91);
        arpc_reply_log_append(log, &failing[i]->r);
    }
    assert_true(latch_wait(13, TEST_WAIT_MS));
    assert_int_equal(0, setrlimit(RLIMIT_FSIZE, &old_limit));
    sigaction(SIGXFSZ, &old_action, NULL);

    struct trec *after = trec_new(ARPC_LOG_REPLY, 1, 30, 0, 90, 91);
    arpc_reply_log_append(log, &after->r); /* the log refuses from now on */
    arpc_reply_log_close(log);
    char name[300];
    snprintf(name, sizeof(name), "reply log %s: write 0000000000000001.arpclog: %s", t->log, strerror(EFBIG));
    assert_int_equal(1, captured(ARPC_LOG_ERROR, name));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ARPC_OK, before[i]->r.lr_status);
        free(before[i]);
    }
    for (int i = 0; i < 10; i++) {
        assert_int_equal(ARPC_ESYSTEM, failing[i]->r.lr_status);
        free(failing[i]);
    }
    assert_int_equal(ARPC_ESYSTEM, after->r.lr_status);
    free(after);

    /* The short write left a torn tail: dropped at the next open. */
    struct replayed r = {0};
    replay_dir(t->log, &r);
    assert_int_equal(1, captured(ARPC_LOG_WARN, "dropped a torn record"));
    capture_stop();
    assert_int_equal(3, r.nreplies);
    replayed_free(&r);
}

int main(void)
{
    test_alloc_install(); /* every test ends with nothing allocated */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_codec_round_trip_and_prefixes),
        cmocka_unit_test_no_leak(test_codec_rejects),
        cmocka_unit_test_no_leak(test_segment_names),
        dir_test(test_every_type_round_trip),
        dir_test(test_replay_rules),
        dir_test(test_goodbye_rules),
        dir_test(test_ack_beyond_rules),
        cmocka_unit_test_no_leak(test_epoch),
        dir_test(test_random_against_model_with_compaction),
        dir_test(test_torn_tail_at_every_byte),
        dir_test(test_flipped_bit_anywhere_but_the_tail),
        dir_test(test_tail_that_is_not_torn),
        dir_test(test_lock),
        cmocka_unit_test_no_leak(test_done_once_in_order_each_policy),
        dir_test(test_policies_sync_when_they_say),
        cmocka_unit_test_no_leak(test_kill9_keeps_what_was_handed_back),
        dir_test(test_compaction_keeps_directory_bounded),
        dir_test(test_compaction_same_state_and_superseded_segments),
        dir_test(test_goodbyes_bounded_and_compacted),
        dir_test(test_goodbye_owners_kept_across_restart),
        dir_test(test_comeback_floor_kept_across_restart),
        dir_test(test_segments_after_the_snapshot),
        dir_test(test_snapshot_of_another_log),
        dir_test(test_bad_options_and_records),
        dir_test(test_out_of_memory),
        dir_test(test_refused_record_stops_the_log),
        dir_test(test_compaction_out_of_memory),
        dir_test(test_random_damage_never_crashes),
        dir_test(test_removed_segment_stops_the_log),
        dir_test(test_write_failure_stops_the_log),
        dir_test(test_torn_ack_beyond_at_every_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
