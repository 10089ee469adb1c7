/*
 * A protobuf-c service served over arpc: one registration per method, whose handler unpacks
 * the request, runs the method through service->invoke and packs what its closure is given.
 *
 * The per-method context (service + index) is owned by the registry (ctx_free). The per-call
 * state lives from the handler to the closure, which may run later on another thread; it
 * points only at the request, the input and the output descriptor (generated static data),
 * never at the per-method context, so a closure after the server is destroyed is safe.
 *
 * The per-call state is what the method's closure_data points to: a handle the user holds,
 * checked as the others are (base/handle.h). Its magic is live from the handler to the
 * closure (or arpc_protobuf_fail), which poisons it before it replies and frees the record;
 * a second closure, a fail after it or an arpc_protobuf_request after it is reported then.
 * Records are not pooled: each is an arpc_malloc of its own, so only the allocator handing
 * the freed block to a later call's record (likely on the same thread; never under ASan,
 * whose quarantine holds it) hides the misuse.
 */
#include <stdio.h>
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/handle.h"
#include "base/options.h"
#include "core/frame.h"
#include "core/protobuf_internal.h"
#include "core/request_internal.h"
#include "core/server_internal.h"

struct pb_method {
    ProtobufCService *pm_service;
    unsigned pm_index;
};

struct pb_call {
    arpc_magic pc_magic;                        /* ARPC_MAGIC_PBCALL until its closure; first */
    arpc_request *pc_req;
    ProtobufCMessage *pc_input;                 /* unpacked request; freed by the closure */
    const ProtobufCMessageDescriptor *pc_output; /* what the closure must be given */
};

/* Replies are packed on the stack up to this size (most are small), else in one block. */
#define PB_REPLY_STACK 512

static void pb_reply_message(arpc_request *req, const ProtobufCMessage *msg)
{
    uint8_t stack[PB_REPLY_STACK];
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = len <= sizeof(stack) ? stack : arpc_malloc(len);
    if (buf == NULL) {
        /* The method ran (its effects are done): "may have run", not "the method failed". */
        const char *method = arpc_request_method(req);
        char why[ARPC_METHOD_MAX + 96];
        snprintf(why, sizeof(why), "%s: the server had no memory to pack the reply; the method ran",
                 method != NULL ? method : "(answered already)");
        request_answer_lost(req, why);
        return;
    }
    protobuf_c_message_pack(msg, buf);
    arpc_reply(req, buf, len);
    if (buf != stack)
        arpc_free(buf);
}

/* The call's method name for an error's text. NULL when the closure runs after the method
 * returned and the server answered the call (its deadline): the reply is then dropped, but
 * the text is made first. */
static const char *pb_method_name(const struct pb_call *call)
{
    const char *method = arpc_request_method(call->pc_req);
    return method != NULL ? method : "(answered already)";
}

/* The user's closure_data, checked on entry (base/handle.h): the call; NULL for NULL, and
 * after an ERROR line (an abort in debug builds) for a call whose closure already ran. */
static struct pb_call *pb_call_live(void *closure_data, const char *fn)
{
    return arpc_handle_check(closure_data, ARPC_MAGIC_PBCALL, "protobuf call", fn) ? closure_data : NULL;
}

/* The closure's start: the call checked, then dead to a second closure (one whose record is
 * freed and not yet reused, or any under ASan), which is reported and does nothing. */
static struct pb_call *pb_call_take(void *closure_data, const char *fn)
{
    struct pb_call *call = pb_call_live(closure_data, fn);
    if (call != NULL)
        arpc_handle_poison(call);
    return call;
}

/* The closure's end: the input goes with the call. */
static void pb_call_free(struct pb_call *call)
{
    protobuf_c_message_free_unpacked(call->pc_input, &protobuf_arpc_allocator);
    arpc_free(call);
}

static void pb_closure(const ProtobufCMessage *output, void *closure_data)
{
    struct pb_call *call = pb_call_take(closure_data, "a protobuf method's closure");
    if (call == NULL)
        return;
    char why[ARPC_METHOD_MAX + 128];
    const char *method = pb_method_name(call);
    if (output == NULL) {
        snprintf(why, sizeof(why), "%s: the method failed", method);
        arpc_reply_error(call->pc_req, why);
    } else if (output->descriptor != call->pc_output) {
        snprintf(why, sizeof(why), "%s: the method returned a %s, not a %s", method, output->descriptor->name,
                 call->pc_output->name);
        arpc_reply_error(call->pc_req, why);
    } else {
        pb_reply_message(call->pc_req, output);
    }
    pb_call_free(call);
}

arpc_request *arpc_protobuf_request(void *closure_data)
{
    struct pb_call *call = pb_call_live(closure_data, __func__);
    return call != NULL ? call->pc_req : NULL;
}

