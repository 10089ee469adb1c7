/*
 * Tests of the wire codec (core/frame.c): round trips of every kind, the worked example of
 * docs/PROTOCOL.md byte for byte, streams fed whole / byte by byte / in random chunks, every
 * malformed case, the size limit, random garbage, and reads against a guard page.
 *
 * Inputs handed to the decoder are copied into buffers of exactly `len` bytes (heap, or the
 * end of a page followed by a PROT_NONE page), so ASan or a SIGSEGV catches any overread.
 * Every whole frame decoded is also decoded with its header and body apart
 * (arpc_frame_decode_split, as a connection does for a large body), which must agree.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "core/frame.h"

/* ---- helpers ---- */

/* splitmix64: a seeded PRNG so every failure replays. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static uint32_t rng_below(uint64_t *s, uint32_t n) { return (uint32_t)(rng_next(s) % n); }

static void assert_bytes_equal(const void *a, const void *b, size_t n)
{
    if (n > 0)
        assert_memory_equal(a, b, n);
}

/* Every field equal; views compared by content, since they point into different buffers. */
static void assert_frame_equal(const struct arpc_frame *want, const struct arpc_frame *got)
{
    assert_int_equal(want->f_kind, got->f_kind);
    assert_int_equal(ARPC_PROTO_VERSION, got->f_version);
    assert_int_equal(want->f_body_len, got->f_body_len);
    assert_int_equal(want->f_xid, got->f_xid);
    assert_int_equal(want->f_client_id, got->f_client_id);
    assert_int_equal(want->f_flags, got->f_flags);
    assert_int_equal(want->f_max_frame, got->f_max_frame);
    assert_int_equal(want->f_expiry_s, got->f_expiry_s);
    assert_int_equal(want->f_token_len, got->f_token_len);
    assert_bytes_equal(want->f_token, got->f_token, want->f_token_len);
    assert_int_equal(want->f_seq, got->f_seq);
    assert_int_equal(want->f_ack, got->f_ack);
    assert_int_equal(want->f_deadline_ms, got->f_deadline_ms);
    assert_int_equal(want->f_method_len, got->f_method_len);
    assert_bytes_equal(want->f_method, got->f_method, want->f_method_len);
    assert_int_equal(want->f_code, got->f_code);
    assert_int_equal(want->f_msg_len, got->f_msg_len);
    assert_bytes_equal(want->f_msg, got->f_msg, want->f_msg_len);
    assert_int_equal(want->f_payload_len, got->f_payload_len);
    assert_bytes_equal(want->f_payload, got->f_payload, want->f_payload_len);
}

/* A whole frame decoded with its header and body apart (arpc_frame_decode_split, the body in a
 * block of exactly its size) must give what the whole decode gave: the same result, the same
 * fields, *out untouched on failure. */
static void split_agrees(const uint8_t *buf, size_t len, uint32_t max_body, int rc_whole,
                         const struct arpc_frame *whole)
{
    if (len < ARPC_FRAME_HEADER_SIZE)
        return;
    uint32_t body_len = (uint32_t)buf[4] | (uint32_t)buf[5] << 8 | (uint32_t)buf[6] << 16 | (uint32_t)buf[7] << 24;
    if (len != ARPC_FRAME_HEADER_SIZE + (size_t)body_len)
        return; /* only whole frames */
    uint8_t *body = arpc_malloc(body_len);
    assert_non_null(body);
    if (body_len > 0)
        memcpy(body, buf + ARPC_FRAME_HEADER_SIZE, body_len);
    struct arpc_frame sentinel, got;
    memset(&sentinel, 0x5a, sizeof sentinel);
    got = sentinel;
    int rc = arpc_frame_decode_split(buf, body, max_body, &got);
    assert_int_equal(rc_whole, rc);
    if (rc == ARPC_OK)
        assert_frame_equal(whole, &got);
    else
        assert_memory_equal(&sentinel, &got, sizeof got);
    arpc_free(body);
}

/* Decodes a copy of buf[0..len) held in a heap block of exactly len bytes (and, for a whole
 * frame, checks the split decode agrees). */
static int decode_exact(const uint8_t *buf, size_t len, uint32_t max_body, struct arpc_frame *out,
                        size_t *consumed, size_t *need)
{
    uint8_t *copy = arpc_malloc(len);
    assert_non_null(copy);
    if (len > 0)
        memcpy(copy, buf, len);
    int rc = arpc_frame_decode(copy, len, max_body, out, consumed, need);
    if (rc == ARPC_OK) {
        /* Views must lie inside the frame; rebase them so they outlive the copy. */
        const uint8_t *end = copy + *consumed;
        if (out->f_method_len > 0)
            assert_true((const uint8_t *)out->f_method >= copy &&
                        (const uint8_t *)out->f_method + out->f_method_len <= end);
        if (out->f_msg_len > 0)
            assert_true((const uint8_t *)out->f_msg >= copy &&
                        (const uint8_t *)out->f_msg + out->f_msg_len <= end);
        if (out->f_payload_len > 0)
            assert_true(out->f_payload >= copy && out->f_payload + out->f_payload_len <= end);
        if (out->f_token_len > 0)
            assert_true(out->f_token >= copy && out->f_token + out->f_token_len <= end);
        if (out->f_method != NULL)
            out->f_method = (const char *)buf + ((const uint8_t *)out->f_method - copy);
        if (out->f_msg != NULL)
            out->f_msg = (const char *)buf + ((const uint8_t *)out->f_msg - copy);
        if (out->f_payload != NULL)
            out->f_payload = buf + (out->f_payload - copy);
        if (out->f_token != NULL)
            out->f_token = buf + (out->f_token - copy);
    }
    arpc_free(copy);
    split_agrees(buf, len, max_body, rc, out);
    return rc;
}

/* Source bytes for payloads, methods and messages. */
static uint8_t pool[4096];
static char text_pool[512];

static void fill_pools(void)
{
    uint64_t s = 42;
    for (size_t i = 0; i < sizeof pool; i++)
        pool[i] = (uint8_t)rng_next(&s);
    for (size_t i = 0; i < sizeof text_pool; i++)
        text_pool[i] = (char)('a' + rng_below(&s, 26));
}

/* Encodes f (whose views point into the pools) at dst; returns the frame size. */
static size_t encode_frame(uint8_t *dst, struct arpc_frame *f)
{
    size_t n;
    switch (f->f_kind) {
    case ARPC_FRAME_HELLO:
        if (f->f_flags & ARPC_HELLO_TOKEN)
            n = arpc_frame_encode_hello_token(dst, f->f_client_id, f->f_flags, f->f_max_frame, f->f_token,
                                              f->f_token_len);
        else
            n = arpc_frame_encode_hello(dst, f->f_client_id, f->f_flags, f->f_max_frame, f->f_expiry_s);
        break;
    case ARPC_FRAME_REQUEST:
    case ARPC_FRAME_ONEWAY:
        n = arpc_frame_encode_request(dst, f->f_kind, f->f_xid, f->f_seq, f->f_ack, f->f_deadline_ms,
                                      f->f_method, f->f_method_len, f->f_payload, f->f_payload_len);
        break;
    case ARPC_FRAME_ERROR:
    case ARPC_FRAME_GOAWAY:
        n = arpc_frame_encode_error(dst, f->f_kind, f->f_xid, f->f_code, f->f_err_flags, f->f_msg, f->f_msg_len);
        break;
    default:
        n = arpc_frame_encode_header(dst, f->f_kind, f->f_xid, f->f_payload_len);
        if (f->f_payload_len > 0)
            memcpy(dst + n, f->f_payload, f->f_payload_len);
        n += f->f_payload_len;
        break;
    }
    f->f_version = ARPC_PROTO_VERSION;
    f->f_body_len = (uint32_t)(n - ARPC_FRAME_HEADER_SIZE);
    return n;
}

