/*
 * The arpc wire format: codec only (pure; no I/O, no allocation). The byte layout is
 * documented in docs/PROTOCOL.md; this header is its C view.
 *
 * Every frame = 16-byte header + body. All integers are little-endian.
 *   0  u8[2] magic 'a' 'R' (0x61 0x52)
 *   2  u8    version (ARPC_PROTO_VERSION)
 *   3  u8    kind (enum arpc_frame_kind)
 *   4  u32   body length in bytes (after the header)
 *   8  u64   xid: call id chosen by the client, echoed by the reply (0 where unused)
 * Body by kind:
 *   HELLO    u64 client_id (from a server: its epoch), u32 flags, u32 max_frame (the sender's
 *            limit), then optionally u32 expiry_s (server: idle clients forgotten after), u32 0,
 *            then, from a client whose flags have ARPC_HELLO_TOKEN, u32 token_len and the token
 *   REQUEST  u64 seq, u64 ack, u32 deadline_ms (0 = none), u16 method_len, u16 flags,
 *            method bytes, payload bytes (the rest)
 *   ONEWAY   same body as REQUEST (seq and ack are 0 unless the client numbers them)
 *   REPLY    payload bytes
 *   ERROR    u32 code (an arpc_error value), u16 msg_len, u16 flags, msg bytes, rest ignored
 *   PING     payload echoed by PONG (xid echoed too)
 *   PONG     as PING
 *   GOAWAY   u32 code, u16 msg_len, u16 flags, msg bytes
 *   CANCEL   empty: the client gave up on call xid; or u64 seq (xid 0): it gave up on its
 *            numbered call seq, wherever that runs (a call sent on an earlier connection).
 *            Only to a server whose HELLO has ARPC_HELLO_CANCEL (and DEDUP, for a seq); bytes
 *            after the seq, or a body under 8 bytes, are ignored
 *   ACK      u64 ack, u64 high, u32 count, u32 0, count x u64 waiting (ascending, each in
 *            (ack, high]): every seq <= high but those is finished for the client. Only to a
 *            server whose HELLO has ARPC_HELLO_ACKS (and DEDUP); bytes after the list ignored
 */
#ifndef ARPC_CORE_FRAME_H
#define ARPC_CORE_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARPC_PROTO_VERSION 1
#define ARPC_FRAME_HEADER_SIZE 16
#define ARPC_REQUEST_FIXED_SIZE 24 /* seq + ack + deadline + method_len + flags */
#define ARPC_ERROR_FIXED_SIZE 8
#define ARPC_CANCEL_SEQ_SIZE 8 /* a CANCEL naming a numbered call by its seq */
#define ARPC_ACK_FIXED_SIZE 24 /* ack + high + count + reserved */
/* The most seqs an ACK may list as still waiting: a receiver refuses a longer list as bad
 * input (its memory for a client's acknowledgement is bounded by it). */
#define ARPC_ACK_WAITING_MAX 256
#define ARPC_HELLO_BODY_SIZE 16      /* the fixed fields every HELLO has */
#define ARPC_HELLO_MAX_FRAME_AT 12   /* max_frame's place in a HELLO's body */
#define ARPC_HELLO_BODY_SIZE_EXT 24  /* what arpc sends: + expiry_s + reserved */
#define ARPC_HELLO_TOKEN_FIXED 4     /* ARPC_HELLO_TOKEN: the token's length before it */
/* The largest HELLO body a server buffers before the handshake: a token at its cap
 * (ARPC_AUTH_TOKEN_MAX_BYTES, arpc/auth.h) with room for later extensions. A larger frame
 * before HELLO is bad input (handshake limits). */
#define ARPC_HELLO_BODY_MAX 8192u
#define ARPC_METHOD_MAX 255
/* arpc's client sets this bit on the xids its callers' threads pick (core/client_direct.c), a
 * range apart from its loop's; and ARPC_XID_SEQ_BIT on a numbered call's, which is its seq
 * with that bit (the same on every send: core/client_internal.h). To the server an xid is
 * opaque; its log lines show one without the bits (arpc_xid_shown), the call's number as the
 * client counted it. */
#define ARPC_XID_CALLER_BIT (1ull << 63)
#define ARPC_XID_SEQ_BIT (1ull << 62)
static inline unsigned long long arpc_xid_shown(uint64_t xid)
{
    return (unsigned long long)(xid & ~(ARPC_XID_CALLER_BIT | ARPC_XID_SEQ_BIT));
}
/* Default largest body accepted; configurable per client/server. */
#define ARPC_DEFAULT_MAX_FRAME (16u * 1024u * 1024u)

