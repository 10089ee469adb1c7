/*
 * arpc_server_register: checks a registration and adds it to the registry. Each refusal is
 * logged with its reason (one WARN line naming the method), since the return code alone
 * (ARPC_EINVAL) cannot say which of a dozen rules was broken, and register has no errbuf.
 */
#include <stdio.h>
#include <string.h>

#include "arpc/error.h"
#include "base/log.h"
#include "base/options.h"
#include "core/frame.h"
#include "core/server_internal.h"

/* Why the registration breaks a rule, or NULL. fn is the handler after a queue's stand-in. */
static const char *register_refusal(const char *name, arpc_handler_fn fn, const arpc_method_options *mopts)
{
    if (name == NULL)
        return "the method name is NULL";
    if (name[0] == '\0')
        return "the method name is empty";
    if (strlen(name) > ARPC_METHOD_MAX)
        return "the method name is longer than 255 bytes";
    if (strncmp(name, ARPC_BUILTIN_PREFIX, strlen(ARPC_BUILTIN_PREFIX)) == 0)
        return "names beginning \"arpc.\" are the library's built-in methods"; /* core/server_builtin.c */
    if (fn == NULL)
        return "no handler (fn is NULL, and no arpc_method_options.queue)";
    if (mopts == NULL)
        return NULL;
    if ((!!mopts->actor + !!mopts->group + !!mopts->inline_on_loop) > 1)
        return "arpc_method_options: actor, group and inline_on_loop exclude one another";
    if (mopts->read_only && mopts->numbered_only)
        return "arpc_method_options: read_only and numbered_only exclude one another (a read-only method's calls "
               "run unnumbered)";
    if (mopts->key != NULL && (mopts->actor != NULL || mopts->inline_on_loop))
        return "arpc_method_options: a key chooses among a group's actors (not with actor or inline_on_loop)";
    return NULL;
}

static int register_refused(const char *name, int rc, const char *why)
{
    char shown[ARPC_LOG_FIELD_MAX];
    arpc_log(ARPC_LOG_WARN, "cannot register method \"%s\": %s",
             name != NULL ? arpc_log_escape(shown, sizeof(shown), name, strnlen(name, ARPC_METHOD_MAX + 1)) : "(null)",
             why);
    return rc;
}

int arpc_server_register_v(arpc_server *s, const char *name, arpc_handler_fn fn, void *ctx,
                           const arpc_method_options *caller_mopts, size_t mopts_size)
{
    arpc_method_options copy;
    if (arpc_options_copy(&copy, sizeof(copy), caller_mopts, mopts_size) != ARPC_OK)
        return register_refused(name, ARPC_EINVAL,
                                "arpc_method_options sets a field this library does not have (docs/ABI.md)");
    const arpc_method_options *mopts = caller_mopts != NULL ? &copy : NULL;
    if (mopts != NULL && mopts->queue != NULL) {
        /* Requests go to the queue from the loop, no handler (core/request_queue.c). */
        if (fn != NULL || ctx != NULL || mopts->actor != NULL || mopts->group != NULL || mopts->key != NULL ||
            mopts->inline_on_loop || mopts->ctx_free != NULL)
            return register_refused(name, ARPC_EINVAL,
                                    "arpc_method_options.queue takes no fn, ctx, actor, group, key, "
                                    "inline_on_loop or ctx_free");
        copy.inline_on_loop = true;
        fn = request_to_queue;
        ctx = mopts->queue;
    }
    if (!server_live(s, "arpc_server_register"))
        return ARPC_EINVAL; /* NULL, or misuse: logged there */
    const char *why = register_refusal(name, fn, mopts);
    if (why != NULL)
        return register_refused(name, ARPC_EINVAL, why);
    int state = atomic_load(&s->sv_state);
    if (state == SV_STOPPING || state == SV_STOPPED)
        return register_refused(name, ARPC_ESHUTDOWN, "the server is stopping or stopped");
    if (state != SV_IDLE)
        return register_refused(name, ARPC_EBUSY,
                                "the server already listens (register every method before the first "
                                "arpc_server_listen)");
    int rc = arpc_registry_add(&s->sv_registry, name, fn, ctx, mopts);
    if (rc == ARPC_EBUSY)
        return register_refused(name, rc, "a method of that name is registered already");
    if (rc != ARPC_OK)
        return register_refused(name, rc, "out of memory");
    return rc;
}
