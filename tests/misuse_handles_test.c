/*
 * Handles misused by the application (run it under ASan): NULL for every handle of every
 * public entry point is ARPC_EINVAL (or 0 / NULL / nothing where the function returns no
 * error); a handle used after its close, destroy or last release, closed twice, or of another
 * kind, is reported ("<function> on <address>: not a live <kind>") and aborts in a debug
 * build: each such case runs in a child that must die by SIGABRT with that line, having
 * tripped no sanitizer. With NDEBUG the cases whose memory is still alive must return
 * ARPC_EINVAL instead; those reading freed memory are skipped (there, it is undefined).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>

#include "arpc/arpc.h"
#include "arpc/log.h"
#include "support/death.h"
#include "support/test_util.h"

/* Whether arpc was built to abort on misuse (the tests and arpc share the build type). */
#ifdef NDEBUG
static const bool aborts_on_misuse = false;
#else
static const bool aborts_on_misuse = true;
#endif

/* Keeps its request unanswered (the call stays pending) until the test replies to g_held. */
static arpc_request *g_held; /* written before latch_add, read after latch_wait */

static void hold(arpc_request *req, void *ctx)
{
    (void)ctx;
    g_held = req;
    latch_add();
}

/* ---- NULL handles ---- */

static void test_null_client(void **state)
{
    (void)state;
    assert_int_equal(ARPC_EINVAL, arpc_client_connect(NULL, "tcp://127.0.0.1:1", NULL));
    arpc_client *out = (arpc_client *)&out; /* not NULL: a failed connect must clear it */
    assert_int_equal(ARPC_EINVAL, arpc_client_connect(&out, NULL, NULL));
    assert_null(out);
    assert_int_equal(ARPC_EINVAL, arpc_client_close(NULL));
    assert_int_equal(ARPC_EINVAL, arpc_call(NULL, "m", "x", 1, NULL, NULL, 1000));
    /* An ARPC_EINVAL result carries which argument and why (client.h, arpc_call). */
    void *why = NULL;
    size_t why_len = 0;
    assert_int_equal(ARPC_EINVAL, arpc_call(NULL, "m", "x", 1, &why, &why_len, 1000));
    assert_non_null(why);
    assert_non_null(strstr(why, "the client is NULL"));
    assert_int_equal(strlen(why), why_len);
    arpc_free(why);
    assert_int_equal(ARPC_EINVAL, arpc_notify(NULL, "m", "x", 1));
    assert_int_equal(ARPC_EINVAL, arpc_client_last_error(NULL, NULL, 0));
    assert_int_equal(0, arpc_client_pending(NULL));
    assert_int_equal(0, arpc_client_id(NULL));
    assert_int_equal(0, arpc_client_connections(NULL));
    arpc_future *f = arpc_call_async(NULL, "m", "x", 1, 1000); /* every outcome through the future */
    assert_non_null(f);
    assert_int_equal(ARPC_EINVAL, arpc_future_wait(f));
    assert_non_null(strstr(arpc_future_data(f, NULL), "the client is NULL"));
    arpc_future_release(f);
    arpc_cq *cq;
    assert_int_equal(ARPC_OK, arpc_cq_create(&cq));
    assert_int_equal(ARPC_OK, arpc_go(NULL, "m", "x", 1, 1000, cq, NULL));
    arpc_future *done = NULL;
    assert_int_equal(ARPC_OK, arpc_cq_next_for(cq, 10000, &done, NULL));
    assert_int_equal(ARPC_EINVAL, arpc_future_poll(done));
    arpc_future_release(done);
    arpc_cq_destroy(cq);
}

