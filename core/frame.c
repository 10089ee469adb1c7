/*
 * The wire codec (layout: core/frame.h and docs/PROTOCOL.md).
 *
 * Design notes
 * - The decoder is a pure function of (buf, len, max_body): it keeps no state between calls,
 *   so a caller that gets ARPC_EAGAIN simply calls again with more bytes from the same start.
 * - It judges every header field as soon as its bytes are present (magic, version and kind
 *   from byte 0 on, the body length from byte 8). A prefix of a bad frame therefore fails
 *   as early as the bad byte arrives, and for any frame the result on a prefix is either
 *   ARPC_EAGAIN or the result on the whole frame. Garbage is rejected without waiting for
 *   a length it announces, and an oversized body is refused before it is buffered.
 * - Every access to buf is bounds-checked against len before it happens; offsets are
 *   computed in 64 bits so a u32 length cannot wrap.
 * - Integers go through the explicit little-endian helpers of base/le.h, so the code is
 *   correct on any host byte order and needs no alignment.
 */
#include "core/frame.h"

#include <assert.h>
#include <string.h>

#include "arpc/common.h"
#include "arpc/error.h"
#include "base/le.h"

/* Byte offsets inside the header and the bodies (see the layout in core/frame.h). */
enum {
    HDR_MAGIC0 = 0,
    HDR_MAGIC1 = 1,
    HDR_VERSION = 2,
    HDR_KIND = 3,
    HDR_BODY_LEN = 4,
    HDR_XID = 8,
    HELLO_CLIENT_ID = 0,
    HELLO_FLAGS = 8,
    HELLO_MAX_FRAME = ARPC_HELLO_MAX_FRAME_AT,
    HELLO_EXPIRY = 16,
    HELLO_RESERVED = 20,
    HELLO_INCARNATION = 16, /* a client's: the 8 bytes of a server's expiry and reserved */
    HELLO_TOKEN_LEN = ARPC_HELLO_BODY_SIZE_EXT,
    HELLO_TOKEN = HELLO_TOKEN_LEN + ARPC_HELLO_TOKEN_FIXED,
    REQ_SEQ = 0,
    REQ_ACK = 8,
    REQ_DEADLINE = 16,
    REQ_METHOD_LEN = 20,
    REQ_FLAGS = 22,
    ERR_CODE = 0,
    ERR_MSG_LEN = 4,
    ERR_RESERVED = 6,
    CANCEL_SEQ = 0,
    ACK_ACK = 0,
    ACK_HIGH = 8,
    ACK_COUNT = 16,
    ACK_RESERVED = 20,
    ACK_WAITING = ARPC_ACK_FIXED_SIZE,
};

#define MAGIC0 0x61 /* 'a' */
#define MAGIC1 0x52 /* 'R' */

/* ---- decoding ---- */

/* Smallest body a kind may have (its fixed fields), or -1 for an unknown kind. */
static int64_t kind_min_body(unsigned kind)
{
    switch (kind) {
    case ARPC_FRAME_HELLO:
        return ARPC_HELLO_BODY_SIZE;
    case ARPC_FRAME_REQUEST:
    case ARPC_FRAME_ONEWAY:
        return ARPC_REQUEST_FIXED_SIZE;
    case ARPC_FRAME_ERROR:
    case ARPC_FRAME_GOAWAY:
        return ARPC_ERROR_FIXED_SIZE;
    case ARPC_FRAME_REPLY:
    case ARPC_FRAME_PING:
    case ARPC_FRAME_PONG:
    case ARPC_FRAME_CANCEL:
        return 0;
    case ARPC_FRAME_ACK:
        return ARPC_ACK_FIXED_SIZE;
    default:
        return -1;
    }
}

/* Judges the header bytes present in buf[0..len) (len may be below the header size): the first
 * fault seen, or ARPC_FAULT_NONE when nothing seen so far is wrong. */
