/*
 * The method registry (core/registry.c): add and find, duplicate names, names that share a
 * hash slot (long probe runs, wrap-around), every length from 1 to ARPC_METHOD_MAX, lookups
 * by length on input that is not NUL-terminated (held in blocks of exactly that length, so
 * ASan catches a read past it), prefixes and extensions of registered names, the lookup that
 * tries the last method found first, and ENOMEM at
 * every allocation of an add: the registry stays as it was, and nothing leaks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "core/frame.h"
#include "core/registry.h"
#include "support/test_util.h"

static void h_a(arpc_request *req, void *ctx)
{
    (void)req;
    (void)ctx;
}

static void h_b(arpc_request *req, void *ctx)
{
    (void)req;
    (void)ctx;
}

/* Looks name[0..len) up from a block of exactly len bytes (no NUL after it). */
static const struct arpc_method *find_exact(const struct arpc_registry *r, const char *name, size_t len)
{
    char *copy = arpc_malloc(len);
    assert_non_null(copy);
    memcpy(copy, name, len);
    const struct arpc_method *m = arpc_registry_find(r, copy, len);
    arpc_free(copy);
    return m;
}

/* name is registered, with fn and ctx, and its copy is NUL-terminated. */
static void assert_found(const struct arpc_registry *r, const char *name, arpc_handler_fn fn, void *ctx)
{
    size_t len = strlen(name);
    const struct arpc_method *m = find_exact(r, name, len);
    assert_non_null(m);
    assert_int_equal(len, m->m_name_len);
    assert_string_equal(name, m->m_name);
    assert_ptr_not_equal(name, m->m_name); /* a copy */
    assert_ptr_equal(fn, m->m_fn);
    assert_ptr_equal(ctx, m->m_ctx);
}

/* The name the test registers as method i. */
static void method_name(char *buf, size_t size, unsigned i) { snprintf(buf, size, "svc%u.m%u", i % 7, i); }

static void test_add_find(void **state)
{
    (void)state;
    struct arpc_registry r;
    arpc_registry_init(&r);
    assert_null(arpc_registry_find(&r, "a", 1)); /* empty */
    int ctx_a, ctx_b;
    arpc_actor *actor;
    assert_int_equal(ARPC_OK, arpc_actor_create(&actor, NULL)); /* counted as used, never posted to */
    arpc_method_options mo = {.actor = actor};
    assert_int_equal(ARPC_OK, arpc_registry_add(&r, "Echo.echo", h_a, &ctx_a, NULL));
    assert_int_equal(ARPC_OK, arpc_registry_add(&r, "Echo.fail", h_b, &ctx_b, &mo));
    assert_int_equal(2, r.r_count);
    assert_found(&r, "Echo.echo", h_a, &ctx_a);
    assert_found(&r, "Echo.fail", h_b, &ctx_b);
    const struct arpc_method *m = arpc_registry_find(&r, "Echo.echo", 9);
    assert_null(m->m_actor);
    assert_null(m->m_group);
    assert_false(m->m_inline);
    m = arpc_registry_find(&r, "Echo.fail", 9);
    assert_ptr_equal(actor, m->m_actor);
    arpc_method_options inl = {.inline_on_loop = true};
    assert_int_equal(ARPC_OK, arpc_registry_add(&r, "Echo.inline", h_a, NULL, &inl));
    assert_true(arpc_registry_find(&r, "Echo.inline", 11)->m_inline);
    arpc_registry_routes_done(&r); /* the actor is free to go */
    arpc_registry_fini(&r);
    arpc_registry_fini(&r); /* twice is harmless */
    arpc_actor_destroy(actor);
}

