/*
 * A child of a fork has copies of its parent's clients, sockets included, but not their
 * threads. A call the child made on one went out on the parent's connection with the
 * parent's next call number, so the server answered the parent's next call as a copy of the
 * child's: the parent got ARPC_OK with the child's result for a call that never ran (a fork
 * trial); on a client with its own loop thread the child's call also hung past its deadline,
 * and its close said goodbye for the parent. Now the child's calls and close are refused
 * ARPC_EINVAL with an ERROR line, and the parent's connection is untouched.
 *
 * The child does nothing but the refused calls and _exit (no cmocka; the refused paths
 * allocate nothing): a lock another thread held at the fork stays held in the child.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/test_util.h"

static void quiet(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)ctx;
    (void)level;
    (void)line; /* the child's ERROR lines are expected; stdio's lock may be held at a fork */
}

/* The parent's call: its own payload back, or the test fails. */
static void parent_echo(arpc_client *c, const char *word)
{
    void *rep = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_OK, arpc_call(c, "echo", word, strlen(word), &rep, &len, TEST_WAIT_MS));
    assert_int_equal(strlen(word), len);
    assert_memory_equal(word, rep, len);
    arpc_free(rep);
}

static void child_refused(arpc_loop *driven)
{
    char addr[256];
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_client *c = NULL;
    arpc_client_options co = {.loop = driven};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    parent_echo(c, "before");
    arpc_set_logger(quiet, NULL, ARPC_LOG_ERROR);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        void *rep = NULL;
        size_t len = 0;
        int call = arpc_call(c, "echo", "child", 5, &rep, &len, 500);
        int notify = arpc_notify(c, "echo", "child", 5);
        int closed = arpc_client_close(c);
        _exit(call == ARPC_EINVAL && rep == NULL && notify == ARPC_EINVAL && closed == ARPC_EINVAL ? 0 : 1);
    }
    int status = 0;
    /* (Before, the child's call on a client with its own loop hung: killed after the wait.) */
    bool ended = WAIT_UNTIL(waitpid(pid, &status, WNOHANG) == pid);
    if (!ended) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    assert_true(ended);
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
    assert_true(WIFEXITED(status));
    assert_int_equal(0, WEXITSTATUS(status));
    parent_echo(c, "after"); /* its own answer: nothing of the child's went out */
    parent_echo(c, "again");
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

static void test_child_refused_on_a_client_with_its_own_loop(void **state)
{
    (void)state;
    child_refused(NULL);
}

static void test_child_refused_on_a_caller_driven_client(void **state)
{
    (void)state;
    arpc_loop *l = NULL;
    assert_int_equal(ARPC_OK, arpc_loop_create(&l, NULL));
    child_refused(l);
    arpc_loop_destroy(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_child_refused_on_a_client_with_its_own_loop),
        cmocka_unit_test(test_child_refused_on_a_caller_driven_client),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
