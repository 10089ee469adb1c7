/*
 * The reply log's record codec (layout: core/reply_log_format.h).
 *
 * Design notes
 * - Like the wire codec (core/frame.c), the decoder is a pure function of its input and
 *   judges each field as soon as its bytes are known: an impossible length is refused from
 *   its 4 bytes, before any caller thinks of reading (let alone allocating) that much.
 * - The checksum is checked before the type and the fields are believed. That order is what
 *   recovery needs: DAMAGED means "these bytes are not what was written" (a torn tail or
 *   corruption: the caller decides which from what follows), INVALID means "written intact,
 *   but not by this version or not by us", which no crash can produce.
 * - Fixed-size payloads must have exactly their size and REPLY's two lengths must add up to
 *   its payload: the format has a version number for growing, so nothing is ignored here.
 */
#include "core/reply_log_format.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "base/crc32c.h"
#include "base/le.h"
#include "core/frame.h"

/* Byte offsets in the record head and in each payload (see the layout in the header). */
enum {
    REC_LEN = 0,
    REC_CRC = 4,
    REC_TYPE = 8,
    HDR_MAGIC = 0,
    HDR_VERSION = 8,
    HDR_FLAGS = 12,
    HDR_EPOCH = 16,
    HDR_SEGMENT = 24,
    REPLY_CLIENT = 0,
    REPLY_SEQ = 8,
    REPLY_ACK = 16,
    REPLY_REPLY_LEN = 24,
    REPLY_EFFECT_LEN = 28,
    ACK_CLIENT = 0,
    ACK_ACK = 8,
    EXPIRE_CLIENT = 0,
    GOODBYE_CLIENT = 0,
    GOODBYE_FLOOR = 8,
    GOODBYE_OWNER = 16,
    BEYOND_CLIENT = 0,
    BEYOND_ACK = 8,
    BEYOND_HIGH = 16,
    BEYOND_COUNT = 24,
    BEYOND_RESERVED = 28,
    STATE_LEN = 0,
    SYNCED_EXTENT = 0,
    SYNCED_NONCE = 8,
};

static const uint8_t log_magic[8] = {'a', 'r', 'p', 'c', 'l', 'o', 'g', 1};

#define NAME_SUFFIX ".arpclog"
#define TMP_SUFFIX ".tmp"
#define NAME_DIGITS 16

/* The type byte a record of this view type is written with: a STATE is written sized (its
 * length twice), a GOODBYE with an owner as GOODBYE_OWNED; the other types are their own
 * byte. */
static uint8_t disk_type(uint8_t type, uint64_t owner)
{
    if (type == ARPC_LOG_STATE)
        return ARPC_LOG_STATE_SIZED;
    return type == ARPC_LOG_GOODBYE && owner != 0 ? ARPC_LOG_GOODBYE_OWNED : type;
}

/* The fixed part of a payload of this type byte, or -1 for a type this version does not know. */
static int64_t fixed_payload(unsigned type)
{
    switch (type) {
    case ARPC_LOG_HEADER:
        return ARPC_LOG_HEADER_PAYLOAD;
    case ARPC_LOG_REPLY:
        return ARPC_LOG_REPLY_FIXED;
    case ARPC_LOG_ACK:
        return ARPC_LOG_ACK_PAYLOAD;
    case ARPC_LOG_EXPIRE:
        return ARPC_LOG_EXPIRE_PAYLOAD;
    case ARPC_LOG_GOODBYE:
        return ARPC_LOG_GOODBYE_PAYLOAD;
    case ARPC_LOG_GOODBYE_OWNED:
        return ARPC_LOG_GOODBYE_OWNED_PAYLOAD;
    case ARPC_LOG_STATE: /* as written before ARPC_LOG_STATE_SIZED: read, never written */
        return 0;
    case ARPC_LOG_STATE_SIZED:
        return ARPC_LOG_STATE_FIXED;
    case ARPC_LOG_SYNCED:
        return ARPC_LOG_SYNCED_PAYLOAD;
    case ARPC_LOG_ACK_BEYOND:
        return ARPC_LOG_ACK_BEYOND_FIXED;
    default:
        return -1;
    }
}

/* ---- decoding ---- */

