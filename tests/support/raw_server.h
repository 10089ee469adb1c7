/*
 * A scripted arpc server for client tests: a loopback listener and a thread that runs the
 * test's script, which accepts connections and speaks raw frames on them
 * (support/raw_client.h: raw_read, raw_send), so a test controls exactly what its client
 * gets: a stray reply, a GOAWAY between two reads, a connection closed unanswered.
 */
#ifndef ARPC_TEST_RAW_SERVER_H
#define ARPC_TEST_RAW_SERVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "support/raw_client.h"

struct raw_server;
/* The script, on the server's thread: true when everything went as the test expects. */
typedef bool (*raw_script_fn)(struct raw_server *s, void *arg);

struct raw_server {
    int rs_listen;
    char rs_addr[64]; /* "tcp://127.0.0.1:PORT" */
    pthread_t rs_thread;
    raw_script_fn rs_script;
    void *rs_arg;
    bool rs_ok;
};

/* Listens on a free loopback port (connects queue from here on) and runs script(s, arg) on a
 * thread of its own. Fails the test if it cannot. */
void raw_server_start(struct raw_server *s, raw_script_fn script, void *arg);
/* On the script's thread: accepts the next connection into r (zeroed first), reads the
 * client's HELLO and answers with the HELLO encoded in hello[0..len). False on any failure. */
bool raw_server_accept(struct raw_server *s, struct raw_client *r, const void *hello, size_t len);
/* raw_server_accept with the HELLO of a deduplicating server (ARPC_HELLO_CANCEL and
 * ARPC_HELLO_DEDUP, the same instance each time, client expiry 600 s). */
bool raw_server_accept_dedup(struct raw_server *s, struct raw_client *r);
/* raw_server_accept_dedup, then the client's first frame into *f: false unless a REQUEST. */
bool raw_server_accept_call(struct raw_server *s, struct raw_client *r, struct raw_frame *f);
/* On the script's thread: a deduplicating server's connection whose calls read(r, arg, 0)
 * reads, closed unanswered (so they wait for the next), then the client's next connection,
 * read(r, arg, 1), left open in r for the script's answers. False on any failure (the script
 * closes r, raw_close, either way). */
typedef bool (*raw_read_calls_fn)(struct raw_client *r, void *arg, int conn);
bool raw_server_read_twice(struct raw_server *s, struct raw_client *r, raw_read_calls_fn read, void *arg);
/* On the script's thread: sends a REPLY under xid whose payload is the one byte given. */
bool raw_server_reply_byte(struct raw_client *r, uint64_t xid, uint8_t byte);
/* On the script's thread: reads frames until the client closes (or RAW_WAIT_MS passes). */
void raw_server_read_to_end(struct raw_client *r);
/* Waits for the script and closes the listener: the script's result. */
bool raw_server_join(struct raw_server *s);

#endif