/* A taken name is refused, whatever the handler, and the first binding stays. */
static void test_duplicate_name(void **state)
{
    (void)state;
    struct arpc_registry r;
    arpc_registry_init(&r);
    int ctx;
    assert_int_equal(ARPC_OK, arpc_registry_add(&r, "x.y", h_a, &ctx, NULL));
    long live = atomic_load(&test_alloc_live);
    assert_int_equal(ARPC_EBUSY, arpc_registry_add(&r, "x.y", h_b, NULL, NULL));
    assert_int_equal(ARPC_EBUSY, arpc_registry_add(&r, "x.y", h_a, &ctx, NULL));
    assert_int_equal(live, atomic_load(&test_alloc_live)); /* refused before allocating */
    assert_int_equal(1, r.r_count);
    assert_found(&r, "x.y", h_a, &ctx);
    /* Names that differ only in case or by a last byte are other names. */
    assert_int_equal(ARPC_OK, arpc_registry_add(&r, "X.y", h_b, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_registry_add(&r, "x.z", h_b, NULL, NULL));
    assert_found(&r, "x.y", h_a, &ctx);
    arpc_registry_fini(&r);
}

/* The index is open addressing over name_hash & (cap - 1). The registry's hash is FNV-1a,
 * so names are picked here whose FNV-1a hashes share their low bits: they all want the same
 * slot, and lookups walk a long run that wraps past the table's end. (Were the hash to
 * change, the names would merely stop colliding; the test would still be right.) */
static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static void test_colliding_names(void **state)
{
    (void)state;
    struct arpc_registry r;
    arpc_registry_init(&r);
    enum { N = 40 };
    char names[N][32];
    /* Low six bits all set: the last slot of a 16-, 32- or 64-slot index, slot 63 or 127 of
     * the 128-slot one 40 names need; the runs wrap past the end. */
    unsigned found = 0;
    for (unsigned i = 0; found < N; i++) {
        snprintf(names[found], sizeof(names[found]), "c.%u", i);
        if ((fnv1a(names[found]) & 63) == 63)
            found++;
    }
    for (unsigned i = 0; i < N; i++) {
        assert_int_equal(ARPC_OK, arpc_registry_add(&r, names[i], h_a, names[i], NULL));
        for (unsigned j = 0; j <= i; j++)
            assert_found(&r, names[j], h_a, names[j]);
        assert_int_equal(ARPC_EBUSY, arpc_registry_add(&r, names[i], h_b, NULL, NULL));
    }
    /* Names that hash to the same slot but were never added end the run empty-handed. */
    unsigned missing = 0;
    char other[32];
    for (unsigned i = 1000000; missing < 20; i++) {
        snprintf(other, sizeof(other), "c.%u", i);
        if ((fnv1a(other) & 63) == 63) {
            assert_null(find_exact(&r, other, strlen(other)));
            missing++;
        }
    }
    arpc_registry_fini(&r);
}

/* Many names, as a large service would have: all found, others not. */
static void test_many_names(void **state)
{
    (void)state;
    struct arpc_registry r;
    arpc_registry_init(&r);
    enum { N = 2000 };
    char name[64];
    for (unsigned i = 0; i < N; i++) {
        method_name(name, sizeof(name), i);
        assert_int_equal(ARPC_OK, arpc_registry_add(&r, name, i % 2 ? h_a : h_b, (void *)(uintptr_t)(i + 1), NULL));
    }
    assert_int_equal(N, r.r_count);
    assert_true(r.r_index_cap >= 2 * N); /* load factor at most one half */
    for (unsigned i = 0; i < N; i++) {
        method_name(name, sizeof(name), i);
        assert_found(&r, name, i % 2 ? h_a : h_b, (void *)(uintptr_t)(i + 1));
        method_name(name, sizeof(name), i + N);
        assert_null(find_exact(&r, name, strlen(name)));
    }
    arpc_registry_fini(&r);
}

/* Every length from 1 to 255; found by length from input with no NUL after it, whether the
 * bytes after it are more of the name's bytes or nothing at all (an exact block). */
static void test_every_length(void **state)
{
    (void)state;
    struct arpc_registry r;
    arpc_registry_init(&r);
    char buf[ARPC_METHOD_MAX + 2];
    memset(buf, 'm', sizeof(buf));
    for (size_t len = 1; len <= ARPC_METHOD_MAX; len++) {
        char *name = arpc_malloc(len + 1);
        memset(name, 'm', len);
        name[len] = '\0';
        assert_int_equal(ARPC_OK, arpc_registry_add(&r, name, h_a, (void *)len, NULL));
        arpc_free(name);
    }
    for (size_t len = 1; len <= ARPC_METHOD_MAX; len++) {
        /* buf[len] is another 'm': the length alone says where the name ends. */
        const struct arpc_method *m = arpc_registry_find(&r, buf, len);
        assert_non_null(m);
        assert_int_equal(len, m->m_name_len);
        assert_ptr_equal((void *)len, m->m_ctx);
        assert_int_equal('\0', m->m_name[len]);
        assert_ptr_equal(m, find_exact(&r, buf, len));
    }
    assert_null(arpc_registry_find(&r, buf, ARPC_METHOD_MAX + 1));
    assert_null(arpc_registry_find(&r, buf, 0));
    arpc_registry_fini(&r);
}

/* A prefix of a registered name, a name with a registered prefix, and the same bytes
 * followed by garbage are all other names. */
static void test_prefix_not_found(void **state)
{
    (void)state;
    struct arpc_registry r;
    arpc_registry_init(&r);
    static const char full[] = "Service.method";
    assert_int_equal(ARPC_OK, arpc_registry_add(&r, full, h_a, NULL, NULL));
    for (size_t len = 0; len < sizeof(full) - 1; len++)
        assert_null(find_exact(&r, full, len));
    assert_null(find_exact(&r, "Service.methods", 15));
    assert_null(find_exact(&r, "Service.method\0", 15)); /* a NUL is a byte like any other */
    assert_non_null(find_exact(&r, full, sizeof(full) - 1));
    /* With the short name registered too, each is found as itself. */
    assert_int_equal(ARPC_OK, arpc_registry_add(&r, "Service.m", h_b, NULL, NULL));
    assert_ptr_equal(h_b, find_exact(&r, full, 9)->m_fn);
    assert_ptr_equal(h_a, find_exact(&r, full, sizeof(full) - 1)->m_fn);
    assert_null(find_exact(&r, full, 10));
    arpc_registry_fini(&r);
}

/* find_near: the last method found is tried first, by its name, not trusted blindly: a
 * prefix, an extension or another name is looked up afresh (and remembered if it exists); an
 * unknown name leaves the last one as it was. */
static void test_find_near(void **state)
{
    (void)state;
    struct arpc_registry r;
    arpc_registry_init(&r);
    assert_int_equal(ARPC_OK, arpc_registry_add(&r, "Service.method", h_a, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_registry_add(&r, "Service.m", h_b, NULL, NULL));
    const struct arpc_method *last = NULL;
    const struct arpc_method *a = arpc_registry_find_near(&r, "Service.method", 14, &last);
    assert_non_null(a);
    assert_ptr_equal(a, last);
    assert_ptr_equal(a, arpc_registry_find_near(&r, "Service.method", 14, &last));
    assert_null(arpc_registry_find_near(&r, "Service.metho", 13, &last)); /* a prefix of last */
    assert_null(arpc_registry_find_near(&r, "Service.methods", 15, &last));
    assert_null(arpc_registry_find_near(&r, "Service.mathod", 14, &last)); /* last's length */
    assert_ptr_equal(a, last);
    const struct arpc_method *b = arpc_registry_find_near(&r, "Service.method", 9, &last);
    assert_non_null(b);
    assert_ptr_equal(h_b, b->m_fn);
    assert_ptr_equal(b, last);
    assert_ptr_equal(a, arpc_registry_find_near(&r, "Service.method", 14, &last));
    assert_ptr_equal(a, last);
    arpc_registry_fini(&r);
}

/* Every allocation an add makes fails in turn (budget 0, 1, 2, ...) until one add goes
 * through; each failure is ARPC_ENOMEM, leaves the registry exactly as it was (every earlier
 * name found, the new one not, the count unchanged), leaks nothing, and the same add then
 * succeeds. Done for adds that grow the index and for adds that do not. */
static void check_enomem_at_every_allocation(unsigned before)
{
    char name[64];
    unsigned failures = 0;
    for (long budget = 0;; budget++) {
        struct arpc_registry r;
        arpc_registry_init(&r);
        for (unsigned i = 0; i < before; i++) {
            method_name(name, sizeof(name), i);
            assert_int_equal(ARPC_OK, arpc_registry_add(&r, name, h_a, NULL, NULL));
        }
        method_name(name, sizeof(name), before);
        atomic_store(&test_alloc_budget, budget);
        int rc = arpc_registry_add(&r, name, h_b, &r, NULL);
        atomic_store(&test_alloc_budget, -1);
        if (rc == ARPC_OK) {
            assert_found(&r, name, h_b, &r);
            arpc_registry_fini(&r);
            assert_int_equal(0, atomic_load(&test_alloc_live));
            break;
        }
        failures++;
        assert_int_equal(ARPC_ENOMEM, rc);
        assert_int_equal(before, r.r_count);
        assert_null(find_exact(&r, name, strlen(name)));
        for (unsigned i = 0; i < before; i++) {
            method_name(name, sizeof(name), i);
            assert_found(&r, name, h_a, NULL);
        }
        method_name(name, sizeof(name), before);
        assert_int_equal(ARPC_OK, arpc_registry_add(&r, name, h_b, &r, NULL));
        assert_found(&r, name, h_b, &r);
        arpc_registry_fini(&r);
        assert_int_equal(0, atomic_load(&test_alloc_live));
    }
    assert_true(failures >= 3); /* the method, the name, the index at least */
}

static void test_enomem_at_every_allocation(void **state)
{
    (void)state;
    check_enomem_at_every_allocation(0);  /* the first add: every array is new */
    check_enomem_at_every_allocation(5);  /* an add into a registry that has room */
    check_enomem_at_every_allocation(8);  /* the add that outgrows the first index */
    check_enomem_at_every_allocation(64); /* and a later one */
}

int main(void)
{
    test_alloc_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_add_find),
        cmocka_unit_test_no_leak(test_duplicate_name),
        cmocka_unit_test_no_leak(test_colliding_names),
        cmocka_unit_test_no_leak(test_many_names),
        cmocka_unit_test_no_leak(test_every_length),
        cmocka_unit_test_no_leak(test_prefix_not_found),
        cmocka_unit_test_no_leak(test_find_near),
        cmocka_unit_test_no_leak(test_enomem_at_every_allocation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
