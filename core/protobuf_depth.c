/*
 * How deep messages nest in packed bytes, checked before protobuf-c unpacks them
 * (core/protobuf_internal.h). protobuf-c 1.4 unpacks a message field by calling itself, with
 * no limit: a recursive type (a tree, google.protobuf.Value) packed a few million levels deep
 * fits in max_frame and overflows the unpacking thread's stack (4.4 MB crashed a server with
 * 8 MiB of stack). The walk below follows only the length-delimited fields the descriptor
 * says are messages, so each byte is read once whatever the depth, and its own recursion is
 * bounded by the limit it enforces. Anything malformed it leaves to protobuf-c to refuse.
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

bool protobuf_depth_ok(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len, unsigned depth_left)
{
    if (depth_left == 0)
        return false;
    size_t i = 0;
    while (i < len) {
        uint64_t key, n;
        if (!read_varint(p, len, &i, &key))
            return true; /* malformed: protobuf-c says so */
        switch (key & 7) {
        case PROTOBUF_C_WIRE_TYPE_VARINT:
            if (!read_varint(p, len, &i, &n))
                return true;
            break;
        case PROTOBUF_C_WIRE_TYPE_64BIT:
            i += 8;
            break;
        case PROTOBUF_C_WIRE_TYPE_32BIT:
            i += 4;
            break;
        case PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED: {
            if (!read_varint(p, len, &i, &n) || n > len - i)
                return true;
            const ProtobufCFieldDescriptor *f =
                key >> 3 <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(desc, (unsigned)(key >> 3)) : NULL;
            if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE &&
                !protobuf_depth_ok(f->descriptor, p + i, (size_t)n, depth_left - 1))
                return false;
            i += (size_t)n;
            break;
        }
        default: /* groups: protobuf-c unpacks none (it refuses them, not by recursion) */
            return true;
        }
    }
    return true;
}