static void test_null_future_and_cq(void **state)
{
    (void)state;
    assert_int_equal(ARPC_EINVAL, arpc_future_create(NULL));
    assert_int_equal(ARPC_EINVAL, arpc_future_poll(NULL));
    assert_int_equal(ARPC_EINVAL, arpc_future_wait(NULL));
    assert_int_equal(ARPC_EINVAL, arpc_future_wait_for(NULL, 0));
    size_t len = 7;
    assert_null(arpc_future_data(NULL, &len));
    assert_int_equal(0, len);
    assert_null(arpc_future_take(NULL, NULL));
    assert_int_equal(ARPC_EINVAL, arpc_future_then(NULL, NULL, NULL));
    assert_false(arpc_future_cancel(NULL));
    assert_false(arpc_future_complete(NULL, ARPC_OK, NULL, 0));
    arpc_future_on_cancel(NULL, NULL, NULL);
    arpc_future_retain(NULL);
    arpc_future_release(NULL);
    arpc_future *none[1] = {NULL};
    size_t index;
    assert_int_equal(ARPC_EINVAL, arpc_future_wait_all(none, 1, 0));
    assert_int_equal(ARPC_EINVAL, arpc_future_wait_any(none, 1, 0, &index));

    assert_int_equal(ARPC_EINVAL, arpc_cq_create(NULL));
    arpc_cq_destroy(NULL);
    arpc_future *f = NULL;
    assert_int_equal(ARPC_EINVAL, arpc_cq_trynext(NULL, &f, NULL));
    assert_int_equal(ARPC_EINVAL, arpc_cq_next_for(NULL, 0, &f, NULL));
    assert_int_equal(-1, arpc_cq_fd(NULL)); /* not ARPC_EINVAL (2): that is stderr */
    assert_int_equal(0, arpc_cq_size(NULL));
    arpc_cq *cq;
    assert_int_equal(ARPC_OK, arpc_cq_create(&cq));
    assert_int_equal(ARPC_EINVAL, arpc_cq_attach(cq, NULL, NULL));
    assert_int_equal(ARPC_EINVAL, arpc_cq_trynext(cq, NULL, NULL));
    arpc_cq_destroy(cq);
}

static void test_null_server(void **state)
{
    (void)state;
    assert_int_equal(ARPC_EINVAL, arpc_server_create(NULL, NULL));
    assert_int_equal(ARPC_EINVAL, arpc_server_register(NULL, "m", test_echo, NULL, NULL));
    assert_int_equal(ARPC_EINVAL, arpc_server_listen(NULL, "tcp://127.0.0.1:0", NULL, 0));
    assert_int_equal(ARPC_EINVAL, arpc_server_stop(NULL, 0));
    assert_int_equal(ARPC_EINVAL, arpc_server_destroy(NULL));
    assert_int_equal(ARPC_EINVAL, arpc_server_checkpoint(NULL, "x", 1));
}

static void nothing(arpc_actor *a, void *arg, int status)
{
    (void)a;
    (void)arg;
    (void)status;
}

static void test_null_actor(void **state)
{
    (void)state;
    assert_int_equal(ARPC_EINVAL, arpc_actor_create(NULL, NULL));
    assert_int_equal(ARPC_EINVAL, arpc_actor_post(NULL, nothing, NULL));
    assert_int_equal(ARPC_EINVAL, arpc_actor_stop(NULL, ARPC_ACTOR_DRAIN));
    assert_int_equal(0, arpc_actor_processed(NULL));
    assert_false(arpc_actor_on_thread(NULL));
    arpc_actor_destroy(NULL);
}

static void nothing_task(arpc_loop *loop, void *arg)
{
    (void)loop;
    (void)arg;
}

static void test_null_loop_and_group(void **state)
{
    (void)state;
    assert_int_equal(ARPC_EINVAL, arpc_loop_create(NULL, NULL));
    assert_int_equal(-1, arpc_loop_fd(NULL));
    int timeout = 7;
    assert_int_equal(ARPC_EINVAL, arpc_loop_run_nowait(NULL, &timeout));
    assert_int_equal(ARPC_EINVAL, arpc_loop_start(NULL));
    assert_int_equal(ARPC_EINVAL, arpc_loop_run(NULL));
    arpc_future *f;
    assert_int_equal(ARPC_OK, arpc_future_create(&f));
    assert_int_equal(ARPC_EINVAL, arpc_loop_run_until(NULL, f, 0));
    arpc_future_release(f);
    assert_int_equal(ARPC_EINVAL, arpc_loop_submit(NULL, nothing_task, NULL));
    assert_false(arpc_loop_on_thread(NULL));
    arpc_loop_stop(NULL);
    arpc_loop_destroy(NULL);

    assert_int_equal(ARPC_EINVAL, arpc_actor_group_create(NULL, 1, NULL));
    assert_int_equal(ARPC_EINVAL, arpc_actor_group_post(NULL, nothing, NULL));
    assert_int_equal(ARPC_EINVAL, arpc_actor_group_post_key(NULL, 1, nothing, NULL));
    assert_int_equal(0, arpc_actor_group_size(NULL));
    assert_null(arpc_actor_group_member(NULL, 0));
    assert_int_equal(ARPC_EINVAL, arpc_actor_group_stop(NULL, ARPC_ACTOR_DRAIN));
    arpc_actor_group_destroy(NULL);
}

/* ---- use after close, double close, wrong kind: in a child ---- */

