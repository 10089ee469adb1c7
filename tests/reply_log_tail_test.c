/*
 * Torn tail or corruption (core/reply_log_tail.h), and what recovery makes of it: a torn last
 * record whose client-chosen reply bytes hold intact records is still a torn tail, at every
 * byte it can be cut at; damage in the middle with valid records after it still refuses to
 * start; a torn record full of record-like headers is judged without checksumming them, and
 * the search a head nothing confirms needs is bounded.
 *
 * Segments are written by hand (arpc_log_encode) and opened with arpc_reply_log_open.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arpc/error.h"
#include "arpc/log.h"
#include "base/crc32c.h"
#include "base/le.h"
#include "core/reply_log.h"
#include "core/reply_log_format.h"
#include "core/reply_log_tail.h"
#include "support/test_file.h"
#include "support/test_util.h"

/* ---- a segment built by hand ---- */

struct seg {
    uint8_t *b;
    size_t len, cap;
};

static size_t seg_add(struct seg *s, const struct arpc_log_view *v)
{
    size_t need = arpc_log_record_size(v);
    if (s->len + need > s->cap) {
        s->cap = (s->len + need) * 2;
        s->b = realloc(s->b, s->cap);
        assert_non_null(s->b);
    }
    size_t at = s->len;
    s->len += arpc_log_encode(s->b + at, v);
    return at;
}

static void seg_start(struct seg *s)
{
    *s = (struct seg){0};
    struct arpc_log_view h = {
        .v_type = ARPC_LOG_HEADER, .v_flags = ARPC_LOG_FLAG_SNAPSHOT, .v_epoch = 0x5eed, .v_segment = 1};
    seg_add(s, &h);
}

static size_t add_reply(struct seg *s, uint64_t client, uint64_t seq, const void *reply, size_t len)
{
    struct arpc_log_view v = {.v_type = ARPC_LOG_REPLY, .v_client_id = client, .v_seq = seq, .v_reply = reply,
                              .v_reply_len = (uint32_t)len};
    return seg_add(s, &v);
}

static size_t add_synced(struct seg *s, uint64_t extent, uint64_t nonce)
{
    struct arpc_log_view v = {.v_type = ARPC_LOG_SYNCED, .v_synced = extent, .v_nonce = nonce};
    return seg_add(s, &v);
}

static size_t add_expire(struct seg *s, uint64_t client)
{
    struct arpc_log_view v = {.v_type = ARPC_LOG_EXPIRE, .v_client_id = client};
    return seg_add(s, &v);
}

static size_t add_state(struct seg *s, const void *state, size_t len)
{
    struct arpc_log_view v = {.v_type = ARPC_LOG_STATE, .v_data = state, .v_data_len = (uint32_t)len};
    return seg_add(s, &v);
}

/* A STATE as written before STATE records were sized (type 4: the state alone, its length
 * confirmed by nothing), as older logs hold them. */
static size_t add_state_v0(struct seg *s, const void *state, size_t len)
{
    size_t need = ARPC_LOG_RECORD_HEAD + len;
    if (s->len + need > s->cap) {
        s->cap = (s->len + need) * 2;
        s->b = realloc(s->b, s->cap);
        assert_non_null(s->b);
    }
    uint8_t *p = s->b + s->len;
    le_st32(p, (uint32_t)len);
    p[8] = ARPC_LOG_STATE;
    memcpy(p + ARPC_LOG_RECORD_HEAD, state, len);
    le_st32(p + 4, arpc_crc32c(0, p + 8, 1 + len));
    size_t at = s->len;
    s->len += need;
    return at;
}

/* What a client could send to an echo: intact records of every kind a log holds (an EXPIRE
 * and a REPLY for client 1, an ACK), between filler bytes. */
