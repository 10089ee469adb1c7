/*
 * A unix listener whose backlog is full (its server busy, or its listener paused while a
 * stranger floods it) turns a non-blocking connect away at once (EAGAIN), with nothing to
 * poll for. arpc_client_connect tries the address again after short pauses, within its
 * connect timeout, and gets in once there is room, as a TCP connect waits in a full backlog.
 * Before, it failed at once with ARPC_ECONNREFUSED ("backlog ... is full"): an attacker's trial
 * made 89 of 93 good clients' connects fail that way.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/log_capture.h"
#include "support/raw_server.h"
#include "support/test_util.h"
#include "support/transport_fixture.h"

#define FILL_MAX 64

struct connecting {
    char addr[ARPC_ADDR_MAX];
    arpc_client *client;
    int rc;
};

static void *connect_thread(void *arg)
{
    struct connecting *k = arg;
    arpc_client_options o = {.connect_timeout_ms = TEST_WAIT_MS};
    k->rc = arpc_client_connect(&k->client, k->addr, &o);
    return NULL;
}

static int unix_socket_at(const char *path, struct sockaddr_un *sun)
{
    *sun = (struct sockaddr_un){.sun_family = AF_UNIX};
    assert_true(strlen(path) < sizeof(sun->sun_path));
    memcpy(sun->sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    assert_true(fd >= 0);
    return fd;
}

/* Connects to path until the backlog turns one away; returns how many got in (fds). */
static int fill_backlog(const char *path, int *fds)
{
    for (int n = 0; n < FILL_MAX; n++) {
        struct sockaddr_un sun;
        fds[n] = unix_socket_at(path, &sun);
        if (connect(fds[n], (struct sockaddr *)&sun, sizeof(sun)) != 0) {
            assert_int_equal(EAGAIN, errno);
            close(fds[n]);
            return n;
        }
    }
    fail_msg("the backlog never filled after %d connects", FILL_MAX);
    return FILL_MAX;
}

/* A unix listener nobody accepts from, its backlog (0) full. */
struct full_backlog {
    char addr[ARPC_ADDR_MAX];
    const char *path;
    int lfd;
    int fds[FILL_MAX]; /* the connections that filled it */
    int n;
};

static void full_backlog_open(struct full_backlog *b)
{
    make_unix_addr(b->addr, sizeof(b->addr));
    b->path = b->addr + strlen("unix://");
    struct sockaddr_un sun;
    b->lfd = unix_socket_at(b->path, &sun);
    assert_int_equal(0, bind(b->lfd, (struct sockaddr *)&sun, sizeof(sun)));
    assert_int_equal(0, listen(b->lfd, 0));
    b->n = fill_backlog(b->path, b->fds);
}

static void full_backlog_close(struct full_backlog *b)
{
    for (int i = 0; i < b->n; i++)
        close(b->fds[i]);
    close(b->lfd);
    unlink(b->path);
}

/* Connects to b's address with o: the outcome, and its words contain why. */
static void connect_times_out(struct full_backlog *b, arpc_client_options *o, const char *why)
{
    char err[ARPC_ERRBUF_SIZE] = "";
    o->errbuf = err;
    o->errbuf_len = sizeof(err);
    arpc_client *c = NULL;
    assert_int_equal(ARPC_ETIMEDOUT, arpc_client_connect(&c, b->addr, o));
    assert_null(c);
    if (strstr(err, why) == NULL)
        fail_msg("\"%s\" does not say \"%s\"", err, why);
}

static bool log_says(const char *a, const char *b)
{
    const char *words[] = {a, b, NULL};
    return log_capture_with(words) > 0;
}

static void test_connect_waits_for_room_in_the_backlog(void **state)
{
    (void)state;
    struct full_backlog b;
    full_backlog_open(&b);
    struct connecting k = {.rc = -1};
    memcpy(k.addr, b.addr, sizeof(k.addr));
    log_capture_clear();
    pthread_t tid;
    assert_int_equal(0, pthread_create(&tid, NULL, connect_thread, &k));
    /* The client was turned away (and waits to try again) before any room is made. */
    assert_true(WAIT_UNTIL(log_says("is full", "trying again within the connect timeout")));
    struct raw_server rs = {.rs_listen = b.lfd};
    int fl = fcntl(rs.rs_listen, F_GETFL);
    assert_int_equal(0, fcntl(rs.rs_listen, F_SETFL, fl & ~O_NONBLOCK)); /* the accepts block */
    for (int i = 0; i < b.n; i++)
        close(b.fds[i]); /* still queued, read as closed: no HELLO */
    b.n = 0;
    /* Room is made by each accept: the client's next try may come in behind the fillers or
     * between them. Its connection is the one that says HELLO (answered). */
    struct raw_client r;
    bool hello = false;
    for (int i = 0; i <= FILL_MAX && !hello; i++)
        if (!(hello = raw_server_accept_dedup(&rs, &r)))
            raw_close(&r);
    assert_true(hello);
    assert_int_equal(0, pthread_join(tid, NULL));
    assert_int_equal(ARPC_OK, k.rc);
    assert_int_equal(ARPC_OK, arpc_client_close(k.client));
    raw_close(&r);
    full_backlog_close(&b);
}

/* Within its time limit only: a backlog that stays full ends the connect ARPC_ETIMEDOUT,
 * saying why. */
static void test_backlog_that_stays_full_times_out(void **state)
{
    (void)state;
    struct full_backlog b;
    full_backlog_open(&b);
    arpc_client_options o = {.connect_timeout_ms = 100};
    connect_times_out(&b, &o, "timed out after 100 ms (the unix listener's backlog stayed full)");
    full_backlog_close(&b);
}

/* Without a connect timeout (ARPC_FOREVER) the heartbeat's bound, heartbeat_ms x (misses +
 * 1), ends the wait, as it ends one for a HELLO that never comes. Before this bound, such a
 * connect waited for ever on a backlog that stayed full (a review found it). */
static void test_backlog_without_a_connect_timeout_ends(void **state)
{
    (void)state;
    struct full_backlog b;
    full_backlog_open(&b);
    arpc_client_options o = {.connect_timeout_ms = ARPC_FOREVER, .heartbeat_ms = 50, .heartbeat_misses = 1};
    connect_times_out(&b, &o, "timed out after 100 ms (the unix listener's backlog stayed full)");
    full_backlog_close(&b);
}

int main(void)
{
    log_capture_start(ARPC_LOG_INFO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_waits_for_room_in_the_backlog),
        cmocka_unit_test(test_backlog_that_stays_full_times_out),
        cmocka_unit_test(test_backlog_without_a_connect_timeout_ends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