/* A server with "echo" and "hold" and a client connected to it (in the child, or in-process). */
static arpc_client *child_pair(arpc_server **s)
{
    char addr[256];
    if (arpc_server_create(s, NULL) != ARPC_OK || arpc_server_register(*s, "echo", test_echo, NULL, NULL) != ARPC_OK ||
        arpc_server_register(*s, "hold", hold, NULL, NULL) != ARPC_OK ||
        arpc_server_listen(*s, "tcp://127.0.0.1:0", addr, sizeof(addr)) != ARPC_OK)
        return NULL;
    arpc_client *c = NULL;
    return arpc_client_connect(&c, addr, NULL) == ARPC_OK ? c : NULL;
}

static void client_closed_twice(void *arg)
{
    (void)arg;
    arpc_server *s;
    arpc_client *c = child_pair(&s);
    if (c == NULL || arpc_call(c, "echo", "x", 1, NULL, NULL, 10000) != ARPC_OK ||
        arpc_client_close(c) != ARPC_OK)
        return; /* not the misuse under test: the child exits 0 and the test fails */
    arpc_client_close(c);
}

static void client_called_after_close(void *arg)
{
    (void)arg;
    arpc_server *s;
    arpc_client *c = child_pair(&s);
    if (c == NULL || arpc_client_close(c) != ARPC_OK)
        return;
    arpc_call(c, "echo", "x", 1, NULL, NULL, 10000);
}

static void client_went_after_close(void *arg)
{
    (void)arg;
    arpc_server *s;
    arpc_cq *cq;
    arpc_client *c = child_pair(&s);
    if (c == NULL || arpc_cq_create(&cq) != ARPC_OK || arpc_client_close(c) != ARPC_OK)
        return;
    arpc_go(c, "echo", "x", 1, 10000, cq, NULL);
}

static void server_destroyed_twice(void *arg)
{
    (void)arg;
    arpc_server *s;
    if (arpc_server_create(&s, NULL) != ARPC_OK || arpc_server_destroy(s) != ARPC_OK)
        return;
    arpc_server_destroy(s);
}

static void future_released_twice(void *arg)
{
    (void)arg;
    arpc_future *f;
    if (arpc_future_create(&f) != ARPC_OK || !arpc_future_complete(f, ARPC_OK, NULL, 0))
        return;
    arpc_future_release(f);
    arpc_future_release(f);
}

/* The pending case: the last release cancels first, then frees. */
static void pending_future_polled_after_release(void *arg)
{
    (void)arg;
    arpc_future *f;
    if (arpc_future_create(&f) != ARPC_OK)
        return;
    arpc_future_release(f);
    arpc_future_poll(f);
}

/* A call the server's handler holds: pending until g_held is answered (NULL on failure). */
static arpc_future *held_call(arpc_client *c)
{
    latch_reset();
    arpc_future *f = arpc_call_async(c, "hold", "x", 1, 0);
    if (f != NULL && latch_wait(1, TEST_WAIT_MS) && arpc_future_poll(f) == ARPC_EPENDING)
        return f;
    return NULL;
}

/* The call holds its future until it completes: a second release must be caught, not drop
 * the call's reference (which left the call a dead future to complete). */
static void pending_call_released_twice(void *arg)
{
    (void)arg;
    arpc_server *s;
    arpc_client *c = child_pair(&s);
    arpc_future *f = c != NULL ? held_call(c) : NULL;
    if (f == NULL)
        return;
    arpc_future_release(f);
    arpc_future_release(f);
}

/* A queue keeps its entry's reference: a second release must not drop it (the queue would
 * later hand out, or free, a dead future). */
static void queued_future_released_twice(void *arg)
{
    (void)arg;
    arpc_cq *cq;
    arpc_future *f;
    if (arpc_cq_create(&cq) != ARPC_OK || arpc_future_create(&f) != ARPC_OK || arpc_cq_attach(cq, f, NULL) != ARPC_OK)
        return;
    arpc_future_release(f);
    arpc_future_release(f);
}

static void queued_call_released_twice(void *arg)
{
    (void)arg;
    arpc_server *s;
    arpc_cq *cq;
    arpc_client *c = child_pair(&s);
    arpc_future *f = c != NULL ? held_call(c) : NULL;
    if (f == NULL || arpc_cq_create(&cq) != ARPC_OK || arpc_cq_attach(cq, f, NULL) != ARPC_OK)
        return;
    arpc_future_release(f);
    arpc_future_release(f);
}

