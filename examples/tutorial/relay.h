/*
 * A TCP relay for the tutorial's failure steps (docs/TUTORIAL.md, steps 2 and 6): it stands
 * between a client and a server and plays the network that fails, on command and at a known
 * moment, so the examples show each outcome every time. Plain POSIX sockets, no arpc.
 * One connection at a time: a new one from the client replaces the old.
 */
#ifndef TUTORIAL_RELAY_H
#define TUTORIAL_RELAY_H

#include <stdbool.h>
#include <stddef.h>

typedef struct relay relay;

/* Listens on 127.0.0.1 (a free port) and relays each connection to upstream, a
 * "tcp://127.0.0.1:PORT" or "unix:///PATH" address. addr receives "tcp://127.0.0.1:PORT" to give the client.
 * Returns 0, or -1 with errno set. */
int relay_start(relay **out, const char *upstream, char *addr, size_t addrlen);

/* true: what the server sends is read and thrown away, and when the server closes its end the
 * client's end stays open: the client hears nothing more (a lost reply). What the client
 * sends still goes to the server while the server is there. */
void relay_drop_replies(relay *r, bool drop);

/* Closes the client's connection (and the server's), as a network failure would, and stops
 * dropping replies. Returns once done. */
void relay_cut(relay *r);

void relay_stop(relay *r);

#endif
