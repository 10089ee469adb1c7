/*
 * Writes the fuzz targets' seed corpus (tests/fuzz/corpus/<target>/) from frames made by the
 * encoders in core/frame.c, so the seeds follow the wire format when it changes:
 *   fuzz_make_corpus DIR      (scripts/fuzz.sh --corpus runs it on tests/fuzz/corpus)
 * The stream targets' seeds are in their chunked format (fuzz_io.h); frame_fuzz's are one
 * byte of body limit, then frames.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "arpc/auth.h"
#include "arpc/error.h"
#include "core/frame.h"
#include "hello_fuzz.h"

static const char *root;

/* ---- a seed being built ---- */

static uint8_t seed[1 << 16];
static size_t seed_len;

static void put(const void *p, size_t n)
{
    if (seed_len + n > sizeof(seed)) {
        fprintf(stderr, "make_corpus: seed too large\n");
        exit(1);
    }
    memcpy(seed + seed_len, p, n);
    seed_len += n;
}

/* bytes as chunks of at most `chunk` bytes (the stream targets' format). */
static void chunks(const uint8_t *p, size_t n, size_t chunk)
{
    if (chunk > 255)
        chunk = 255;
    while (n > 0) {
        uint8_t k = (uint8_t)(n < chunk ? n : chunk);
        put(&k, 1);
        put(p, k);
        p += k;
        n -= k;
    }
}

static void write_seed(const char *target, const char *name)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", root, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof(path), "%s/%s/%s", root, target, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(seed, 1, seed_len, f) != seed_len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
    seed_len = 0;
}

/* ---- frames ---- */

static uint8_t fr[8192];

static size_t hello(uint64_t id, uint32_t flags, uint32_t max_frame, uint32_t expiry)
{
    return arpc_frame_encode_hello(fr, id, flags, max_frame, expiry);
}

static size_t request(uint8_t kind, uint64_t xid, uint64_t seq, uint64_t ack, const char *method, const void *p,
                      uint32_t n)
{
    return arpc_frame_encode_request(fr, kind, xid, seq, ack, 0, method, (uint16_t)strlen(method), p, n);
}

static size_t error(uint8_t kind, uint64_t xid, uint32_t code, const char *msg)
{
    return arpc_frame_encode_error(fr, kind, xid, code, 0, msg, (uint16_t)strlen(msg));
}

static size_t header(uint8_t kind, uint64_t xid, uint32_t body_len, const void *body, size_t have)
{
    size_t n = arpc_frame_encode_header(fr, kind, xid, body_len);
    memcpy(fr + n, body, have);
    return n + have;
}

/* ---- the server stream target: what a client (or an attacker) sends ---- */

