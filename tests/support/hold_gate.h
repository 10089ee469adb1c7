/*
 * A server for tests of waits inside callbacks: "t.hold" keeps its request until the test
 * answers it (hold_gate_held), "t.gate" answers "g" once the test opens the gate (so a call's
 * then() can be attached while the call is surely pending), and "t.echo" (test_echo). One per
 * test program, as a cmocka group's setup and teardown.
 */
#ifndef ARPC_TEST_HOLD_GATE_H
#define ARPC_TEST_HOLD_GATE_H

#include "arpc/server.h"

/* Where the server listens (tcp://127.0.0.1, a port of its own), once set up. */
extern char hold_gate_addr[256];

int hold_gate_setup(void **state);    /* 0, or -1 on failure */
int hold_gate_teardown(void **state); /* 0 */
/* t.hold's request, once it has arrived (waits up to TEST_WAIT_S; NULL after); the caller
 * answers it. */
arpc_request *hold_gate_held(void);
/* Lets one t.gate answer. */
void hold_gate_open(void);

#endif
