/*
 * What only the inproc transport has: name limits, its error lines, and out-of-memory paths
 * (its queue grows with waiting connections). The behaviour every transport shares is in
 * transport_test.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "support/test_util.h"
#include "support/transport_fixture.h"

static void s_inproc_names(void **state)
{
    (void)state;
    struct arpc_listener *l = NULL;
    struct arpc_target t;
    char why[ARPC_WHY_MAX] = "";
    assert_int_equal(ARPC_EADDR, arpc_transport_inproc.t_listen("", &l, why, sizeof(why)));
    assert_why(why, "empty inproc name");
    assert_int_equal(ARPC_EADDR, arpc_transport_inproc.t_resolve("", &t, why, sizeof(why)));
    assert_why(why, "empty inproc name");
    /* The longest name whose "inproc://NAME" fits ARPC_ADDR_MAX with its NUL. */
    char name[ARPC_ADDR_MAX];
    size_t max = ARPC_ADDR_MAX - 1 - strlen("inproc://");
    memset(name, 'n', max);
    name[max] = '\0';
    assert_int_equal(ARPC_OK, arpc_transport_inproc.t_listen(name, &l, why, sizeof(why)));
    assert_int_equal(ARPC_ADDR_MAX - 1, strlen(l->l_addr));
    lsn_close(l);
    name[max] = 'n';
    name[max + 1] = '\0';
    l = NULL;
    assert_int_equal(ARPC_EADDR, arpc_transport_inproc.t_listen(name, &l, why, sizeof(why)));
    assert_why(why, "too long");
    assert_int_equal(ARPC_EADDR, arpc_transport_inproc.t_resolve(name, &t, why, sizeof(why)));
    assert_why(why, "too long");
    assert_null(l);
}

/* Refused at once, and not as "try again soon": a blocking connect must not wait for it. */
static void s_inproc_no_listener(void **state)
{
    (void)state;
    struct arpc_target t;
    assert_int_equal(ARPC_OK, arpc_transport_resolve("inproc://foo", &t, NULL, 0));
    int fd = -1;
    char why[ARPC_WHY_MAX] = "";
    errno = EAGAIN;
    assert_int_equal(ARPC_ECONNREFUSED, t.t_ops->t_connect_start(&t, 0, &fd, why, sizeof(why)));
    assert_true(errno != EAGAIN);
    assert_string_equal("no listener named inproc://foo", why);
    assert_int_equal(-1, fd);
}

/* Out of memory reaches the caller as ARPC_ENOMEM with nothing left behind. */
static void s_inproc_out_of_memory(void **state)
{
    (void)state;
    test_alloc_install();
    struct arpc_listener *l = NULL;
    char why[ARPC_WHY_MAX] = "";
    atomic_store(&test_alloc_budget, 0); /* every allocation fails */
    assert_int_equal(ARPC_ENOMEM, arpc_transport_inproc.t_listen("oom", &l, why, sizeof(why)));
    assert_why(why, "out of memory", "oom");
    atomic_store(&test_alloc_budget, -1);
    assert_int_equal(ARPC_OK, arpc_transport_inproc.t_listen("oom", &l, why, sizeof(why)));
    int c = -1;
    atomic_store(&test_alloc_budget, 0); /* the first queued connection needs the queue */
    int rv = arpc_transport_connect("inproc://oom", 0, &c, why, sizeof(why));
    atomic_store(&test_alloc_budget, -1);
    assert_int_equal(ARPC_ENOMEM, rv);
    assert_why(why, "out of memory", "inproc://oom");
    assert_int_equal(-1, c);
    assert_int_equal(0, wait_fd(l->l_fd, POLLIN, 0)); /* nothing was queued */
    lsn_close(l);
    assert_int_equal(0, atomic_load(&test_alloc_live));
    arpc_alloc_replace(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FD_TEST(s_inproc_names),
        FD_TEST(s_inproc_no_listener),
        FD_TEST(s_inproc_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