static void actor_destroyed_twice(void *arg)
{
    (void)arg;
    arpc_actor *a;
    if (arpc_actor_create(&a, NULL) != ARPC_OK)
        return;
    arpc_actor_destroy(a);
    arpc_actor_destroy(a);
}

/* A stop with ARPC_ACTOR_DISCARD: the first job holds the actor until the stop has begun (its
 * own posts are refused then), and the second's ARPC_ECANCELLED callback destroys the actor,
 * or its group, from inside the stop (freed under the loop calling the callbacks, before). */
static arpc_actor_group *stopping_group;

static void hold_until_stopping(arpc_actor *a, void *arg, int status)
{
    (void)arg;
    while (status == ARPC_OK && arpc_actor_post(a, nothing, NULL) != ARPC_ESHUTDOWN)
        sched_yield();
}

static void destroy_when_cancelled(arpc_actor *a, void *arg, int status)
{
    (void)arg;
    if (status != ARPC_ECANCELLED)
        return;
    if (stopping_group != NULL)
        arpc_actor_group_destroy(stopping_group);
    else
        arpc_actor_destroy(a);
}

static void actor_destroyed_by_its_stop(void *arg)
{
    bool group = arg != NULL;
    arpc_actor *a = NULL;
    stopping_group = NULL;
    if (group ? arpc_actor_group_create(&stopping_group, 1, NULL) != ARPC_OK : arpc_actor_create(&a, NULL) != ARPC_OK)
        return;
    if (group)
        a = arpc_actor_group_member(stopping_group, 0);
    if (arpc_actor_post(a, hold_until_stopping, NULL) != ARPC_OK ||
        arpc_actor_post(a, destroy_when_cancelled, NULL) != ARPC_OK)
        return;
    if (group)
        arpc_actor_group_stop(stopping_group, ARPC_ACTOR_DISCARD);
    else
        arpc_actor_stop(a, ARPC_ACTOR_DISCARD);
}

/* The last reference released with the future pending: its cancel's hook releases it again. */
static void over_release_in_hook(arpc_future *f, void *arg)
{
    (void)arg;
    arpc_future_release(f);
}

static void future_released_by_its_hook_after_the_last(void *arg)
{
    (void)arg;
    arpc_future *f;
    if (arpc_future_create(&f) != ARPC_OK)
        return;
    arpc_future_on_cancel(f, over_release_in_hook, NULL);
    arpc_future_release(f);
}

static void actor_posted_after_destroy(void *arg)
{
    (void)arg;
    arpc_actor *a;
    if (arpc_actor_create(&a, NULL) != ARPC_OK)
        return;
    arpc_actor_destroy(a);
    arpc_actor_post(a, nothing, NULL);
}

static void loop_destroyed_twice(void *arg)
{
    (void)arg;
    arpc_loop *loop;
    if (arpc_loop_create(&loop, NULL) != ARPC_OK || arpc_loop_start(loop) != ARPC_OK)
        return;
    arpc_loop_destroy(loop);
    arpc_loop_destroy(loop);
}

static void loop_submitted_after_destroy(void *arg)
{
    (void)arg;
    arpc_loop *loop;
    if (arpc_loop_create(&loop, NULL) != ARPC_OK)
        return;
    arpc_loop_destroy(loop);
    arpc_loop_submit(loop, nothing_task, NULL);
}

/* A task of the loop's final drain destroys it again: the first destroy is still under way,
 * so the loop's memory is alive and the second must be caught, not free it twice. */
static void destroy_again(arpc_loop *loop, void *arg)
{
    (void)arg;
    arpc_loop_destroy(loop);
}

static void loop_destroyed_again_while_draining(void *arg)
{
    (void)arg;
    arpc_loop *loop;
    if (arpc_loop_create(&loop, NULL) != ARPC_OK || arpc_loop_submit(loop, destroy_again, NULL) != ARPC_OK)
        return;
    arpc_loop_destroy(loop); /* never ran: the drain runs here, and so does the task */
}

static void group_destroyed_twice(void *arg)
{
    (void)arg;
    arpc_actor_group *g;
    if (arpc_actor_group_create(&g, 2, NULL) != ARPC_OK)
        return;
    arpc_actor_group_destroy(g);
    arpc_actor_group_destroy(g);
}

static void group_posted_after_destroy(void *arg)
{
    (void)arg;
    arpc_actor_group *g;
    if (arpc_actor_group_create(&g, 2, NULL) != ARPC_OK)
        return;
    arpc_actor_group_destroy(g);
    arpc_actor_group_post_key(g, 7, nothing, NULL);
}

