/*
 * libFuzzer target for the frame decoder (built with ARPC_FUZZ; run by scripts/fuzz.sh).
 *
 * The first input byte picks the body limit; the rest is decoded as a stream of frames.
 * Checked on every input: the decoder never reads outside the input (libFuzzer hands it an
 * exact-size heap block, ASan watches), returns only OK / EAGAIN / EPROTO / ETOOLARGE,
 * never consumes more than it was given, agrees with itself on every prefix, and every
 * frame it accepts re-encodes to a frame that decodes to the same fields.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/error.h"
#include "core/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static uint8_t scratch[16 + 24 + ARPC_METHOD_MAX + 65536 + 65536];

static void check_views(const struct arpc_frame *f, const uint8_t *buf, size_t consumed)
{
    const uint8_t *end = buf + consumed;
    CHECK(f->f_method_len == 0 || ((const uint8_t *)f->f_method >= buf &&
                                   (const uint8_t *)f->f_method + f->f_method_len <= end));
    CHECK(f->f_msg_len == 0 ||
          ((const uint8_t *)f->f_msg >= buf && (const uint8_t *)f->f_msg + f->f_msg_len <= end));
    CHECK(f->f_payload_len == 0 || (f->f_payload >= buf && f->f_payload + f->f_payload_len <= end));
    CHECK(f->f_token_len == 0 || (f->f_token >= buf && f->f_token + f->f_token_len <= end));
}

/* Re-encodes an accepted frame with the encoders and checks it decodes to the same fields. */
static void check_reencode(const struct arpc_frame *f)
{
    size_t n;
    switch (f->f_kind) {
    case ARPC_FRAME_HELLO:
        if (f->f_flags & ARPC_HELLO_TOKEN) { /* a client's HELLO with its token (expiry not sent) */
            if (arpc_frame_hello_token_size(f->f_token_len) > sizeof scratch)
                return;
            n = arpc_frame_encode_hello_token(scratch, f->f_client_id, f->f_flags, f->f_max_frame, f->f_token,
                                              f->f_token_len);
        } else {
            n = arpc_frame_encode_hello(scratch, f->f_client_id, f->f_flags, f->f_max_frame, f->f_expiry_s);
        }
        break;
    case ARPC_FRAME_REQUEST:
    case ARPC_FRAME_ONEWAY:
        if (arpc_frame_request_size(f->f_method_len, f->f_payload_len) > sizeof scratch)
            return;
        n = arpc_frame_encode_request(scratch, f->f_kind, f->f_xid, f->f_seq, f->f_ack, f->f_deadline_ms,
                                      f->f_method, f->f_method_len, f->f_payload, f->f_payload_len);
        break;
    case ARPC_FRAME_ERROR:
    case ARPC_FRAME_GOAWAY:
        n = arpc_frame_encode_error(scratch, f->f_kind, f->f_xid, f->f_code, f->f_err_flags, f->f_msg, f->f_msg_len);
        break;
    default:
        if (ARPC_FRAME_HEADER_SIZE + (size_t)f->f_payload_len > sizeof scratch)
            return;
        n = arpc_frame_encode_header(scratch, f->f_kind, f->f_xid, f->f_payload_len);
        if (f->f_payload_len > 0)
            memcpy(scratch + n, f->f_payload, f->f_payload_len);
        n += f->f_payload_len;
        break;
    }
    struct arpc_frame g;
    size_t consumed;
    CHECK(arpc_frame_decode(scratch, n, UINT32_MAX, &g, &consumed, NULL) == ARPC_OK);
    CHECK(consumed == n);
    /* HELLO is always encoded with xid 0; receivers ignore it there. */
    CHECK(g.f_kind == f->f_kind && g.f_client_id == f->f_client_id);
    CHECK(f->f_kind == ARPC_FRAME_HELLO ? g.f_xid == 0 : g.f_xid == f->f_xid);
    CHECK(g.f_max_frame == f->f_max_frame && g.f_seq == f->f_seq && g.f_ack == f->f_ack);
    CHECK(g.f_deadline_ms == f->f_deadline_ms && g.f_code == f->f_code);
    /* Request flags are always encoded as 0; HELLO flags round-trip. */
    CHECK(f->f_kind != ARPC_FRAME_HELLO || g.f_flags == f->f_flags);
    CHECK(g.f_method_len == f->f_method_len && g.f_msg_len == f->f_msg_len);
    CHECK(g.f_payload_len == f->f_payload_len);
    CHECK(f->f_method_len == 0 || memcmp(g.f_method, f->f_method, f->f_method_len) == 0);
    CHECK(f->f_msg_len == 0 || memcmp(g.f_msg, f->f_msg, f->f_msg_len) == 0);
    CHECK(f->f_payload_len == 0 || memcmp(g.f_payload, f->f_payload, f->f_payload_len) == 0);
    CHECK(g.f_token_len == f->f_token_len && (f->f_token_len == 0 || memcmp(g.f_token, f->f_token, f->f_token_len) == 0));
}

static int decode_checked(const uint8_t *buf, size_t len, uint32_t max_body, size_t *consumed)
{
    struct arpc_frame f;
    size_t need = 0;
    *consumed = 12345;
    int rc = arpc_frame_decode(buf, len, max_body, &f, consumed, &need);
    CHECK(rc == ARPC_OK || rc == ARPC_EAGAIN || rc == ARPC_EPROTO || rc == ARPC_ETOOLARGE);
    CHECK(*consumed <= len);
    CHECK(rc == ARPC_OK || *consumed == 0);
    CHECK(rc != ARPC_EAGAIN || need > len);
    if (rc == ARPC_OK) {
        CHECK(*consumed == ARPC_FRAME_HEADER_SIZE + (size_t)f.f_body_len && f.f_body_len <= max_body);
        check_views(&f, buf, *consumed);
        check_reencode(&f);
    }
    if (rc == ARPC_EPROTO) { /* its words: within their room, printable (they go to logs) */
        char why[160];
        arpc_frame_fault_text(buf, len, why, sizeof(why));
        for (const char *p = why; *p != '\0'; p++)
            CHECK(*p >= 0x20 && *p <= 0x7e);
    }
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    static const uint32_t limits[] = {0, 8, 24, 64, 1000, ARPC_DEFAULT_MAX_FRAME, UINT32_MAX};
    uint32_t max_body = limits[data[0] % (sizeof limits / sizeof limits[0])];
    const uint8_t *buf = data + 1;
    size_t len = size - 1;

    size_t off = 0;
    for (;;) {
        size_t consumed;
        int rc = decode_checked(buf + off, len - off, max_body, &consumed);
        /* Each shorter view of this frame (the first 64, and the longest) says EAGAIN or the
         * same thing. */
        size_t upto = rc == ARPC_OK ? consumed : len - off;
        for (size_t k = 0; k < upto; k = k + 1 == 64 && upto > 65 ? upto - 1 : k + 1) {
            size_t pc;
            int prc = decode_checked(buf + off, k, max_body, &pc);
            CHECK(prc == ARPC_EAGAIN || (prc == rc && pc == consumed));
        }
        if (rc != ARPC_OK)
            break;
        off += consumed;
    }
    return 0;
}