static size_t forged_payload(uint8_t *out)
{
    static const uint8_t filler[] = "echo me";
    struct arpc_log_view recs[] = {
        {.v_type = ARPC_LOG_EXPIRE, .v_client_id = 1},
        {.v_type = ARPC_LOG_REPLY, .v_client_id = 1, .v_seq = 5, .v_reply = filler, .v_reply_len = 7},
        {.v_type = ARPC_LOG_ACK, .v_client_id = 1, .v_ack = 9},
    };
    size_t n = 0;
    for (size_t i = 0; i < sizeof(recs) / sizeof(recs[0]); i++) {
        memcpy(out + n, filler, 7);
        n += 7;
        n += arpc_log_encode(out + n, &recs[i]);
    }
    memcpy(out + n, filler, 7);
    return n + 7;
}

/* ---- the directory ---- */

struct tdir {
    char root[64];
    char path[128]; /* the segment file */
};

static int dir_setup(void **state)
{
    struct tdir *t = calloc(1, sizeof(*t));
    strcpy(t->root, "/tmp/arpc-tail-test-XXXXXX");
    assert_non_null(mkdtemp(t->root));
    snprintf(t->path, sizeof(t->path), "%s/0000000000000001.arpclog", t->root);
    *state = t;
    return 0;
}

static int dir_teardown(void **state)
{
    struct tdir *t = *state;
    DIR *d = opendir(t->root);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", t->root, e->d_name);
        if (e->d_name[0] != '.')
            unlink(p);
    }
    closedir(d);
    assert_int_equal(0, rmdir(t->root));
    free(t);
    return test_alloc_check_no_leak(state);
}

#define dir_test(f) cmocka_unit_test_setup_teardown(f, dir_setup, dir_teardown)

/* ---- opening ---- */

struct seen {
    int replies, acks, client1_replies;
};

static void on_reply(void *ctx, uint64_t client, uint64_t seq, const void *reply, size_t len)
{
    (void)seq, (void)reply, (void)len;
    struct seen *s = ctx;
    s->replies++;
    s->client1_replies += client == 1;
}

static void on_ack(void *ctx, uint64_t client, uint64_t ack)
{
    (void)client, (void)ack;
    ((struct seen *)ctx)->acks++;
}

static const struct arpc_log_replay_ops ops = {.on_reply = on_reply, .on_ack = on_ack};

static void on_done(void *ctx, struct arpc_log_record *rec) { (void)ctx, (void)rec; }

static int try_open(const struct tdir *t, struct seen *seen, char *why, size_t whylen)
{
    struct arpc_reply_log_options o = {.dir = t->root, .fsync = ARPC_LOG_FSYNC_OFF};
    struct arpc_reply_log *log = NULL;
    *seen = (struct seen){0};
    int rc = arpc_reply_log_open(&log, &o, &ops, seen, on_done, NULL, why, whylen);
    arpc_reply_log_close(log);
    return rc;
}

static int warnings;
static void count_warning(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)ctx;
    if (level == ARPC_LOG_WARN && strstr(line, "dropped a torn record") != NULL)
        warnings++;
}

/* ---- tests ---- */

/* One reply for client 1, then a torn reply (client 2) whose bytes hold intact records: at
 * every cut, the log opens, keeps client 1's reply and drops only the torn record. */
static void test_forged_records_inside_a_torn_reply(void **state)
{
    struct tdir *t = *state;
    uint8_t payload[256];
    size_t plen = forged_payload(payload);
    struct seg s;
    seg_start(&s);
    add_reply(&s, 1, 1, "one", 3);
    size_t last = add_reply(&s, 2, 1, payload, plen);
    arpc_set_logger(count_warning, NULL, ARPC_LOG_DEBUG);
    warnings = 0;
    for (size_t cut = last + 1; cut < s.len; cut++) {
        test_file_write(t->path, s.b, cut);
        struct seen seen;
        char why[512] = "";
        int rc = try_open(t, &seen, why, sizeof(why));
        if (rc != ARPC_OK)
            print_message("cut at %zu: %s\n", cut, why);
        assert_int_equal(ARPC_OK, rc);
        assert_int_equal(1, seen.replies); /* client 1's seq 1, and nothing forged */
        assert_int_equal(1, seen.client1_replies);
        assert_int_equal((off_t)last, test_file_size(t->path));
    }
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
    assert_int_equal((int)(s.len - last - 1), warnings);
    free(s.b);
}