/* A random frame of the given kind (0: any kind), its views into the pools. */
static struct arpc_frame random_frame(uint64_t *s, uint8_t kind)
{
    struct arpc_frame f = {0};
    f.f_kind = kind != 0 ? kind : (uint8_t)(1 + rng_below(s, 9));
    bool big = rng_below(s, 8) == 0;
    uint32_t payload_len = rng_below(s, big ? (uint32_t)sizeof pool : 64);
    switch (f.f_kind) {
    case ARPC_FRAME_HELLO:
        f.f_client_id = rng_next(s);
        f.f_flags = (uint32_t)rng_next(s);
        f.f_max_frame = (uint32_t)rng_next(s);
        f.f_expiry_s = (uint32_t)rng_next(s);
        if (f.f_flags & ARPC_HELLO_TOKEN) { /* a client's HELLO with its token: no expiry */
            f.f_expiry_s = 0;
            f.f_token_len = payload_len;
            f.f_token = pool + rng_below(s, (uint32_t)sizeof pool - payload_len + 1);
        }
        break;
    case ARPC_FRAME_REQUEST:
    case ARPC_FRAME_ONEWAY:
        f.f_xid = rng_next(s);
        f.f_seq = rng_next(s);
        f.f_ack = rng_next(s);
        f.f_deadline_ms = (uint32_t)rng_next(s);
        f.f_method_len = (uint16_t)(1 + rng_below(s, ARPC_METHOD_MAX));
        f.f_method = text_pool + rng_below(s, (uint32_t)sizeof text_pool - f.f_method_len + 1);
        f.f_payload_len = payload_len;
        f.f_payload = pool + rng_below(s, (uint32_t)sizeof pool - payload_len + 1);
        break;
    case ARPC_FRAME_ERROR:
    case ARPC_FRAME_GOAWAY:
        f.f_xid = rng_next(s);
        f.f_code = (uint32_t)rng_next(s);
        f.f_msg_len = (uint16_t)rng_below(s, 200);
        f.f_msg = text_pool + rng_below(s, (uint32_t)sizeof text_pool - f.f_msg_len + 1);
        break;
    default:
        f.f_xid = rng_next(s);
        f.f_payload_len = payload_len;
        f.f_payload = pool + rng_below(s, (uint32_t)sizeof pool - payload_len + 1);
        if (f.f_kind == ARPC_FRAME_CANCEL && payload_len >= ARPC_CANCEL_SEQ_SIZE) /* its first 8 bytes: a seq */
            for (int i = ARPC_CANCEL_SEQ_SIZE - 1; i >= 0; i--)
                f.f_seq = f.f_seq << 8 | f.f_payload[i];
        break;
    }
    return f;
}

static const uint8_t all_kinds[] = {
    ARPC_FRAME_HELLO, ARPC_FRAME_REQUEST, ARPC_FRAME_ONEWAY, ARPC_FRAME_REPLY,
    ARPC_FRAME_ERROR, ARPC_FRAME_PING,    ARPC_FRAME_PONG,   ARPC_FRAME_GOAWAY, ARPC_FRAME_CANCEL,
};
#define NKINDS (sizeof all_kinds / sizeof all_kinds[0])

/* ---- round trips and exact bytes ---- */

static void roundtrip(struct arpc_frame *want)
{
    uint8_t buf[8192];
    size_t n = encode_frame(buf, want);
    struct arpc_frame got;
    size_t consumed = 99, need = 0;
    assert_int_equal(ARPC_OK, decode_exact(buf, n, UINT32_MAX, &got, &consumed, &need));
    assert_int_equal(n, consumed);
    assert_int_equal(n, need);
    assert_frame_equal(want, &got);
}

static void test_roundtrip_every_kind(void **state)
{
    (void)state;
    uint64_t s = 1;
    for (size_t k = 0; k < NKINDS; k++) {
        for (int i = 0; i < 200; i++) {
            struct arpc_frame f = random_frame(&s, all_kinds[k]);
            roundtrip(&f);
        }
    }
    /* Edges: extreme integers, longest method, empty payloads and messages. */
    char method[ARPC_METHOD_MAX];
    memset(method, 'm', sizeof method);
    struct arpc_frame req = {.f_kind = ARPC_FRAME_REQUEST, .f_xid = UINT64_MAX, .f_seq = UINT64_MAX,
                             .f_ack = UINT64_MAX, .f_deadline_ms = UINT32_MAX,
                             .f_method = method, .f_method_len = ARPC_METHOD_MAX};
    roundtrip(&req);
    struct arpc_frame one = {.f_kind = ARPC_FRAME_ONEWAY, .f_method = "x", .f_method_len = 1};
    roundtrip(&one);
    struct arpc_frame err = {.f_kind = ARPC_FRAME_ERROR, .f_xid = 7, .f_code = ARPC_ENOMETHOD};
    roundtrip(&err);
    struct arpc_frame hello = {.f_kind = ARPC_FRAME_HELLO, .f_client_id = UINT64_MAX,
                               .f_flags = UINT32_MAX, .f_max_frame = UINT32_MAX};
    roundtrip(&hello);
    for (size_t k = 0; k < NKINDS; k++) {
        struct arpc_frame empty = {.f_kind = all_kinds[k], .f_method = "m", .f_method_len = 1};
        if (all_kinds[k] != ARPC_FRAME_REQUEST && all_kinds[k] != ARPC_FRAME_ONEWAY)
            empty.f_method = NULL, empty.f_method_len = 0;
        roundtrip(&empty);
    }
}

static void test_request_head_matches_whole(void **state)
{
    (void)state;
    uint64_t s = 2;
    uint8_t whole[8192], split[8192];
    for (int i = 0; i < 500; i++) {
        uint8_t kind = i % 2 ? ARPC_FRAME_REQUEST : ARPC_FRAME_ONEWAY;
        struct arpc_frame f = random_frame(&s, kind);
        size_t size = arpc_frame_request_size(f.f_method_len, f.f_payload_len);
        size_t n = arpc_frame_encode_request(whole, kind, f.f_xid, f.f_seq, f.f_ack, f.f_deadline_ms,
                                             f.f_method, f.f_method_len, f.f_payload, f.f_payload_len);
        assert_int_equal(size, n);
        size_t h = arpc_frame_encode_request_head(split, kind, f.f_xid, f.f_seq, f.f_ack,
                                                  f.f_deadline_ms, f.f_method, f.f_method_len,
                                                  f.f_payload_len);
        assert_int_equal(size - f.f_payload_len, h);
        if (f.f_payload_len > 0)
            memcpy(split + h, f.f_payload, f.f_payload_len);
        assert_memory_equal(whole, split, n);
    }
    /* A NULL payload of length 0 is allowed. */
    size_t n = arpc_frame_encode_request(whole, ARPC_FRAME_REQUEST, 1, 0, 0, 0, "m", 1, NULL, 0);
    assert_int_equal(arpc_frame_request_size(1, 0), n);
    assert_int_equal(arpc_frame_error_size(0), arpc_frame_encode_error(whole, ARPC_FRAME_GOAWAY, 0,
                                                                       ARPC_ESHUTDOWN, 0, NULL, 0));
}

