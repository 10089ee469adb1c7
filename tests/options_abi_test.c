/*
 * Options structs across versions (docs/ABI.md): a program built against older headers passes
 * a smaller struct (the fields it lacks must read as zero, the default, and the bytes past it
 * must never be read); one built against newer headers passes a larger one (accepted when the
 * fields this library lacks are zero, ARPC_EINVAL otherwise). The public _v functions are
 * called with the sizes such programs would pass.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "arpc/arpc.h"
#include "base/options.h"
#include "core/server_internal.h"
#include "support/test_util.h"

/* What a newer header would have: the same struct with one field appended. */
#define NEWER(T) struct { T o; uint64_t appended; }

/* An older program's struct, which ended at old_end: zero up to there, then garbage (its
 * tail padding, never written, and what it never had); returns the size it passed, old_end
 * rounded up to the struct's alignment, which must leave padding to test. */
static size_t older_struct(void *o, size_t size, size_t align, size_t old_end, int garbage)
{
    size_t old_size = (old_end + align - 1) / align * align;
    assert_true(old_size > old_end);
    memset(o, 0, old_end);
    memset((char *)o + old_end, garbage, size - old_end);
    return old_size;
}
#define OLDER(o, field_end, garbage) \
    older_struct(&(o), sizeof(o), _Alignof(__typeof__(o)), (field_end), (garbage))

static void test_copy_rules(void **state)
{
    (void)state;
    unsigned char caller[16], copy[8];
    for (size_t i = 0; i < sizeof(caller); i++)
        caller[i] = (unsigned char)(i + 1);

    memset(copy, 0xAA, sizeof(copy)); /* older caller: 3 bytes known, the rest zero */
    assert_int_equal(ARPC_OK, arpc_options_copy(copy, sizeof(copy), caller, 3));
    const unsigned char older[8] = {1, 2, 3, 0, 0, 0, 0, 0};
    assert_memory_equal(older, copy, sizeof(copy));

    memset(copy, 0xAA, sizeof(copy)); /* this library's headers (the inline path): all of it */
    assert_int_equal(ARPC_OK, arpc_options_copy(copy, sizeof(copy), caller, sizeof(copy)));
    assert_memory_equal(caller, copy, sizeof(copy));

    memset(copy, 0xAA, sizeof(copy)); /* NULL: all zero */
    assert_int_equal(ARPC_OK, arpc_options_copy(copy, sizeof(copy), NULL, sizeof(caller)));
    const unsigned char zero[8] = {0};
    assert_memory_equal(zero, copy, sizeof(copy));

    /* newer caller: a non-zero byte anywhere past ours is refused, the last one included */
    assert_int_equal(ARPC_EINVAL, arpc_options_copy(copy, sizeof(copy), caller, sizeof(caller)));
    memset(caller + 8, 0, 8);
    assert_int_equal(ARPC_OK, arpc_options_copy(copy, sizeof(copy), caller, sizeof(caller)));
    assert_memory_equal(caller, copy, sizeof(copy));
    caller[15] = 1;
    assert_int_equal(ARPC_EINVAL, arpc_options_copy(copy, sizeof(copy), caller, sizeof(caller)));
}

/* An older program's client options end before errbuf: the library must not see the bytes
 * after them (here 0xFF: a wild errbuf pointer the failed connect would write through). */
static void test_older_client_options_stop_at_their_size(void **state)
{
    (void)state;
    arpc_client_options o;
    size_t old_size = offsetof(arpc_client_options, errbuf);
    memset(&o, 0, old_size);
    memset((char *)&o + old_size, 0xFF, sizeof(o) - old_size);
    arpc_client *c = (arpc_client *)&o;
    int rc = arpc_client_connect_v(&c, "inproc://options-abi-nobody", &o, old_size);
    assert_int_equal(ARPC_ECONNREFUSED, rc);
    assert_null(c);
}

static void test_older_server_options_are_defaults(void **state)
{
    (void)state;
    arpc_server_options o;
    memset(&o, 0xFF, sizeof(o)); /* none of it is the program's: size 0 */
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create_v(&s, &o, 0));
    assert_non_null(s);
    arpc_server_destroy(s);
}

/* A program built before max_accept_rate was appended passes sizeof its struct: unix_mode and
 * the tail padding after it, which such a program never wrote (a struct filled field by field,
 * or malloc'd). No option appended since may lie in that padding: a garbage rate limit would
 * throttle its connections. */
