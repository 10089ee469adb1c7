/*
 * The reply log's disk format: codec only (pure; no I/O, no allocation).
 *
 * A log is a directory of segment files named NNNNNNNNNNNNNNNN.arpclog (the segment number in
 * 16 lower-case hex digits). A segment is a HEADER record followed by records, back to back,
 * no padding. A segment whose header has the SNAPSHOT flag (written by compaction, or the
 * empty first segment) holds the whole live state and supersedes every older segment.
 *
 * Every record; all integers little-endian:
 *   0  u32  len    payload length in bytes (the record is 9 + len bytes; len <= 1 GiB)
 *   4  u32  crc    CRC32C of the type byte and the payload (bytes 8 .. 9 + len)
 *   8  u8   type
 *   9  payload
 * Payload by type:
 *   HEADER 0x48 ('H'), only at offset 0 of a segment; 32 bytes
 *      0  u8[8] magic "arpclog\1"
 *      8  u32   format version (ARPC_LOG_FORMAT_VERSION)
 *     12  u32   flags: bit 0 SNAPSHOT; other bits 0
 *     16  u64   epoch: random, non-zero, the same in every segment of the directory
 *     24  u64   segment number: the one in the file name
 *   REPLY 1; 32 + reply_len + effect_len bytes
 *      0  u64   client id (0: the record carries only its effect)
 *      8  u64   seq
 *     16  u64   ack: the client's ack when the reply was made
 *     24  u32   reply_len
 *     28  u32   effect_len
 *     32  reply bytes, then effect bytes
 *   ACK 2; 16 bytes:    0 u64 client id (non-zero), 8 u64 ack
 *   EXPIRE 3; 8 bytes:  0 u64 client id (non-zero)
 *   STATE 6 ("sized"); 4 + state_len bytes: the application's checkpoint
 *      0  u32   state_len: the payload's length less 4, a witness of the record's length
 *      4  state bytes
 *      Written since 2026-12-05, with no version change (as GOODBYE below). Before, a STATE
 *      was type 4, the state alone (any length): still read, never written. A server that
 *      predates type 6 refuses a log that holds one (an unknown record type).
 *   GOODBYE 5; 16 bytes: 0 u64 client id (non-zero), 8 u64 floor: the highest seq it used
 *      (forgets the client as EXPIRE does, and keeps the floor: its calls at or below it are
 *      refused; ARPC_RC_GONE_MAX floors are kept, shared among owners). Added after the format's first
 *      release, with no version change: a log without it reads as before; a server that
 *      predates it refuses a log that holds one (an unknown record type), rather than forget
 *      the floors. Written for a client without an identity (owner 0).
 *   GOODBYE_OWNED 8; 24 bytes: GOODBYE's 16, then 16 u64 owner (non-zero): the identity whose
 *      share of the floors this one is held against (core/reply_cache_gone.h), so a restart
 *      shares them as the running server did. Written since 2026-12-07 for a client with an
 *      identity, with no version change: a server that predates it refuses a log that holds
 *      one (an unknown record type). Read as a GOODBYE with v_owner.
 *   ACK_BEYOND 9; 32 + 8 x count bytes: what a client acknowledged beyond its ack (an ACK
 *      frame, docs/PROTOCOL.md): every seq <= high is finished but the waiting ones
 *      0  u64   client id (non-zero)
 *      8  u64   ack
 *     16  u64   high (at least ack)
 *     24  u32   count (at most ARPC_ACK_WAITING_MAX)
 *     28  u32   0
 *     32  count x u64 waiting, ascending in (ack, high]
 *      Added 2026-12-07 with no version change: a server that predates it refuses a log that
 *      holds one (an unknown record type).
 *   SYNCED 7; 16 bytes: the writer's own, never a caller's (core/reply_log_tail.h says why)
 *      0  u64   extent: the first `extent` bytes of this segment had been fdatasync'ed when
 *               this record was written (0 in the first one, which only introduces the nonce)
 *      8  u64   nonce: random, the same in every SYNCED record of a segment, never sent to a
 *               peer, so that bytes a client chose (an echoed reply) cannot pass for one
 *      The first record of every segment written since 2026-12-06 (after the header), and the
 *      first of each write that follows a completed sync; added with no version change: a
 *      server that predates it refuses a log that holds one (an unknown record type).
 *
 * The checksum does not cover the length: a damaged length shows up as a checksum mismatch
 * (or a record running past the end of the file), which recovery then tells apart from a
 * torn tail by looking for valid records after it (core/reply_log_tail.c). What stands in
 * for a check of the length is the head's redundancy: the fixed size of ACK, EXPIRE and
 * the GOODBYEs, REPLY's two lengths, which must add up to its own, ACK_BEYOND's count (at most
 * ARPC_ACK_WAITING_MAX, 8 bytes each), and a sized STATE's state_len
 * (arpc_log_head_size). Only a STATE of type 4 has none: a torn one, whose state (the
 * application's bytes, maybe a client's) can hold well-formed records, made recovery search
 * inside it and refuse to start (why type 6 exists).
 */