/* The worked example of docs/PROTOCOL.md: keep the two in step. */
static const uint8_t doc_request[] = {
    0x61, 0x52, 0x01, 0x02, 0x1e, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xe8, 0x03, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x65, 0x63, 0x68, 0x6f, 0x68, 0x69,
};
static const uint8_t doc_reply[] = {
    0x61, 0x52, 0x01, 0x04, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x68, 0x69,
};
static const uint8_t doc_hello[] = {
    0x61, 0x52, 0x01, 0x01, 0x18, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};
static const uint8_t doc_server_hello[] = {
    0x61, 0x52, 0x01, 0x01, 0x18, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    0x58, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};
static const uint8_t doc_cancel[] = {
    0x61, 0x52, 0x01, 0x09, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};
static const uint8_t doc_cancel_seq[] = {
    0x61, 0x52, 0x01, 0x09, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};
static const uint8_t doc_error[] = {
    0x61, 0x52, 0x01, 0x05, 0x1c, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x0d, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x6e, 0x6f, 0x20, 0x73, 0x75, 0x63, 0x68, 0x20,
    0x6d, 0x65, 0x74, 0x68, 0x6f, 0x64, 0x3a, 0x20, 0x65, 0x63, 0x68, 0x6f,
};

static void test_documented_bytes(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t n = arpc_frame_encode_request(buf, ARPC_FRAME_REQUEST, 1, 5, 4, 1000, "echo", 4, "hi", 2);
    assert_int_equal(sizeof doc_request, n);
    assert_memory_equal(doc_request, buf, n);
    n = arpc_frame_encode_header(buf, ARPC_FRAME_REPLY, 1, 2);
    memcpy(buf + n, "hi", 2);
    assert_memory_equal(doc_reply, buf, sizeof doc_reply);
    n = arpc_frame_encode_hello(buf, 0x0123456789abcdefu, 0, 16u * 1024 * 1024, 0);
    arpc_frame_stamp_hello_incarnation(buf, 0); /* a client's bytes 16-23: its incarnation, 0 here */
    assert_int_equal(sizeof doc_hello, n);
    assert_memory_equal(doc_hello, buf, n);
    n = arpc_frame_encode_hello(buf, 0x1122334455667788u, ARPC_HELLO_CANCEL | ARPC_HELLO_DEDUP | ARPC_HELLO_DURABLE,
                                16u * 1024 * 1024, 600);
    assert_int_equal(sizeof doc_server_hello, n);
    assert_memory_equal(doc_server_hello, buf, n);
    n = arpc_frame_encode_header(buf, ARPC_FRAME_CANCEL, 7, 0);
    assert_int_equal(sizeof doc_cancel, n);
    assert_memory_equal(doc_cancel, buf, n);
    n = arpc_frame_encode_cancel_seq(buf, 5);
    assert_int_equal(sizeof doc_cancel_seq, n);
    assert_memory_equal(doc_cancel_seq, buf, n);
    /* The words arpc's server sends for an unknown method (core/server_conn.c). */
    n = arpc_frame_encode_error(buf, ARPC_FRAME_ERROR, 2, ARPC_ENOMETHOD, 0, "no such method: echo", 20);
    assert_int_equal(sizeof doc_error, n);
    assert_memory_equal(doc_error, buf, n);
    /* The wire values of the codes named in the protocol document. */
    assert_int_equal(7, ARPC_ESHUTDOWN);
    assert_int_equal(12, ARPC_EREJECTED);
    assert_int_equal(13, ARPC_ENOMETHOD);
    assert_int_equal(14, ARPC_EHANDLER);
    assert_int_equal(15, ARPC_ETOOLARGE);
    assert_int_equal(16, ARPC_EPROTO);

    struct arpc_frame f;
    size_t consumed;
    assert_int_equal(ARPC_OK, decode_exact(doc_hello, sizeof doc_hello, 64, &f, &consumed, NULL));
    assert_int_equal(0x0123456789abcdefu, f.f_client_id);
    assert_int_equal(0, f.f_incarnation);
    assert_int_equal(16u * 1024 * 1024, f.f_max_frame);
    assert_int_equal(ARPC_OK, decode_exact(doc_error, sizeof doc_error, 64, &f, &consumed, NULL));
    assert_int_equal(ARPC_ENOMETHOD, f.f_code);
    assert_int_equal(20, f.f_msg_len);
    assert_memory_equal("no such method: echo", f.f_msg, 20);
    assert_int_equal(ARPC_OK, decode_exact(doc_request, sizeof doc_request, 64, &f, &consumed, NULL));
    assert_int_equal(sizeof doc_request, consumed);
    assert_int_equal(ARPC_FRAME_REQUEST, f.f_kind);
    assert_int_equal(1, f.f_xid);
    assert_int_equal(5, f.f_seq);
    assert_int_equal(4, f.f_ack);
    assert_int_equal(1000, f.f_deadline_ms);
    assert_int_equal(4, f.f_method_len);
    assert_memory_equal("echo", f.f_method, 4);
    assert_int_equal(2, f.f_payload_len);
    assert_memory_equal("hi", f.f_payload, 2);
}

/* ---- streams ---- */

#define STREAM_FRAMES 500

struct stream {
    uint8_t *bytes;
    size_t len;
    struct arpc_frame want[STREAM_FRAMES];
    size_t size[STREAM_FRAMES];
};

static struct stream *stream_make(uint64_t seed)
{
    struct stream *st = arpc_calloc(1, sizeof *st);
    assert_non_null(st);
    st->bytes = arpc_malloc(STREAM_FRAMES * 8192);
    assert_non_null(st->bytes);
    uint64_t s = seed;
    for (size_t i = 0; i < STREAM_FRAMES; i++) {
        st->want[i] = random_frame(&s, 0);
        st->size[i] = encode_frame(st->bytes + st->len, &st->want[i]);
        st->len += st->size[i];
    }
    return st;
}

static void stream_free(struct stream *st)
{
    arpc_free(st->bytes);
    arpc_free(st);
}

/*
 * Feeds st->bytes to the decoder as a reader would: `chunk(i)` more bytes arrive each round,
 * and every complete frame in the window is decoded. Checks that each frame decodes exactly
 * once, in order, with the expected fields, and that EAGAIN never consumes.
 */
static void feed_stream(struct stream *st, uint64_t *s, uint32_t max_chunk)
{
    size_t start = 0, end = 0, decoded = 0;
    while (end < st->len) {
        size_t chunk = max_chunk == 1 ? 1 : 1 + rng_below(s, max_chunk);
        end = end + chunk > st->len ? st->len : end + chunk;
        for (;;) {
            struct arpc_frame got;
            size_t consumed = 77, need = 0, avail = end - start;
            int rc = decode_exact(st->bytes + start, avail, UINT32_MAX, &got, &consumed, &need);
            if (rc == ARPC_EAGAIN) {
                assert_int_equal(0, consumed);
                if (decoded == STREAM_FRAMES) { /* all done: the window is empty */
                    assert_int_equal(0, avail);
                    break;
                }
                assert_true(avail < st->size[decoded]);
                assert_int_equal(avail >= 8 ? st->size[decoded] : ARPC_FRAME_HEADER_SIZE, need);
                break;
            }
            assert_int_equal(ARPC_OK, rc);
            assert_true(decoded < STREAM_FRAMES);
            assert_int_equal(st->size[decoded], consumed);
            assert_frame_equal(&st->want[decoded], &got);
            decoded++;
            start += consumed;
        }
    }
    assert_int_equal(STREAM_FRAMES, decoded);
    assert_int_equal(st->len, start);
}