void arpc_protobuf_fail(void *closure_data, const char *msg)
{
    struct pb_call *call = pb_call_take(closure_data, __func__);
    if (call == NULL)
        return;
    /* As arpc_reply_error's text, cut to what one error frame carries with the name before. */
    char why[ARPC_METHOD_MAX + 2 + 1024];
    snprintf(why, sizeof(why), "%s: %s", pb_method_name(call), msg != NULL ? msg : "the method failed");
    arpc_reply_error(call->pc_req, why);
    pb_call_free(call);
}

static void pb_handler(arpc_request *req, void *ctx)
{
    const struct pb_method *pm = ctx;
    const ProtobufCMethodDescriptor *md = &pm->pm_service->descriptor->methods[pm->pm_index];
    size_t len;
    const void *data = arpc_request_data(req, &len);
    char why[ARPC_METHOD_MAX + 128];
    /* Out of memory before the method runs: refused ARPC_EREJECTED, "did not run", as the
     * server refuses a call it has no memory to take (not ARPC_EHANDLER, "the method failed"). */
    struct pb_call *call = arpc_malloc(sizeof(*call));
    if (call == NULL) {
        snprintf(why, sizeof(why), "%s: server out of memory; the method did not run", arpc_request_method(req));
        request_refuse(req, ARPC_EREJECTED, why);
        return;
    }
    int rc;
    call->pc_input = protobuf_unpack(md->input, data, len, &rc);
    if (call->pc_input == NULL) {
        arpc_free(call);
        if (rc == ARPC_ENOMEM) {
            snprintf(why, sizeof(why), "%s: server out of memory unpacking the request; the method did not run",
                     arpc_request_method(req));
            request_refuse(req, ARPC_EREJECTED, why);
            return;
        }
        if (rc == ARPC_ETOOLARGE)
            snprintf(why, sizeof(why), "%s: the request nests messages more than %d deep", arpc_request_method(req),
                     ARPC_PROTOBUF_MAX_DEPTH);
        else if (rc == ARPC_EOVERLOADED)
            snprintf(why, sizeof(why), "%s: the request would take more than %u x its size of memory to unpack",
                     arpc_request_method(req), PROTOBUF_COST_PER_BYTE);
        else
            snprintf(why, sizeof(why), "%s: the request is not a valid %s", arpc_request_method(req), md->input->name);
        arpc_reply_error(req, why);
        return;
    }
    call->pc_req = req;
    call->pc_output = md->output;
    atomic_store_explicit(&call->pc_magic, ARPC_MAGIC_PBCALL, memory_order_relaxed);
    pm->pm_service->invoke(pm->pm_service, pm->pm_index, call->pc_input, pb_closure, call);
}

static void pb_method_free(void *ctx) { arpc_free(ctx); }

/* A generated service (KV__KV__INIT(prefix_)) keeps its methods' functions after its base, in
 * the descriptor's order, and protobuf-c's invoke jumps to them unchecked: a method left NULL
 * (not written yet) would crash the server at its first call. Such a method is not served. */
static bool pb_method_missing(const ProtobufCService *service, unsigned i)
{
    typedef void (*generated_method)(void);
    if (service->invoke != protobuf_c_service_invoke_internal)
        return false; /* the application's own invoke decides */
    generated_method m;
    memcpy(&m, (const char *)(service + 1) + i * sizeof(m), sizeof(m));
    return m == NULL;
}

int arpc_server_register_protobuf_v(arpc_server *s, ProtobufCService *service, const arpc_method_options *caller_mopts,
                                    size_t mopts_size)
{
    arpc_method_options mopts;
    if (arpc_options_copy(&mopts, sizeof(mopts), caller_mopts, mopts_size) != ARPC_OK)
        return ARPC_EINVAL;
    if (!server_live(s, __func__) || service == NULL || service->descriptor == NULL || service->invoke == NULL ||
        mopts.ctx_free != NULL)
        return ARPC_EINVAL;
    const ProtobufCServiceDescriptor *d = service->descriptor;
    char name[ARPC_METHOD_MAX + 2];
    /* Every name is checked before any is registered, so a clash leaves the server as it was. */
    for (unsigned i = 0; i < d->n_methods; i++) {
        if (!protobuf_method_name(d, i, name, ARPC_METHOD_MAX + 1))
            return ARPC_EINVAL;
        if (!pb_method_missing(service, i) && arpc_registry_find(&s->sv_registry, name, strlen(name)) != NULL)
            return ARPC_EBUSY;
    }
    mopts.ctx_free = pb_method_free;
    for (unsigned i = 0; i < d->n_methods; i++) {
        if (pb_method_missing(service, i))
            continue; /* its calls are answered ARPC_ENOMETHOD, as for any method not served */
        struct pb_method *pm = arpc_malloc(sizeof(*pm));
        if (pm == NULL)
            return ARPC_ENOMEM;
        *pm = (struct pb_method){.pm_service = service, .pm_index = i};
        protobuf_method_name(d, i, name, sizeof(name));
        int rc = arpc_server_register(s, name, pb_handler, pm, &mopts);
        if (rc != ARPC_OK) {
            arpc_free(pm); /* not registered: still ours */
            return rc;
        }
    }
    return ARPC_OK;
}