static void server_stream(void)
{
    const char *t = "server_stream_fuzz";
    static const uint8_t zero[4096];
    chunks(fr, hello(1, 0, 0, 0), 255);
    chunks(fr, request(ARPC_FRAME_REQUEST, 1, 0, 0, "f.echo", "hi", 2), 255);
    write_seed(t, "echo");

    chunks(fr, hello(1, 0, 0, 0), 1);
    chunks(fr, request(ARPC_FRAME_REQUEST, 1, 0, 0, "f.echo", "hi", 2), 1);
    write_seed(t, "echo-byte-by-byte");

    chunks(fr, hello(2, 0, 0, 0), 255);
    chunks(fr, request(ARPC_FRAME_REQUEST, 1, 1, 0, "f.echo", "a", 1), 255);
    chunks(fr, request(ARPC_FRAME_REQUEST, 2, 1, 0, "f.echo", "a", 1), 255); /* the duplicate */
    chunks(fr, request(ARPC_FRAME_REQUEST, 3, 2, 1, "f.echo", "b", 1), 255); /* acks seq 1 */
    chunks(fr, request(ARPC_FRAME_ONEWAY, 4, 3, 2, "f.echo", "c", 1), 255);
    chunks(fr, error(ARPC_FRAME_GOAWAY, 0, ARPC_ESHUTDOWN, "bye"), 255);
    write_seed(t, "numbered-duplicate-ack-goaway");

    chunks(fr, hello(3, 0, 1024, 0), 255); /* the client takes 1 KiB bodies at most (the least a HELLO may say) */
    uint8_t n = 3;
    chunks(fr, request(ARPC_FRAME_REQUEST, 1, 0, 0, "f.big", &n, 1), 255);
    chunks(fr, request(ARPC_FRAME_REQUEST, 2, 0, 0, "f.fail", NULL, 0), 255);
    chunks(fr, request(ARPC_FRAME_REQUEST, 3, 0, 0, "no.such", NULL, 0), 255);
    chunks(fr, request(ARPC_FRAME_REQUEST, 4, 0, 0, "bad\n\x1b[2Jname", NULL, 0), 255);
    write_seed(t, "big-fail-unknown-escape");

    chunks(fr, hello(4, 0, 0, 0), 255);
    chunks(fr, request(ARPC_FRAME_REQUEST, 1, 0, 0, "f.later", NULL, 0), 255);
    chunks(fr, request(ARPC_FRAME_REQUEST, 2, 0, 0, "f.later", NULL, 0), 255);
    chunks(fr, header(ARPC_FRAME_CANCEL, 1, 0, NULL, 0), 255);
    chunks(fr, arpc_frame_encode_cancel_seq(fr, 2), 255); /* by seq: no numbered call runs */
    chunks(fr, header(ARPC_FRAME_PING, 9, 3, "abc", 3), 255);
    write_seed(t, "later-cancel-ping");

    /* A numbered call held (f.later), later ones finished, then what the client finished beyond
     * its ack: copies of a covered call are refused, the held one's copy attaches. */
    chunks(fr, hello(5, 0, 0, 0), 255);
    chunks(fr, request(ARPC_FRAME_REQUEST, 1, 1, 0, "f.later", NULL, 0), 255);
    for (uint64_t seq = 2; seq <= 5; seq++)
        chunks(fr, request(ARPC_FRAME_REQUEST, seq, seq, 0, "f.echo", "e", 1), 255);
    chunks(fr, arpc_frame_encode_ack(fr, 0, 5, (const uint64_t[]){1}, 1), 255);
    chunks(fr, request(ARPC_FRAME_REQUEST, 6, 3, 0, "f.echo", "e", 1), 255);
    chunks(fr, request(ARPC_FRAME_REQUEST, 7, 1, 0, "f.later", NULL, 0), 255);
    write_seed(t, "held-ack-beyond");

    chunks(fr, hello(5, 0, 0, 0), 255);
    size_t h = arpc_frame_encode_request_head(fr, ARPC_FRAME_REQUEST, 1, 0, 0, 0, "f.echo", 6, 5000);
    chunks(fr, h, 255); /* over max_frame (1024): answered ETOOLARGE, body skipped */
    chunks(zero, 4096, 255);
    chunks(zero, 5000 - 4096, 255);
    chunks(fr, request(ARPC_FRAME_REQUEST, 2, 0, 0, "f.echo", "next", 4), 255);
    write_seed(t, "oversized-then-call");

    chunks(fr, hello(6, 0, 0, 0), 255);
    chunks(fr, header(ARPC_FRAME_REQUEST, 1, UINT32_MAX, NULL, 0), 255); /* a 4 GiB header */
    write_seed(t, "4gib-header");

    chunks(fr, request(ARPC_FRAME_REQUEST, 1, 0, 0, "f.echo", "x", 1), 255);
    write_seed(t, "no-hello");

    chunks(fr, hello(7, 0, 0, 0), 255);
    chunks(fr, hello(7, 0, 0, 0), 255);
    write_seed(t, "second-hello");

    chunks(fr, hello(8, 0, 0, 0), 255);
    chunks(fr, header(ARPC_FRAME_REPLY, 1, 2, "no", 2), 255); /* a kind a client never sends */
    write_seed(t, "reply-from-client");

    /* JSON-RPC on the same port: a call, then one over max_frame (its bytes dropped as they
     * come, answered by its id) and a call after it. */
    static const char call[] = "{\"method\":\"f.echo\",\"params\":[\"hi\"],\"id\":1}\n";
    chunks((const uint8_t *)call, sizeof(call) - 1, 255);
    static char big[1200];
    int n_big = snprintf(big, sizeof(big), "{\"method\":\"f.echo\",\"params\":[\"%01100d\"],\"id\":\"b\"}\n", 0);
    chunks((const uint8_t *)big, (size_t)n_big, 255);
    chunks((const uint8_t *)call, sizeof(call) - 1, 7);
    write_seed(t, "jsonrpc-call-oversized-call");

    /* JSON-RPC that jansson cannot hold (an integer outside int64, a key with \u0000),
     * answered by its id, then a call after it. */
    static const char unheld[] = "{\"method\":\"f.echo\",\"params\":[123456789012345678901234567890],\"id\":1}\n"
                                 "{\"method\":\"f.echo\",\"params\":[1],\"id\":18446744073709551615}\n"
                                 "{\"method\":\"f.echo\",\"params\":[{\"k\\u0000\":\"a\\u0000b\"}],\"id\":3}\n";
    chunks((const uint8_t *)unheld, sizeof(unheld) - 1, 255);
    chunks((const uint8_t *)call, sizeof(call) - 1, 255);
    write_seed(t, "jsonrpc-unrepresentable-then-call");
}