static void test_stream_whole(void **state)
{
    (void)state;
    struct stream *st = stream_make(3);
    uint64_t s = 0;
    feed_stream(st, &s, (uint32_t)st->len);
    /* Whole in one round, regardless of the random chunk: check directly too. */
    size_t off = 0;
    for (size_t i = 0; i < STREAM_FRAMES; i++) {
        struct arpc_frame got;
        size_t consumed;
        assert_int_equal(ARPC_OK,
                         arpc_frame_decode(st->bytes + off, st->len - off, UINT32_MAX, &got, &consumed, NULL));
        assert_int_equal(st->size[i], consumed);
        assert_frame_equal(&st->want[i], &got);
        off += consumed;
    }
    assert_int_equal(st->len, off);
    stream_free(st);
}

static void test_stream_byte_by_byte(void **state)
{
    (void)state;
    struct stream *st = stream_make(4);
    uint64_t s = 0;
    feed_stream(st, &s, 1);
    stream_free(st);
}

static void test_stream_random_chunks(void **state)
{
    (void)state;
    struct stream *st = stream_make(5);
    uint64_t s = 6;
    for (uint32_t max_chunk = 2; max_chunk <= 16384; max_chunk *= 4)
        feed_stream(st, &s, max_chunk);
    stream_free(st);
}

/* ---- malformed frames ---- */

/* Expects `want` for buf[0..len), and EAGAIN or `want` for every prefix (monotone). */
static void expect_rc(const uint8_t *buf, size_t len, uint32_t max_body, int want)
{
    struct arpc_frame sentinel, got;
    memset(&sentinel, 0xa5, sizeof sentinel);
    for (size_t k = 0; k <= len; k++) {
        got = sentinel;
        size_t consumed = 77;
        int rc = decode_exact(buf, k, max_body, &got, &consumed, NULL);
        if (k == len)
            assert_int_equal(want, rc);
        else if (rc != ARPC_EAGAIN)
            assert_int_equal(want, rc);
        if (rc != ARPC_OK) {
            assert_int_equal(0, consumed);
            assert_memory_equal(&sentinel, &got, sizeof got); /* untouched on failure */
        }
    }
}

static size_t valid_request(uint8_t *buf) /* "echo" + "hi" */
{
    return arpc_frame_encode_request(buf, ARPC_FRAME_REQUEST, 1, 2, 3, 4, "echo", 4, "hi", 2);
}

static void test_malformed_header(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t n = valid_request(buf);
    expect_rc(buf, n, UINT32_MAX, ARPC_OK);

    static const struct { size_t off; uint8_t val; } bad[] = {
        {0, 0x00}, {0, 0x62}, {0, 0x52}, {1, 0x00}, {1, 0x72}, {1, 0x61}, /* magic */
        {2, 0x00}, {2, 0x02}, {2, 0xff},                                   /* version */
        {3, 0x00}, {3, 0x0b}, {3, 0x0c}, {3, 0x80}, {3, 0xff},             /* kind */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        valid_request(buf);
        buf[bad[i].off] = bad[i].val;
        expect_rc(buf, n, UINT32_MAX, ARPC_EPROTO);
        /* Decided from the bad byte itself, before the rest of the header arrives. */
        struct arpc_frame f;
        size_t consumed;
        assert_int_equal(ARPC_EPROTO, decode_exact(buf, bad[i].off + 1, UINT32_MAX, &f, &consumed, NULL));
    }
}

/* Builds a header with the given kind and body length followed by body_len zero bytes with
 * the u16 at `len_off` in the body (method_len or msg_len) set to `field`. */
static size_t frame_with(uint8_t *buf, uint8_t kind, uint32_t body_len, size_t len_off, uint16_t field)
{
    memset(buf, 0, ARPC_FRAME_HEADER_SIZE + body_len);
    arpc_frame_encode_header(buf, ARPC_FRAME_REPLY, 9, body_len);
    buf[3] = kind; /* set by hand: the encoder asserts a well-formed length */
    if (len_off + 2 <= body_len) {
        buf[ARPC_FRAME_HEADER_SIZE + len_off] = (uint8_t)field;
        buf[ARPC_FRAME_HEADER_SIZE + len_off + 1] = (uint8_t)(field >> 8);
    }
    return ARPC_FRAME_HEADER_SIZE + body_len;
}

/* frame_with() into a scratch buffer, then expect_rc() with no body limit. */
static void expect_body_rc(uint8_t kind, uint32_t body_len, size_t len_off, uint16_t field, int want)
{
    uint8_t buf[1024];
    assert_true(ARPC_FRAME_HEADER_SIZE + body_len <= sizeof buf);
    expect_rc(buf, frame_with(buf, kind, body_len, len_off, field), UINT32_MAX, want);
}

static void test_malformed_bodies(void **state)
{
    (void)state;
    /* Fixed fields truncated, with a body length that matches the bytes present. */
    for (uint32_t b = 0; b < ARPC_REQUEST_FIXED_SIZE; b++) {
        expect_body_rc(ARPC_FRAME_REQUEST, b, 20, 1, ARPC_EPROTO);
        expect_body_rc(ARPC_FRAME_ONEWAY, b, 20, 1, ARPC_EPROTO);
    }
    for (uint32_t b = 0; b < ARPC_HELLO_BODY_SIZE; b++)
        expect_body_rc(ARPC_FRAME_HELLO, b, 0, 0, ARPC_EPROTO);
    for (uint32_t b = 0; b < ARPC_ERROR_FIXED_SIZE; b++) {
        expect_body_rc(ARPC_FRAME_ERROR, b, 4, 0, ARPC_EPROTO);
        expect_body_rc(ARPC_FRAME_GOAWAY, b, 4, 0, ARPC_EPROTO);
    }
    /* method_len: 0, one past the body, beyond ARPC_METHOD_MAX though within the body. */
    expect_body_rc(ARPC_FRAME_REQUEST, ARPC_REQUEST_FIXED_SIZE + 10, 20, 0, ARPC_EPROTO);
    expect_body_rc(ARPC_FRAME_ONEWAY, ARPC_REQUEST_FIXED_SIZE + 10, 20, 11, ARPC_EPROTO);
    expect_body_rc(ARPC_FRAME_REQUEST, ARPC_REQUEST_FIXED_SIZE, 20, 1, ARPC_EPROTO);
    expect_body_rc(ARPC_FRAME_REQUEST, ARPC_REQUEST_FIXED_SIZE + 300, 20, ARPC_METHOD_MAX + 1, ARPC_EPROTO);
    expect_body_rc(ARPC_FRAME_REQUEST, ARPC_REQUEST_FIXED_SIZE + 10, 20, 0xffff, ARPC_EPROTO);
    /* ... and the accepted edges: method filling the body, method of ARPC_METHOD_MAX. */
    expect_body_rc(ARPC_FRAME_REQUEST, ARPC_REQUEST_FIXED_SIZE + 10, 20, 10, ARPC_OK);
    expect_body_rc(ARPC_FRAME_REQUEST, ARPC_REQUEST_FIXED_SIZE + 300, 20, ARPC_METHOD_MAX, ARPC_OK);
    /* msg_len beyond the body, for ERROR and GOAWAY; exactly filling it is fine. */
    expect_body_rc(ARPC_FRAME_ERROR, ARPC_ERROR_FIXED_SIZE + 5, 4, 6, ARPC_EPROTO);
    expect_body_rc(ARPC_FRAME_GOAWAY, ARPC_ERROR_FIXED_SIZE, 4, 1, ARPC_EPROTO);
    expect_body_rc(ARPC_FRAME_GOAWAY, ARPC_ERROR_FIXED_SIZE + 5, 4, 0xffff, ARPC_EPROTO);
    expect_body_rc(ARPC_FRAME_ERROR, ARPC_ERROR_FIXED_SIZE + 5, 4, 5, ARPC_OK);
    /* A HELLO whose flags promise a token but whose body ends before its length (28 bytes). */
    for (uint32_t b = ARPC_HELLO_BODY_SIZE; b < ARPC_HELLO_BODY_SIZE_EXT + ARPC_HELLO_TOKEN_FIXED; b++)
        expect_body_rc(ARPC_FRAME_HELLO, b, 8, ARPC_HELLO_TOKEN, ARPC_EPROTO);
    expect_body_rc(ARPC_FRAME_HELLO, ARPC_HELLO_BODY_SIZE_EXT + ARPC_HELLO_TOKEN_FIXED, 8, ARPC_HELLO_TOKEN, ARPC_OK);
}