static enum arpc_frame_fault header_fault(const uint8_t *buf, size_t len, uint32_t max_body)
{
    if ((len > HDR_MAGIC0 && buf[HDR_MAGIC0] != MAGIC0) || (len > HDR_MAGIC1 && buf[HDR_MAGIC1] != MAGIC1))
        return ARPC_FAULT_MAGIC;
    if (len > HDR_VERSION && buf[HDR_VERSION] != ARPC_PROTO_VERSION)
        return ARPC_FAULT_VERSION;
    if (len > HDR_KIND && kind_min_body(buf[HDR_KIND]) < 0)
        return ARPC_FAULT_KIND;
    if (len < HDR_XID)
        return ARPC_FAULT_NONE;
    uint32_t body_len = le_ld32(buf + HDR_BODY_LEN);
    /* A body too short for its kind's fixed fields is malformed whatever the limit. */
    if ((int64_t)body_len < kind_min_body(buf[HDR_KIND]))
        return ARPC_FAULT_SHORT;
    return body_len > max_body ? ARPC_FAULT_TOO_LARGE : ARPC_FAULT_NONE;
}

enum arpc_frame_fault arpc_frame_header_fault(const uint8_t *buf, size_t len)
{
    return header_fault(buf, len, UINT32_MAX);
}

int64_t arpc_frame_kind_min_body(uint8_t kind) { return kind_min_body(kind); }

/* header_fault as a result code; sets *total once the length is known and sound. */
static int check_header(const uint8_t *buf, size_t len, uint32_t max_body, uint64_t *total)
{
    enum arpc_frame_fault fault = header_fault(buf, len, max_body);
    if (fault == ARPC_FAULT_TOO_LARGE)
        return ARPC_ETOOLARGE;
    if (fault != ARPC_FAULT_NONE)
        return ARPC_EPROTO;
    if (len < HDR_XID)
        return ARPC_OK;
    uint32_t body_len = le_ld32(buf + HDR_BODY_LEN);
    uint64_t t = ARPC_FRAME_HEADER_SIZE + (uint64_t)body_len;
#if SIZE_MAX < UINT64_MAX
    /* Where size_t is 32 bits, such a frame could never be buffered. */
    if (t > SIZE_MAX)
        return ARPC_ETOOLARGE;
#endif
    *total = t;
    return ARPC_OK;
}

int arpc_frame_peek_header(const uint8_t *buf, size_t len, uint8_t *kind, uint64_t *xid, uint32_t *body_len)
{
    if (len < ARPC_FRAME_HEADER_SIZE)
        return ARPC_EAGAIN;
    *kind = buf[HDR_KIND];
    *xid = le_ld64(buf + HDR_XID);
    *body_len = le_ld32(buf + HDR_BODY_LEN);
    return ARPC_OK;
}

int arpc_frame_peek_request_fields(const uint8_t *buf, size_t len, struct arpc_frame *f)
{
    if (len < ARPC_FRAME_HEADER_SIZE + ARPC_REQUEST_FIXED_SIZE)
        return ARPC_EAGAIN;
    const uint8_t *body = buf + ARPC_FRAME_HEADER_SIZE;
    f->f_seq = le_ld64(body + REQ_SEQ);
    f->f_ack = le_ld64(body + REQ_ACK);
    f->f_deadline_ms = le_ld32(body + REQ_DEADLINE);
    f->f_flags = le_ld16(body + REQ_FLAGS);
    return ARPC_OK;
}

/* No arpc peer takes a limit under 1 KiB (arpc/common.h): one announcing it could take no
 * call or goodbye of ours, so it is not spoken to. */
bool arpc_frame_hello_limit_bad(uint32_t max_frame) { return max_frame != 0 && max_frame < ARPC_MAX_FRAME_MIN; }

