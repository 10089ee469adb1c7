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
    /* An empty reply is a message with every field at its default (proto3 packs it so). */
    *out = protobuf_c_message_unpack(output, &protobuf_arpc_allocator, len, data != NULL ? data : "");
    return *out != NULL ? ARPC_OK : ARPC_EDECODE;
}

void arpc_protobuf_free(ProtobufCMessage *msg)
{
    if (msg != NULL)
        protobuf_c_message_free_unpacked(msg, &protobuf_arpc_allocator);
}
