/*
 * Certificate rotation: arpc_server_tls_reload loads the new certificate, key and CAs on the
 * caller's thread (file reads and key checks stay off the loop), then exchanges them with the
 * listeners' context on the server's loop, the only thread that makes TLS streams from it.
 * Connections open keep what they were made with: OpenSSL frees the old context when the last
 * of them closes.
 */
#include <stdio.h>

#include "arpc/error.h"
#include "core/server_internal.h"
#include "transport/tls.h"

struct tls_swap {
    arpc_server *ts_server;
    struct arpc_tls *ts_fresh; /* in: the new context; out: the old one, to free */
};

static void tls_swap_on_loop(arpc_loop *loop, void *arg)
{
    (void)loop;
    struct tls_swap *sw = arg;
    arpc_tls_swap(sw->ts_server->sv_tls, sw->ts_fresh);
}

int arpc_server_tls_reload(arpc_server *s, const arpc_tls_options *tls, char *errbuf, size_t errbuf_len)
{
    char why[512] = "";
    int rc = ARPC_OK;
    if (!server_live(s, __func__) || tls == NULL) {
        snprintf(why, sizeof(why), "arpc_server_tls_reload: no server or no options");
        rc = ARPC_EINVAL;
    } else if (s->sv_tls == NULL) {
        snprintf(why, sizeof(why), "arpc_server_tls_reload: the server was created without TLS (arpc_server_options.tls)");
        rc = ARPC_EINVAL;
    } else if (atomic_load(&s->sv_state) >= SV_STOPPING) {
        snprintf(why, sizeof(why), "arpc_server_tls_reload: the server is stopping");
        rc = ARPC_ESHUTDOWN;
    }
    struct tls_swap sw = {.ts_server = s};
    if (rc == ARPC_OK)
        rc = arpc_tls_server_new(&sw.ts_fresh, tls, why, sizeof(why));
    if (rc == ARPC_OK) {
        /* Stopped meanwhile: the swap still runs (on this thread), harmlessly. */
        (void)arpc_loop_run_sync(s->sv_loop, tls_swap_on_loop, &sw);
        arpc_tls_free(sw.ts_fresh); /* the old context, or what is left of it */
    }
    if (rc != ARPC_OK && errbuf != NULL && errbuf_len > 0)
        snprintf(errbuf, errbuf_len, "%s", why);
    return rc;
}
