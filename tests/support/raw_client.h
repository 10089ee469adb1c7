/*
 * A client that speaks the wire protocol by hand (core/frame.h), for tests that must control
 * exactly what reaches a server: duplicates of a call, on one connection or several, stale
 * sequence numbers, silence. Every wait is bounded (RAW_WAIT_MS).
 */
#ifndef ARPC_TEST_RAW_CLIENT_H
#define ARPC_TEST_RAW_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/frame.h"

#define RAW_WAIT_MS 30000 /* as TEST_WAIT_MS: only a hang reaches it */

struct raw_client {
    int rc_fd;
    uint8_t rc_buf[1 << 17];
    size_t rc_len;
    size_t rc_consumed;  /* the last frame returned, dropped at the next read */
    struct arpc_frame rc_hello; /* the server's HELLO */
};

/* A frame read by raw_read: the view is valid until the next raw_read. */
struct raw_frame {
    struct arpc_frame f;
    const uint8_t *body; /* the bytes after the header */
    size_t body_len;
};

/* Connects, says HELLO as client_id, and reads the server's HELLO. */
bool raw_connect(struct raw_client *r, const char *addr, uint64_t client_id);
/* The same, with a token in the HELLO (core/frame.h: ARPC_HELLO_TOKEN; NULL: none) and an
 * incarnation (0: none, as an older client). */
bool raw_connect_with(struct raw_client *r, const char *addr, uint64_t client_id, const char *token,
                      uint64_t incarnation);
/* raw_connect on fd, a TCP socket the caller made (its options, such as a small SO_RCVBUF, set
 * before the connect), to addr (tcp://127.0.0.1:PORT); r owns fd from here on (raw_close). */
bool raw_connect_on(struct raw_client *r, int fd, const char *addr, uint64_t client_id);
/* raw_connect, with `first` (up to 1 KiB: e.g. the start of a frame) sent in the HELLO's own
 * write: no moment when the connection has said HELLO and nothing else, which an idle
 * timeout shorter than a stall of the test's thread would close. */
bool raw_connect_then(struct raw_client *r, const char *addr, uint64_t client_id, const void *first, size_t len);
/* raw_connect_then with a whole request (ack and deadline 0; small). */
bool raw_connect_then_request(struct raw_client *r, const char *addr, uint64_t client_id, uint64_t xid,
                              uint64_t seq, const char *method, const void *payload, size_t len);
void raw_close(struct raw_client *r);
bool raw_request(struct raw_client *r, uint64_t xid, uint64_t seq, uint64_t ack, uint32_t deadline_ms,
                 const char *method, const void *payload, size_t len);
bool raw_send(struct raw_client *r, const void *bytes, size_t len);
/* The next frame (false on EOF, error or timeout). PINGs are answered and skipped unless
 * keep_pings (then they are returned, unanswered). */
bool raw_read(struct raw_client *r, struct raw_frame *out, bool keep_pings);
/* A CANCEL naming call xid (by its xid: no seq), as arpc_future_cancel sends. */
bool raw_cancel(struct raw_client *r, uint64_t xid);
/* Says goodbye as arpc's client does on close (a GOAWAY ARPC_ESHUTDOWN): it re-sends nothing. */
bool raw_goodbye(struct raw_client *r);
/* The next frame is an ERROR answering xid with code (false otherwise, or after RAW_WAIT_MS). */
bool raw_next_is_error(struct raw_client *r, uint64_t xid, int code);
/* Sends a call with a budget (deadline_ms) under *xid (seq 0: unnumbered) and reads its answer,
 * which must be an ERROR: sent again under the next xid while that is ARPC_EEXPIRED (a worker
 * that took it up only after its budget refused it without running it, a loaded machine; a
 * numbered call's entry goes with it, so the seq is sent again), at most 100 times. Returns
 * the other answer's code, -1 if none came or it was no ERROR for the call; *xid is then the
 * call's that got it. */
int raw_call_taken_in_time(struct raw_client *r, uint64_t *xid, uint64_t seq, uint64_t ack, uint32_t deadline_ms,
                           const char *method, const void *payload, size_t len);
/* Asserts (cmocka: the test's thread only) that the next frame but a stop's GOAWAY is an
 * ERROR answering xid with code, naming the field that differs. */
void raw_expect_error(struct raw_client *r, uint64_t xid, int code);
/* Reads frames until EOF; false if something else came or the wait ran out. *pings counts
 * the PINGs seen. */
bool raw_wait_eof(struct raw_client *r, int *pings);

#endif