static const char *decode_header(const uint8_t *p, uint32_t plen, struct arpc_log_view *v)
{
    if (plen != ARPC_LOG_HEADER_PAYLOAD)
        return "segment header of the wrong size";
    if (memcmp(p + HDR_MAGIC, log_magic, sizeof(log_magic)) != 0)
        return "not an arpc reply log segment (bad magic)";
    if (le_ld32(p + HDR_VERSION) != ARPC_LOG_FORMAT_VERSION)
        return "unsupported format version";
    v->v_flags = le_ld32(p + HDR_FLAGS);
    if ((v->v_flags & ~ARPC_LOG_FLAG_SNAPSHOT) != 0)
        return "unknown segment header flags";
    v->v_epoch = le_ld64(p + HDR_EPOCH);
    if (v->v_epoch == 0)
        return "segment header with epoch 0";
    v->v_segment = le_ld64(p + HDR_SEGMENT);
    return NULL;
}

static const char *decode_reply(const uint8_t *p, uint32_t plen, struct arpc_log_view *v)
{
    if (plen < ARPC_LOG_REPLY_FIXED)
        return "REPLY record too short for its fields";
    uint32_t reply_len = le_ld32(p + REPLY_REPLY_LEN);
    uint32_t effect_len = le_ld32(p + REPLY_EFFECT_LEN);
    if ((uint64_t)reply_len + effect_len != plen - ARPC_LOG_REPLY_FIXED)
        return "REPLY record whose reply and effect lengths do not match its size";
    v->v_client_id = le_ld64(p + REPLY_CLIENT);
    v->v_seq = le_ld64(p + REPLY_SEQ);
    v->v_ack = le_ld64(p + REPLY_ACK);
    v->v_reply = p + ARPC_LOG_REPLY_FIXED;
    v->v_reply_len = reply_len;
    v->v_data = p + ARPC_LOG_REPLY_FIXED + reply_len;
    v->v_data_len = effect_len;
    return NULL;
}

/* Judged whole, as an ACK frame is (core/frame.c): the index trusts the list. */
static const char *decode_ack_beyond(const uint8_t *p, uint32_t plen, struct arpc_log_view *v)
{
    if (plen < ARPC_LOG_ACK_BEYOND_FIXED)
        return "ACK_BEYOND record too short for its fields";
    uint32_t n = le_ld32(p + BEYOND_COUNT);
    if (n > ARPC_ACK_WAITING_MAX || (uint64_t)n * 8 != plen - ARPC_LOG_ACK_BEYOND_FIXED)
        return "ACK_BEYOND record whose count does not match its size";
    v->v_client_id = le_ld64(p + BEYOND_CLIENT);
    v->v_ack = le_ld64(p + BEYOND_ACK);
    v->v_seq = le_ld64(p + BEYOND_HIGH);
    v->v_data = p + ARPC_LOG_ACK_BEYOND_FIXED;
    v->v_data_len = n * 8;
    if (v->v_client_id == 0)
        return "ACK_BEYOND record for client 0";
    if (!arpc_frame_ack_list_ok(v->v_ack, v->v_seq, v->v_data, n))
        return "ACK_BEYOND record whose high is below its ack, or whose waiting seqs are out of order or "
               "outside (ack, high]";
    return NULL;
}

