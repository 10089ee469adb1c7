/*
 * Holding a server's loop still while a test arranges what it will meet next (a peer's bytes
 * and its reset, all in one readiness), whatever the machine's speed: register
 * loop_hold_handler inline on the loop under some name, then loop_hold_begin / loop_hold_end
 * around what the loop must not see happen one step at a time. One hold at a time per process.
 */
#ifndef ARPC_TEST_LOOP_HOLD_H
#define ARPC_TEST_LOOP_HOLD_H

struct arpc_request;
struct raw_client;

/* The inline handler (arpc_handler_fn): blocks the loop until loop_hold_end, then replies. */
void loop_hold_handler(struct arpc_request *req, void *ctx);

/* Calls method (loop_hold_handler's name) at addr from a connection of its own, and returns
 * once the loop is inside it; NULL if it could not (the test fails on it). */
struct raw_client *loop_hold_begin(const char *addr, const char *method);
/* Lets the loop go on and closes the holder's connection (one more close for the server). */
void loop_hold_end(struct raw_client *holder);

#endif
