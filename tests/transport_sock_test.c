/*
 * The transports' shared helpers (transport/sock.h) on their own: why lines (NULL, cut to
 * fit, errno kept, errno causes named), address naming, and the error lines for causes a
 * test cannot provoke on demand (an unreachable host, a kernel timeout, a full system).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

#include "arpc/error.h"
#include "support/transport_fixture.h"
#include "transport/sock.h"

static void s_why_null_cut_and_errno(void **state)
{
    (void)state;
    errno = EINTR;
    assert_int_equal(ARPC_EADDR, arpc_sock_why(NULL, 99, ARPC_EADDR, "x %d", 1));
    char why[16] = "unchanged";
    assert_int_equal(ARPC_EADDR, arpc_sock_why(why, 0, ARPC_EADDR, "x %d", 1));
    assert_string_equal("unchanged", why);
    assert_int_equal(ARPC_ESYSTEM, arpc_sock_why(why, sizeof(why), ARPC_ESYSTEM, "%s", "a line longer than the buffer"));
    assert_int_equal(sizeof(why) - 1, strlen(why));
    assert_int_equal(ARPC_ESYSTEM, arpc_sock_why_errno(why, sizeof(why), ARPC_ESYSTEM, EMFILE, "%s", "long enough to cut the cause"));
    assert_int_equal(sizeof(why) - 1, strlen(why));
    assert_int_equal(EINTR, errno); /* writing why never hides the caller's errno */
}

static void s_why_errno_causes(void **state)
{
    (void)state;
    char why[ARPC_WHY_MAX];
    arpc_sock_why_errno(why, sizeof(why), ARPC_ESYSTEM, EMFILE, "accept on %s failed", "tcp://0.0.0.0:7");
    assert_string_equal("accept on tcp://0.0.0.0:7 failed: out of file descriptors (EMFILE)", why);
    arpc_sock_why_errno(why, sizeof(why), ARPC_ESYSTEM, EROFS, "x");
    assert_string_equal("x: Read-only file system (EROFS)", why);
    arpc_sock_why_errno(why, sizeof(why), ARPC_ESYSTEM, 4000, "x");
    assert_why(why, "x: ", "errno 4000");
}

static void s_inet_names(void **state)
{
    (void)state;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(5555)};
    inet_pton(AF_INET, "10.1.2.3", &sin.sin_addr);
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(80)};
    inet_pton(AF_INET6, "::1", &sin6.sin6_addr);
    char out[ARPC_ADDR_MAX];
    assert_int_equal(ARPC_OK, arpc_sock_inet_name((struct sockaddr *)&sin, "tcp", out, sizeof(out)));
    assert_string_equal("tcp://10.1.2.3:5555", out);
    assert_int_equal(ARPC_OK, arpc_sock_inet_name((struct sockaddr *)&sin6, NULL, out, sizeof(out)));
    assert_string_equal("[::1]:80", out);
    /* A cut address would be a wrong one. */
    assert_int_equal(ARPC_EADDR, arpc_sock_inet_name((struct sockaddr *)&sin, "tcp", out, 10));
    assert_string_equal("", out);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    assert_int_equal(ARPC_EADDR, arpc_sock_inet_name((struct sockaddr *)&sun, NULL, out, sizeof(out)));
}

static void s_target_names(void **state)
{
    (void)state;
    struct arpc_target t;
    char out[ARPC_WHY_MAX];
    assert_int_equal(ARPC_OK, arpc_transport_resolve("tcp://10.0.0.9:7000", &t, NULL, 0));
    arpc_sock_target_name(&t, 0, out, sizeof(out));
    assert_string_equal("10.0.0.9:7000", out);
    assert_int_equal(ARPC_OK, arpc_transport_resolve("tcp://localhost:7000", &t, NULL, 0));
    arpc_sock_target_name(&t, 0, out, sizeof(out));
    assert_why(out, "localhost:7000 (", ":7000)");
    assert_int_equal(ARPC_OK, arpc_transport_resolve("unix:///run/app/x.sock", &t, NULL, 0));
    arpc_sock_target_name(&t, 0, out, sizeof(out));
    assert_string_equal("unix path /run/app/x.sock", out);
    assert_int_equal(ARPC_OK, arpc_transport_resolve("inproc://foo", &t, NULL, 0));
    arpc_sock_target_name(&t, 0, out, sizeof(out));
    assert_string_equal("inproc://foo", out);
}

/* Each errno a connect can end with, as the line a user reads. */
static void s_connect_causes(void **state)
{
    (void)state;
    struct arpc_target t;
    assert_int_equal(ARPC_OK, arpc_transport_resolve("tcp://10.0.0.9:7000", &t, NULL, 0));
    static const struct {
        int err, code;
        const char *line;
    } cases[] = {
        {ECONNREFUSED, ARPC_ECONNREFUSED, "connection refused by 10.0.0.9:7000"},
        {EHOSTUNREACH, ARPC_ECONNREFUSED, "host unreachable: 10.0.0.9:7000"},
        {ENETUNREACH, ARPC_ECONNREFUSED, "network unreachable: 10.0.0.9:7000"},
        {ETIMEDOUT, ARPC_ETIMEDOUT, "connecting to 10.0.0.9:7000 timed out"},
        {EACCES, ARPC_ESYSTEM, "permission denied for 10.0.0.9:7000"},
        {EMFILE, ARPC_ESYSTEM, "connecting to 10.0.0.9:7000 failed: out of file descriptors (EMFILE)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char why[ARPC_WHY_MAX] = "";
        errno = 0;
        assert_int_equal(cases[i].code, arpc_sock_connect_failed(&t, 0, cases[i].err, why, sizeof(why)));
        assert_string_equal(cases[i].line, why);
        assert_int_equal(cases[i].err, errno);
    }
}

static void s_listen_causes(void **state)
{
    (void)state;
    static const struct {
        int err, code;
        const char *line;
    } cases[] = {
        {EADDRINUSE, ARPC_EADDRINUSE, "address already in use: tcp://127.0.0.1:7000"},
        {EADDRNOTAVAIL, ARPC_EADDR, "not an address of this host: tcp://127.0.0.1:7000"},
        {EACCES, ARPC_ESYSTEM, "permission denied for tcp://127.0.0.1:7000"},
        {ENFILE, ARPC_ESYSTEM,
         "listening on tcp://127.0.0.1:7000 failed: the system is out of file descriptors (ENFILE)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char why[ARPC_WHY_MAX] = "";
        assert_int_equal(cases[i].code, arpc_sock_listen_failed(cases[i].err, "tcp://127.0.0.1:7000", why, sizeof(why)));
        assert_string_equal(cases[i].line, why);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(s_why_null_cut_and_errno),
        cmocka_unit_test(s_why_errno_causes),
        cmocka_unit_test(s_inet_names),
        cmocka_unit_test(s_target_names),
        cmocka_unit_test(s_connect_causes),
        cmocka_unit_test(s_listen_causes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
