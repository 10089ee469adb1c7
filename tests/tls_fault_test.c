/*
 * max_fault_rate on tls:// (core/fault_rate.c, transport/tls_stream.c): a peer that sends
 * what is not TLS is charged; good TLS clients are not; nor is a peer that connects and
 * closes before its first byte (a load balancer's TCP health check, a port probe), as on
 * tcp://, where such a connection is an ordinary end of stream.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/test_util.h"
#include "transport/transport.h"

#ifdef ARPC_TEST_WITH_TLS
#include "support/tls_certs.h"

static arpc_server *tls_server(char *addr)
{
    arpc_server_options so = {.workers = 1, .tls = &tls_group_pair.tp_server, .max_fault_rate = -1}; /* counted only */
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tls://127.0.0.1:0", addr, ARPC_ADDR_MAX));
    return s;
}

#define CLOSED_REACHES(s, n) \
    server_stat_reaches((s), offsetof(arpc_server_stats, connections_closed), (n), TEST_WAIT_MS)

/* A plain TCP connection to the TLS port (addr "tls://..." as "tcp://..."). */
static int plain_connect(const char *addr)
{
    char plain[ARPC_ADDR_MAX];
    snprintf(plain, sizeof(plain), "tcp://%s", addr + strlen("tls://"));
    int fd = -1;
    assert_int_equal(ARPC_OK, arpc_transport_connect(plain, TEST_WAIT_MS, &fd, NULL, 0));
    return fd;
}

static void test_good_clients_not_charged(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = tls_server(addr);
    arpc_client_options co = {.tls = &tls_group_pair.tp_client};
    for (unsigned i = 0; i < 5; i++) {
        arpc_client *c = NULL;
        assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
        void *reply = NULL;
        size_t len = 0;
        assert_int_equal(ARPC_OK, arpc_call(c, "t.echo", "hi", 2, &reply, &len, TEST_WAIT_MS));
        arpc_free(reply);
        arpc_client_close(c);
    }
    assert_true(CLOSED_REACHES(s, 5));
    assert_int_equal(0, SERVER_STAT(s, connections_faulted));
    arpc_server_destroy(s);
}

/* Connects and closes (an end of stream, then a reset) before any byte: not charged. */
static void test_closed_before_a_byte_not_charged(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = tls_server(addr);
    close(plain_connect(addr));
    assert_true(CLOSED_REACHES(s, 1));
    int fd = plain_connect(addr);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    assert_int_equal(0, setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)));
    close(fd);
    assert_true(CLOSED_REACHES(s, 2));
    assert_int_equal(0, SERVER_STAT(s, connections_faulted));
    arpc_server_destroy(s);
}

/* Bytes that are not TLS: a failed handshake, charged once. */
static void test_not_tls_is_charged(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = tls_server(addr);
    int fd = plain_connect(addr);
    static const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal((ssize_t)sizeof(junk), send(fd, junk, sizeof(junk), MSG_NOSIGNAL));
    assert_true(fd_wait_eof(fd, TEST_WAIT_MS));
    close(fd);
    assert_true(CLOSED_REACHES(s, 1));
    assert_int_equal(1, SERVER_STAT(s, connections_faulted));
    arpc_server_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_clients_not_charged),
        cmocka_unit_test(test_closed_before_a_byte_not_charged),
        cmocka_unit_test(test_not_tls_is_charged),
    };
    return cmocka_run_group_tests(tests, tls_group_setup, tls_group_teardown);
}

#else

int main(void)
{
    printf("tls_fault_test: built without TLS (ARPC_WITH_TLS off): nothing to test\n");
    return 0;
}
#endif
