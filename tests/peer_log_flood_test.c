/*
 * A peer that faults on purpose, over and over (a malformed frame, then a new connection), does
 * not write the server's log at its own pace: lines about peers are logged at most
 * PEER_LOG_BURST a second per loop (core/peer_log.h), and every connection is still closed.
 * Before, each fault logged a WARN: at the default max_fault_rate, 1,000 lines a second.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "base/clock.h"
#include "core/peer_log.h"
#include "support/raw_client.h"
#include "support/test_util.h"

#define FAULTS 100

static atomic_uint closing_lines;

static void count_lines(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)ctx;
    (void)level;
    if (strstr(line, "closing the connection") != NULL)
        atomic_fetch_add(&closing_lines, 1);
}

static void test_faults_flood_no_log(void **state)
{
    (void)state;
    arpc_set_logger(count_lines, NULL, ARPC_LOG_WARN);
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    struct raw_client *r = malloc(sizeof(*r));
    assert_non_null(r);
    static const uint8_t garbage[ARPC_FRAME_HEADER_SIZE] = "GET / HTTP/1.1\r";
    uint64_t t0 = arpc_now_ns();
    for (int i = 0; i < FAULTS; i++) {
        assert_true(raw_connect(r, addr, 1000 + (uint64_t)i));
        assert_true(raw_send(r, garbage, sizeof(garbage)));
        struct raw_frame f;
        while (raw_read(r, &f, false)) /* its GOAWAY, then the end: closed (after its line, if any) */
            assert_int_equal(ARPC_FRAME_GOAWAY, f.f.f_kind);
        raw_close(r);
    }
    double elapsed_s = (double)(arpc_now_ns() - t0) / 1e9;
    unsigned lines = atomic_load(&closing_lines);
    /* Each interval of a second starts at its first line: over elapsed_s there are at most
     * elapsed_s + 1 of them. */
    unsigned bound = PEER_LOG_BURST * (unsigned)(elapsed_s + 2);
    print_message("%d faults in %.2f s: %u lines (at most %u)\n", FAULTS, elapsed_s, lines, bound);
    assert_true(lines >= PEER_LOG_BURST); /* the first ones are logged */
    assert_true(lines <= bound);          /* was FAULTS */
    free(r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_faults_flood_no_log),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
