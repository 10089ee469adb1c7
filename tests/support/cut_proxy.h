/*
 * A TCP proxy on its own thread whose connections can be cut on demand: both sides see their
 * connection close at once (as when a network path fails), while the proxy keeps accepting
 * new ones. For tests of reconnecting clients against a server that stays up.
 */
#ifndef ARPC_TEST_CUT_PROXY_H
#define ARPC_TEST_CUT_PROXY_H

#include <stdbool.h>
#include <stddef.h>

struct cut_proxy;

/* Listens on 127.0.0.1 (a free port: *addr gets "tcp://127.0.0.1:PORT") and forwards every
 * connection to target ("tcp://..."). NULL on failure. */
struct cut_proxy *cut_proxy_start(const char *target, char *addr, size_t addrlen);
/* Closes every connection open now (both ends), and returns how many. */
int cut_proxy_cut(struct cut_proxy *p);
/* Closes the server's side of every connection open now, and only that: the server sees its
 * connection close, the client sees nothing (what it sends is read and dropped) until a later
 * cut_proxy_cut closes its side too (a path that failed silently, before the client's
 * heartbeat noticed). Returns how many. */
int cut_proxy_cut_silently(struct cut_proxy *p);
/* While on, what servers send is read and dropped, not forwarded (a path that loses one
 * direction: the client waits, its connection looks fine). */
void cut_proxy_swallow_replies(struct cut_proxy *p, bool on);
/* Connections accepted from now on forward only the first `bytes` their clients send (e.g. a
 * HELLO) and drop the rest, as a path that dies after the handshake; 0: all, as before. */
void cut_proxy_forward_first(struct cut_proxy *p, long bytes);
/* While on, new connections are not accepted: they wait in the listen backlog (a client's
 * connect succeeds, its HELLO goes unanswered) until it is turned off, when they are accepted
 * and forwarded as ever. With cut_proxy_cut, a client that stays disconnected for as long as
 * the test needs. */
void cut_proxy_hold_new(struct cut_proxy *p, bool on);
/* Connections accepted so far. */
int cut_proxy_accepted(struct cut_proxy *p);
void cut_proxy_stop(struct cut_proxy *p);

#endif
