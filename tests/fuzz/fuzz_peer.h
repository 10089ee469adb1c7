/*
 * A fake arpc server for the client-side fuzz targets: a listener on inproc://NAME watched by
 * the fuzz loop itself, so that while arpc_client_connect drives that loop on the fuzzer's
 * thread, the connection is accepted and answered with the HELLO the target chose, in the
 * same turn. The target then writes whatever it likes to the accepted end.
 */
#ifndef ARPC_FUZZ_PEER_H
#define ARPC_FUZZ_PEER_H

#include <stddef.h>

/* Listens on addr ("inproc://NAME") on the fuzz loop. Call once, after fuzz_loop(). */
void fuzz_peer_listen(const char *addr);
/* The bytes written to the next connection as soon as it is accepted (copied; at most a header and
 * ARPC_HELLO_BODY_MAX + 1 bytes of body). */
void fuzz_peer_set_greeting(const void *bytes, size_t len);
/* The accepted end of the latest connection (the caller closes it), or -1 if none came. */
int fuzz_peer_take(void);

#endif