/* What a refused frame is called in the log and the GOAWAY: the decoder's verdict named, a
 * stranger on an arpc port recognised; never more than the room given. */
static void expect_fault(const uint8_t *buf, size_t len, const char *words)
{
    struct arpc_frame f;
    size_t used;
    assert_int_equal(ARPC_EPROTO, arpc_frame_decode(buf, len, UINT32_MAX, &f, &used, NULL));
    char text[160];
    arpc_frame_fault_text(buf, len, text, sizeof(text));
    if (strstr(text, words) == NULL)
        fail_msg("\"%s\" does not say \"%s\"", text, words);
}

static void test_fault_text(void **state)
{
    (void)state;
    uint8_t buf[1024];
    size_t n = valid_request(buf);
    buf[0] = 0x16, buf[1] = 0x03; /* a TLS ClientHello's record header */
    expect_fault(buf, n, "the peer TLS (tls://)");
    buf[0] = 0x15; /* a TLS alert */
    expect_fault(buf, n, "the peer TLS (tls://)");
    expect_fault((const uint8_t *)"GET / HTTP/1.1\r\n", 16, "an HTTP request");
    expect_fault((const uint8_t *)"HTTP/1.1 400 Bad Request\r\n", 26, "an HTTP response");
    expect_fault((const uint8_t *)"{\"jsonrpc\":\"2.0\"}", 17, "JSON");
    n = valid_request(buf);
    buf[1] = 'X';
    expect_fault(buf, n, "not an arpc frame (not arpc's magic)");
    n = valid_request(buf);
    buf[2] = 2;
    expect_fault(buf, n, "protocol version 2; this side speaks 1");
    n = valid_request(buf);
    buf[3] = 11;
    expect_fault(buf, n, "unknown frame kind 11");
    expect_fault(buf, frame_with(buf, ARPC_FRAME_REQUEST, 5, 20, 1), "REQUEST frame's body of 5 bytes is shorter than its fixed fields");
    expect_fault(buf, frame_with(buf, ARPC_FRAME_ONEWAY, ARPC_REQUEST_FIXED_SIZE + 10, 20, 0), "ONEWAY frame's method name length");
    expect_fault(buf, frame_with(buf, ARPC_FRAME_GOAWAY, ARPC_ERROR_FIXED_SIZE, 4, 1), "GOAWAY frame's message runs past its body");
    expect_fault(buf, frame_with(buf, ARPC_FRAME_HELLO, ARPC_HELLO_BODY_SIZE, 8, ARPC_HELLO_TOKEN), "HELLO frame promises a token");
    /* A HELLO announcing a frame limit under ARPC_MAX_FRAME_MIN (a peer that could take no call
     * or goodbye; a client used to accept it and fail every call ETOOLARGE); 0 (not announced)
     * and the minimum itself are fine. */
    expect_fault(buf, arpc_frame_encode_hello(buf, 1, 0, 1, 0), "HELLO frame announces a frame limit of 1 bytes, under the 1024 an arpc peer may announce");
    expect_fault(buf, arpc_frame_encode_hello(buf, 1, 0, ARPC_MAX_FRAME_MIN - 1, 0), "a frame limit of 1023 bytes");
    struct arpc_frame hello;
    size_t used;
    assert_int_equal(ARPC_OK, arpc_frame_decode(buf, arpc_frame_encode_hello(buf, 1, 0, ARPC_MAX_FRAME_MIN, 0), UINT32_MAX, &hello, &used, NULL));
    assert_int_equal(ARPC_MAX_FRAME_MIN, hello.f_max_frame);
    assert_int_equal(ARPC_OK, arpc_frame_decode(buf, arpc_frame_encode_hello(buf, 1, 0, 0, 0), UINT32_MAX, &hello, &used, NULL));
    /* Cut to the room given, NUL included. */
    n = valid_request(buf);
    buf[3] = 11;
    char small[8];
    arpc_frame_fault_text(buf, n, small, sizeof(small));
    assert_string_equal("unknown", small);
    assert_string_equal("REPLY", arpc_frame_kind_name(ARPC_FRAME_REPLY));
    assert_string_equal("unknown", arpc_frame_kind_name(0));
    assert_string_equal("unknown", arpc_frame_kind_name(200));
}

/* Extra bytes after the fixed fields of HELLO, and after the message of ERROR / GOAWAY, are
 * ignored; reserved fields are ignored; request flags are reported. */
