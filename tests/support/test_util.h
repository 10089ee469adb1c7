/*
 * Scaffolding shared by the tests: real waits (a counting latch, a timed semaphore wait),
 * clocks and sleeps, a replayable PRNG, socket helpers and a byte stream to check order with,
 * off-thread checks, and a counting allocator that can be told to fail. None of it is part of
 * arpc; it only keeps each test file about its subject.
 */
#ifndef ARPC_TEST_UTIL_H
#define ARPC_TEST_UTIL_H

#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arpc/alloc.h"

/* ---- counting latch: the tests' real wait for work done on other threads ---- */

void latch_reset(void);
/* Counts one event and wakes every waiter. Any thread. */
void latch_add(void);
/* Waits until latch_add() was called target times since the reset; false after timeout_ms. */
bool latch_wait(unsigned target, int timeout_ms);

/* The bound of a wait for what should happen soon (a latch, a semaphore, a future): only a
 * hang reaches it, however loaded the machine (parallel suites under sanitizers stretch a
 * moment to seconds). Never a pace, never what a test checks. Under libev's longest poll
 * (59.743 s), which ends a lost wake-up's sleep by itself and would hide it. */
#define TEST_WAIT_MS 30000
/* The same bound for waits counted in seconds (sem_wait_secs, the long poll's waits). */
#define TEST_WAIT_S (TEST_WAIT_MS / 1000)

/* Waits on s for up to secs seconds (retrying EINTR); false on timeout. */
bool sem_wait_secs(sem_t *s, int secs);

/* Runs fn(arg) on a thread of its own and waits up to secs seconds for it to return: true
 * (the thread joined), or false, the thread left running (detached), for a test that fails
 * there: a wait that used to hang shows as a failed assert, not the test's timeout. */
bool thread_ends_within(void (*fn)(void *arg), void *arg, int secs);

/* ---- time ---- */

/* Milliseconds on CLOCK_MONOTONIC (the clock arpc_now_ns reads). */
int64_t now_ms(void);
/* Sleeps ms milliseconds, resuming after signals. Only to pace or delay, never to synchronise. */
void sleep_ms(long ms);

/* ---- a bounded poll: for a state nothing announces ---- */

struct arpc_loop;
/* Yields until loop sleeps in its poll with nothing to do (arpc_loop_idle: a caller's write
 * then goes out directly) or ms pass; true once idle. */
bool loop_idle_within(struct arpc_loop *loop, int ms);

/* The pace of every poll: false once now_ms() reached until; else sleeps a millisecond and
 * returns true (look again). */
bool poll_again(int64_t until);
/* Evaluates cond again each millisecond until it holds or TEST_WAIT_MS pass; the whole is
 * cond's last value, so `assert_true(WAIT_UNTIL(n == 0))` fails only on a hang. Only for a
 * state that stays once reached and that nothing can announce (another thread's count, a
 * server's stats, a log line): where a latch, future or semaphore can tell, wait on it. Any
 * thread (off the test's, check the result with CHECK). */
#define WAIT_UNTIL(cond)                                                                     \
    __extension__({                                                                          \
        int64_t wait_until_end_ = now_ms() + TEST_WAIT_MS;                                   \
        bool wait_until_ok_;                                                                 \
        while (!(wait_until_ok_ = (cond)) && poll_again(wait_until_end_))                    \
            ;                                                                                \
        wait_until_ok_;                                                                      \
    })

/* ---- other threads of the test ---- */

/* The calling thread's id (gettid). */
int thread_id(void);
/* True while thread tid is blocked in poll(2) (/proc/self/task/TID/syscall): e.g. a
 * completion queue's consumer asleep on its eventfd (a loop sleeps in epoll_wait instead).
 * For WAIT_UNTIL: the consumer's sleep is a state nothing announces. */
bool thread_in_poll(int tid);
/* True while thread tid is blocked in poll, ppoll, epoll_wait or epoll_pwait: e.g. a thread
 * driving a loop, asleep in its poll, where only a wake-up reaches it. */
bool thread_in_any_poll(int tid);

/* ---- handlers ---- */