static const char *decode_payload(const uint8_t *p, uint32_t plen, struct arpc_log_view *v)
{
    switch (v->v_type) {
    case ARPC_LOG_HEADER:
        return decode_header(p, plen, v);
    case ARPC_LOG_REPLY:
        return decode_reply(p, plen, v);
    case ARPC_LOG_ACK:
        if (plen != ARPC_LOG_ACK_PAYLOAD)
            return "ACK record of the wrong size";
        v->v_client_id = le_ld64(p + ACK_CLIENT);
        v->v_ack = le_ld64(p + ACK_ACK);
        return v->v_client_id == 0 ? "ACK record for client 0" : NULL;
    case ARPC_LOG_EXPIRE:
        if (plen != ARPC_LOG_EXPIRE_PAYLOAD)
            return "EXPIRE record of the wrong size";
        v->v_client_id = le_ld64(p + EXPIRE_CLIENT);
        return v->v_client_id == 0 ? "EXPIRE record for client 0" : NULL;
    case ARPC_LOG_GOODBYE:
        if (plen != ARPC_LOG_GOODBYE_PAYLOAD)
            return "GOODBYE record of the wrong size";
        v->v_client_id = le_ld64(p + GOODBYE_CLIENT);
        v->v_seq = le_ld64(p + GOODBYE_FLOOR);
        return v->v_client_id == 0 ? "GOODBYE record for client 0" : NULL;
    case ARPC_LOG_GOODBYE_OWNED:
        if (plen != ARPC_LOG_GOODBYE_OWNED_PAYLOAD)
            return "GOODBYE_OWNED record of the wrong size";
        v->v_type = ARPC_LOG_GOODBYE; /* one kind of record to its readers, as STATE */
        v->v_client_id = le_ld64(p + GOODBYE_CLIENT);
        v->v_seq = le_ld64(p + GOODBYE_FLOOR);
        v->v_owner = le_ld64(p + GOODBYE_OWNER);
        if (v->v_client_id == 0)
            return "GOODBYE_OWNED record for client 0";
        return v->v_owner == 0 ? "GOODBYE_OWNED record for owner 0 (a GOODBYE's)" : NULL;
    case ARPC_LOG_STATE:
        v->v_data = p;
        v->v_data_len = plen;
        return NULL;
    case ARPC_LOG_STATE_SIZED:
        if (plen < ARPC_LOG_STATE_FIXED || le_ld32(p + STATE_LEN) != plen - ARPC_LOG_STATE_FIXED)
            return "STATE record whose state length does not match its size";
        v->v_type = ARPC_LOG_STATE; /* one kind of record to its readers, however written */
        v->v_data = p + ARPC_LOG_STATE_FIXED;
        v->v_data_len = plen - ARPC_LOG_STATE_FIXED;
        return NULL;
    case ARPC_LOG_ACK_BEYOND:
        return decode_ack_beyond(p, plen, v);
    case ARPC_LOG_SYNCED:
        if (plen != ARPC_LOG_SYNCED_PAYLOAD)
            return "SYNCED record of the wrong size";
        v->v_synced = le_ld64(p + SYNCED_EXTENT);
        v->v_nonce = le_ld64(p + SYNCED_NONCE);
        return NULL;
    default:
        return "unknown record type";
    }
}

enum arpc_log_decode arpc_log_decode(const uint8_t *buf, size_t len, struct arpc_log_view *out,
                                     const char **what)
{
    if (len < REC_LEN + 4) {
        *what = "record head cut short";
        return ARPC_LOG_DECODE_SHORT;
    }
    uint32_t plen = le_ld32(buf + REC_LEN);
    if (plen > ARPC_LOG_PAYLOAD_MAX) {
        *what = "record length above the limit";
        return ARPC_LOG_DECODE_DAMAGED;
    }
    if (len < ARPC_LOG_RECORD_HEAD + (uint64_t)plen) {
        *what = "record runs past the end of the file";
        return ARPC_LOG_DECODE_SHORT;
    }
    if (arpc_crc32c(0, buf + REC_TYPE, 1 + (size_t)plen) != le_ld32(buf + REC_CRC)) {
        *what = "checksum mismatch";
        return ARPC_LOG_DECODE_DAMAGED;
    }
    /* Built aside and published only on success: *out is untouched otherwise. */
    struct arpc_log_view v = {0};
    v.v_type = buf[REC_TYPE];
    v.v_size = ARPC_LOG_RECORD_HEAD + plen;
    const char *bad = decode_payload(buf + ARPC_LOG_RECORD_HEAD, plen, &v);
    if (bad != NULL) {
        *what = bad;
        return ARPC_LOG_DECODE_INVALID;
    }
    *out = v;
    return ARPC_LOG_DECODE_OK;
}