static void test_forward_compatible_bytes(void **state)
{
    (void)state;
    uint8_t buf[256];
    struct arpc_frame f;
    size_t consumed;
    size_t n = arpc_frame_encode_hello(buf, 11, 22, 3333, 44);
    buf[4] = ARPC_HELLO_BODY_SIZE_EXT + 20; /* body_len */
    memset(buf + n, 0xee, 20);
    assert_int_equal(ARPC_OK, decode_exact(buf, n + 20, UINT32_MAX, &f, &consumed, NULL));
    assert_int_equal(n + 20, consumed);
    assert_int_equal(11, f.f_client_id);
    assert_int_equal(22, f.f_flags);
    assert_int_equal(3333, f.f_max_frame);
    assert_int_equal(44, f.f_expiry_s);
    assert_int_equal(0, f.f_payload_len);
    /* A HELLO of the first revision (16 bytes, no expiry field) still decodes: expiry 0. */
    n = arpc_frame_encode_hello(buf, 11, 22, 3333, 44);
    buf[4] = ARPC_HELLO_BODY_SIZE;
    assert_int_equal(ARPC_OK, decode_exact(buf, ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE, UINT32_MAX, &f,
                                           &consumed, NULL));
    assert_int_equal(3333, f.f_max_frame);
    assert_int_equal(0, f.f_expiry_s);

    n = arpc_frame_encode_error(buf, ARPC_FRAME_GOAWAY, 0, ARPC_ESHUTDOWN, 0, "bye", 3);
    buf[4] = ARPC_ERROR_FIXED_SIZE + 3 + 7;
    buf[ARPC_FRAME_HEADER_SIZE + 6] = 0xff; /* flags: unknown bits are ignored */
    memset(buf + n, 0xee, 7);
    assert_int_equal(ARPC_OK, decode_exact(buf, n + 7, UINT32_MAX, &f, &consumed, NULL));
    assert_int_equal(n + 7, consumed);
    assert_int_equal(ARPC_ESHUTDOWN, f.f_code);
    assert_int_equal(3, f.f_msg_len);
    assert_memory_equal("bye", f.f_msg, 3);

    /* The u16 at 6 is a GOAWAY's flags (ARPC_GOAWAY_LAST), and an ERROR's (ARPC_ERROR_UNKEPT). */
    n = arpc_frame_encode_error(buf, ARPC_FRAME_GOAWAY, 0, ARPC_ESHUTDOWN, ARPC_GOAWAY_LAST, "bye", 3);
    assert_int_equal(arpc_frame_error_size(3), n);
    assert_int_equal(ARPC_OK, decode_exact(buf, n, UINT32_MAX, &f, &consumed, NULL));
    assert_int_equal(ARPC_FRAME_GOAWAY, f.f_kind);
    assert_int_equal(0, f.f_xid);
    assert_int_equal(ARPC_ESHUTDOWN, f.f_code);
    assert_int_equal(ARPC_GOAWAY_LAST, f.f_err_flags);
    assert_memory_equal("bye", f.f_msg, 3);
    n = arpc_frame_encode_error(buf, ARPC_FRAME_GOAWAY, 0, ARPC_ESHUTDOWN, 0, "bye", 3);
    assert_int_equal(ARPC_OK, decode_exact(buf, n, UINT32_MAX, &f, &consumed, NULL));
    assert_int_equal(0, f.f_err_flags);
    n = arpc_frame_encode_error(buf, ARPC_FRAME_ERROR, 5, ARPC_EOVERLOADED, ARPC_ERROR_UNKEPT, "full", 4);
    assert_int_equal(ARPC_ERROR_UNKEPT, buf[ARPC_FRAME_HEADER_SIZE + 6]);
    assert_int_equal(ARPC_OK, decode_exact(buf, n, UINT32_MAX, &f, &consumed, NULL));
    assert_int_equal(ARPC_FRAME_ERROR, f.f_kind);
    assert_int_equal(5, f.f_xid);
    assert_int_equal(ARPC_EOVERLOADED, f.f_code);
    assert_int_equal(ARPC_ERROR_UNKEPT, f.f_err_flags);

    n = valid_request(buf);
    buf[ARPC_FRAME_HEADER_SIZE + 22] = 0x34;
    buf[ARPC_FRAME_HEADER_SIZE + 23] = 0x12;
    assert_int_equal(ARPC_OK, decode_exact(buf, n, UINT32_MAX, &f, &consumed, NULL));
    assert_int_equal(0x1234, f.f_flags);
}

/* A client's incarnation: 8 bytes at body offset 16 of its HELLO (a token's HELLO too), read
 * back as f_incarnation; a 16-byte HELLO (an older peer's) has none. */
static void test_hello_incarnation(void **state)
{
    (void)state;
    uint8_t a[ARPC_FRAME_HEADER_SIZE + 64];
    struct arpc_frame f;
    size_t consumed;
    size_t n = arpc_frame_encode_hello(a, 7, 0, 4096, 0);
    arpc_frame_stamp_hello_incarnation(a, 0x0123456789abcdefull);
    assert_int_equal(ARPC_OK, decode_exact(a, n, UINT32_MAX, &f, &consumed, NULL));
    assert_true(f.f_incarnation == 0x0123456789abcdefull);
    assert_int_equal(7, f.f_client_id);
    assert_int_equal(4096, f.f_max_frame);
    n = arpc_frame_encode_hello_token(a, 7, 0, 0, "tok", 3);
    arpc_frame_stamp_hello_incarnation(a, 42);
    assert_int_equal(ARPC_OK, decode_exact(a, n, UINT32_MAX, &f, &consumed, NULL));
    assert_true(f.f_incarnation == 42);
    assert_int_equal(3, f.f_token_len);
    assert_memory_equal("tok", f.f_token, 3);
    n = arpc_frame_encode_hello(a, 7, 0, 0, 0);
    arpc_frame_encode_header(a, ARPC_FRAME_HELLO, 0, ARPC_HELLO_BODY_SIZE); /* the fixed part only */
    assert_int_equal(ARPC_OK, decode_exact(a, ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE, UINT32_MAX, &f, &consumed, NULL));
    assert_true(f.f_incarnation == 0);
    /* A HELLO without a token never claims one, whatever flags it is given (its peer would
     * refuse it as malformed). */
    n = arpc_frame_encode_hello(a, 7, ARPC_HELLO_TOKEN | ARPC_HELLO_CANCEL, 0, 0);
    assert_int_equal(ARPC_OK, decode_exact(a, n, UINT32_MAX, &f, &consumed, NULL));
    assert_int_equal(ARPC_HELLO_CANCEL, f.f_flags);
    assert_int_equal(0, f.f_token_len);
}

/* A CANCEL names a numbered call by its seq when its body has 8 bytes or more (bytes after
 * them ignored); a shorter body, as ever, is ignored, and the CANCEL names its xid (f_seq 0). */
static void test_cancel_seq(void **state)
{
    (void)state;
    uint8_t a[ARPC_FRAME_HEADER_SIZE + 16];
    struct arpc_frame f;
    size_t consumed;
    size_t n = arpc_frame_encode_cancel_seq(a, 0x0123456789abcdefull);
    assert_int_equal(ARPC_FRAME_HEADER_SIZE + ARPC_CANCEL_SEQ_SIZE, n);
    assert_int_equal(ARPC_OK, decode_exact(a, n, UINT32_MAX, &f, &consumed, NULL));
    assert_int_equal(ARPC_FRAME_CANCEL, f.f_kind);
    assert_int_equal(0, f.f_xid);
    assert_true(f.f_seq == 0x0123456789abcdefull);
    arpc_frame_encode_header(a, ARPC_FRAME_CANCEL, 9, 12); /* a later revision's longer body */
    memset(a + n, 0xee, 4);
    assert_int_equal(ARPC_OK, decode_exact(a, n + 4, UINT32_MAX, &f, &consumed, NULL));
    assert_int_equal(9, f.f_xid);
    assert_true(f.f_seq == 0x0123456789abcdefull);
    for (uint32_t len = 0; len < ARPC_CANCEL_SEQ_SIZE; len++) {
        arpc_frame_encode_header(a, ARPC_FRAME_CANCEL, 7, len);
        memset(a + ARPC_FRAME_HEADER_SIZE, 0xff, len);
        assert_int_equal(ARPC_OK, decode_exact(a, ARPC_FRAME_HEADER_SIZE + len, UINT32_MAX, &f, &consumed, NULL));
        assert_int_equal(7, f.f_xid);
        assert_int_equal(0, f.f_seq);
    }
}

/* An ACK round-trips; its list is judged whole at decode: longer than the bound or than its
 * body, out of order, or outside (ack, high] is bad input, so a receiver never reads a
 * waiting call as finished. Bytes after the list are a later revision's. */