struct arpc_request;
/* A method handler (arpc_handler_fn) replying its request's bytes, on whatever thread runs it. */
void test_echo(struct arpc_request *req, void *ctx);
struct arpc_client;
/* Calls "t.echo" (test_echo) on c with "ping" and deadline_ms, and checks that it succeeded
 * with "ping" back. */
void echo_ping(struct arpc_client *c, int64_t deadline_ms);
/* A new client connects to addr, calls "t.echo" once (echo_ping, TEST_WAIT_MS), and closes:
 * the server accepted and served it. */
void echo_call_once(const char *addr);

/* ---- a server's stats ---- */

struct arpc_server;
struct arpc_method_stats;
/* Reads method's stats of s into *ms until at least `answered` calls are booked with outcome
 * code (ARPC_OK, or e.g. ARPC_ETIMEDOUT for the server's own answer) and as many latencies (a
 * reply its worker wrote itself can reach the client before the loop books it, at its next
 * turn: core/reply_direct.c), for at most TEST_WAIT_MS. Returns whether they were; *ms holds the last
 * read either way. */
bool server_stats_caught_up(struct arpc_server *s, const char *method, int code, uint64_t answered,
                            struct arpc_method_stats *ms);
/* Reads s's stats until the uint64_t field at offset (offsetof(arpc_server_stats, ...)) is
 * want, for at most ms. Returns whether it was. */
bool server_stat_reaches(struct arpc_server *s, size_t offset, uint64_t want, int ms);
/* Requests the server has read, whatever it did with them: dispatched to a method (run,
 * or cancelled before they ran) or refused before (arpc_server_stats: calls.started plus
 * every refused[] count). */
uint64_t server_requests_read(struct arpc_server *s);
/* The uint64_t field at offset of the server's stats now (UINT64_MAX if they could not be
 * read); SERVER_STAT(s, field) names it. */
uint64_t server_stat_now(struct arpc_server *s, size_t offset);
#define SERVER_STAT(s, field) server_stat_now((s), offsetof(arpc_server_stats, field))

/* The same for a client's stats (arpc_client_stats): the uint64_t field at offset reaches want
 * within ms. */
struct arpc_client;
bool client_stat_reaches(struct arpc_client *c, size_t offset, uint64_t want, int ms);
/* The uint64_t field at offset of the client's stats now (UINT64_MAX if they could not be
 * read); CLIENT_STAT(c, field) names it. */
uint64_t client_stat_now(struct arpc_client *c, size_t offset);
#define CLIENT_STAT(c, field) client_stat_now((c), offsetof(arpc_client_stats, field))
/* The uint64_t field at offset of method's stats on s now (the test fails if they cannot be
 * read: the test's thread only); METHOD_STAT(s, method, field) names it. */
uint64_t method_stat_now(struct arpc_server *s, const char *method, size_t offset);
#define METHOD_STAT(s, method, field) method_stat_now((s), (method), offsetof(arpc_method_stats, field))

/* ---- calls with short deadlines ---- */

/* arpc_call with a short deadline, made again while it ends ARPC_EUNREACHABLE: the client's
 * loop took it up only after its deadline (a loaded machine), so it was never sent. At most
 * CALL_UNSENT_ATTEMPTS times (only a hang reaches it); returns the last outcome. */
#define CALL_UNSENT_ATTEMPTS 20
int call_until_sent(struct arpc_client *c, const char *method, const void *req, size_t req_len, void **reply,
                    size_t *reply_len, int64_t deadline_ms);

/* xorshift64*: a small seeded generator, so a failing input can be replayed. */
uint64_t rng_next(uint64_t *s);

/* ---- sockets ---- */

/* A connected AF_UNIX stream pair, both ends non-blocking and close-on-exec. */
bool socketpair_nb(int fd[2]);
/* Bytes waiting to be read on a stream socket (FIONREAD). */
size_t fd_unread(int fd);
/* Reads and drops bytes until the peer's close (EOF or a reset) within ms: true; false if
 * the wait ran out or the read failed otherwise. */
