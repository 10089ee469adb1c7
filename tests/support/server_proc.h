/*
 * A server in a child process, for tests that kill a server for real (SIGKILL, SIGSTOP) and
 * start it again on the same address and reply log.
 *
 * The child is the test executable itself, started again with fork + exec (so it works under
 * ThreadSanitizer, which cannot start threads in a forked child of a threaded process): a test
 * file's main() first calls server_proc_main(argc, argv), which serves and never returns when
 * argv asks for it.
 *
 * The server keeps an applied set of tokens, rebuilt from its reply log at start: methods
 *   t.apply   u64 token -> u64 1 if this token was new, 2 if it had been applied before; the
 *             token is the call's effect (arpc_reply_durable), so a restart re-applies it
 *   t.slow    u64 token, u32 ms: as t.apply, after sleeping ms (calls in flight at a kill)
 *   t.stats   -> u64 tokens applied, u64 duplicate applications (0 unless at-most-once broke)
 * run on the pool, or on one actor (SERVER_PROC_ACTOR).
 */
#ifndef ARPC_TEST_SERVER_PROC_H
#define ARPC_TEST_SERVER_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "arpc/arpc.h"

/* Modes (bits): handlers on the pool or on one actor; SMALL_DISK: files the server writes
 * stop growing at 64 KiB (RLIMIT_FSIZE, SIGXFSZ ignored), as on a full disk; COMPACT: the log
 * compacts once its segment passes 16 KiB (SERVER_PROC_COMPACT_BYTES), not 64 MiB;
 * EXPIRY_1S: client_expiry_s 1 (an idle client is forgotten within ~1.1 s). */
enum {
    SERVER_PROC_POOL = 0,
    SERVER_PROC_ACTOR = 1,
    SERVER_PROC_SMALL_DISK = 2,
    SERVER_PROC_COMPACT = 4,
    SERVER_PROC_EXPIRY_1S = 8
};
#define SERVER_PROC_COMPACT_BYTES (16 * 1024)

struct server_proc {
    pid_t sp_pid;
    char sp_addr[256];  /* the address it listens on (the port chosen for port 0) */
    char sp_dir[256];   /* its reply log directory */
    int sp_mode;
};

/* In main(), first: serves and exits when argv says so; returns otherwise. */
void server_proc_main(int argc, char **argv);

/* Starts a server on addr ("tcp://127.0.0.1:0" first, then the address it reported, to come
 * back on the same port) with its log in dir (created by the caller; "-": no reply log), and
 * waits until it listens. False (with a cmocka-friendly message on stderr) if it did not come up. */
bool server_proc_start(struct server_proc *sp, const char *addr, const char *dir, int mode);
/* SIGKILL and reap. */
void server_proc_kill(struct server_proc *sp);
/* SIGTERM (a clean stop), reap. */
void server_proc_stop(struct server_proc *sp);

/* SIGKILLs every server this process started and has not reaped (a cmocka teardown: a
 * failed test must not leave servers behind). */
int server_proc_teardown(void **state);

/* A fresh empty directory under /tmp; removed (with what is in it) by server_proc_rmdir. */
void server_proc_mkdir(char *dir, size_t len);
void server_proc_rmdir(const char *dir);

/* (tokens applied, duplicate applications) from a running server, by a fresh client. */
bool server_proc_stats(const char *addr, uint64_t *applied, uint64_t *duplicates);

#endif