#ifndef ARPC_CORE_REPLY_LOG_FORMAT_H
#define ARPC_CORE_REPLY_LOG_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/reply_log.h"

#define ARPC_LOG_FORMAT_VERSION 1
#define ARPC_LOG_HEADER 0x48           /* the type byte of a segment header */
#define ARPC_LOG_FLAG_SNAPSHOT 1u
#define ARPC_LOG_RECORD_HEAD 9         /* len + crc + type */
#define ARPC_LOG_HEADER_PAYLOAD 32
#define ARPC_LOG_REPLY_FIXED 32        /* REPLY's fields before its reply and effect bytes */
#define ARPC_LOG_ACK_PAYLOAD 16
#define ARPC_LOG_EXPIRE_PAYLOAD 8
#define ARPC_LOG_GOODBYE_PAYLOAD 16
#define ARPC_LOG_GOODBYE_OWNED 8      /* the type byte of a GOODBYE with an owner */
#define ARPC_LOG_GOODBYE_OWNED_PAYLOAD 24
#define ARPC_LOG_STATE_SIZED 6        /* the type byte a STATE record is written with */
#define ARPC_LOG_STATE_FIXED 4        /* its state's length, before the state */
#define ARPC_LOG_SYNCED 7             /* the type byte of a SYNCED record */
#define ARPC_LOG_SYNCED_PAYLOAD 16
#define ARPC_LOG_SYNCED_SIZE (ARPC_LOG_RECORD_HEAD + ARPC_LOG_SYNCED_PAYLOAD)
#define ARPC_LOG_ACK_BEYOND_FIXED 32  /* ACK_BEYOND's fields before its waiting seqs */
#define ARPC_LOG_HEAD_MAX (ARPC_LOG_RECORD_HEAD + ARPC_LOG_HEADER_PAYLOAD) /* largest fixed part */
#define ARPC_LOG_HEADER_SIZE (ARPC_LOG_RECORD_HEAD + ARPC_LOG_HEADER_PAYLOAD)

/* A record's content: what the encoder writes, or what the decoder found (views into its
 * input). Fields a type does not have are 0 / NULL. */
struct arpc_log_view {
    uint8_t v_type;           /* enum arpc_log_rtype, ARPC_LOG_HEADER or ARPC_LOG_SYNCED */
    uint32_t v_size;          /* decoded: the whole record, head and payload */
    uint64_t v_client_id;     /* REPLY, ACK, EXPIRE, GOODBYE, ACK_BEYOND */
    uint64_t v_seq;           /* REPLY; GOODBYE: the floor; ACK_BEYOND: the high */
    uint64_t v_owner;         /* GOODBYE: its owner (0: none; written as GOODBYE_OWNED if not) */
    uint64_t v_ack;           /* REPLY, ACK, ACK_BEYOND */
    const uint8_t *v_reply;   /* REPLY */
    uint32_t v_reply_len;
    const uint8_t *v_data;    /* REPLY: the effect; STATE: the state; ACK_BEYOND: the waiting
                               * seqs (little-endian u64s) */
    uint32_t v_data_len;
    uint32_t v_flags;         /* HEADER */
    uint64_t v_epoch;         /* HEADER */
    uint64_t v_segment;       /* HEADER */
    uint64_t v_synced;        /* SYNCED: the extent */
    uint64_t v_nonce;         /* SYNCED */
};