static int decode_hello(const uint8_t *body, uint32_t body_len, struct arpc_frame *f)
{
    /* Fields appended after the fixed ones are read when present (a peer of an earlier
     * revision sends none); bytes after those are ignored: later revisions may append more. */
    f->f_client_id = le_ld64(body + HELLO_CLIENT_ID);
    f->f_flags = le_ld32(body + HELLO_FLAGS);
    f->f_max_frame = le_ld32(body + HELLO_MAX_FRAME);
    f->f_expiry_s = body_len >= HELLO_EXPIRY + 4 ? le_ld32(body + HELLO_EXPIRY) : 0;
    f->f_incarnation = body_len >= HELLO_INCARNATION + 8 ? le_ld64(body + HELLO_INCARNATION) : 0;
    if (arpc_frame_hello_limit_bad(f->f_max_frame))
        return ARPC_EPROTO;
    if (!(f->f_flags & ARPC_HELLO_TOKEN))
        return ARPC_OK;
    /* The flag promises the extension: a HELLO too short for it, or whose token runs past
     * the body, is malformed (never read as a shorter token). */
    if (body_len < HELLO_TOKEN)
        return ARPC_EPROTO;
    uint32_t token_len = le_ld32(body + HELLO_TOKEN_LEN);
    if (token_len > body_len - HELLO_TOKEN)
        return ARPC_EPROTO;
    f->f_token = body + HELLO_TOKEN;
    f->f_token_len = token_len;
    return ARPC_OK;
}

static int decode_request(const uint8_t *body, uint32_t body_len, struct arpc_frame *f)
{
    uint16_t method_len = le_ld16(body + REQ_METHOD_LEN);
    if (method_len == 0 || method_len > ARPC_METHOD_MAX)
        return ARPC_EPROTO;
    if (method_len > body_len - ARPC_REQUEST_FIXED_SIZE) /* body_len >= fixed: checked */
        return ARPC_EPROTO;
    f->f_seq = le_ld64(body + REQ_SEQ);
    f->f_ack = le_ld64(body + REQ_ACK);
    f->f_deadline_ms = le_ld32(body + REQ_DEADLINE);
    f->f_flags = le_ld16(body + REQ_FLAGS);
    f->f_method = (const char *)body + ARPC_REQUEST_FIXED_SIZE;
    f->f_method_len = method_len;
    f->f_payload = body + ARPC_REQUEST_FIXED_SIZE + method_len;
    f->f_payload_len = body_len - ARPC_REQUEST_FIXED_SIZE - method_len;
    return ARPC_OK;
}

static int decode_error(const uint8_t *body, uint32_t body_len, struct arpc_frame *f)
{
    uint16_t msg_len = le_ld16(body + ERR_MSG_LEN);
    if (msg_len > body_len - ARPC_ERROR_FIXED_SIZE) /* body_len >= fixed: checked */
        return ARPC_EPROTO;
    /* A GOAWAY's or an ERROR's flags (each kind's own). Bytes after the message are ignored
     * (forward compatibility). */
    f->f_err_flags = le_ld16(body + ERR_RESERVED);
    f->f_code = le_ld32(body + ERR_CODE);
    f->f_msg = (const char *)body + ARPC_ERROR_FIXED_SIZE;
    f->f_msg_len = msg_len;
    return ARPC_OK;
}

/* An ACK's list is checked whole here (count within the body and the bound, ascending, each
 * in (ack, high]), so its receiver trusts it: a claim out of order could otherwise make it
 * take a waiting call for a finished one. */
static int decode_ack(const uint8_t *body, uint32_t body_len, struct arpc_frame *f)
{
    f->f_ack = le_ld64(body + ACK_ACK);
    f->f_seq = le_ld64(body + ACK_HIGH);
    uint32_t n = le_ld32(body + ACK_COUNT);
    if (n > (body_len - ARPC_ACK_FIXED_SIZE) / 8 || !arpc_frame_ack_list_ok(f->f_ack, f->f_seq, body + ACK_WAITING, n))
        return ARPC_EPROTO;
    f->f_waiting = n;
    f->f_payload = body;
    f->f_payload_len = body_len;
    return ARPC_OK;
}