static void expect_refusal(const struct tdir *t, const struct seg *s, size_t at, const char *also)
{
    test_file_write(t->path, s->b, s->len);
    struct seen seen;
    char why[512] = "", want[256];
    assert_int_equal(ARPC_EPROTO, try_open(t, &seen, why, sizeof(why)));
    snprintf(want, sizeof(want), "0000000000000001.arpclog is corrupt at offset %zu: ", at);
    if (strstr(why, want) == NULL || strstr(why, also) == NULL)
        print_message("want \"%s\" and \"%s\" in \"%s\"\n", want, also, why);
    assert_non_null(strstr(why, want));
    assert_non_null(strstr(why, also));
    assert_non_null(strstr(why, "refusing to start"));
    assert_int_equal(0, seen.replies);
    assert_int_equal((off_t)s->len, test_file_size(t->path)); /* nothing dropped */
}

/* Damage in the middle, with a valid record after it, still refuses to start, whatever was
 * damaged: the payload (the head confirms the length: the next record is where it ends), the
 * length (REPLY's own two lengths contradict it), or a STATE's length (nothing confirms it,
 * so every later offset is searched, as before). */
static void test_damage_in_the_middle_still_refuses(void **state)
{
    struct tdir *t = *state;
    uint8_t payload[256];
    size_t plen = forged_payload(payload);
    uint8_t big[300];
    memset(big, 0x5a, sizeof(big));
    struct seg s;
    seg_start(&s);
    size_t state_at = add_state(&s, big, sizeof(big));
    size_t mid = add_reply(&s, 1, 1, payload, plen);
    size_t after = add_reply(&s, 2, 1, "two", 3);
    add_expire(&s, 3);
    uint8_t *clean = malloc(s.len);
    memcpy(clean, s.b, s.len);

    s.b[mid + 60] ^= 0x01; /* inside the reply bytes */
    char also[160];
    snprintf(also, sizeof(also), "with a valid record after it (at offset %zu)", after);
    expect_refusal(t, &s, mid, also);
    /* The operator's other way out than an empty log, where a power cut left it: said last. */
    expect_refusal(t, &s, mid, "to start empty; after a power cut, cutting the segment there may be the smaller loss");

    memcpy(s.b, clean, s.len);
    s.b[mid + 2] ^= 0x04; /* the length: now far past the end of the file */
    expect_refusal(t, &s, mid, "with a valid record after it");

    memcpy(s.b, clean, s.len);
    s.b[mid] ^= 0x02; /* the length, slightly shorter: it ends inside its own payload */
    expect_refusal(t, &s, mid, "with a valid record after it");

    memcpy(s.b, clean, s.len);
    s.b[state_at + 3] ^= 0x01; /* a STATE's length: 16 MiB past the end */
    expect_refusal(t, &s, state_at, "with a valid record after it");
    free(clean);
    free(s.b);
}

/* A 4 MiB payload whose every 9th byte starts a STATE head claiming 1 MiB (its checksum
 * wrong): what a client can make an echo's reply look like. */
static uint8_t *fake_heads(size_t len)
{
    uint8_t *p = calloc(1, len);
    for (size_t i = 0; i + ARPC_LOG_RECORD_HEAD <= len; i += 9) {
        le_st32(p + i, 1u << 20);
        le_st32(p + i + 4, 0xbad);
        p[i + 8] = ARPC_LOG_STATE;
    }
    return p;
}

/* The last record of s, at last, cut anywhere: torn, judged from its own head (the search
 * starts past the cut), nothing checksummed. Then through recovery, the file cut at file_len:
 * it opens, with the one reply before, and drops only the torn record. */
