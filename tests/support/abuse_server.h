/*
 * A server in a child process for the abuse suite (tests/abuse_test.c): attacks run against
 * it from the test's process, and its memory is measured alone (VmRSS of the child).
 *
 * The child is the test executable started again (fork + exec, as support/server_proc.h,
 * so it works under ThreadSanitizer): a test's main() first calls abuse_server_main(argc,
 * argv), which serves and never returns when argv asks for it. Methods, on the worker pool:
 *   a.echo   replies its request
 *   a.big    u32 n -> n bytes (a large reply for a client that never reads)
 */
#ifndef ARPC_TEST_ABUSE_SERVER_H
#define ARPC_TEST_ABUSE_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* What the child's server is made with (0: arpc's default, as in arpc_server_options). */
struct abuse_server_limits {
    uint32_t handshake_timeout_ms;
    uint32_t frame_timeout_ms;
    uint32_t idle_timeout_ms;
    unsigned max_connections;
    unsigned nofile; /* the child's RLIMIT_NOFILE soft limit (0: raised to the hard limit) */
    uint32_t max_accept_rate, accept_burst;
    int32_t max_fault_rate; /* 0: arpc's default; < 0: none */
};

struct abuse_server {
    pid_t as_pid;
    char as_addr[256]; /* tcp://127.0.0.1:PORT */
};

/* In main(), first: serves and exits when argv says so; returns otherwise. */
void abuse_server_main(int argc, char **argv);

/* Starts the child on tcp://127.0.0.1:0 and waits until it listens. False if it did not. */
bool abuse_server_start(struct abuse_server *as, const struct abuse_server_limits *lim);
/* SIGTERM (a clean stop), reap; true if it exited 0 (it was still up, and stopped cleanly). */
bool abuse_server_stop(struct abuse_server *as);
/* True while the child has not exited. */
bool abuse_server_alive(const struct abuse_server *as);
/* The child's resident set in KiB (VmRSS), or -1. Any thread. */
long abuse_server_rss_kib(const struct abuse_server *as);
/* The CPU time the child has used so far (user and system, all threads) in ms, or -1. Tick
 * resolution (10 ms, usually). */
long abuse_server_cpu_ms(const struct abuse_server *as);

#endif