/* ---- the client stream target: what a server (or an impostor) sends after its HELLO ---- */

static void client_stream(void)
{
    const char *t = "client_stream_fuzz";
    uint8_t flags = ARPC_HELLO_CANCEL | ARPC_HELLO_DEDUP;
    put(&flags, 1);
    /* The calls' xids (client_stream_fuzz.c): the at-most-once ones are their seqs with
     * ARPC_XID_SEQ_BIT (1 and 2), the others the loop's own (1 and 2). */
    const uint64_t amo1 = ARPC_XID_SEQ_BIT | 1, alo = 1, noretry = 2, amo2 = ARPC_XID_SEQ_BIT | 2;
    chunks(fr, header(ARPC_FRAME_REPLY, amo1, 2, "ok", 2), 255);
    chunks(fr, error(ARPC_FRAME_ERROR, alo, ARPC_EHANDLER, "failed"), 255);
    chunks(fr, error(ARPC_FRAME_ERROR, noretry, ARPC_ENOMETHOD, "no such method"), 255);
    chunks(fr, header(ARPC_FRAME_REPLY, amo2, 3, "yes", 3), 255);
    write_seed(t, "all-answered");

    put(&flags, 1);
    chunks(fr, header(ARPC_FRAME_REPLY, alo, 2, "ok", 2), 1);
    chunks(fr, header(ARPC_FRAME_REPLY, alo, 2, "ok", 2), 255); /* twice */
    chunks(fr, header(ARPC_FRAME_REPLY, 77, 2, "ok", 2), 255); /* no such call */
    chunks(fr, header(ARPC_FRAME_PING, 5, 1, "p", 1), 255);
    chunks(fr, error(ARPC_FRAME_ERROR, amo1, 12345, "\x1b]0;title\x07"), 255); /* unknown code */
    write_seed(t, "duplicate-unknown-ping-badcode");

    put(&flags, 1);
    chunks(fr, header(ARPC_FRAME_REPLY, amo1, 5000, NULL, 0), 255); /* over the client's 4096 */
    static const uint8_t zero[255];
    for (int i = 0; i < 20; i++)
        chunks(zero, 250, 255);
    chunks(fr, header(ARPC_FRAME_REPLY, noretry, 1, "z", 1), 255);
    write_seed(t, "oversized-reply");

    put(&flags, 1); /* xids no call has: both top bits, and all bits (a crash once) */
    chunks(fr, header(ARPC_FRAME_REPLY, ARPC_XID_SEQ_BIT | ARPC_XID_CALLER_BIT | 1, 2, "ok", 2), 255);
    chunks(fr, error(ARPC_FRAME_ERROR, UINT64_MAX, ARPC_EHANDLER, "failed"), 255);
    chunks(fr, header(ARPC_FRAME_REPLY, 0xff00000000000001ull, 2, "ok", 2), 255);
    write_seed(t, "xid-both-top-bits");

    put(&flags, 1);
    chunks(fr, error(ARPC_FRAME_GOAWAY, 0, ARPC_ESHUTDOWN, "server shutting down"), 255);
    write_seed(t, "goaway-shutdown");

    flags = 0;
    put(&flags, 1);
    chunks(fr, hello(7, 0, 4096, 600), 255); /* a second HELLO */
    chunks(fr, header(ARPC_FRAME_REQUEST, 1, UINT32_MAX, NULL, 0), 255);
    write_seed(t, "second-hello-4gib");
}

/* ---- the HELLO target: byte 0 picks the side, then the HELLO body ---- */

