/*
 * A child of a fork has copies of its parent's clients, sockets included, but not their
 * threads. A call the child made on one went out on the parent's connection with the
 * parent's next call number, so the server answered the parent's next call as a copy of the
 * child's: the parent got ARPC_OK with the child's result for a call that never ran (a fork
 * trial); on a client with its own loop thread the child's call also hung past its deadline,
 * and its close said goodbye for the parent. Now the child's calls and close are refused
 * ARPC_EINVAL with an ERROR line, and the parent's connection is untouched: a cancel in the
 * child sends no CANCEL, and a wait in the child does not drive the parent's loop (it read
 * the parent's replies off the shared socket); the JSON-RPC client's close is refused too.
 *
 * The same for the other objects: a child's destroy of its parent's server or actor waited
 * for threads the child does not have (it hung), its reply to a request of the parent's
 * server went out on the parent's connection (the caller got the child's answer), and a
 * child taking from its parent's completion queue cleared the eventfd the parent polls.
 *
 * The child does nothing but refused calls and _exit (no cmocka, a logger that writes
 * nothing; the refused blocking call and close allocate nothing): a lock another thread held
 * at the fork stays held in the child.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <poll.h>
#include <semaphore.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "arpc/arpc.h"
#ifdef ARPC_WITH_JSONRPC
#include "arpc/jsonrpc.h"
#endif
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

/* The child ended, by _exit(0) (its checks held), within the wait; a child that hangs is
 * killed and fails the test. The parent's logger back. */
static void child_passed(pid_t pid)
{
    int status = 0;
    bool ended = WAIT_UNTIL(waitpid(pid, &status, WNOHANG) == pid);
    if (!ended) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    assert_true(ended);
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
    assert_true(WIFEXITED(status));
    assert_int_equal(0, WEXITSTATUS(status));
}

static sem_t held_release;

/* Replies once the test lets it: a call the parent keeps pending across the fork. */
static void held(arpc_request *req, void *ctx)
{
    (void)ctx;
    sem_wait_secs(&held_release, TEST_WAIT_S);
    arpc_reply(req, "held", 4);
}

static void child_refused(arpc_loop *driven)
{
    sem_init(&held_release, 0, 0);
    char addr[256];
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "echo", test_echo, NULL, NULL));
    arpc_actor *holder = NULL; /* of its own: the echo's worker stays free */
    assert_int_equal(ARPC_OK, arpc_actor_create(&holder, NULL));
    arpc_method_options on_holder = {.actor = holder};
    assert_int_equal(ARPC_OK, arpc_server_register(s, "held", held, NULL, &on_holder));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_client *c = NULL;
    arpc_client_options co = {.loop = driven};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    parent_echo(c, "before");
#ifdef ARPC_WITH_JSONRPC
    arpc_jsonrpc_client *j = NULL;
    assert_int_equal(ARPC_OK, arpc_jsonrpc_connect(&j, addr, NULL));
#endif
    arpc_future *pending = arpc_call_async(c, "held", "", 0, TEST_WAIT_MS); /* the parent's */
    assert_non_null(pending);
    /* Answered at once: on a caller-driven client its reply waits in the socket until the
     * parent drives the loop, where a child driving it would take it. */
    arpc_future *mine = arpc_call_async(c, "echo", "mine", 4, TEST_WAIT_MS);
    assert_non_null(mine);
    arpc_set_logger(quiet, NULL, ARPC_LOG_ERROR);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        void *rep = NULL;
        size_t len = 0;
        int call = arpc_call(c, "echo", "child", 5, &rep, &len, 500);
        int notify = arpc_notify(c, "echo", "child", 5);
        bool cancelled = arpc_future_cancel(pending); /* the child's copy of the future only */
        int waited = arpc_future_wait_for(pending, 50);
        int stolen = arpc_future_wait_for(mine, 100); /* must not drive the parent's loop */
        int ran = driven != NULL ? arpc_loop_run_until(driven, mine, 50) : ARPC_EINVAL;
        int closed = arpc_client_close(c);
#ifdef ARPC_WITH_JSONRPC
        int jclosed = arpc_jsonrpc_close(j);
#else
        int jclosed = ARPC_EINVAL;
#endif
        /* The refusal's words come back as the result, as for any argument refused. */
        bool said = rep != NULL && strstr(rep, "another process") != NULL && len == strlen(rep);
        arpc_free(rep);
        _exit(call == ARPC_EINVAL && said && notify == ARPC_EINVAL && cancelled && waited == ARPC_ECANCELLED &&
                      (driven == NULL || stolen == ARPC_EPENDING) && ran == ARPC_EINVAL && closed == ARPC_EINVAL &&
                      jclosed == ARPC_EINVAL
                  ? 0
                  : 1);
    }
    /* (Before, the child's call on a client with its own loop hung: killed after the wait.) */
    child_passed(pid);
    void *rep = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_OK, arpc_future_wait_for(mine, TEST_WAIT_MS)); /* its reply, read here */
    rep = arpc_future_take(mine, &len);
    assert_int_equal(4, len);
    assert_memory_equal("mine", rep, 4);
    arpc_free(rep);
    arpc_future_release(mine);
    sem_post(&held_release);
    /* The parent's call was not cancelled by the child's cancel, nor its reply taken. */
    assert_int_equal(ARPC_OK, arpc_future_wait_for(pending, TEST_WAIT_MS));
    arpc_future_release(pending);
    parent_echo(c, "after"); /* its own answer: nothing of the child's went out */
    parent_echo(c, "again");
