/* Clocks, sleeps, the PRNG and the off-thread check line. */
#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "support/test_util.h"

#include "arpc/client.h"
#include "arpc/error.h"
#include "async/loop_internal.h"
#include "arpc/server.h"
#include "arpc/stats.h"

atomic_int bad_line;

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

bool loop_idle_within(struct arpc_loop *loop, int ms)
{
    int64_t end = now_ms() + ms;
    while (!arpc_loop_idle(loop) && now_ms() < end)
        sched_yield();
    return arpc_loop_idle(loop);
}

bool poll_again(int64_t until)
{
    if (now_ms() >= until)
        return false;
    sleep_ms(1); /* pacing a poll (WAIT_UNTIL): the one place a test polls */
    return true;
}

uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * UINT64_C(2685821657736338717);
}

void test_echo(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const void *data = arpc_request_data(req, &len);
    arpc_reply(req, data, len);
}

void echo_ping(arpc_client *c, int64_t deadline_ms)
{
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_OK, arpc_call(c, "t.echo", "ping", 4, &reply, &len, deadline_ms));
    assert_int_equal(4, len);
    assert_memory_equal("ping", reply, 4);
    arpc_free(reply);
}

void echo_call_once(const char *addr)
{
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    echo_ping(c, TEST_WAIT_MS);
    arpc_client_close(c);
}

/* Reads the 64-bit count at offset of obj's stats into *v; false if the stats cannot be had. */
typedef bool (*stat_read_fn)(void *obj, size_t offset, uint64_t *v);

static bool server_stat_read(void *obj, size_t offset, uint64_t *v)
{
    arpc_server_stats st;
    if (arpc_server_stats(obj, &st) != ARPC_OK)
        return false;
    memcpy(v, (const char *)&st + offset, sizeof(*v));
    return true;
}

static bool client_stat_read(void *obj, size_t offset, uint64_t *v)
{
    arpc_client_stats st;
    if (arpc_client_stats(obj, &st) != ARPC_OK)
        return false;
    memcpy(v, (const char *)&st + offset, sizeof(*v));
    return true;
}

static bool stat_reaches(stat_read_fn read, void *obj, size_t offset, uint64_t want, int ms)
{
    int64_t until = now_ms() + ms;
    do {
        uint64_t v;
        if (!read(obj, offset, &v))
            return false;
        if (v == want)
            return true;
    } while (poll_again(until));
    return false;
}

uint64_t server_stat_now(struct arpc_server *s, size_t offset)
{
    uint64_t v;
    return server_stat_read(s, offset, &v) ? v : UINT64_MAX;
}

bool server_stat_reaches(struct arpc_server *s, size_t offset, uint64_t want, int ms)
{
    return stat_reaches(server_stat_read, s, offset, want, ms);
}

uint64_t server_requests_read(struct arpc_server *s)
{
    arpc_server_stats st;
    assert_int_equal(ARPC_OK, arpc_server_stats(s, &st));
    uint64_t read = st.calls.started;
    for (unsigned i = 0; i < ARPC_STATS_CODES; i++)
        read += st.refused[i];
    return read;
}

uint64_t client_stat_now(struct arpc_client *c, size_t offset)
{
    uint64_t v;
    return client_stat_read(c, offset, &v) ? v : UINT64_MAX;
}

uint64_t method_stat_now(struct arpc_server *s, const char *method, size_t offset)
{
    arpc_method_stats ms;
    assert_int_equal(ARPC_OK, arpc_server_method_stats(s, method, &ms));
    uint64_t v;
    memcpy(&v, (const char *)&ms + offset, sizeof(v));
    return v;
}

int call_until_sent(struct arpc_client *c, const char *method, const void *req, size_t req_len, void **reply,
                    size_t *reply_len, int64_t deadline_ms)
{
    int rc = ARPC_EUNREACHABLE;
    for (int i = 0; i < CALL_UNSENT_ATTEMPTS && rc == ARPC_EUNREACHABLE; i++)
        rc = arpc_call(c, method, req, req_len, reply, reply_len, deadline_ms);
    return rc;
}

bool client_stat_reaches(struct arpc_client *c, size_t offset, uint64_t want, int ms)
{
    return stat_reaches(client_stat_read, c, offset, want, ms);
}

bool server_stats_caught_up(struct arpc_server *s, const char *method, int code, uint64_t answered,
                            struct arpc_method_stats *ms)
{
    int64_t until = now_ms() + TEST_WAIT_MS;
    do {
        if (arpc_server_method_stats(s, method, ms) != ARPC_OK)
            return false;
        if (ms->calls.by_outcome[code] >= answered && ms->latency_count >= answered)
            return true;
    } while (poll_again(until));
    return false;
}
