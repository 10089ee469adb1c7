/*
 * The JSON-RPC client connects only where it speaks as asked (include/arpc/jsonrpc.h): a
 * tls:// address is refused with ARPC_EADDR and says why, before any byte leaves, since the
 * client has no TLS and a tls:// socket is tcp's. Checked against a plain listener on the
 * very port (it must see no connection). arpc-call --json is checked in arpc_call_test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "arpc/jsonrpc.h"
#include "support/test_util.h"

/* No connection waits on the listener: nobody connected (a blocking connect that returned
 * has its connection in the backlog by then). */
static void assert_nobody_came(int lfd)
{
    int fd = accept(lfd, NULL, NULL);
    if (fd >= 0)
        close(fd);
    assert_int_equal(-1, fd);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
}

static void test_tls_address_refused(void **state)
{
    (void)state;
    uint16_t port;
    int lfd = fd_listen_loopback(SOCK_NONBLOCK, 8, 0, &port); /* accept says EAGAIN while none came */
    assert_true(lfd >= 0);
    char addr[64], why[ARPC_ERRBUF_SIZE] = "";
    snprintf(addr, sizeof(addr), "tls://127.0.0.1:%u", port);
    arpc_jsonrpc_options o = {.errbuf = why, .errbuf_len = sizeof(why)};
    arpc_jsonrpc_client *c = NULL;
    int rc = arpc_jsonrpc_connect(&c, addr, &o);
    if (c != NULL)
        arpc_jsonrpc_close(c);
    assert_int_equal(ARPC_EADDR, rc);
    assert_null(c);
    assert_non_null(strstr(why, "JSON-RPC over TLS is not supported by the client"));
    assert_nobody_came(lfd);
    /* The schemes it speaks still connect: tcp:// to the same listener. */
    snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%u", port);
    assert_int_equal(ARPC_OK, arpc_jsonrpc_connect(&c, addr, NULL));
    assert_int_equal(ARPC_OK, arpc_jsonrpc_close(c));
    close(lfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls_address_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
