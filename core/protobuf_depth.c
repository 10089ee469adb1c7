/*
 * How deep messages nest in packed bytes, checked before protobuf-c unpacks them
 * (core/protobuf_internal.h). protobuf-c 1.4 unpacks a message field by calling itself, with
 * no limit: a recursive type (a tree, google.protobuf.Value) packed a few million levels deep
 * fits in max_frame and overflows the unpacking thread's stack (4.4 MB crashed a server with
 * 8 MiB of stack). The walk below follows only the length-delimited fields the descriptor
 * says are messages, so each byte is read once whatever the depth, and its own recursion is
 * bounded by the limit it enforces. Anything malformed it leaves to protobuf-c to refuse.
 * The same walk adds up what protobuf-c will allocate: 8 MiB of empty messages in a repeated
 * field took 201 MB to unpack (24 x), a block per 2 bytes. And what it will copy: a singular
 * message field met again is merged into the one before, copying every repeated element
 * gathered so far, so n copies of a 4-byte field cost n^2 (a 160 KB request took 15 s of a
 * server's thread, a 2.5 MB one 26 s: helper 241); each such merge is charged the bytes of the
 * singular message fields before it in its message, a slot per byte.
 */
#include "core/protobuf_internal.h"

#include <stdint.h>

/* A varint at p[*i..len): false if it runs past len or over 10 bytes. */
static bool read_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 70 && *i < len; shift += 7) {
        uint8_t b = p[(*i)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *out = v;
            return true;
        }
    }
    return false;
}

/* What protobuf-c allocates for one field met on the wire, roughly (a block's header included):
 * a message, a string's or bytes' copy, a repeated field's slot, an unknown field's record. */
#define PB_BLOCK 16u
#define PB_SLOT 8u
#define PB_UNKNOWN 48u

/* Walks the desc message in p[0..len), adding what unpacking it allocates to *cost (its own
 * block is the caller's). PB_TOO_DEEP past depth_left levels, the message counting one. */
static enum protobuf_walk walk(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len,
                               unsigned depth_left, uint64_t *cost)
{
    if (depth_left == 0)
        return PB_TOO_DEEP;
    uint64_t met = 0;         /* the singular message fields met, by index mod 64 */
    uint64_t merged_from = 0; /* their bytes so far: what a merge can copy at most */
    size_t i = 0;
    while (i < len) {
        uint64_t key, n = 0;
        if (!read_varint(p, len, &i, &key))
            return PB_OK; /* malformed: protobuf-c says so */
        const ProtobufCFieldDescriptor *f =
            key >> 3 <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(desc, (unsigned)(key >> 3)) : NULL;
        size_t at = i;
        switch (key & 7) {
        case PROTOBUF_C_WIRE_TYPE_VARINT:
            if (!read_varint(p, len, &i, &n))
                return PB_OK;
            break;
        case PROTOBUF_C_WIRE_TYPE_64BIT:
            i += 8;
            break;
        case PROTOBUF_C_WIRE_TYPE_32BIT:
            i += 4;
            break;
        case PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED: {
            if (!read_varint(p, len, &i, &n) || n > len - i)
                return PB_OK;
            at = i;
            if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE) {
                const ProtobufCMessageDescriptor *sub = f->descriptor;
                *cost += sub->sizeof_message + PB_BLOCK;
                if (f->label != PROTOBUF_C_LABEL_REPEATED) {
                    /* A field sharing its bit with another (64 apart) is charged as a repeat
                     * when it is not: over, never under. */
                    uint64_t bit = 1ull << ((size_t)(f - desc->fields) & 63);
                    if (met & bit)
                        *cost += merged_from * PB_SLOT; /* merged: at most what came before, copied */
                    met |= bit;
                    merged_from += n;
                }
                enum protobuf_walk w = walk(sub, p + i, (size_t)n, depth_left - 1, cost);
                if (w != PB_OK)
                    return w;
            } else if (f != NULL && (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_BYTES)) {
                *cost += n + 1 + PB_BLOCK;
            }
            i += (size_t)n;
            break;
        }
        default: /* groups: protobuf-c unpacks none (it refuses them, not by recursion) */
            return PB_OK;
        }
        if (f == NULL)
            *cost += PB_UNKNOWN + (i > at ? i - at : 0); /* kept, with a copy of its bytes */
        else if (f->label == PROTOBUF_C_LABEL_REPEATED)
            *cost += PB_SLOT;
    }
    return PB_OK;
}

enum protobuf_walk protobuf_walk(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len,
                                 unsigned depth_left)
{
    uint64_t cost = desc->sizeof_message + PB_BLOCK;
    enum protobuf_walk w = walk(desc, p, len, depth_left, &cost);
    if (w == PB_OK && cost > (uint64_t)len * PROTOBUF_COST_PER_BYTE + PROTOBUF_COST_BASE)
        return PB_TOO_COSTLY;
    return w;
}

bool protobuf_depth_ok(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len, unsigned depth_left)
{
    uint64_t cost = 0;
    return walk(desc, p, len, depth_left, &cost) != PB_TOO_DEEP;
}