static int decode_body(const uint8_t *body, uint32_t body_len, struct arpc_frame *f)
{
    switch (f->f_kind) {
    case ARPC_FRAME_HELLO:
        return decode_hello(body, body_len, f);
    case ARPC_FRAME_REQUEST:
    case ARPC_FRAME_ONEWAY:
        return decode_request(body, body_len, f);
    case ARPC_FRAME_ERROR:
    case ARPC_FRAME_GOAWAY:
        return decode_error(body, body_len, f);
    case ARPC_FRAME_ACK:
        return decode_ack(body, body_len, f);
    case ARPC_FRAME_CANCEL:
        /* A seq when the body has one (added within version 1); shorter bodies were always
         * ignored, and still are: such a CANCEL names its xid. */
        f->f_seq = body_len >= CANCEL_SEQ + ARPC_CANCEL_SEQ_SIZE ? le_ld64(body + CANCEL_SEQ) : 0;
        f->f_payload = body;
        f->f_payload_len = body_len;
        return ARPC_OK;
    default: /* REPLY, PING, PONG: check_header() let no other kind through */
        f->f_payload = body;
        f->f_payload_len = body_len;
        return ARPC_OK;
    }
}

/* The fields of a frame whose header check_header() passed, its body at body (body_len
 * bytes, as the header says). Built aside and published only on success: *out is untouched
 * on error. */
static int decode_checked(const uint8_t *header, const uint8_t *body, struct arpc_frame *out)
{
    struct arpc_frame f = {0};
    f.f_version = header[HDR_VERSION];
    f.f_kind = header[HDR_KIND];
    f.f_body_len = le_ld32(header + HDR_BODY_LEN);
    f.f_xid = le_ld64(header + HDR_XID);
    int rc = decode_body(body, f.f_body_len, &f);
    if (rc != ARPC_OK)
        return rc;
    *out = f;
    return ARPC_OK;
}

int arpc_frame_decode(const uint8_t *buf, size_t len, uint32_t max_body, struct arpc_frame *out,
                      size_t *consumed, size_t *need)
{
    uint64_t total = ARPC_FRAME_HEADER_SIZE;
    *consumed = 0;
    int rc = check_header(buf, len, max_body, &total);
    /* The frame's full size as soon as body_len is in (byte 8), before that the header size:
     * either way a reader that waits for *need bytes never waits for bytes past this frame. */
    if (need != NULL)
        *need = (size_t)total; /* <= SIZE_MAX: check_header() refused larger */
    if (rc != ARPC_OK)
        return rc;
    if (len < total)
        return ARPC_EAGAIN;

    rc = decode_checked(buf, buf + ARPC_FRAME_HEADER_SIZE, out);
    if (rc == ARPC_OK)
        *consumed = (size_t)total;
    return rc;
}

int arpc_frame_decode_split(const uint8_t *header, const uint8_t *body, uint32_t max_body, struct arpc_frame *out)
{
    uint64_t total = 0;
    int rc = check_header(header, ARPC_FRAME_HEADER_SIZE, max_body, &total);
    return rc != ARPC_OK ? rc : decode_checked(header, body, out);
}

/* ---- encoding ---- */

size_t arpc_frame_encode_header(uint8_t *dst, uint8_t kind, uint64_t xid, uint32_t body_len)
{
    assert(kind_min_body(kind) >= 0 && body_len >= (uint64_t)kind_min_body(kind));
    dst[HDR_MAGIC0] = MAGIC0;
    dst[HDR_MAGIC1] = MAGIC1;
    dst[HDR_VERSION] = ARPC_PROTO_VERSION;
    dst[HDR_KIND] = kind;
    le_st32(dst + HDR_BODY_LEN, body_len);
    le_st64(dst + HDR_XID, xid);
    return ARPC_FRAME_HEADER_SIZE;
}

size_t arpc_frame_request_size(size_t method_len, size_t payload_len)
{
    return ARPC_FRAME_HEADER_SIZE + ARPC_REQUEST_FIXED_SIZE + method_len + payload_len;
}