static void test_older_server_options_tail_padding_ignored(void **state)
{
    (void)state;
    arpc_server_options o;
    size_t old_size = OLDER(o, offsetof(arpc_server_options, unix_mode) + sizeof(uint32_t), 0xFF);
    o.workers = 1;
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create_v(&s, &o, old_size));
    assert_non_null(s);
    assert_int_equal(0, s->sv_accept_gate.lg_rate); /* no limit: the option was never given */
    arpc_server_destroy(s);
}

/* The same for a program built before max_fault_rate was appended: worker_poll_us ended its
 * struct, then 4 bytes of padding it never wrote; a garbage fault rate would pause its
 * listeners for faults it did not ask to limit that way. */
static void test_older_server_options_padding_after_worker_poll_ignored(void **state)
{
    (void)state;
    arpc_server_options o;
    size_t old_size = OLDER(o, offsetof(arpc_server_options, worker_poll_us) + sizeof(int32_t), 0xFF);
    o.workers = 1;
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create_v(&s, &o, old_size));
    assert_non_null(s);
    assert_int_equal(ARPC_FAULT_RATE_DEFAULT, s->sv_fault_gates[FAULT_LOCAL].lg_rate); /* the default: never given */
    assert_int_equal(ARPC_FAULT_RATE_DEFAULT, s->sv_fault_gates[FAULT_NETWORK].lg_burst);
    arpc_server_destroy(s);
}

/* The same for a method registered by a program built before read_only was appended:
 * numbered_only ended its struct, then 7 bytes of padding it never wrote; garbage there
 * taken for read_only would run its writes' retries again (a review's probe: a put ran
 * twice for one numbered call). */
static void test_older_method_options_padding_ignored(void **state)
{
    (void)state;
    arpc_method_options o;
    size_t old_size = OLDER(o, offsetof(arpc_method_options, numbered_only) + sizeof(bool), 0x01);
    assert_true(offsetof(arpc_method_options, read_only) >= old_size);
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register_v(s, "t.put", test_echo, NULL, &o, old_size));
    const struct arpc_method *m = arpc_registry_find(&s->sv_registry, "t.put", 5);
    assert_non_null(m);
    assert_false(m->m_read_only);
    /* A newer program's read_only on this library is read, not ignored. */
    memset(&o, 0, sizeof(o));
    o.read_only = true;
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.get", test_echo, NULL, &o));
    assert_true(arpc_registry_find(&s->sv_registry, "t.get", 5)->m_read_only);
    arpc_server_destroy(s);
}

static void test_newer_create_options(void **state)
{
    (void)state;
    /* Refused with words (a new user's trial: a bare ARPC_EINVAL, errbuf empty, no log line). */
    char why[256] = "";
    NEWER(arpc_server_options) so = {.o = {.errbuf = why, .errbuf_len = sizeof(why)}, .appended = 1};
    arpc_server *s = (arpc_server *)&so;
    assert_int_equal(ARPC_EINVAL, arpc_server_create_v(&s, &so.o, sizeof(so)));
    assert_null(s);
    if (strstr(why, "built against newer headers") == NULL)
        fail_msg("the refusal does not say why: \"%s\"", why);
    NEWER(arpc_loop_options) lo = {.appended = 1};
    arpc_loop *loop = (arpc_loop *)&lo;
    assert_int_equal(ARPC_EINVAL, arpc_loop_create_v(&loop, &lo.o, sizeof(lo)));
    assert_null(loop);
    NEWER(arpc_actor_options) ao = {.appended = 1};
    arpc_actor *a = (arpc_actor *)&ao;
    assert_int_equal(ARPC_EINVAL, arpc_actor_create_v(&a, &ao.o, sizeof(ao)));
    assert_null(a);
    arpc_actor_group *g = (arpc_actor_group *)&ao;
    assert_int_equal(ARPC_EINVAL, arpc_actor_group_create_v(&g, 2, &ao.o, sizeof(ao)));
    assert_null(g);
    why[0] = '\0';
    NEWER(arpc_client_options) co = {.o = {.errbuf = why, .errbuf_len = sizeof(why)}, .appended = 1};
    arpc_client *c = (arpc_client *)&co;
    assert_int_equal(ARPC_EINVAL, arpc_client_connect_v(&c, "inproc://options-abi-nobody", &co.o, sizeof(co)));
    assert_null(c);
    if (strstr(why, "built against newer headers") == NULL)
        fail_msg("the refusal does not say why: \"%s\"", why);

    /* The same larger structs with the appended field zero: accepted, as the defaults. */
    ao.appended = 0;
    assert_int_equal(ARPC_OK, arpc_actor_create_v(&a, &ao.o, sizeof(ao)));
    arpc_actor_destroy(a);
    lo.appended = 0;
    assert_int_equal(ARPC_OK, arpc_loop_create_v(&loop, &lo.o, sizeof(lo)));
    arpc_loop_destroy(loop);
}