static void cq_destroyed_twice(void *arg)
{
    (void)arg;
    arpc_cq *cq;
    if (arpc_cq_create(&cq) != ARPC_OK)
        return;
    arpc_cq_destroy(cq);
    arpc_cq_destroy(cq);
}

/* A request answered (an asynchronous handler's reply, from another thread), then replied to
 * again once the server let go of its handle, before a new request took it: reported, not
 * acted on. It hung in arpc_reply, or answered a call the handle no longer held. */
static void request_replied_after_it_was_let_go(void *arg)
{
    (void)arg;
    arpc_server *s;
    arpc_client *c = child_pair(&s);
    arpc_future *f = c != NULL ? held_call(c) : NULL;
    if (f == NULL || arpc_reply(g_held, "1", 1) != ARPC_OK || arpc_future_wait(f) != ARPC_OK)
        return;
    /* Freed: the gauge falls after the handle went back to the server's pool (core/request.c). */
    if (!WAIT_UNTIL(SERVER_STAT(s, handlers_in_flight) == 0))
        return;
    arpc_reply(g_held, "2", 1);
}

static void test_request_used_after_it_was_let_go(void **state)
{
    (void)state;
    if (!aborts_on_misuse)
        skip(); /* with NDEBUG it returns ARPC_EINVAL: nothing to see from the outside */
#if defined(__SANITIZE_THREAD__)
    skip(); /* the check reads the handle the pool relinked (as test_use_after_close_aborts) */
#endif
    assert_true(dies_with_abort(request_replied_after_it_was_let_go, NULL, "arpc_reply on 0x"));
}

static void test_use_after_close_aborts(void **state)
{
    (void)state;
    if (!aborts_on_misuse)
        skip(); /* the handles below are freed: only a debug build's abort makes this defined */
#if defined(__SANITIZE_THREAD__)
    /* The check reads the freed block's first word (what a debug build catches while the
     * block is not reused); ThreadSanitizer reports that read as heap-use-after-free now and
     * then (once in ~150 runs). The ASan build runs this case, asking ASan instead of reading. */
    skip();
#endif
    assert_true(dies_with_abort(client_closed_twice, NULL, "arpc_client_close on 0x"));
    /* Named as the application called it (arpc_call was reported as arpc_call_opts, arpc_go as
     * arpc_go_opts: the functions they went through). */
    assert_true(dies_with_abort(client_called_after_close, NULL, "arpc_call on 0x"));
    assert_true(dies_with_abort(client_went_after_close, NULL, "arpc_go on 0x"));
    assert_true(dies_with_abort(server_destroyed_twice, NULL, "arpc_server_destroy on 0x"));
    assert_true(dies_with_abort(future_released_twice, NULL, "arpc_future_release on 0x"));
    assert_true(dies_with_abort(pending_future_polled_after_release, NULL, "arpc_future_poll on 0x"));
    assert_true(dies_with_abort(cq_destroyed_twice, NULL, "arpc_cq_destroy on 0x"));
    assert_true(dies_with_abort(actor_destroyed_twice, NULL, "arpc_actor_destroy on 0x"));
    assert_true(dies_with_abort(actor_posted_after_destroy, NULL, "arpc_actor_post on 0x"));
    assert_true(dies_with_abort(loop_destroyed_twice, NULL, "arpc_loop_destroy on 0x"));
    assert_true(dies_with_abort(loop_submitted_after_destroy, NULL, "arpc_loop_submit on 0x"));
    assert_true(dies_with_abort(group_destroyed_twice, NULL, "arpc_actor_group_destroy on 0x"));
    assert_true(dies_with_abort(group_posted_after_destroy, NULL, "arpc_actor_group_post_key on 0x"));
}

/* A destroy from an ARPC_ECANCELLED callback of the actor's own stop (a trial of re-entrant
 * calls: it freed the actor while the stop went on delivering): refused with its line. */
static void test_destroy_from_its_stops_callback_aborts(void **state)
{
    (void)state;
    if (!aborts_on_misuse)
        skip(); /* with NDEBUG: refused, the actor leaked, nothing to see from the outside */
    const char *why = "refused: called from an ARPC_ECANCELLED callback of the actor's stop";
    assert_true(dies_with_abort(actor_destroyed_by_its_stop, NULL, why));
    assert_true(dies_with_abort(actor_destroyed_by_its_stop, "group", why));
}

/* A future's cancel hook that releases a reference after the last was released (the release
 * started the cancel): reported; it recursed until the stack overflowed. */