enum arpc_log_head arpc_log_head_size(const uint8_t *buf, size_t len, uint64_t *size)
{
    if (len < ARPC_LOG_RECORD_HEAD)
        return ARPC_LOG_HEAD_BAD;
    uint8_t type = buf[REC_TYPE];
    uint32_t plen = le_ld32(buf + REC_LEN);
    int64_t fixed = fixed_payload(type);
    if (plen > ARPC_LOG_PAYLOAD_MAX || fixed < 0 || type == ARPC_LOG_HEADER || plen < fixed)
        return ARPC_LOG_HEAD_BAD;
    *size = ARPC_LOG_RECORD_HEAD + (uint64_t)plen;
    switch (type) {
    case ARPC_LOG_STATE:
        return ARPC_LOG_HEAD_UNCHECKED;
    case ARPC_LOG_STATE_SIZED: /* cut before its length: as REPLY cut before its lengths */
        if (len < ARPC_LOG_RECORD_HEAD + ARPC_LOG_STATE_FIXED)
            return ARPC_LOG_HEAD_CHECKED;
        return le_ld32(buf + ARPC_LOG_RECORD_HEAD + STATE_LEN) == plen - ARPC_LOG_STATE_FIXED ? ARPC_LOG_HEAD_CHECKED
                                                                                             : ARPC_LOG_HEAD_BAD;
    case ARPC_LOG_ACK_BEYOND: { /* its count, as REPLY's lengths */
        if (len < ARPC_LOG_RECORD_HEAD + ARPC_LOG_ACK_BEYOND_FIXED)
            return ARPC_LOG_HEAD_CHECKED;
        uint32_t count = le_ld32(buf + ARPC_LOG_RECORD_HEAD + BEYOND_COUNT);
        return count <= ARPC_ACK_WAITING_MAX && (uint64_t)count * 8 == plen - ARPC_LOG_ACK_BEYOND_FIXED
                   ? ARPC_LOG_HEAD_CHECKED
                   : ARPC_LOG_HEAD_BAD;
    }
    case ARPC_LOG_REPLY:
        if (len < ARPC_LOG_RECORD_HEAD + ARPC_LOG_REPLY_FIXED)
            return ARPC_LOG_HEAD_CHECKED;
        const uint8_t *p = buf + ARPC_LOG_RECORD_HEAD;
        return (uint64_t)le_ld32(p + REPLY_REPLY_LEN) + le_ld32(p + REPLY_EFFECT_LEN) == plen - ARPC_LOG_REPLY_FIXED
                   ? ARPC_LOG_HEAD_CHECKED
                   : ARPC_LOG_HEAD_BAD;
    default: /* ACK, EXPIRE, the GOODBYEs, SYNCED: exactly their fixed size */
        return plen == fixed ? ARPC_LOG_HEAD_CHECKED : ARPC_LOG_HEAD_BAD;
    }
}

bool arpc_log_is_record(const uint8_t *buf, size_t len, uint64_t *checksummed)
{
    uint64_t size;
    if (checksummed != NULL)
        *checksummed = 0;
    if (arpc_log_head_size(buf, len, &size) == ARPC_LOG_HEAD_BAD || size > len)
        return false;
    if (checksummed != NULL)
        *checksummed = size - REC_TYPE;
    struct arpc_log_view v;
    const char *what;
    return arpc_log_decode(buf, len, &v, &what) == ARPC_LOG_DECODE_OK;
}

/* ---- encoding ---- */

bool arpc_log_payload_fits(uint8_t type, size_t reply_len, size_t data_len)
{
    int64_t fixed = fixed_payload(disk_type(type, 0));
    if (fixed < 0 || reply_len > ARPC_LOG_PAYLOAD_MAX || data_len > ARPC_LOG_PAYLOAD_MAX)
        return false;
    return (uint64_t)fixed + reply_len + data_len <= ARPC_LOG_PAYLOAD_MAX;
}

uint32_t arpc_log_record_size(const struct arpc_log_view *v)
{
    assert(arpc_log_payload_fits(v->v_type, v->v_reply_len, v->v_data_len));
    return ARPC_LOG_RECORD_HEAD + (uint32_t)fixed_payload(disk_type(v->v_type, v->v_owner)) + v->v_reply_len +
           v->v_data_len;
}

