/*
 * The guard on a stranger's plaintext handshake headers (transport/tls_guard.c): a message
 * announcing more than the bound is refused wherever its header falls (split across reads or
 * across records, the first message or a later one: a second ClientHello after a
 * HelloRetryRequest, after TLS 1.3's dummy ChangeCipherSpec); messages within it pass, as do
 * records of other types and everything after TLS 1.2's ChangeCipherSpec (encrypted: not
 * headers at all).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#ifdef ARPC_TEST_WITH_TLS
#include "transport/tls_guard.h"

#define MAX 16384u

static size_t put_record(uint8_t *p, uint8_t type, const uint8_t *body, size_t len)
{
    p[0] = type, p[1] = 3, p[2] = 3, p[3] = (uint8_t)(len >> 8), p[4] = (uint8_t)len;
    memcpy(p + 5, body, len);
    return 5 + len;
}

static size_t put_message(uint8_t *p, uint8_t type, uint32_t announced, size_t body_len)
{
    p[0] = type, p[1] = (uint8_t)(announced >> 16), p[2] = (uint8_t)(announced >> 8), p[3] = (uint8_t)announced;
    memset(p + 4, 0xab, body_len);
    return 4 + body_len;
}

/* Feeds bytes[0..n) in pieces of `step` bytes, the version negotiated TLS 1.2 or not: the
 * guard's verdict. */
static bool feed_in_steps(const uint8_t *bytes, size_t n, size_t step, bool tls12)
{
    struct tls_guard g;
    memset(&g, 0, sizeof(g));
    bool ok = true;
    for (size_t at = 0; at < n && ok; at += step)
        ok = tls_guard_feed(&g, bytes + at, n - at < step ? n - at : step, MAX, tls12);
    return ok;
}

static void expect_at_every_step_of(const uint8_t *bytes, size_t n, bool tls12, bool want)
{
    for (size_t step = 1; step <= 16; step++)
        if (feed_in_steps(bytes, n, step, tls12) != want)
            fail_msg("fed %zu bytes at a time: %s", step, want ? "refused" : "passed");
    assert_int_equal(want, feed_in_steps(bytes, n, n, tls12));
}

/* Either version: nothing in the bytes depends on it. */
static void expect_at_every_step(const uint8_t *bytes, size_t n, bool want)
{
    expect_at_every_step_of(bytes, n, false, want);
    expect_at_every_step_of(bytes, n, true, want);
}

static void test_a_large_announced_hello_is_refused(void **state)
{
    (void)state;
    static uint8_t msg[64], stream[128];
    size_t m = put_message(msg, 1, 131000, 10); /* its header, and the start of its body */
    size_t n = put_record(stream, 22, msg, m);
    expect_at_every_step(stream, n, false);
}

static void test_messages_within_the_bound_pass(void **state)
{
    (void)state;
    static uint8_t msg[MAX + 8], stream[2 * MAX + 64];
    size_t m = put_message(msg, 1, MAX, MAX); /* exactly the bound, whole */
    /* Spanning two records, as a message may. */
    size_t n = put_record(stream, 22, msg, 1000);
    n += put_record(stream + n, 22, msg + 1000, m - 1000);
    expect_at_every_step(stream, n, true);
}

/* A small message, then one announcing 131,000 whose header begins in one record and ends in
 * the next (a second ClientHello after a HelloRetryRequest may come so). */
static void test_a_header_split_across_records_is_read(void **state)
{
    (void)state;
    static uint8_t msgs[512], stream[600];
    size_t m = put_message(msgs, 1, 200, 200);
    m += put_message(msgs + m, 1, 131000, 0);
    size_t n = put_record(stream, 22, msgs, 206); /* the first whole, 2 bytes of the second header */
    n += put_record(stream + n, 22, msgs + 206, m - 206);
    expect_at_every_step(stream, n, false);
}

/* TLS 1.2: after the peer's ChangeCipherSpec its handshake records (its Finished) are
 * encrypted: not headers at all. */
static void test_after_a_tls12_change_cipher_spec_nothing_is_read(void **state)
{
    (void)state;
    static uint8_t msg[64], stream[256];
    const uint8_t ccs = 1;
    size_t m = put_message(msg, 20, 131000, 0); /* would be refused as plaintext */
    size_t n = put_record(stream, 20, &ccs, 1);
    n += put_record(stream + n, 22, msg, m); /* TLS 1.2's encrypted Finished: record type 22 */
    expect_at_every_step_of(stream, n, true, true);
}

/* TLS 1.3 (or a version not yet known): a ChangeCipherSpec is a dummy, and the second
 * ClientHello after a HelloRetryRequest, which OpenSSL's client sends right after one, is
 * plaintext. Before, any ChangeCipherSpec ended the reading, and that second ClientHello
 * could announce 131,000 bytes unread (a review). */
static void test_after_a_tls13_dummy_change_cipher_spec_headers_are_read(void **state)
{
    (void)state;
    static uint8_t msg[64], stream[256];
    const uint8_t ccs = 1;
    size_t m = put_message(msg, 1, 131000, 0);
    size_t n = put_record(stream, 20, &ccs, 1);
    n += put_record(stream + n, 22, msg, m);
    expect_at_every_step_of(stream, n, false, false);
}

static void test_other_records_are_skipped(void **state)
{
    (void)state;
    static uint8_t body[300], stream[1024];
    memset(body, 0xff, sizeof(body)); /* would read as a huge header inside a handshake record */
    size_t n = put_record(stream, 23, body, sizeof(body)); /* application data (TLS 1.3's) */
    n += put_record(stream + n, 21, body, 2);                /* an alert */
    expect_at_every_step(stream, n, true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_large_announced_hello_is_refused),
        cmocka_unit_test(test_messages_within_the_bound_pass),
        cmocka_unit_test(test_a_header_split_across_records_is_read),
        cmocka_unit_test(test_after_a_tls12_change_cipher_spec_nothing_is_read),
        cmocka_unit_test(test_after_a_tls13_dummy_change_cipher_spec_headers_are_read),
        cmocka_unit_test(test_other_records_are_skipped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#else
#include <stdio.h>
int main(void)
{
    printf("tls_guard_test: built without TLS: nothing to test\n");
    return 0;
}
#endif