static void test_release_in_the_cancel_of_the_last_release_aborts(void **state)
{
    (void)state;
    if (!aborts_on_misuse)
        skip(); /* with NDEBUG: reported, the future leaked */
    assert_true(dies_with_abort(future_released_by_its_hook_after_the_last, NULL,
                                "arpc_future_release (inside its cancel) on 0x"));
}

/* An allocator set after arpc allocated (a new user's trial: a server and a client alive, then
 * the hook: their blocks reached its free, the heap corrupted in silence) is misuse: an abort
 * in debug builds; with NDEBUG an ERROR line, and the allocator in use stays. */
static atomic_int late_allocs;

static void *late_malloc(size_t n, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&late_allocs, 1);
    return malloc(n);
}

static void *late_realloc(void *p, size_t n, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&late_allocs, 1);
    return realloc(p, n);
}

static void late_free(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}

static void allocator_set_after_use(void *arg)
{
    (void)arg;
    static const arpc_allocator late = {late_malloc, late_realloc, late_free, NULL};
    arpc_free(arpc_malloc(8));
    arpc_set_allocator(&late);
}

static void test_allocator_set_after_use(void **state)
{
    (void)state;
    if (aborts_on_misuse) {
        assert_true(dies_with_abort(allocator_set_after_use, NULL, "arpc_set_allocator after arpc allocated memory"));
        return;
    }
    allocator_set_after_use(NULL);
    arpc_free(arpc_malloc(8));
    assert_int_equal(0, atomic_load(&late_allocs)); /* refused: the allocator in use stayed */
}

/* Setting the allocator in use again changes nothing: allowed after use (a review: restoring
 * the default, NULL, aborted though nothing would change). The one in use here is the test
 * allocator (this program's main installed it). */
static void test_allocator_set_again_after_use(void **state)
{
    (void)state;
    arpc_free(arpc_malloc(8));
    arpc_set_allocator(&test_allocator);
    arpc_free(arpc_malloc(8));
}

/* An actor, group or completion queue a server's method is routed to, destroyed before the
 * server: its next request would be posted into freed memory (a new user's trial: ASan saw
 * the write; a review found the queue's case). Now the destroy is refused: an abort in debug
 * builds; with NDEBUG an ERROR line, nothing destroyed, the method still served, and a
 * destroy after the server's goes through. */
enum route { ROUTE_ACTOR, ROUTE_GROUP, ROUTE_MEMBER, ROUTE_QUEUE };

static arpc_cq *g_route_cq;

/* Registers "routed" on the route's actor, group or queue and, but for the queue (nobody
 * serves it), calls it once; NULL on failure. */
static arpc_client *routed_pair(arpc_server **s, enum route route, arpc_actor **a, arpc_actor_group **g)
{
    *a = NULL;
    *g = NULL;
    arpc_method_options mo = {0};
    arpc_handler_fn fn = test_echo;
    if (route == ROUTE_QUEUE) {
        if (arpc_cq_create(&g_route_cq) != ARPC_OK)
            return NULL;
        mo.queue = g_route_cq;
        fn = NULL;
    } else if (route == ROUTE_ACTOR) {
        if (arpc_actor_create(a, NULL) != ARPC_OK)
            return NULL;
        mo.actor = *a;
    } else {
        if (arpc_actor_group_create(g, 2, NULL) != ARPC_OK)
            return NULL;
        if (route == ROUTE_GROUP)
            mo.group = *g;
        else
            mo.actor = arpc_actor_group_member(*g, 1);
    }
    char addr[256];
    arpc_client *c = NULL;
    if (arpc_server_create(s, NULL) != ARPC_OK || arpc_server_register(*s, "routed", fn, NULL, &mo) != ARPC_OK ||
        arpc_server_listen(*s, "tcp://127.0.0.1:0", addr, sizeof(addr)) != ARPC_OK ||
        arpc_client_connect(&c, addr, NULL) != ARPC_OK ||
        (route != ROUTE_QUEUE && arpc_call(c, "routed", "x", 1, NULL, NULL, 10000) != ARPC_OK))
        return NULL;
    return c;
}

static void destroy_route(enum route route, arpc_actor *a, arpc_actor_group *g)
{
    if (route == ROUTE_ACTOR)
        arpc_actor_destroy(a);
    else if (route == ROUTE_QUEUE)
        arpc_cq_destroy(g_route_cq);
    else
        arpc_actor_group_destroy(g);
}

static void route_destroyed_first(void *arg)
{
    enum route route = (enum route)(intptr_t)arg;
    arpc_server *s;
    arpc_actor *a;
    arpc_actor_group *g;
    if (routed_pair(&s, route, &a, &g) == NULL)
        return;
    destroy_route(route, a, g);
}