enum arpc_frame_kind {
    ARPC_FRAME_HELLO = 1,
    ARPC_FRAME_REQUEST = 2,
    ARPC_FRAME_ONEWAY = 3,
    ARPC_FRAME_REPLY = 4,
    ARPC_FRAME_ERROR = 5,
    ARPC_FRAME_PING = 6,
    ARPC_FRAME_PONG = 7,
    ARPC_FRAME_GOAWAY = 8,
    ARPC_FRAME_CANCEL = 9,
    ARPC_FRAME_ACK = 10,
};

/* HELLO flags. A peer ignores bits it does not know. */
enum arpc_hello_flag {
    ARPC_HELLO_CANCEL = 1u << 0,  /* server: CANCEL frames are understood */
    ARPC_HELLO_DEDUP = 1u << 1,   /* server: numbered calls are deduplicated (reply cache) */
    ARPC_HELLO_DURABLE = 1u << 2, /* server: its reply cache survives restarts (reply log);
                                   * the epoch stays the same */
    ARPC_HELLO_TOKEN = 1u << 3,   /* client: a credential follows the fixed fields (an older
                                   * server ignores both the bit and the bytes) */
    ARPC_HELLO_ACKS = 1u << 4,    /* server: ACK frames are understood (an older one would
                                   * take the kind for a protocol error) */
};

/* GOAWAY flags, in the ERROR/GOAWAY body's u16 at 6 (reserved before: an older peer ignores
 * them, and an older server sends none). */
enum arpc_goaway_flag {
    /* The server's last frame on the connection, at its stop: it answered every request it
     * read on it ahead of this frame and reads nothing more, so a call still unanswered when
     * the connection closes was never read (it did not run). Sent only when no answer is still
     * owed there (docs/PROTOCOL.md, GOAWAY). */
    ARPC_GOAWAY_LAST = 1u << 0,
    /* With ARPC_ESHUTDOWN: the connection was idle (idle_timeout_ms), or idle and shed to make
     * room (shed_idle_ms); the server runs on. A client reconnects when it next needs to, not
     * at once: otherwise an idle client takes its connection (and, under descriptor pressure,
     * its descriptor) right back. */
    ARPC_GOAWAY_IDLE = 1u << 1,
};

/* ERROR flags, in the same u16 (reserved before: an older client ignores them, and an older
 * server sends none). */
enum arpc_error_flag {
    /* A refusal the server keeps no record of, made before it took the call in (its reply
     * cache, or the client's share of it, full; no memory for the call), or a numbered call
     * cancelled by its xid before it started: it speaks for this send (and the copies it
     * answers) only. An earlier send of the same call, on a connection since lost, that reaches
     * the server later may still run it: the client then tells its caller "may have run"
     * (docs/SEMANTICS.md, "Outcomes"). */
    ARPC_ERROR_UNKEPT = 1u << 0,
};

/* A decoded frame: pointers are views into the decoder's input buffer. */
struct arpc_frame {
    uint8_t f_kind;
    uint8_t f_version;
    uint32_t f_body_len;
    uint64_t f_xid;
    /* HELLO */
    uint64_t f_client_id; /* a server's HELLO: its epoch */
    uint32_t f_flags;
    uint32_t f_max_frame;
    uint32_t f_expiry_s;  /* 0 when the HELLO has no such field */
    uint64_t f_incarnation; /* a client's HELLO: the same 8 bytes (at 16) as its incarnation;
                             * 0 when the HELLO has no such field, or an older client's */
    const uint8_t *f_token; /* ARPC_HELLO_TOKEN: the credential (NULL otherwise) */
    uint32_t f_token_len;
    /* REQUEST / ONEWAY; CANCEL: the seq it names (0: none, it names its xid); ACK: its high */
    uint64_t f_seq;
    uint64_t f_ack;
    /* ACK: how many seqs it lists as waiting (f_payload + ARPC_ACK_FIXED_SIZE holds them:
     * arpc_frame_ack_list_load) */
    uint32_t f_waiting;
    uint32_t f_deadline_ms;
    const char *f_method; /* not NUL-terminated */
    uint16_t f_method_len;
    /* ERROR / GOAWAY */
    uint32_t f_code;
    const char *f_msg; /* not NUL-terminated */
    uint16_t f_msg_len;
    uint16_t f_err_flags; /* GOAWAY: enum arpc_goaway_flag; ERROR: enum arpc_error_flag */
    /* REQUEST / ONEWAY / REPLY / PING / PONG */
    const uint8_t *f_payload;
    uint32_t f_payload_len;
};