#ifdef ARPC_WITH_JSONRPC
    assert_int_equal(ARPC_OK, arpc_jsonrpc_close(j));
#endif
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_actor_destroy(holder);
    sem_destroy(&held_release);
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

static sem_t stashed;
static arpc_request *stash;

/* Keeps its request for a reply later (arpc/server.h): the parent's and, refused, the child's. */
static void keep(arpc_request *req, void *ctx)
{
    (void)ctx;
    stash = req;
    sem_post(&stashed);
}

static void never(arpc_actor *actor, void *arg, int status)
{
    (void)actor;
    (void)arg;
    (void)status;
}

static void test_child_refused_on_a_server_its_actors_and_queues(void **state)
{
    (void)state;
    sem_init(&stashed, 0, 0);
    char addr[256];
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "keep", keep, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    arpc_future *kept = arpc_call_async(c, "keep", "", 0, TEST_WAIT_MS);
    assert_non_null(kept);
    assert_true(sem_wait_secs(&stashed, TEST_WAIT_S));
    arpc_actor *a = NULL;
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, NULL));
    arpc_actor_group *g = NULL;
    assert_int_equal(ARPC_OK, arpc_actor_group_create(&g, 2, NULL));
    /* A queue holding one entry: its eventfd readable, for the parent's poll below. */
    arpc_cq *q = NULL;
    assert_int_equal(ARPC_OK, arpc_cq_create(&q));
    arpc_future *done = NULL;
    assert_int_equal(ARPC_OK, arpc_future_create(&done));
    assert_true(arpc_future_complete(done, ARPC_OK, NULL, 0));
    assert_int_equal(ARPC_OK, arpc_cq_attach(q, done, &done));
    arpc_set_logger(quiet, NULL, ARPC_LOG_ERROR);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        arpc_future *f = NULL;
        void *tag = NULL;
        int took = arpc_cq_trynext(q, &f, &tag);
        int replied = arpc_reply(stash, "child", 5);
        int registered = arpc_server_register(s, "more", keep, NULL, NULL);
        int posted = arpc_actor_post(a, never, NULL);
        int group_posted = arpc_actor_group_post(g, never, NULL);
        int stopped = arpc_server_stop(s, 0);
        int destroyed = arpc_server_destroy(s); /* each of these hung */
        arpc_actor_destroy(a);
        arpc_actor_group_destroy(g);
        arpc_cq_destroy(q);
        _exit(took == ARPC_EINVAL && f == NULL && replied == ARPC_EINVAL && registered == ARPC_EINVAL &&
                      posted == ARPC_EINVAL && group_posted == ARPC_EINVAL && stopped == ARPC_EINVAL &&
                      destroyed == ARPC_EINVAL
                  ? 0
                  : 1);
    }
    child_passed(pid);
    /* The queue's signal is still the parent's, and so is its entry. */
    struct pollfd pfd = {.fd = arpc_cq_fd(q), .events = POLLIN};
    assert_int_equal(1, poll(&pfd, 1, 0));
    arpc_future *f = NULL;
    void *tag = NULL;
    assert_int_equal(ARPC_OK, arpc_cq_trynext(q, &f, &tag));
    assert_ptr_equal(done, f);
    arpc_future_release(f);    /* the queue's reference */
    arpc_future_release(done); /* the creator's */
    /* The caller gets the parent's answer: nothing of the child's went out. */
    assert_int_equal(ARPC_OK, arpc_reply(stash, "parent", 6));
    assert_int_equal(ARPC_OK, arpc_future_wait_for(kept, TEST_WAIT_MS));
    size_t len = 0;
    const void *rep = arpc_future_data(kept, &len);
    assert_int_equal(6, len);
    assert_memory_equal("parent", rep, 6);
    arpc_future_release(kept);
    assert_int_equal(ARPC_OK, arpc_actor_post(a, never, NULL)); /* the parent's still work */
    assert_int_equal(ARPC_OK, arpc_actor_group_post(g, never, NULL));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_actor_destroy(a);
    arpc_actor_group_destroy(g);
    arpc_cq_destroy(q);
    sem_destroy(&stashed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_child_refused_on_a_client_with_its_own_loop),
        cmocka_unit_test(test_child_refused_on_a_caller_driven_client),
        cmocka_unit_test(test_child_refused_on_a_server_its_actors_and_queues),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