static char g_refusal[512];

static void keep_refusal(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)ctx;
    if (level == ARPC_LOG_ERROR)
        snprintf(g_refusal, sizeof(g_refusal), "%s", line);
}

static void test_route_destroyed_before_its_server(void **state)
{
    (void)state;
    static const char *const fn[] = {"arpc_actor_destroy on 0x", "arpc_actor_group_destroy on 0x",
                                     "arpc_actor_group_destroy on 0x", "arpc_cq_destroy on 0x"};
    for (enum route route = ROUTE_ACTOR; route <= ROUTE_QUEUE; route++) {
        if (aborts_on_misuse) {
            assert_true(dies_with_abort(route_destroyed_first, (void *)(intptr_t)route, fn[route]));
            assert_true(dies_with_abort(route_destroyed_first, (void *)(intptr_t)route, "destroy the server first"));
            continue;
        }
        arpc_server *s;
        arpc_actor *a;
        arpc_actor_group *g;
        arpc_client *c = routed_pair(&s, route, &a, &g);
        assert_non_null(c);
        g_refusal[0] = '\0';
        arpc_set_logger(keep_refusal, NULL, ARPC_LOG_ERROR);
        destroy_route(route, a, g); /* refused: nothing destroyed */
        arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
        assert_non_null(strstr(g_refusal, fn[route]));
        assert_non_null(strstr(g_refusal, "destroy the server first"));
        if (route != ROUTE_QUEUE)
            assert_int_equal(ARPC_OK, arpc_call(c, "routed", "y", 1, NULL, NULL, 10000));
        assert_int_equal(ARPC_OK, arpc_client_close(c));
        assert_int_equal(ARPC_OK, arpc_server_destroy(s));
        destroy_route(route, a, g); /* the server is gone: this one frees it (no_leak checks) */
    }
}

/* What a task may still do while its loop's destroy drains it: ask where it runs, and submit
 * (refused, the lane is closed), in every build. A second destroy from there is caught while
 * the loop's memory is alive, so in every build too: an abort in debug builds; with NDEBUG a
 * report, and the first destroy goes on to free the loop once (no_leak checks). */
static _Atomic int g_drain_submit_rc = -1;
static atomic_bool g_drain_on_thread;

static void drain_probe(arpc_loop *loop, void *arg)
{
    (void)arg;
    atomic_store(&g_drain_on_thread, arpc_loop_on_thread(loop));
    atomic_store(&g_drain_submit_rc, arpc_loop_submit(loop, nothing_task, NULL));
}

static void test_loop_destroy_drain(void **state)
{
    (void)state;
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_submit(loop, drain_probe, NULL));
    arpc_loop_destroy(loop);
    assert_true(atomic_load(&g_drain_on_thread));
    assert_int_equal(ARPC_ESHUTDOWN, atomic_load(&g_drain_submit_rc));

    if (aborts_on_misuse) {
        assert_true(dies_with_abort(loop_destroyed_again_while_draining, NULL, "arpc_loop_destroy on 0x"));
    } else {
        arpc_set_logger(NULL, NULL, ARPC_LOG_NONE); /* the report is expected */
        loop_destroyed_again_while_draining(NULL);
        arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
    }
}

static void count_done(arpc_future *f, void *arg)
{
    (void)arg;
    CHECK(arpc_future_poll(f) == ARPC_OK); /* a callback borrows f, though no user holds it */
    latch_add();
}

/* A pending future's second release while its producer holds it. Its memory is alive, so this
 * is caught in every build: an abort in debug builds; with NDEBUG the second release does
 * nothing, and the producer's later completion is harmless and frees it (no_leak checks).
 * Ordinary use in every build: released once while pending, the call goes on (no cancel), its
 * callback runs, and a queue hands the call's future over. */
