/*
 * What the protobuf-c server and client (core/protobuf_server.c, protobuf_client.c) share:
 * the allocator unpacked messages come from, and the wire name of a method.
 */
#ifndef ARPC_CORE_PROTOBUF_INTERNAL_H
#define ARPC_CORE_PROTOBUF_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "arpc/protobuf.h"

/* protobuf-c allocations through arpc's allocator hook. Never written (protobuf-c's API takes
 * it non-const). */
extern ProtobufCAllocator protobuf_arpc_allocator;

/* Unpacks data as a desc message through arpc's allocator. NULL with *rc ARPC_ENOMEM (an
 * allocation failed), ARPC_ETOOLARGE (messages nested deeper than ARPC_PROTOBUF_MAX_DEPTH:
 * not unpacked), ARPC_EOVERLOADED (it would allocate more than PROTOBUF_COST_PER_BYTE x its
 * size: not unpacked) or ARPC_EDECODE (not such a message). Free it with arpc_protobuf_free. */
ProtobufCMessage *protobuf_unpack(const ProtobufCMessageDescriptor *desc, const void *data, size_t len, int *rc);

/* What unpacking the desc message packed in p[0..len) would do (core/protobuf_depth.c): nest
 * messages more than depth_left deep (the message counting one), or allocate more than
 * PROTOBUF_COST_PER_BYTE x len + PROTOBUF_COST_BASE bytes (protobuf-c's blocks, estimated:
 * repeated empty messages cost about 28 bytes per byte). Malformed bytes are PB_OK: protobuf-c
 * refuses them. Pure; its own recursion is at most depth_left deep. */
#define PROTOBUF_COST_PER_BYTE 16u
#define PROTOBUF_COST_BASE 4096u
enum protobuf_walk { PB_OK, PB_TOO_DEEP, PB_TOO_COSTLY };
enum protobuf_walk protobuf_walk(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len,
                                 unsigned depth_left);

/* False when the desc message packed in p[0..len) holds messages nested more than depth_left
 * levels deep, the message itself counting one (core/protobuf_depth.c). Malformed bytes are
 * not refused here. Pure; its own recursion is at most depth_left deep. */
bool protobuf_depth_ok(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len, unsigned depth_left);

/* "package.Service.Method" for method i of d into buf; false if it does not fit in size. */
bool protobuf_method_name(const ProtobufCServiceDescriptor *d, unsigned i, char *buf, size_t size);

#endif