static void expect_torn_by_its_head(const struct tdir *t, const struct seg *s, size_t last, size_t file_len)
{
    for (size_t cut = s->len - 1; cut > last; cut -= (s->len - last) / 7) {
        struct arpc_log_tail j;
        arpc_log_tail_judge(s->b, cut, last, &j);
        assert_true(j.t_torn);
        assert_int_equal(cut, j.t_from);
        assert_int_equal(0, j.t_checksummed);
    }
    test_file_write(t->path, s->b, file_len);
    struct seen seen;
    char why[512] = "";
    assert_int_equal(ARPC_OK, try_open(t, &seen, why, sizeof(why)));
    assert_int_equal(1, seen.replies);
    assert_int_equal((off_t)last, test_file_size(t->path));
}

/* A torn reply full of such heads: judged from its own head alone, nothing checksummed. */
static void test_torn_reply_full_of_heads_checksums_nothing(void **state)
{
    struct tdir *t = *state;
    size_t plen = 4u << 20;
    uint8_t *payload = fake_heads(plen);
    struct seg s;
    seg_start(&s);
    add_reply(&s, 1, 1, "one", 3);
    size_t last = add_reply(&s, 2, 1, payload, plen);
    expect_torn_by_its_head(t, &s, last, s.len - 1);
    free(payload);
    free(s.b);
}

/* A torn checkpoint whose state holds intact records and record heads (an application may
 * checkpoint client bytes): its state_len confirms its length, so it is judged torn from its
 * own head, nothing searched or checksummed, and recovery drops it and opens. Before STATE
 * records were sized, the search inside it found the forged ACK and refused to start. */
static void test_torn_state_full_of_records(void **state)
{
    struct tdir *t = *state;
    size_t plen = 4u << 20;
    uint8_t *payload = fake_heads(plen);
    uint8_t forged[256];
    size_t forged_len = forged_payload(forged);
    for (size_t at = 0; at + forged_len <= plen; at += plen / 3)
        memcpy(payload + at, forged, forged_len);
    struct seg s;
    seg_start(&s);
    add_reply(&s, 1, 1, "one", 3);
    size_t last = add_state(&s, payload, plen);
    expect_torn_by_its_head(t, &s, last, last + (s.len - last) / 2);
    free(payload);
    free(s.b);
}

/* A head nothing confirms (a torn STATE of type 4, as older logs hold them) is searched at
 * every later offset, but checksums at most ARPC_LOG_TAIL_BUDGET: full of such heads, it
 * gives up (refusing: the side that loses nothing silently); with one real record after a
 * damaged STATE length, it finds it at the cost of that record. */
static void test_unconfirmed_head_search_is_bounded(void **state)
{
    (void)state;
    size_t plen = 4u << 20;
    uint8_t *payload = fake_heads(plen);
    struct seg s;
    seg_start(&s);
    size_t last = add_state_v0(&s, payload, plen);
    struct arpc_log_tail j;
    arpc_log_tail_judge(s.b, s.len - 1, last, &j);
    assert_false(j.t_torn);
    assert_int_equal(0, j.t_evidence); /* gave up */
    assert_int_equal(last + 1, j.t_from);
    assert_true(j.t_checksummed <= ARPC_LOG_TAIL_BUDGET(s.len - 1 - last));
    free(s.b);

    /* Plain bytes in the STATE, its length damaged, a record after it. */
    memset(payload, 0x5a, plen);
    seg_start(&s);
    last = add_state_v0(&s, payload, 1000);
    size_t after = add_expire(&s, 7);
    s.b[last + 3] ^= 0x01;
    arpc_log_tail_judge(s.b, s.len, last, &j);
    assert_false(j.t_torn);
    assert_int_equal(after, j.t_evidence);
    assert_int_equal(ARPC_LOG_RECORD_HEAD + ARPC_LOG_EXPIRE_PAYLOAD - 8, j.t_checksummed);
    free(payload);
    free(s.b);
}

/* Zeros after the last record (a file system's leftovers), a head cut short, a tail shorter
 * than a head: torn, with nothing to checksum. */