size_t arpc_log_encode_head(uint8_t *dst, const struct arpc_log_view *v)
{
    uint8_t type = disk_type(v->v_type, v->v_owner);
    uint32_t fixed = (uint32_t)fixed_payload(type);
    uint8_t *p = dst + ARPC_LOG_RECORD_HEAD;
    le_st32(dst + REC_LEN, arpc_log_record_size(v) - ARPC_LOG_RECORD_HEAD);
    dst[REC_TYPE] = type;
    switch (v->v_type) {
    case ARPC_LOG_HEADER:
        memcpy(p + HDR_MAGIC, log_magic, sizeof(log_magic));
        le_st32(p + HDR_VERSION, ARPC_LOG_FORMAT_VERSION);
        le_st32(p + HDR_FLAGS, v->v_flags);
        le_st64(p + HDR_EPOCH, v->v_epoch);
        le_st64(p + HDR_SEGMENT, v->v_segment);
        break;
    case ARPC_LOG_REPLY:
        le_st64(p + REPLY_CLIENT, v->v_client_id);
        le_st64(p + REPLY_SEQ, v->v_seq);
        le_st64(p + REPLY_ACK, v->v_ack);
        le_st32(p + REPLY_REPLY_LEN, v->v_reply_len);
        le_st32(p + REPLY_EFFECT_LEN, v->v_data_len);
        break;
    case ARPC_LOG_ACK:
        le_st64(p + ACK_CLIENT, v->v_client_id);
        le_st64(p + ACK_ACK, v->v_ack);
        break;
    case ARPC_LOG_EXPIRE:
        le_st64(p + EXPIRE_CLIENT, v->v_client_id);
        break;
    case ARPC_LOG_GOODBYE:
        le_st64(p + GOODBYE_CLIENT, v->v_client_id);
        le_st64(p + GOODBYE_FLOOR, v->v_seq);
        if (v->v_owner != 0)
            le_st64(p + GOODBYE_OWNER, v->v_owner);
        break;
    case ARPC_LOG_STATE: /* written sized: its state's length */
        le_st32(p + STATE_LEN, v->v_data_len);
        break;
    case ARPC_LOG_ACK_BEYOND: /* its waiting seqs follow, as the data */
        le_st64(p + BEYOND_CLIENT, v->v_client_id);
        le_st64(p + BEYOND_ACK, v->v_ack);
        le_st64(p + BEYOND_HIGH, v->v_seq);
        le_st32(p + BEYOND_COUNT, v->v_data_len / 8);
        le_st32(p + BEYOND_RESERVED, 0);
        break;
    case ARPC_LOG_SYNCED:
        le_st64(p + SYNCED_EXTENT, v->v_synced);
        le_st64(p + SYNCED_NONCE, v->v_nonce);
        break;
    }
    /* The checksum chains over the parts the caller writes after the head. */
    uint32_t crc = arpc_crc32c(0, dst + REC_TYPE, 1 + (size_t)fixed);
    crc = arpc_crc32c(crc, v->v_reply, v->v_reply_len);
    crc = arpc_crc32c(crc, v->v_data, v->v_data_len);
    le_st32(dst + REC_CRC, crc);
    return ARPC_LOG_RECORD_HEAD + fixed;
}

size_t arpc_log_encode(uint8_t *dst, const struct arpc_log_view *v)
{
    size_t n = arpc_log_encode_head(dst, v);
    if (v->v_reply_len > 0) /* the views may be NULL when empty; memcpy must not see NULL */
        memcpy(dst + n, v->v_reply, v->v_reply_len);
    n += v->v_reply_len;
    if (v->v_data_len > 0)
        memcpy(dst + n, v->v_data, v->v_data_len);
    return n + v->v_data_len;
}

/* ---- file names ---- */

void arpc_log_segment_name(char out[ARPC_LOG_NAME_MAX], uint64_t segment, bool tmp)
{
    snprintf(out, ARPC_LOG_NAME_MAX, "%016" PRIx64 NAME_SUFFIX "%s", segment, tmp ? TMP_SUFFIX : "");
}

bool arpc_log_segment_parse(const char *name, uint64_t *segment, bool *tmp)
{
    uint64_t n = 0;
    for (int i = 0; i < NAME_DIGITS; i++) {
        char c = name[i];
        if (c >= '0' && c <= '9')
            n = n << 4 | (uint64_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            n = n << 4 | (uint64_t)(c - 'a' + 10);
        else
            return false; /* also stops at the NUL of a shorter name */
    }
    const char *rest = name + NAME_DIGITS;
    if (strncmp(rest, NAME_SUFFIX, strlen(NAME_SUFFIX)) != 0)
        return false;
    rest += strlen(NAME_SUFFIX);
    if (strcmp(rest, "") != 0 && strcmp(rest, TMP_SUFFIX) != 0)
        return false;
    *segment = n;
    *tmp = rest[0] != '\0';
    return true;
}
