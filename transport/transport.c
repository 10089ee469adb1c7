/*
 * Scheme lookup: "scheme://rest" -> the transport that owns scheme.
 *
 * Schemes match exactly (lower case), as every address arpc reports is lower case. Addresses
 * of ARPC_ADDR_MAX bytes or more are rejected here, so a bound-address buffer of
 * ARPC_ADDR_MAX bytes always fits what a transport reports for an address found here.
 */
#include "transport/transport.h"

#include <string.h>

static const struct arpc_transport_ops *const transports[] = {
    &arpc_transport_tcp,
    &arpc_transport_unix,
    &arpc_transport_inproc,
};

const struct arpc_transport_ops *arpc_transport_find(const char *addr, const char **rest)
{
    if (addr == NULL || strnlen(addr, ARPC_ADDR_MAX) == ARPC_ADDR_MAX)
        return NULL;
    const char *sep = strstr(addr, "://");
    if (sep == NULL)
        return NULL;
    size_t n = (size_t)(sep - addr);
    for (size_t i = 0; i < sizeof(transports) / sizeof(transports[0]); i++) {
        const char *scheme = transports[i]->t_scheme;
        if (strlen(scheme) == n && memcmp(scheme, addr, n) == 0) {
            if (rest != NULL)
                *rest = sep + 3;
            return transports[i];
        }
    }
    return NULL;
}