size_t arpc_frame_encode_request_fixed(uint8_t *dst, uint8_t kind, uint64_t xid, uint64_t seq, uint64_t ack,
                                       uint32_t deadline_ms, uint16_t method_len, uint32_t payload_len)
{
    /* Preconditions the caller checks (the decoder would reject the frame otherwise). */
    assert(kind == ARPC_FRAME_REQUEST || kind == ARPC_FRAME_ONEWAY);
    assert(method_len >= 1 && method_len <= ARPC_METHOD_MAX);
    assert(payload_len <= UINT32_MAX - ARPC_REQUEST_FIXED_SIZE - method_len);
    uint32_t body_len = ARPC_REQUEST_FIXED_SIZE + method_len + payload_len;
    arpc_frame_encode_header(dst, kind, xid, body_len);
    uint8_t *body = dst + ARPC_FRAME_HEADER_SIZE;
    le_st64(body + REQ_SEQ, seq);
    le_st64(body + REQ_ACK, ack);
    le_st32(body + REQ_DEADLINE, deadline_ms);
    le_st16(body + REQ_METHOD_LEN, method_len);
    le_st16(body + REQ_FLAGS, 0);
    return ARPC_FRAME_HEADER_SIZE + ARPC_REQUEST_FIXED_SIZE;
}

size_t arpc_frame_encode_request_head(uint8_t *dst, uint8_t kind, uint64_t xid, uint64_t seq,
                                      uint64_t ack, uint32_t deadline_ms, const char *method,
                                      uint16_t method_len, uint32_t payload_len)
{
    size_t n = arpc_frame_encode_request_fixed(dst, kind, xid, seq, ack, deadline_ms, method_len, payload_len);
    memcpy(dst + n, method, method_len);
    return n + method_len;
}

size_t arpc_frame_encode_request(uint8_t *dst, uint8_t kind, uint64_t xid, uint64_t seq, uint64_t ack,
                                 uint32_t deadline_ms, const char *method, uint16_t method_len,
                                 const void *payload, uint32_t payload_len)
{
    size_t n = arpc_frame_encode_request_head(dst, kind, xid, seq, ack, deadline_ms, method, method_len,
                                              payload_len);
    if (payload_len > 0) /* payload may be NULL when empty; memcpy must not see NULL */
        memcpy(dst + n, payload, payload_len);
    return n + payload_len;
}

size_t arpc_frame_total_size(const uint8_t *header) { return ARPC_FRAME_HEADER_SIZE + (size_t)le_ld32(header + HDR_BODY_LEN); }

void arpc_frame_set_xid(uint8_t *header, uint64_t xid) { le_st64(header + HDR_XID, xid); }

uint64_t arpc_frame_xid(const uint8_t *header) { return le_ld64(header + HDR_XID); }

uint8_t arpc_frame_kind_of(const uint8_t *header) { return header[HDR_KIND]; }

size_t arpc_frame_error_size(size_t msg_len) { return ARPC_FRAME_HEADER_SIZE + ARPC_ERROR_FIXED_SIZE + msg_len; }

size_t arpc_frame_encode_error(uint8_t *dst, uint8_t kind, uint64_t xid, uint32_t code, uint16_t flags,
                               const char *msg, uint16_t msg_len)
{
    assert(kind == ARPC_FRAME_ERROR || kind == ARPC_FRAME_GOAWAY);
    arpc_frame_encode_header(dst, kind, xid, ARPC_ERROR_FIXED_SIZE + (uint32_t)msg_len);
    uint8_t *body = dst + ARPC_FRAME_HEADER_SIZE;
    le_st32(body + ERR_CODE, code);
    le_st16(body + ERR_MSG_LEN, msg_len);
    le_st16(body + ERR_RESERVED, flags);
    if (msg_len > 0)
        memcpy(body + ARPC_ERROR_FIXED_SIZE, msg, msg_len);
    return arpc_frame_error_size(msg_len);
}

void arpc_frame_add_error_flags(uint8_t *frame, uint16_t flags)
{
    uint8_t *body = frame + ARPC_FRAME_HEADER_SIZE;
    le_st16(body + ERR_RESERVED, le_ld16(body + ERR_RESERVED) | flags);
}

size_t arpc_frame_encode_hello(uint8_t *dst, uint64_t client_id, uint32_t flags, uint32_t max_frame,
                               uint32_t expiry_s)
{
    arpc_frame_encode_header(dst, ARPC_FRAME_HELLO, 0, ARPC_HELLO_BODY_SIZE_EXT);
    uint8_t *body = dst + ARPC_FRAME_HEADER_SIZE;
    le_st64(body + HELLO_CLIENT_ID, client_id);
    le_st32(body + HELLO_FLAGS, flags & ~(uint32_t)ARPC_HELLO_TOKEN); /* no token follows */
    le_st32(body + HELLO_MAX_FRAME, max_frame);
    le_st32(body + HELLO_EXPIRY, expiry_s);
    le_st32(body + HELLO_RESERVED, 0);
    return ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT;
}