static void test_pending_released_twice(void **state)
{
    (void)state;
    bool twice = !aborts_on_misuse;
    if (aborts_on_misuse) {
        assert_true(dies_with_abort(pending_call_released_twice, NULL, "arpc_future_release on 0x"));
        assert_true(dies_with_abort(queued_future_released_twice, NULL, "arpc_future_release on 0x"));
        assert_true(dies_with_abort(queued_call_released_twice, NULL, "arpc_future_release on 0x"));
    } else {
        arpc_set_logger(NULL, NULL, ARPC_LOG_NONE); /* the reports are expected */
    }
    arpc_server *s;
    arpc_client *c = child_pair(&s);
    assert_non_null(c);

    arpc_future *f = held_call(c);
    assert_non_null(f);
    assert_int_equal(ARPC_OK, arpc_future_then(f, count_done, NULL));
    arpc_future_release(f);
    if (twice)
        arpc_future_release(f);
    assert_int_equal(ARPC_OK, arpc_reply(g_held, "y", 1));
    assert_true(latch_wait(2, TEST_WAIT_MS)); /* the hold, then the callback */

    arpc_cq *cq;
    assert_int_equal(ARPC_OK, arpc_cq_create(&cq));
    f = held_call(c);
    assert_non_null(f);
    assert_int_equal(ARPC_OK, arpc_cq_attach(cq, f, &cq));
    arpc_future_release(f);
    if (twice)
        arpc_future_release(f);
    assert_int_equal(ARPC_OK, arpc_reply(g_held, "z", 1));
    arpc_future *got = NULL;
    void *tag = NULL;
    assert_int_equal(ARPC_OK, arpc_cq_next_for(cq, 10000, &got, &tag));
    assert_ptr_equal(f, got);
    assert_ptr_equal(&cq, tag);
    assert_int_equal(ARPC_OK, arpc_future_poll(got));
    arpc_future_release(got);
    arpc_cq_destroy(cq);

    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
    assert_int_equal(0, atomic_load(&bad_line));
}

/* A live object of one kind passed as another: its memory is valid, so this is caught in
 * every build (an abort in debug builds, ARPC_EINVAL with NDEBUG) and the object is intact. */
static arpc_cq *g_cq;

static void cq_polled_as_future(void *arg)
{
    (void)arg;
    arpc_future_poll((arpc_future *)g_cq);
}

static void cq_posted_as_group(void *arg)
{
    (void)arg;
    arpc_actor_group_post((arpc_actor_group *)g_cq, nothing, NULL);
}

static void cq_submitted_as_loop(void *arg)
{
    (void)arg;
    arpc_loop_submit((arpc_loop *)g_cq, nothing_task, NULL);
}

static void test_wrong_kind(void **state)
{
    (void)state;
    assert_int_equal(ARPC_OK, arpc_cq_create(&g_cq));
    if (aborts_on_misuse) {
        assert_true(dies_with_abort(cq_polled_as_future, NULL, "arpc_future_poll on 0x"));
        assert_true(dies_with_abort(cq_polled_as_future, NULL, "not a live future"));
        assert_true(dies_with_abort(cq_posted_as_group, NULL, "not a live actor group"));
        assert_true(dies_with_abort(cq_submitted_as_loop, NULL, "not a live loop"));
    } else {
        arpc_set_logger(NULL, NULL, ARPC_LOG_NONE); /* the report is expected */
        assert_int_equal(ARPC_EINVAL, arpc_future_poll((arpc_future *)g_cq));
        assert_int_equal(ARPC_EINVAL, arpc_client_close((arpc_client *)g_cq));
        arpc_future_release((arpc_future *)g_cq); /* does nothing */
        assert_int_equal(ARPC_EINVAL, arpc_actor_group_post((arpc_actor_group *)g_cq, nothing, NULL));
        assert_int_equal(ARPC_EINVAL, arpc_loop_submit((arpc_loop *)g_cq, nothing_task, NULL));
        arpc_loop_destroy((arpc_loop *)g_cq); /* does nothing */
        arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
    }
    assert_int_equal(0, arpc_cq_size(g_cq)); /* still a queue */
    arpc_cq_destroy(g_cq);
}

int main(void)
{
    test_alloc_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_null_client),
        cmocka_unit_test_no_leak(test_null_future_and_cq),
        cmocka_unit_test_no_leak(test_null_server),
        cmocka_unit_test_no_leak(test_null_actor),
        cmocka_unit_test_no_leak(test_null_loop_and_group),
        cmocka_unit_test_no_leak(test_use_after_close_aborts),
        cmocka_unit_test_no_leak(test_destroy_from_its_stops_callback_aborts),
        cmocka_unit_test_no_leak(test_release_in_the_cancel_of_the_last_release_aborts),
        cmocka_unit_test_no_leak(test_request_used_after_it_was_let_go),
        cmocka_unit_test_no_leak(test_route_destroyed_before_its_server),
        cmocka_unit_test_no_leak(test_pending_released_twice),
        cmocka_unit_test_no_leak(test_loop_destroy_drain),
        cmocka_unit_test_no_leak(test_wrong_kind),
        cmocka_unit_test_no_leak(test_allocator_set_after_use),
        cmocka_unit_test_no_leak(test_allocator_set_again_after_use),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