static void test_small_and_zero_tails(void **state)
{
    (void)state;
    struct seg s;
    seg_start(&s);
    size_t last = add_reply(&s, 1, 1, "one", 3);
    struct arpc_log_tail j;
    for (size_t cut = last + 1; cut < last + ARPC_LOG_RECORD_HEAD + ARPC_LOG_REPLY_FIXED; cut++) {
        arpc_log_tail_judge(s.b, cut, last, &j);
        assert_true(j.t_torn);
        assert_int_equal(0, j.t_checksummed);
    }
    uint8_t *z = calloc(1, last + 4096);
    memcpy(z, s.b, last);
    arpc_log_tail_judge(z, last + 4096, last, &j);
    assert_true(j.t_torn);
    assert_int_equal(0, j.t_checksummed);
    free(z);
    free(s.b);
}

/* A segment whose writer says how far it synced: damage is cut unless a later SYNCED record
 * with the segment's nonce gives an extent past it; one at or before the damage, or with
 * another nonce, says nothing of it. */
static void test_judged_by_synced_records(void **state)
{
    (void)state;
    enum { NONCE = 0x6e6f6e6365 };
    struct seg s;
    seg_start(&s);
    add_synced(&s, 0, NONCE);
    size_t early = add_reply(&s, 1, 1, "one", 3);
    size_t damaged = add_synced(&s, early, NONCE);
    add_reply(&s, 1, 2, "two", 3);
    size_t later = add_synced(&s, damaged, NONCE); /* the extent the damaged record begins at */
    add_reply(&s, 1, 3, "three", 5);
    s.b[damaged + 12] ^= 0x20;
    struct arpc_log_tail j;
    arpc_log_tail_judge_synced(s.b, s.len, damaged, NONCE, &j);
    assert_true(j.t_torn); /* synced up to the damage, not into it */
    /* The old judgement refuses the same bytes: intact records after the damage. */
    arpc_log_tail_judge(s.b, s.len, damaged, &j);
    assert_false(j.t_torn);

    le_st64(s.b + later + ARPC_LOG_RECORD_HEAD, damaged + 1); /* one byte into it */
    le_st32(s.b + later + 4, arpc_crc32c(0, s.b + later + 8, 1 + ARPC_LOG_SYNCED_PAYLOAD));
    arpc_log_tail_judge_synced(s.b, s.len, damaged, NONCE, &j);
    assert_false(j.t_torn);
    assert_int_equal(later, j.t_evidence);
    assert_int_equal(damaged + 1, j.t_claimed);
    arpc_log_tail_judge_synced(s.b, s.len, damaged, NONCE + 1, &j); /* another segment's nonce */
    assert_true(j.t_torn);
    arpc_log_tail_judge_synced(s.b, s.len, later, NONCE, &j); /* the claim before the damage */
    assert_true(j.t_torn);
    s.b[later + 20] ^= 0x01; /* a damaged claim claims nothing */
    arpc_log_tail_judge_synced(s.b, s.len, damaged, NONCE, &j);
    assert_true(j.t_torn);
    free(s.b);
}

/* Intact SYNCED records no writer of the segment wrote: one that claims bytes after itself,
 * one with another nonce than the segment's first. Corruption, refused at their offsets. */
static void test_impossible_synced_records_refuse(void **state)
{
    struct tdir *t = *state;
    struct seg s;
    seg_start(&s);
    add_synced(&s, 0, 7);
    size_t first = add_reply(&s, 1, 1, "one", 3);
    size_t ahead = add_synced(&s, first + 1000, 7);
    expect_refusal(t, &s, ahead, "a SYNCED record that claims bytes after itself");
    free(s.b);

    seg_start(&s);
    add_synced(&s, 0, 7);
    first = add_reply(&s, 1, 1, "one", 3);
    size_t other = add_synced(&s, first, 8);
    expect_refusal(t, &s, other, "a SYNCED record with another nonce than the segment's");
    free(s.b);
}

/* A segment written before SYNCED records, opened by this version: it goes on with one giving
 * the whole old part (synced by the open) before its first new record, and close adds
 * another. Damage in the old part is judged as before (refused: the claim is a valid record
 * after it); in the new write, refused once close's claim covers it, cut without it. */