void arpc_frame_stamp_hello_incarnation(uint8_t *frame, uint64_t incarnation)
{
    le_st64(frame + ARPC_FRAME_HEADER_SIZE + HELLO_INCARNATION, incarnation);
}

size_t arpc_frame_hello_token_size(uint32_t token_len)
{
    return ARPC_FRAME_HEADER_SIZE + HELLO_TOKEN + (size_t)token_len;
}

size_t arpc_frame_encode_hello_token(uint8_t *dst, uint64_t client_id, uint32_t flags, uint32_t max_frame,
                                     const void *token, uint32_t token_len)
{
    assert(token_len <= UINT32_MAX - HELLO_TOKEN);
    arpc_frame_encode_hello(dst, client_id, flags, max_frame, 0);
    le_st32(dst + HDR_BODY_LEN, HELLO_TOKEN + token_len);
    uint8_t *body = dst + ARPC_FRAME_HEADER_SIZE;
    le_st32(body + HELLO_FLAGS, flags | ARPC_HELLO_TOKEN);
    le_st32(body + HELLO_TOKEN_LEN, token_len);
    if (token_len > 0)
        memcpy(body + HELLO_TOKEN, token, token_len);
    return arpc_frame_hello_token_size(token_len);
}

size_t arpc_frame_encode_cancel_seq(uint8_t *dst, uint64_t seq)
{
    arpc_frame_encode_header(dst, ARPC_FRAME_CANCEL, 0, ARPC_CANCEL_SEQ_SIZE);
    le_st64(dst + ARPC_FRAME_HEADER_SIZE + CANCEL_SEQ, seq);
    return ARPC_FRAME_HEADER_SIZE + ARPC_CANCEL_SEQ_SIZE;
}

size_t arpc_frame_encode_ack(uint8_t *dst, uint64_t ack, uint64_t high, const uint64_t *waiting, uint32_t n)
{
    arpc_frame_encode_header(dst, ARPC_FRAME_ACK, 0, ARPC_ACK_FIXED_SIZE + n * 8);
    uint8_t *body = dst + ARPC_FRAME_HEADER_SIZE;
    le_st64(body + ACK_ACK, ack);
    le_st64(body + ACK_HIGH, high);
    le_st32(body + ACK_COUNT, n);
    le_st32(body + ACK_RESERVED, 0);
    arpc_frame_ack_list_store(body + ACK_WAITING, waiting, n);
    return arpc_frame_ack_size(n);
}

bool arpc_frame_ack_list_ok(uint64_t ack, uint64_t high, const uint8_t *list, uint32_t n)
{
    if (high < ack || n > ARPC_ACK_WAITING_MAX)
        return false;
    uint64_t prev = ack;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t seq = le_ld64(list + (size_t)i * 8);
        if (seq <= prev || seq > high)
            return false;
        prev = seq;
    }
    return true;
}

void arpc_frame_ack_list_load(uint64_t *seqs, const uint8_t *list, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        seqs[i] = le_ld64(list + (size_t)i * 8);
}

void arpc_frame_ack_list_store(uint8_t *list, const uint64_t *seqs, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        le_st64(list + (size_t)i * 8, seqs[i]);
}

bool arpc_frame_error_code_answers(uint32_t code)
{
    switch (code) {
    case ARPC_ETIMEDOUT: case ARPC_ECANCELLED: case ARPC_ESHUTDOWN: case ARPC_EREJECTED:
    case ARPC_ENOMETHOD: case ARPC_EHANDLER: case ARPC_ETOOLARGE: case ARPC_EPROTO:
    case ARPC_ESYSTEM: case ARPC_EEXPIRED: case ARPC_EOVERLOADED: case ARPC_EABANDONED:
    case ARPC_EAUTH:
        return true;
    default:
        return false;
    }
}