static void hello_bodies(void)
{
    const char *t = "hello_fuzz";
    static const struct {
        const char *name;
        uint8_t side;
        uint64_t id;
        uint32_t flags, max_frame, expiry;
        size_t cut; /* body bytes kept */
    } seeds[] = {
        {"server-ext", 0, 1, 0, 0, 0, ARPC_HELLO_BODY_SIZE_EXT},
        {"server-short", 0, 1, 0, 4096, 0, ARPC_HELLO_BODY_SIZE},
        {"server-tiny-max", 0, 1, 0, 1, 0, ARPC_HELLO_BODY_SIZE_EXT},
        {"server-truncated", 0, 1, 0, 0, 0, 12},
        {"client-ext", 1, 77, ARPC_HELLO_CANCEL | ARPC_HELLO_DEDUP, 1u << 24, 600, ARPC_HELLO_BODY_SIZE_EXT},
        {"client-durable", 1, 77, 7, 4096, 1, ARPC_HELLO_BODY_SIZE_EXT},
        {"client-short", 1, 77, 0, 0, 0, ARPC_HELLO_BODY_SIZE},
        {"client-tiny-max", 1, 77, 3, 8, 600, ARPC_HELLO_BODY_SIZE_EXT},
    };
    for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
        put(&seeds[i].side, 1);
        hello(seeds[i].id, seeds[i].flags, seeds[i].max_frame, seeds[i].expiry);
        put(fr + ARPC_FRAME_HEADER_SIZE, seeds[i].cut);
        write_seed(t, seeds[i].name);
    }
    /* The server lets in FUZZ_HELLO_TOKEN only (the seeds above send none). */
    static char over[ARPC_AUTH_TOKEN_MAX_BYTES + 1];
    memset(over, 'x', sizeof(over));
    static char wrong[] = FUZZ_HELLO_TOKEN;
    wrong[sizeof(wrong) - 2] ^= 0x20; /* the last byte off (its case flipped) */
    static const struct {
        const char *name;
        const char *token;
        size_t len;
        size_t cut; /* body bytes dropped from the end */
    } tokens[] = {
        {"server-token-right", FUZZ_HELLO_TOKEN, sizeof(FUZZ_HELLO_TOKEN) - 1, 0},
        {"server-token-wrong", wrong, sizeof(wrong) - 1, 0},
        {"server-token-empty", "", 0, 0},
        {"server-token-oversized", over, sizeof(over), 0},
        {"server-token-cut", FUZZ_HELLO_TOKEN, sizeof(FUZZ_HELLO_TOKEN) - 1, 1}, /* runs past the body */
    };
    for (size_t i = 0; i < sizeof(tokens) / sizeof(tokens[0]); i++) {
        uint8_t side = 0;
        put(&side, 1);
        size_t n = arpc_frame_encode_hello_token(fr, 1, 0, 0, tokens[i].token, (uint32_t)tokens[i].len);
        put(fr + ARPC_FRAME_HEADER_SIZE, n - ARPC_FRAME_HEADER_SIZE - tokens[i].cut);
        write_seed(t, tokens[i].name);
    }
}

/* ---- frame_fuzz: a body-limit byte, then frames ---- */

static void frames(void)
{
    const char *t = "frame_fuzz";
    uint8_t limit = 5; /* ARPC_DEFAULT_MAX_FRAME in frame_fuzz's table */
    put(&limit, 1);
    put(fr, hello(1, 3, 4096, 600));
    put(fr, request(ARPC_FRAME_REQUEST, 1, 2, 1, "svc.m", "payload", 7));
    put(fr, header(ARPC_FRAME_REPLY, 1, 2, "ok", 2));
    put(fr, error(ARPC_FRAME_ERROR, 2, ARPC_EHANDLER, "no"));
    put(fr, header(ARPC_FRAME_CANCEL, 3, 0, NULL, 0));
    put(fr, arpc_frame_encode_cancel_seq(fr, 5));
    put(fr, arpc_frame_encode_ack(fr, 4, 9, (const uint64_t[]){5, 8}, 2));
    write_seed(t, "every-kind");
    limit = 2;
    put(&limit, 1);
    put(fr, header(ARPC_FRAME_REQUEST, 1, UINT32_MAX, NULL, 0));
    write_seed(t, "4gib-header");
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    root = argv[1];
    if (mkdir(root, 0755) != 0 && errno != EEXIST) {
        perror(root);
        return 1;
    }
    server_stream();
    client_stream();
    hello_bodies();
    frames();
    return 0;
}