static void test_old_segment_goes_on_with_claims(void **state)
{
    struct tdir *t = *state;
    struct seg s;
    seg_start(&s);
    add_reply(&s, 1, 1, "one", 3);
    size_t second = add_reply(&s, 1, 2, "two", 3);
    size_t old_len = s.len;
    test_file_write(t->path, s.b, s.len);
    struct arpc_reply_log_options o = {.dir = t->root, .fsync = ARPC_LOG_FSYNC_ALWAYS};
    struct arpc_reply_log *log = NULL;
    char why[512] = "";
    assert_int_equal(ARPC_OK, arpc_reply_log_open(&log, &o, NULL, NULL, on_done, NULL, why, sizeof(why)));
    struct arpc_log_record rec = {.lr_type = ARPC_LOG_REPLY, .lr_client_id = 1, .lr_seq = 3, .lr_reply = "three",
                                  .lr_reply_len = 5};
    arpc_reply_log_append(log, &rec);
    arpc_reply_log_close(log);
    assert_int_equal(ARPC_OK, rec.lr_status);

    int fd = open(t->path, O_RDONLY);
    assert_true(fd >= 0);
    size_t len = (size_t)test_file_size(t->path);
    uint8_t *b = malloc(len);
    assert_int_equal((ssize_t)len, pread(fd, b, len, 0));
    close(fd);
    assert_memory_equal(s.b, b, old_len); /* the old part as it was */
    struct arpc_log_view v;
    const char *what;
    assert_int_equal(ARPC_LOG_DECODE_OK, arpc_log_decode(b + old_len, len - old_len, &v, &what));
    assert_int_equal(ARPC_LOG_SYNCED, v.v_type);
    assert_int_equal(old_len, v.v_synced);
    uint64_t nonce = v.v_nonce;
    size_t third = old_len + v.v_size;
    assert_int_equal(ARPC_LOG_DECODE_OK, arpc_log_decode(b + third, len - third, &v, &what));
    assert_int_equal(3, v.v_seq);
    size_t close_at = third + v.v_size;
    assert_int_equal(ARPC_LOG_DECODE_OK, arpc_log_decode(b + close_at, len - close_at, &v, &what));
    assert_int_equal(ARPC_LOG_SYNCED, v.v_type);
    assert_int_equal(close_at, v.v_synced);
    assert_int_equal(nonce, v.v_nonce);
    assert_int_equal(len, close_at + v.v_size);

    struct seg damaged = {.b = b, .len = len};
    b[second + 20] ^= 0x01; /* the old part, judged as before: the claim after it is a valid record */
    char also[96];
    snprintf(also, sizeof(also), "with a valid record after it (at offset %zu)", old_len);
    expect_refusal(t, &damaged, second, also);
    b[second + 20] ^= 0x01;
    b[third + 20] ^= 0x01; /* the new write, before close's claim: refused too */
    snprintf(also, sizeof(also), "says were synced (up to offset %zu)", close_at);
    expect_refusal(t, &damaged, third, also);
    test_file_write(t->path, b, close_at); /* the same without close's claim (killed before it): cut */
    struct seen seen;
    assert_int_equal(ARPC_OK, try_open(t, &seen, why, sizeof(why)));
    assert_int_equal(2, seen.replies);
    free(b);
    free(s.b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        dir_test(test_forged_records_inside_a_torn_reply),
        dir_test(test_damage_in_the_middle_still_refuses),
        dir_test(test_torn_reply_full_of_heads_checksums_nothing),
        dir_test(test_torn_state_full_of_records),
        cmocka_unit_test_no_leak(test_unconfirmed_head_search_is_bounded),
        cmocka_unit_test_no_leak(test_small_and_zero_tails),
        cmocka_unit_test_no_leak(test_judged_by_synced_records),
        dir_test(test_impossible_synced_records_refuse),
        dir_test(test_old_segment_goes_on_with_claims),
    };
    test_alloc_install();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
