/*
 * The methods every server answers (arpc/server.h): arpc.methods, for tools such as arpc-call
 * --list, and arpc.stats, the stats as JSON. Both run inline on the loop: they only read the
 * registry (fixed once the server listens) and the counters, and never block.
 */
#include "arpc/stats.h"
#include "base/alloc.h"
#include "base/text_buf.h"
#include "core/jsonrpc_server.h"
#include "core/request_internal.h"
#include "core/server_internal.h"

/* Answers with text, or ARPC_ENOMEM's wording when it could not be built. */
static void reply_text(arpc_request *req, int rc, char *text, size_t len)
{
    if (rc == ARPC_OK)
        arpc_reply(req, text, len);
    else
        arpc_reply_error(req, arpc_strerror(rc));
    arpc_free(text);
}

/* The names, each followed by a line feed; to a JSON-RPC peer, whose reply must be JSON, a
 * JSON array of those it can call (not the numbered_only ones; a name that is not UTF-8, which
 * no JSON-RPC request can spell, as jsonrpc_quote writes it). */
static void builtin_methods(arpc_request *req, void *ctx)
{
    const arpc_server *s = ctx;
    const struct arpc_registry *r = &s->sv_registry;
    bool json = request_from_jsonrpc(req);
    struct text_buf b;
    text_buf_init(&b);
    text_buf_puts(&b, json ? "[" : "");
    bool first = true;
    for (size_t i = 0; i < r->r_count; i++) {
        const struct arpc_method *m = r->r_methods[i];
        if (json && m->m_numbered_only)
            continue; /* a JSON-RPC call is never numbered: the method refuses every one */
        if (json) {
            text_buf_puts(&b, first ? "" : ",");
            jsonrpc_text_quoted(&b, m->m_name, m->m_name_len);
        } else {
            text_buf_append(&b, m->m_name, m->m_name_len);
            text_buf_puts(&b, "\n");
        }
        first = false;
    }
    text_buf_puts(&b, json ? "]" : "");
    char *text = NULL;
    size_t len = 0;
    int rc = text_buf_finish(&b, &text, &len);
    reply_text(req, rc, text, len);
}

static void builtin_stats(arpc_request *req, void *ctx)
{
    char *text = NULL;
    size_t len = 0;
    int rc = arpc_server_stats_json(ctx, &text, &len);
    reply_text(req, rc, text, len);
}

/* Read-only, so answered outside the reply cache even when numbered (a client numbers every
 * call): running one twice changes nothing, its reply (the stats: kilobytes) is not kept until
 * acknowledged, and a server whose reply log failed, which refuses every numbered call, still
 * answers the monitoring that must see it (arpc.stats: log_failed). */
static int builtin_add(arpc_server *s, const char *name, arpc_handler_fn fn)
{
    static const arpc_method_options on_loop = {.inline_on_loop = true};
    int rc = arpc_registry_add(&s->sv_registry, name, fn, s, &on_loop);
    if (rc == ARPC_OK)
        ((struct arpc_method *)arpc_registry_find(&s->sv_registry, name, strlen(name)))->m_read_only = true;
    return rc;
}

int builtin_register(arpc_server *s)
{
    int rc = builtin_add(s, ARPC_BUILTIN_PREFIX "methods", builtin_methods);
    if (rc == ARPC_OK)
        rc = builtin_add(s, ARPC_BUILTIN_PREFIX "stats", builtin_stats);
    return rc;
}
