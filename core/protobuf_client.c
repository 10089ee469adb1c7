/*
 * A protobuf-c service whose methods are arpc calls: the generated stub calls invoke, which
 * packs the input, starts the call (arpc_protobuf_call_async) and, from the future's
 * then-callback on the client's loop thread, unpacks the reply and runs the closure.
 *
 * Each call in flight holds a reference on the service, so a destroy while calls are out
 * only drops the caller's: the last closure frees it.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/log.h"
#include "base/refcount.h"
#include "core/frame.h"
#include "core/protobuf_internal.h"

struct pb_client_service {
    ProtobufCService ps_base; /* first: the stubs are handed &ps_base */
    arpc_client *ps_client;
    int64_t ps_deadline_ms;
    arpc_refcount ps_refs; /* the caller's, plus one per call in flight */
    atomic_int ps_last_error;
};

struct pb_client_call {
    struct pb_client_service *cc_service;
    unsigned cc_index;
    ProtobufCClosure cc_closure;
    void *cc_closure_data;
};

static void service_release(struct pb_client_service *ps)
{
    if (arpc_refcount_put(&ps->ps_refs))
        arpc_free(ps);
}

/* A future already completed with rc, for a call that could not be started; why (NULL: none)
 * is its data, NUL-terminated, as a refused call's reason is (arpc/client.h). */
static arpc_future *failed_future(int rc, const char *why)
{
    arpc_future *f;
    if (arpc_future_create(&f) != ARPC_OK)
        return NULL;
    size_t len;
    char *text = arpc_text_dup(why, &len);
    arpc_future_complete(f, rc, text, len);
    return f;
}

/* Why a typed call's arguments are refused, or NULL. */
static const char *call_arguments_refused(const arpc_client *c, const ProtobufCServiceDescriptor *d,
                                          unsigned method_index, const ProtobufCMessage *input)
{
    if (c == NULL || d == NULL || input == NULL)
        return "the client, the service descriptor or the input is NULL";
    if (method_index >= d->n_methods)
        return "the method index is beyond the service's methods";
    if (input->descriptor != d->methods[method_index].input)
        return "the input is not the method's input message type";
    return NULL;
}

arpc_future *arpc_protobuf_call_async_opts_v(arpc_client *c, const ProtobufCServiceDescriptor *d,
                                             unsigned method_index, const ProtobufCMessage *input,
                                             const arpc_call_options *o, size_t o_size)
{
    char name[ARPC_METHOD_MAX + 1];
    const char *why = call_arguments_refused(c, d, method_index, input);
    if (why == NULL && !protobuf_method_name(d, method_index, name, sizeof(name)))
        why = "the method's full name is longer than 255 bytes";
    if (why != NULL)
        return failed_future(ARPC_EINVAL, why);
    size_t len = protobuf_c_message_get_packed_size(input);
    uint8_t *buf = arpc_malloc(len > 0 ? len : 1);
    if (buf == NULL)
        return failed_future(ARPC_ENOMEM, NULL);
    protobuf_c_message_pack(input, buf);
    arpc_future *f = arpc_call_async_opts_v(c, name, buf, len, o, o_size); /* copies the bytes */
    arpc_free(buf);
    return f;
}

arpc_future *arpc_protobuf_call_async(arpc_client *c, const ProtobufCServiceDescriptor *d, unsigned method_index,
                                      const ProtobufCMessage *input, int64_t deadline_ms)
{
    arpc_call_options o = {.deadline_ms = deadline_ms};
    return arpc_protobuf_call_async_opts(c, d, method_index, input, &o);
}

static void call_close(struct pb_client_call *call, int rc, const ProtobufCMessage *reply)
{
    struct pb_client_service *ps = call->cc_service;
    atomic_store(&ps->ps_last_error, rc);
    call->cc_closure(reply, call->cc_closure_data);
    arpc_free(call);
    service_release(ps);
}

static void call_done(arpc_future *f, void *arg)
{
    struct pb_client_call *call = arg;
    const ProtobufCServiceDescriptor *d = call->cc_service->ps_base.descriptor;
    ProtobufCMessage *reply = NULL;
    int rc = arpc_protobuf_unpack_reply(f, d->methods[call->cc_index].output, &reply); /* f is done: no wait */
    call_close(call, rc, reply);
    arpc_protobuf_free(reply);
}

static void client_invoke(ProtobufCService *service, unsigned method_index, const ProtobufCMessage *input,
                          ProtobufCClosure closure, void *closure_data)
{
    struct pb_client_service *ps = (struct pb_client_service *)service;
    if (closure == NULL) { /* the outcome would have nowhere to go: the reply's arrival crashed */
        char name[ARPC_METHOD_MAX + 1];
        if (method_index >= service->descriptor->n_methods ||
            !protobuf_method_name(service->descriptor, method_index, name, sizeof(name)))
            snprintf(name, sizeof(name), "a typed stub");
        arpc_log(ARPC_LOG_ERROR, "%s called with a NULL closure: not sent (arpc/protobuf.h)", name);
        atomic_store(&ps->ps_last_error, ARPC_EINVAL);
        return;
    }
    struct pb_client_call *call = arpc_malloc(sizeof(*call));
    if (call == NULL) {
        atomic_store(&ps->ps_last_error, ARPC_ENOMEM);
        closure(NULL, closure_data);
        return;
    }
    *call = (struct pb_client_call){ps, method_index, closure, closure_data};
    arpc_refcount_get(&ps->ps_refs);
    arpc_future *f = arpc_protobuf_call_async(ps->ps_client, service->descriptor, method_index, input, ps->ps_deadline_ms);
    if (f == NULL) {
        call_close(call, ARPC_ENOMEM, NULL);
        return;
    }
    if (arpc_future_then(f, call_done, call) != ARPC_OK) {
        /* Nobody would hear its outcome: cancelled, and closed with what it ended with
         * (ARPC_ECANCELLED, "may have run": the loop may have sent it; or the result it had
         * already), not ARPC_ENOMEM, which says "not sent" (helper 241). */
        (void)arpc_future_cancel(f);
        call_done(f, call);
    }
    arpc_future_release(f); /* the call holds its own until it completes */
}

static void client_destroy(ProtobufCService *service)
{
    if (service != NULL)
        service_release((struct pb_client_service *)service);
}

ProtobufCService *arpc_protobuf_client_service(arpc_client *c, const ProtobufCServiceDescriptor *d, int64_t deadline_ms)
{
    if (c == NULL || d == NULL)
        return NULL;
    struct pb_client_service *ps = arpc_calloc(1, sizeof(*ps));
    if (ps == NULL)
        return NULL;
    ps->ps_base.descriptor = d;
    ps->ps_base.invoke = client_invoke;
    ps->ps_base.destroy = client_destroy;
    ps->ps_client = c;
    ps->ps_deadline_ms = deadline_ms;
    arpc_refcount_init(&ps->ps_refs, 1);
    atomic_init(&ps->ps_last_error, ARPC_OK);
    return &ps->ps_base;
}

int arpc_protobuf_client_last_error(const ProtobufCService *svc)
{
    if (svc == NULL || svc->invoke != client_invoke)
        return ARPC_EINVAL;
    return atomic_load(&((const struct pb_client_service *)svc)->ps_last_error);
}

void arpc_protobuf_client_service_destroy(ProtobufCService *svc) { client_destroy(svc); }