/* Method and call options from a newer program: refused when they ask for something unknown
 * (through the call's usual path: the return, the future, the completion queue), and served
 * when the appended field is zero. */
static void test_newer_method_and_call_options(void **state)
{
    (void)state;
    arpc_server *s;
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    NEWER(arpc_method_options) mo = {.appended = 1};
    assert_int_equal(ARPC_EINVAL, arpc_server_register_v(s, "echo", test_echo, NULL, &mo.o, sizeof(mo)));
    mo.appended = 0;
    assert_int_equal(ARPC_OK, arpc_server_register_v(s, "echo", test_echo, NULL, &mo.o, sizeof(mo)));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "inproc://options-abi", addr, sizeof(addr)));

    NEWER(arpc_client_options) co = {.o.connect_timeout_ms = 5000};
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect_v(&c, addr, &co.o, sizeof(co)));

    NEWER(arpc_call_options) o = {.o.deadline_ms = 5000, .appended = 1};
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_EINVAL, arpc_call_opts_v(c, "echo", "x", 1, &reply, &len, &o.o, sizeof(o)));
    assert_null(reply);
    arpc_future *f = arpc_call_async_opts_v(c, "echo", "x", 1, &o.o, sizeof(o));
    assert_non_null(f);
    assert_int_equal(ARPC_EINVAL, arpc_future_wait(f));
    arpc_future_release(f);
    arpc_cq *cq;
    assert_int_equal(ARPC_OK, arpc_cq_create(&cq));
    int tag;
    assert_int_equal(ARPC_OK, arpc_go_opts_v(c, "echo", "x", 1, &o.o, sizeof(o), cq, &tag));
    void *got_tag = NULL;
    assert_int_equal(ARPC_OK, arpc_cq_next_for(cq, 10000, &f, &got_tag));
    assert_ptr_equal(&tag, got_tag);
    assert_int_equal(ARPC_EINVAL, arpc_future_poll(f));
    arpc_future_release(f);
    arpc_cq_destroy(cq);

    o.appended = 0;
    assert_int_equal(ARPC_OK, arpc_call_opts_v(c, "echo", "xy", 2, &reply, &len, &o.o, sizeof(o)));
    assert_int_equal(2, len);
    assert_memory_equal("xy", reply, 2);
    arpc_free(reply);

    /* A program built before deadline_at_ns: its struct ended at semantics, then 4 bytes of
     * padding it never wrote (reserved_after_semantics now, never read). */
    arpc_call_options older;
    size_t old_size = OLDER(older, offsetof(arpc_call_options, semantics) + sizeof(enum arpc_call_semantics), 0xFF);
    older.deadline_ms = 5000;
    assert_int_equal(ARPC_OK, arpc_call_opts_v(c, "echo", "xyz", 3, &reply, &len, &older, old_size));
    assert_int_equal(3, len);
    arpc_free(reply);
    assert_int_equal(0, arpc_client_pending(c));
    arpc_client_close(c);
    arpc_server_destroy(s);
}

int main(void)
{
    test_alloc_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_copy_rules),
        cmocka_unit_test_no_leak(test_older_client_options_stop_at_their_size),
        cmocka_unit_test_no_leak(test_older_server_options_are_defaults),
        cmocka_unit_test_no_leak(test_older_server_options_tail_padding_ignored),
        cmocka_unit_test_no_leak(test_older_server_options_padding_after_worker_poll_ignored),
        cmocka_unit_test_no_leak(test_older_method_options_padding_ignored),
        cmocka_unit_test_no_leak(test_newer_create_options),
        cmocka_unit_test_no_leak(test_newer_method_and_call_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