/*
 * Decodes one frame from buf[0..len).
 * Returns ARPC_OK with *out filled and *consumed = bytes used; ARPC_EAGAIN when buf holds
 * only part of a frame (*consumed = 0; *need, if need is not NULL, = total bytes the frame
 * needs once the header is known, else ARPC_FRAME_HEADER_SIZE); ARPC_ETOOLARGE when the
 * header announces a body longer than max_body (decided from the header alone, before the
 * body arrives); ARPC_EPROTO for anything malformed (bad magic, unknown version or kind,
 * a body too short for its kind, method_len 0 or beyond the body, ...).
 */
int arpc_frame_decode(const uint8_t *buf, size_t len, uint32_t max_body, struct arpc_frame *out,
                      size_t *consumed, size_t *need);

/* As arpc_frame_decode for a frame whose header and body lie apart: header holds the whole
 * header, body the whole body (as long as the header says; a receiver reading a large body
 * into a buffer of its own). Views point into body. ARPC_OK, ARPC_ETOOLARGE or ARPC_EPROTO;
 * *out is untouched on error. */
int arpc_frame_decode_split(const uint8_t *header, const uint8_t *body, uint32_t max_body, struct arpc_frame *out);

/* What is wrong with a frame's header, first fault first (the order arpc_frame_decode judges
 * in); a frame whose header is sound and which was still refused ARPC_EPROTO has a body that
 * contradicts its own fixed fields (core/frame_fault.c says which, by kind). */
enum arpc_frame_fault {
    ARPC_FAULT_NONE,      /* nothing wrong in the bytes present */
    ARPC_FAULT_MAGIC,     /* not an arpc frame */
    ARPC_FAULT_VERSION,   /* another protocol version */
    ARPC_FAULT_KIND,      /* no such frame kind */
    ARPC_FAULT_SHORT,     /* a body shorter than its kind's fixed fields */
    ARPC_FAULT_TOO_LARGE, /* over a limit (arpc_frame_header_fault never says so: no limit) */
};
enum arpc_frame_fault arpc_frame_header_fault(const uint8_t *buf, size_t len);
/* The fixed fields' size a kind's body starts with, or -1 for an unknown kind. */
int64_t arpc_frame_kind_min_body(uint8_t kind);
/* Whether a HELLO's max_frame is one no arpc peer may announce: 1 to ARPC_MAX_FRAME_MIN - 1
 * (0 is "not announced"). Such a HELLO is malformed (arpc_frame_decode: ARPC_EPROTO). */
bool arpc_frame_hello_limit_bad(uint32_t max_frame);
/* A frame arpc_frame_decode refused ARPC_EPROTO, in words for a log line or a GOAWAY (peer
 * bytes appear only as numbers): buf holds its first len bytes. Writes at most cap bytes, NUL
 * included; returns out. core/frame_fault.c. */
char *arpc_frame_fault_text(const uint8_t *buf, size_t len, char *out, size_t cap);
/* The name of a frame kind ("REQUEST", ...), or "unknown". */
const char *arpc_frame_kind_name(uint8_t kind);

/* The header's kind, xid and body length, unjudged: for a frame arpc_frame_decode refused
 * with ARPC_ETOOLARGE (its magic, version and kind were checked), whose body the receiver
 * skips. ARPC_EAGAIN while buf holds less than a header, else ARPC_OK. */
int arpc_frame_peek_header(const uint8_t *buf, size_t len, uint8_t *kind, uint64_t *xid, uint32_t *body_len);
/* For such a REQUEST or ONEWAY frame (buf at its header), the fixed fields at the start of its
 * body, unjudged, into f (f_seq, f_ack, f_deadline_ms, f_flags; the rest untouched), so that a
 * copy of a numbered call can be looked up before it is refused. ARPC_EAGAIN while buf holds
 * less than the header and those fields, else ARPC_OK. */
int arpc_frame_peek_request_fields(const uint8_t *buf, size_t len, struct arpc_frame *f);

/* The whole size (header + body) of a frame this side encoded, from its header. */
size_t arpc_frame_total_size(const uint8_t *header);
/* Rewrites the xid of an encoded frame (a cached reply sent again under a new call id). */
void arpc_frame_set_xid(uint8_t *header, uint64_t xid);
/* The xid of an encoded frame. */
uint64_t arpc_frame_xid(const uint8_t *header);
/* The kind of an encoded frame (enum arpc_frame_kind). */
uint8_t arpc_frame_kind_of(const uint8_t *header);

/* Encoders write into dst, which must hold the returned size (the *_size functions give it). */
size_t arpc_frame_request_size(size_t method_len, size_t payload_len);
size_t arpc_frame_encode_request(uint8_t *dst, uint8_t kind /* REQUEST or ONEWAY */, uint64_t xid,
                                 uint64_t seq, uint64_t ack, uint32_t deadline_ms, const char *method,
                                 uint16_t method_len, const void *payload, uint32_t payload_len);
/* Writes only the header and fixed fields + method of a request (payload follows separately,
 * e.g. in its own iovec). Returns bytes written (= request size - payload_len). */