static void test_ack(void **state)
{
    (void)state;
    static uint8_t a[ARPC_FRAME_HEADER_SIZE + ARPC_ACK_FIXED_SIZE + 8 * (ARPC_ACK_WAITING_MAX + 2)];
    struct arpc_frame f;
    size_t consumed;
    uint64_t waiting[ARPC_ACK_WAITING_MAX + 1];
    for (uint32_t i = 0; i <= ARPC_ACK_WAITING_MAX; i++)
        waiting[i] = 1001 + 2 * i;
    size_t n = arpc_frame_encode_ack(a, 1000, 5000, waiting, 3);
    assert_int_equal(arpc_frame_ack_size(3), n);
    assert_int_equal(ARPC_OK, decode_exact(a, n, UINT32_MAX, &f, &consumed, NULL));
    assert_int_equal(ARPC_FRAME_ACK, f.f_kind);
    assert_true(f.f_ack == 1000 && f.f_seq == 5000 && f.f_waiting == 3);
    uint64_t got[3];
    arpc_frame_ack_list_load(got, f.f_payload + ARPC_ACK_FIXED_SIZE, f.f_waiting);
    for (uint32_t i = 0; i < 3; i++)
        assert_true(got[i] == waiting[i]);
    n = arpc_frame_encode_ack(a, 1000, 5000, waiting, ARPC_ACK_WAITING_MAX);
    assert_int_equal(ARPC_OK, decode_exact(a, n, UINT32_MAX, &f, &consumed, NULL));
    assert_int_equal(ARPC_ACK_WAITING_MAX, f.f_waiting);
    n = arpc_frame_encode_ack(a, 7, 7, NULL, 0); /* nothing beyond the ack */
    assert_int_equal(ARPC_OK, decode_exact(a, n, UINT32_MAX, &f, &consumed, NULL));
    n = arpc_frame_encode_ack(a, 1000, 5000, waiting, 2);
    memset(a + n, 0xee, 8);
    arpc_frame_encode_header(a, ARPC_FRAME_ACK, 0, ARPC_ACK_FIXED_SIZE + 2 * 8 + 8);
    assert_int_equal(ARPC_OK, decode_exact(a, n + 8, UINT32_MAX, &f, &consumed, NULL));
    assert_int_equal(2, f.f_waiting);

    n = arpc_frame_encode_ack(a, 1000, 5000, waiting, ARPC_ACK_WAITING_MAX + 1);
    expect_fault(a, n, "ACK frame's list of waiting calls is over 256 long");
    uint64_t bad[][3] = {{1003, 1002, 0}, {1002, 1002, 0}, {1000, 1002, 0}, {1002, 5001, 0}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        n = arpc_frame_encode_ack(a, 1000, 5000, bad[i], 2);
        expect_rc(a, n, UINT32_MAX, ARPC_EPROTO);
    }
    n = arpc_frame_encode_ack(a, 6000, 5000, NULL, 0); /* high under ack */
    expect_rc(a, n, UINT32_MAX, ARPC_EPROTO);
    n = arpc_frame_encode_ack(a, 1000, 5000, waiting, 2);
    arpc_frame_encode_header(a, ARPC_FRAME_ACK, 0, ARPC_ACK_FIXED_SIZE + 8); /* count past the body */
    expect_rc(a, n - 8, UINT32_MAX, ARPC_EPROTO);
    arpc_frame_encode_ack(a, 1000, 5000, NULL, 0);
    a[4] = ARPC_ACK_FIXED_SIZE - 1; /* body_len, little-endian */
    expect_fault(a, ARPC_FRAME_HEADER_SIZE + ARPC_ACK_FIXED_SIZE - 1, "ACK frame's body of 23 bytes is shorter");
}

/* ---- the size limit ---- */

/* What a receiver skipping an oversized body reads from its header: only once it is whole. */
static void test_peek_header(void **state)
{
    (void)state;
    uint8_t buf[ARPC_FRAME_HEADER_SIZE];
    arpc_frame_encode_header(buf, ARPC_FRAME_REQUEST, 0x0102030405060708ull, 5u << 20);
    uint8_t kind = 0;
    uint64_t xid = 0;
    uint32_t body_len = 0;
    for (size_t len = 0; len < sizeof(buf); len++)
        assert_int_equal(ARPC_EAGAIN, arpc_frame_peek_header(buf, len, &kind, &xid, &body_len));
    assert_int_equal(0, kind); /* nothing written before the whole header */
    assert_int_equal(ARPC_OK, arpc_frame_peek_header(buf, sizeof(buf), &kind, &xid, &body_len));
    assert_int_equal(ARPC_FRAME_REQUEST, kind);
    assert_int_equal(0x0102030405060708ull, xid);
    assert_int_equal(5u << 20, body_len);
}

/* And for a request, the fixed fields at the start of its body, once they are all there. */
static void test_peek_request_fields(void **state)
{
    (void)state;
    uint8_t req[ARPC_FRAME_HEADER_SIZE + ARPC_REQUEST_FIXED_SIZE + 8];
    size_t n = arpc_frame_encode_request(req, ARPC_FRAME_REQUEST, 7, 42, 41, 1500, "m", 1, "payload", 7);
    assert_true(n <= sizeof(req));
    struct arpc_frame f = {0};
    for (size_t len = 0; len < ARPC_FRAME_HEADER_SIZE + ARPC_REQUEST_FIXED_SIZE; len++)
        assert_int_equal(ARPC_EAGAIN, arpc_frame_peek_request_fields(req, len, &f));
    assert_int_equal(0, f.f_seq); /* nothing written before they are whole */
    assert_int_equal(ARPC_OK, arpc_frame_peek_request_fields(req, ARPC_FRAME_HEADER_SIZE + ARPC_REQUEST_FIXED_SIZE, &f));
    assert_int_equal(42, f.f_seq);
    assert_int_equal(41, f.f_ack);
    assert_int_equal(1500, f.f_deadline_ms);
}

static void test_size_limit(void **state)
{
    (void)state;
    uint8_t buf[64];
    struct arpc_frame f;
    size_t consumed, need;
    const uint32_t max = 1000;
    for (size_t k = 0; k < NKINDS; k++) {
        /* Only the header: the verdict needs no body byte. */
        arpc_frame_encode_header(buf, ARPC_FRAME_REPLY, 1, max + 1);
        buf[3] = all_kinds[k];
        expect_rc(buf, ARPC_FRAME_HEADER_SIZE, max, ARPC_ETOOLARGE);
        assert_int_equal(ARPC_ETOOLARGE, decode_exact(buf, 8, max, &f, &consumed, &need));
        /* At the limit: waits for the body, and says how much it needs. */
        arpc_frame_encode_header(buf, ARPC_FRAME_REPLY, 1, max);
        buf[3] = all_kinds[k];
        assert_int_equal(ARPC_EAGAIN, decode_exact(buf, ARPC_FRAME_HEADER_SIZE, max, &f, &consumed, &need));
        assert_int_equal(0, consumed);
        assert_int_equal(ARPC_FRAME_HEADER_SIZE + max, need);
    }
    arpc_frame_encode_header(buf, ARPC_FRAME_REPLY, 1, UINT32_MAX);
    assert_int_equal(ARPC_ETOOLARGE, decode_exact(buf, 16, UINT32_MAX - 1, &f, &consumed, &need));
    assert_int_equal(ARPC_ETOOLARGE, decode_exact(buf, 16, ARPC_DEFAULT_MAX_FRAME, &f, &consumed, &need));
    assert_int_equal(ARPC_EAGAIN, decode_exact(buf, 16, UINT32_MAX, &f, &consumed, &need));
    assert_int_equal((uint64_t)ARPC_FRAME_HEADER_SIZE + UINT32_MAX, need);
    /* max_body 0 still lets empty bodies through. */
    arpc_frame_encode_header(buf, ARPC_FRAME_PING, 5, 0);
    assert_int_equal(ARPC_OK, decode_exact(buf, 16, 0, &f, &consumed, &need));
    assert_int_equal(16, consumed);
    arpc_frame_encode_header(buf, ARPC_FRAME_PING, 5, 1);
    assert_int_equal(ARPC_ETOOLARGE, decode_exact(buf, 16, 0, &f, &consumed, &need));
    /* Before the length is known, need is the header size. */
    for (size_t k = 0; k < 8; k++) {
        assert_int_equal(ARPC_EAGAIN, decode_exact(buf, k, 0, &f, &consumed, &need));
        assert_int_equal(ARPC_FRAME_HEADER_SIZE, need);
    }
}