bool fd_wait_eof(int fd, int ms);
/* Connects a TCP socket the caller made (e.g. before the process ran out of descriptors) to
 * 127.0.0.1 at the port of addr ("tcp://127.0.0.1:PORT"); connect()'s result. */
int fd_connect_loopback(int fd, const char *addr);
/* A TCP socket (blocking, close-on-exec), not connected yet, with SO_RCVBUF set to rcvbuf
 * first (0: the kernel's): a receive buffer bounds the window only if set before the connect. */
int tcp_socket_rcvbuf(int rcvbuf);
/* A TCP socket listening on 127.0.0.1 at a port the kernel chose (*port), close-on-exec, with
 * backlog. flags: socket()'s type flags to add (SOCK_NONBLOCK, or 0); rcvbuf: SO_RCVBUF set
 * before listen(), so the connections it accepts inherit it (0: the system's default). The
 * fd, or -1 (errno says why; nothing is left open). */
int fd_listen_loopback(int flags, int backlog, int rcvbuf, uint16_t *port);
/* Byte pos of a fixed test stream, so a reader checks order and content byte by byte. */
static inline uint8_t pattern_byte(uint64_t pos)
{
    return (uint8_t)((pos * 131u) ^ (pos >> 8) ^ (pos >> 17));
}
/* Writes the stream's bytes pos..pos+len-1 to buf. */
void fill_pattern(uint8_t *buf, uint64_t pos, size_t len);
/* Reads up to max bytes waiting on a non-blocking fd (SIZE_MAX: all of them) and checks each
 * against the stream at *pos, advancing it; the first wrong byte fails the test (so: the
 * test's thread only). Returns the bytes read: 0 when none wait, at EOF, or on an error. */
size_t read_pattern(int fd, size_t *pos, size_t max);

/* ---- checks on threads other than the test's ----
 * cmocka's asserts must run on the test's thread: CHECK records the first failing line in
 * bad_line instead, and the test asserts bad_line == 0 once the other threads are done. */
extern atomic_int bad_line;
#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond))                                                                         \
            atomic_store(&bad_line, __LINE__);                                               \
    } while (0)

/* ---- counting allocator that can fail ----
 * Tracks every block arpc holds (so a test can check nothing leaked) and fails allocations
 * on demand (so a test can check every ENOMEM path). Growing an existing block with realloc
 * is an allocation too: it takes from the budget and may fail. */

extern const arpc_allocator test_allocator;
extern atomic_long test_alloc_live;   /* blocks handed out and not yet freed */
extern atomic_long test_alloc_budget; /* < 0: unlimited; n >= 0: n more succeed, then all fail */
extern atomic_long test_alloc_fail_in; /* < 0: none; n >= 0: n more succeed, the next fails (once) */
extern atomic_long test_alloc_refused; /* allocations failed (budget or fail_in) since the install */
#define TEST_ALLOC_LARGE (32u * 1024u)
extern atomic_long test_alloc_large; /* allocations of TEST_ALLOC_LARGE bytes or more made */

/* Zeroes the live and refused counts, makes the budget unlimited, arms no single failure and
 * installs test_allocator. */
void test_alloc_install(void);
/* A cmocka teardown: fails the test if any block is still live. */
int test_alloc_check_no_leak(void **state);
/* A cmocka test that must end with no block live (with test_allocator installed). */
#define cmocka_unit_test_no_leak(f) cmocka_unit_test_teardown(f, test_alloc_check_no_leak)

/* ---- an allocator that fails one allocation picked by its size ----
 * For an ENOMEM path whose allocation is told apart from the others by its size (plain
 * malloc otherwise). */

/* Installs it, nothing armed, the failed count zeroed. */
void test_alloc_sized_install(void);
/* The next allocation of lo to hi-1 bytes fails, once; lo = hi = 0 disarms. */
void test_alloc_fail_next(size_t lo, size_t hi);
/* The same for the next realloc to lo to hi-1 bytes (a block that grows) instead. */
void test_alloc_fail_next_growth(size_t lo, size_t hi);
/* Allocations it failed since the install. */
int test_alloc_sized_failed(void);

#endif
