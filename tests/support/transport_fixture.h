/*
 * Scaffolding for the transport tests (tests/transport_*_test.c): fresh addresses, listeners
 * that must open, connects and accepts that must succeed, byte pumps with generous waits, and
 * a check that each test leaves no file descriptor open. Every helper fails the running
 * cmocka test on its own thread when something is wrong; none sleeps to synchronise.
 */
#ifndef ARPC_TEST_TRANSPORT_FIXTURE_H
#define ARPC_TEST_TRANSPORT_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>

#include "transport/transport.h"

#define WAIT_MS 30000 /* bounds a wait for an event that should come at once: only a hang reaches it */
#define CONNECT_MS 30000 /* likewise for a connect that should succeed */

/* ---- fresh addresses nobody uses ---- */

void make_tcp_addr(char *addr, size_t len); /* "tcp://127.0.0.1:0" */
void make_unix_addr(char *addr, size_t len); /* "unix:///tmp/arpc-test-PID-N.sock" */
void make_inproc_addr(char *addr, size_t len); /* "inproc://test-N" */

/* ---- the transports under test, for suites run against each ---- */

struct xport {
    const struct arpc_transport_ops *x_ops;
    void (*x_make)(char *addr, size_t len); /* a fresh address nobody uses */
    const char *x_nobody;                   /* in the why line when nobody listens */
    bool x_immediate;                       /* connect is never left in progress */
};
extern const struct xport xports[3]; /* tcp, unix, inproc */

/* Listens on a fresh address of x. */
struct arpc_listener *xport_listen(const struct xport *x);

/* ---- per-test fd accounting (cmocka setup/teardown) ---- */

int fd_setup(void **state);
/* Fails the test if it left a file descriptor open. */
int fd_teardown(void **state);
#define FD_TEST(fn) cmocka_unit_test_setup_teardown(fn, fd_setup, fd_teardown)
/* One cmocka test per transport, each given its struct xport as state. */
#define XPORT_TEST_(i, prefix, fn)                                                              \
    {.name = prefix #fn, .test_func = fn, .setup_func = fd_setup, .teardown_func = fd_teardown, \
     .initial_state = (void *)&xports[i]}
#define CONFORMANCE(fn) XPORT_TEST_(0, "tcp/", fn), XPORT_TEST_(1, "unix/", fn), XPORT_TEST_(2, "inproc/", fn)

/* ---- listeners, connects, accepts ---- */

/* Listens on addr (any scheme); the test fails unless that works. */
struct arpc_listener *lsn_open(const char *addr);
void lsn_close(struct arpc_listener *l);
/* arpc_transport_connect to l's address within CONNECT_MS. */
int dial(const struct arpc_listener *l, int *fd);
/* Waits for l's fd to be readable, then accepts; peer (ARPC_ADDR_MAX bytes) may be NULL. */
int accept_wait_peer(struct arpc_listener *l, char *peer);
int accept_wait(struct arpc_listener *l);
/* t_accept without waiting, peer or why. */
int accept_now(struct arpc_listener *l, int *fd);
/* A connected client and server pair through l. */
void make_pair(struct arpc_listener *l, int *client, int *server);
/* Sends one byte from one end and checks that it arrives at the other. */
void check_byte_across(int from, int to);
/* Connects through l, checks that a byte gets across, and closes both ends. */
void check_connects(struct arpc_listener *l);

/* ---- sockets ---- */

/* poll for events on fd for up to ms: the revents, or 0 on timeout. */
short wait_fd(int fd, short events, int ms);
void send_all(int fd, const void *buf, size_t len);
void recv_all(int fd, void *buf, size_t len);
/* Waits for the peer's close: true when it came as EOF or as a reset. */
int read_eof(int fd);
void assert_nonblocking_cloexec(int fd);

/* ---- why lines ---- */

/* Fails the test, printing why, unless why contains every one of the NULL-terminated words. */
void assert_why_(const char *why, const char *file, int line, ...);
#define assert_why(why, ...) assert_why_(why, __FILE__, __LINE__, __VA_ARGS__, (const char *)NULL)

#endif