/* ---- random input ---- */

static void check_invariants(const uint8_t *buf, size_t len, uint32_t max_body, int *rc_out, size_t *consumed_out)
{
    struct arpc_frame f;
    size_t consumed = 77, need = 0;
    int rc = decode_exact(buf, len, max_body, &f, &consumed, &need);
    assert_true(rc == ARPC_OK || rc == ARPC_EAGAIN || rc == ARPC_EPROTO || rc == ARPC_ETOOLARGE);
    assert_true(consumed <= len);
    if (rc == ARPC_OK) {
        assert_int_equal(ARPC_FRAME_HEADER_SIZE + (size_t)f.f_body_len, consumed);
        assert_true(f.f_body_len <= max_body);
    } else {
        assert_int_equal(0, consumed);
    }
    if (rc == ARPC_EAGAIN)
        assert_true(need > len);
    *rc_out = rc;
    *consumed_out = consumed;
}

static void test_random_garbage(void **state)
{
    (void)state;
    uint64_t s = 7;
    uint8_t buf[512];
    int counts[ARPC_ERROR_COUNT_] = {0};
    for (int i = 0; i < 100000; i++) {
        size_t len = rng_below(&s, i % 16 == 0 ? (uint32_t)sizeof buf : 64);
        for (size_t j = 0; j < len; j++)
            buf[j] = (uint8_t)rng_next(&s);
        /* Mostly a plausible header, so the fuzzing reaches the bodies. */
        if (i % 4 != 0 && len >= 8) {
            buf[0] = 0x61, buf[1] = 0x52, buf[2] = ARPC_PROTO_VERSION;
            buf[3] = (uint8_t)(1 + rng_below(&s, 9));
            uint32_t body = rng_below(&s, 80);
            buf[4] = (uint8_t)body, buf[5] = 0, buf[6] = 0, buf[7] = 0;
        }
        uint32_t max_body = i % 3 == 0 ? rng_below(&s, 100) : UINT32_MAX;
        int rc;
        size_t consumed;
        check_invariants(buf, len, max_body, &rc, &consumed);
        counts[rc]++;
        /* Every prefix agrees: EAGAIN, or the same verdict (and size) as the whole. */
        if (i % 10 == 0) {
            for (size_t k = 0; k < len; k++) {
                int prc;
                size_t pconsumed;
                check_invariants(buf, k, max_body, &prc, &pconsumed);
                if (prc != ARPC_EAGAIN) {
                    assert_int_equal(rc, prc);
                    assert_int_equal(consumed, pconsumed);
                }
            }
        }
    }
    /* The generator must reach every outcome, or the test proves little. */
    assert_true(counts[ARPC_OK] > 1000);
    assert_true(counts[ARPC_EAGAIN] > 1000);
    assert_true(counts[ARPC_EPROTO] > 1000);
    assert_true(counts[ARPC_ETOOLARGE] > 1000);
}

/* Valid frames with a few bytes flipped: must never crash, and survive re-encoding. */
static void test_mutated_frames(void **state)
{
    (void)state;
    uint64_t s = 8;
    uint8_t buf[8192];
    for (int i = 0; i < 20000; i++) {
        struct arpc_frame want = random_frame(&s, 0);
        size_t n = encode_frame(buf, &want);
        int flips = 1 + (int)rng_below(&s, 3);
        for (int j = 0; j < flips; j++)
            buf[rng_below(&s, (uint32_t)(n < 48 ? n : 48))] ^= (uint8_t)(1u << rng_below(&s, 8));
        int rc;
        size_t consumed;
        check_invariants(buf, n, UINT32_MAX, &rc, &consumed);
    }
}

/* ---- the guard page ---- */

static void test_guard_page(void **state)
{
    (void)state;
    long page = sysconf(_SC_PAGESIZE);
    uint8_t *map = mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(map != MAP_FAILED);
    assert_int_equal(0, mprotect(map + page, (size_t)page, PROT_NONE));
    uint8_t *guard = map + page;

    uint64_t s = 9;
    uint8_t frame[8192];
    for (size_t k = 0; k < NKINDS * 8; k++) {
        struct arpc_frame want = random_frame(&s, all_kinds[k % NKINDS]);
        size_t n = encode_frame(frame, &want);
        if (n > (size_t)page)
            continue;
        for (size_t len = 0; len <= n; len++) {
            uint8_t *at = guard - len;
            memcpy(at, frame, len);
            struct arpc_frame got;
            size_t consumed = 77;
            int rc = arpc_frame_decode(at, len, UINT32_MAX, &got, &consumed, NULL);
            if (len < n) {
                assert_int_equal(ARPC_EAGAIN, rc);
                assert_int_equal(0, consumed);
            } else {
                assert_int_equal(ARPC_OK, rc);
                assert_int_equal(n, consumed);
                assert_frame_equal(&want, &got);
            }
        }
    }
    /* Malformed frames at the edge too. */
    static const uint8_t kinds_bad[] = {ARPC_FRAME_REQUEST, ARPC_FRAME_ERROR, ARPC_FRAME_GOAWAY};
    for (size_t i = 0; i < sizeof kinds_bad; i++) {
        size_t n = frame_with(frame, kinds_bad[i], 40, kinds_bad[i] == ARPC_FRAME_REQUEST ? 20 : 4, 0xffff);
        for (size_t len = 0; len <= n; len++) {
            memcpy(guard - len, frame, len);
            struct arpc_frame got;
            size_t consumed;
            int rc = arpc_frame_decode(guard - len, len, UINT32_MAX, &got, &consumed, NULL);
            assert_int_equal(len < n ? ARPC_EAGAIN : ARPC_EPROTO, rc);
        }
    }
    assert_int_equal(0, munmap(map, (size_t)page * 2));
}

int main(void)
{
    fill_pools();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_kind),
        cmocka_unit_test(test_request_head_matches_whole),
        cmocka_unit_test(test_documented_bytes),
        cmocka_unit_test(test_hello_incarnation),
        cmocka_unit_test(test_cancel_seq),
        cmocka_unit_test(test_ack),
        cmocka_unit_test(test_stream_whole),
        cmocka_unit_test(test_stream_byte_by_byte),
        cmocka_unit_test(test_stream_random_chunks),
        cmocka_unit_test(test_malformed_header),
        cmocka_unit_test(test_malformed_bodies),
        cmocka_unit_test(test_fault_text),
        cmocka_unit_test(test_forward_compatible_bytes),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_peek_header),
        cmocka_unit_test(test_peek_request_fields),
        cmocka_unit_test(test_random_garbage),
        cmocka_unit_test(test_mutated_frames),
        cmocka_unit_test(test_guard_page),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
