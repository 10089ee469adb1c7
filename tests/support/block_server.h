/*
 * A server for tests whose method "block" holds an actor of its own until the test lets it go,
 * so that what is sent behind it waits in the actor's mailbox (not started), or is parked on its
 * connection once the mailbox is full; and "echo" (test_echo) beside it. Counts and semaphores
 * to wait on instead of sleeping. One per test program: set it up in each test's setup.
 */
#ifndef ARPC_TEST_BLOCK_SERVER_H
#define ARPC_TEST_BLOCK_SERVER_H

#include <stdbool.h>

#include "arpc/actor.h"
#include "arpc/server.h"

struct block_server {
    arpc_server *bs_server;
    arpc_actor *bs_actor; /* runs "block" */
    char bs_addr[256];    /* where it listens, once listening */
};

/* Creates the server and the actor (mailbox_size jobs; 0: the actor's default) and registers
 * "block" and "echo"; the caller may register more before block_server_listen. Zeroes the
 * counts. 0, or -1 on failure (a cmocka setup's result). */
int block_server_setup(struct block_server *bs, unsigned mailbox_size);
/* Listens on tcp://127.0.0.1 (a port of its own; bs_addr). 0 or -1. */
int block_server_listen(struct block_server *bs);
/* Lets every "block" go, destroys the server and the actor. */
void block_server_teardown(struct block_server *bs);

/* Runs of "block" so far (started, released or not). */
int block_runs(void);
/* Waits for the next start of "block" for up to TEST_WAIT_MS; false if none. */
bool block_wait_started(void);
/* Lets n runs of "block" go (each replies "b"); a run not let go ends after TEST_WAIT_MS. */
void block_release(int n);

#endif
