/*
 * protobuf-c messages on arpc's side: the allocator, method names, and futures' replies
 * unpacked as messages.
 */
#include "core/protobuf_internal.h"

#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"

static void *pb_alloc(void *data, size_t size)
{
    (void)data;
    return arpc_malloc(size);
}

static void pb_free(void *data, void *ptr)
{
    (void)data;
    arpc_free(ptr);
}

ProtobufCAllocator protobuf_arpc_allocator = {.alloc = pb_alloc, .free = pb_free, .allocator_data = NULL};

/* protobuf-c answers NULL for both a failed allocation and bad bytes: an allocator that notes
 * its failures tells them apart. */
struct noting_allocator {
    ProtobufCAllocator na_base;
    bool na_failed;
};

static void *pb_alloc_noting(void *data, size_t size)
{
    void *p = arpc_malloc(size);
    if (p == NULL)
        ((struct noting_allocator *)data)->na_failed = true;
    return p;
}

ProtobufCMessage *protobuf_unpack(const ProtobufCMessageDescriptor *desc, const void *data, size_t len, int *rc)
{
    enum protobuf_walk w = protobuf_walk(desc, data, len, ARPC_PROTOBUF_MAX_DEPTH);
    if (w != PB_OK) { /* protobuf-c would recurse once per level, without a limit, or swell */
        *rc = w == PB_TOO_DEEP ? ARPC_ETOOLARGE : ARPC_EOVERLOADED;
        return NULL;
    }
    struct noting_allocator na = {.na_base = {.alloc = pb_alloc_noting, .free = pb_free}};
    na.na_base.allocator_data = &na;
    /* An empty body is a message with every field at its default (proto3 packs it so). */
    ProtobufCMessage *msg = protobuf_c_message_unpack(desc, &na.na_base, len, data != NULL ? data : "");
    *rc = msg != NULL ? ARPC_OK : na.na_failed ? ARPC_ENOMEM : ARPC_EDECODE;
    return msg; /* its blocks are arpc_malloc's: protobuf_arpc_allocator frees them */
}

/* Built with memcpy, not snprintf: it runs for every call (snprintf was ~10% of the typed
 * call's overhead under callgrind). */
bool protobuf_method_name(const ProtobufCServiceDescriptor *d, unsigned i, char *buf, size_t size)
{
    size_t service_len = strlen(d->name), method_len = strlen(d->methods[i].name);
    if (service_len + 1 + method_len >= size)
        return false;
    memcpy(buf, d->name, service_len);
    buf[service_len] = '.';
    memcpy(buf + service_len + 1, d->methods[i].name, method_len + 1);
    return true;
}

int arpc_protobuf_unpack_reply(arpc_future *f, const ProtobufCMessageDescriptor *output, ProtobufCMessage **out)
{
    if (out != NULL)
        *out = NULL;
    if (f == NULL || output == NULL || out == NULL)
        return ARPC_EINVAL;
    int rc = arpc_future_wait(f);
    if (rc != ARPC_OK)
        return rc;
    size_t len = 0;
    const void *data = arpc_future_data(f, &len);
    *out = protobuf_unpack(output, data, len, &rc);
    /* too deep or too costly: not unpacked, as bad bytes are not */
    return rc == ARPC_ETOOLARGE || rc == ARPC_EOVERLOADED ? ARPC_EDECODE : rc;
}

void arpc_protobuf_free(ProtobufCMessage *msg)
{
    if (msg != NULL)
        protobuf_c_message_free_unpacked(msg, &protobuf_arpc_allocator);
}