enum arpc_log_decode {
    ARPC_LOG_DECODE_OK,
    ARPC_LOG_DECODE_SHORT,   /* the input ends inside the record: torn, or more to read */
    ARPC_LOG_DECODE_DAMAGED, /* checksum mismatch or impossible length: torn or corrupt */
    ARPC_LOG_DECODE_INVALID, /* intact (checksum good) but not a record this version accepts:
                              * never what a torn write leaves */
};

/*
 * Decodes the record at buf[0..len), len being every byte up to the end of the file.
 * Judges the length as soon as its 4 bytes are there (above ARPC_LOG_PAYLOAD_MAX: DAMAGED),
 * then needs the whole record (SHORT otherwise) and checks the checksum before anything
 * else. On OK, *out is filled (its pointers view buf). On anything else *out is untouched and
 * *what (static text) says what is wrong. Never reads outside buf[0..len).
 */
enum arpc_log_decode arpc_log_decode(const uint8_t *buf, size_t len, struct arpc_log_view *out,
                                     const char **what);

/* What a record's head alone (no checksum) says about the record's size. */
enum arpc_log_head {
    ARPC_LOG_HEAD_BAD,       /* not a head this version writes: fewer than ARPC_LOG_RECORD_HEAD
                              * bytes, a length above the limit, an unknown type or a segment
                              * header, a length its type or REPLY's two lengths contradict */
    ARPC_LOG_HEAD_UNCHECKED, /* STATE of type 4: any length is possible, so nothing confirms it */
    ARPC_LOG_HEAD_CHECKED,   /* the type confirms the length (ACK, EXPIRE, GOODBYEs, SYNCED), or REPLY's
                              * two lengths do, or ACK_BEYOND's count, or a sized STATE's state_len; one cut before
                              * them is at least its fixed size, which buf does not hold, and
                              * counts as CHECKED too */
};

/*
 * Judges the head at buf[0..len) (len: the bytes up to the end of the file) and, unless BAD,
 * sets *size to the record's size as its length says (head and payload; possibly beyond len).
 * Reads only the head and REPLY's two lengths: O(1).
 */
enum arpc_log_head arpc_log_head_size(const uint8_t *buf, size_t len, uint64_t *size);

/*
 * Whether buf[0..len) starts an intact record other than a segment header, i.e. one that
 * arpc_log_decode accepts. Judges the type and the fixed lengths before the checksum, so
 * recovery can ask it at every offset of a damaged tail without checksumming the tail over
 * and over (random bytes rarely get past the type and length checks; crafted bytes can, which
 * is why core/reply_log_tail.c bounds what it checksums). *checksummed (may be NULL) gets
 * the number of bytes checksummed: 0, or the record's size less its 8-byte len and crc.
 */
bool arpc_log_is_record(const uint8_t *buf, size_t len, uint64_t *checksummed);

/*
 * The size of the record v describes (head, fixed fields, reply and data). v's lengths must
 * keep the payload within ARPC_LOG_PAYLOAD_MAX (the caller checks; see arpc_log_payload_fits).
 */
uint32_t arpc_log_record_size(const struct arpc_log_view *v);

/*
 * Writes the record's head and fixed fields (at most ARPC_LOG_HEAD_MAX bytes) to dst and
 * returns how many. The reply and then the data bytes follow on disk; the caller writes
 * them. The checksum written here already covers them. HEADER: magic and version are filled
 * in; v_flags, v_epoch, v_segment are the caller's.
 */
size_t arpc_log_encode_head(uint8_t *dst, const struct arpc_log_view *v);

/* The whole record into dst (arpc_log_record_size(v) bytes). Returns that size. */
size_t arpc_log_encode(uint8_t *dst, const struct arpc_log_view *v);

/* Whether a record of this type with these variable parts fits ARPC_LOG_PAYLOAD_MAX. */
bool arpc_log_payload_fits(uint8_t type, size_t reply_len, size_t data_len);

/* Segment file names: "%016llx.arpclog", and with ".tmp" while compaction writes it. */
#define ARPC_LOG_NAME_MAX 32 /* room for either name and the NUL */
void arpc_log_segment_name(char out[ARPC_LOG_NAME_MAX], uint64_t segment, bool tmp);
/* True for exactly the names arpc_log_segment_name makes (tmp or not), setting *segment and
 * *tmp. */
bool arpc_log_segment_parse(const char *name, uint64_t *segment, bool *tmp);

#endif