size_t arpc_frame_encode_request_head(uint8_t *dst, uint8_t kind, uint64_t xid, uint64_t seq,
                                      uint64_t ack, uint32_t deadline_ms, const char *method,
                                      uint16_t method_len, uint32_t payload_len);
/* Writes only the header and the fixed fields of a request (ARPC_FRAME_HEADER_SIZE +
 * ARPC_REQUEST_FIXED_SIZE bytes): method and payload follow separately (a client keeps them,
 * and makes this part at each send). Returns bytes written. */
size_t arpc_frame_encode_request_fixed(uint8_t *dst, uint8_t kind, uint64_t xid, uint64_t seq, uint64_t ack,
                                       uint32_t deadline_ms, uint16_t method_len, uint32_t payload_len);
/* Header only for REPLY / PING / PONG whose payload follows (body_len = payload length). */
size_t arpc_frame_encode_header(uint8_t *dst, uint8_t kind, uint64_t xid, uint32_t body_len);
size_t arpc_frame_error_size(size_t msg_len);
/* An ERROR for call xid, or a GOAWAY (xid 0), with flags (enum arpc_error_flag, enum
 * arpc_goaway_flag: each kind's own); arpc_frame_error_size(msg_len) bytes. */
size_t arpc_frame_encode_error(uint8_t *dst, uint8_t kind /* ERROR or GOAWAY */, uint64_t xid, uint32_t code,
                               uint16_t flags, const char *msg, uint16_t msg_len);
/* Whether code is one a server answers a call with (an ERROR's code: docs/PROTOCOL.md's
 * table of codes): a client reads any other (0, a local condition such as ARPC_ENOMEM or
 * ARPC_EUNREACHABLE, which would tell its caller "not sent", a code past the enum) as
 * ARPC_EPROTO, an answer it cannot read. */
bool arpc_frame_error_code_answers(uint32_t code);
/* Adds flags to an ERROR frame encoded already (arpc_frame_encode_error). */
void arpc_frame_add_error_flags(uint8_t *frame, uint16_t flags);
/* Writes ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT bytes (ARPC_HELLO_TOKEN cleared). */
size_t arpc_frame_encode_hello(uint8_t *dst, uint64_t client_id, uint32_t flags, uint32_t max_frame,
                               uint32_t expiry_s);
/* Writes a client's incarnation (8 bytes at body offset 16, where a server's HELLO has its
 * expiry) into an encoded HELLO of at least ARPC_HELLO_BODY_SIZE_EXT bytes of body. */
void arpc_frame_stamp_hello_incarnation(uint8_t *frame, uint64_t incarnation);
/* A client's HELLO carrying a credential (ARPC_HELLO_TOKEN is added to flags): the size, then
 * the encoder (dst holds arpc_frame_hello_token_size(token_len) bytes). */
size_t arpc_frame_hello_token_size(uint32_t token_len);
size_t arpc_frame_encode_hello_token(uint8_t *dst, uint64_t client_id, uint32_t flags, uint32_t max_frame,
                                     const void *token, uint32_t token_len);
/* CANCEL naming numbered call seq (xid 0): ARPC_FRAME_HEADER_SIZE + ARPC_CANCEL_SEQ_SIZE bytes. */
size_t arpc_frame_encode_cancel_seq(uint8_t *dst, uint64_t seq);

/* The size of an ACK listing n waiting seqs. */
static inline size_t arpc_frame_ack_size(uint32_t n) { return ARPC_FRAME_HEADER_SIZE + ARPC_ACK_FIXED_SIZE + (size_t)n * 8; }
/* ACK: every seq <= high is finished but waiting[0..n), ascending in (ack, high], n at most
 * ARPC_ACK_WAITING_MAX. Writes arpc_frame_ack_size(n) bytes. */
size_t arpc_frame_encode_ack(uint8_t *dst, uint64_t ack, uint64_t high, const uint64_t *waiting, uint32_t n);
/* Whether list (n little-endian u64s) is an ACK's list of waiting seqs for (ack, high]: high at
 * least ack, n at most ARPC_ACK_WAITING_MAX, each seq ascending within (ack, high]. The one
 * check of such a list wherever it is read (the frame, the reply log's record). */
bool arpc_frame_ack_list_ok(uint64_t ack, uint64_t high, const uint8_t *list, uint32_t n);
/* An ACK's list as it travels (little-endian u64s, as an ACK frame and a reply log record
 * hold it), to n seqs and back. */
void arpc_frame_ack_list_load(uint64_t *seqs, const uint8_t *list, uint32_t n);
void arpc_frame_ack_list_store(uint8_t *list, const uint64_t *seqs, uint32_t n);

#endif
