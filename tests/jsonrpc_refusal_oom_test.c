/*
 * A JSON-RPC answer of the server's own (a refusal: the call did not run) without memory for
 * its words is still named ("ARPC_EREJECTED: (no memory for the words)"), so arpc's JSON-RPC
 * client still hears "did not run". Before, the name alone went out, which the client reads
 * as a handler's words: ARPC_EHANDLER, "the handler ran" (a review). The allocation that
 * fails is told apart by its size (a method name of a length of its own); the allocator is
 * installed before anything runs (swapping it under running threads would be a race).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "arpc/arpc.h"
#include "arpc/jsonrpc.h"
#include "support/test_util.h"

#define ONCE_NO_MEMORY "T.OnceRefusedByAServerWithoutMemoryForTheWordsOfItsRefusal"

static void expect_refused(arpc_jsonrpc_client *c, const char *words)
{
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_EREJECTED, arpc_jsonrpc_call(c, ONCE_NO_MEMORY, "{}", 2, &out, &len, TEST_WAIT_MS));
    assert_non_null(out);
    assert_string_equal(words, out);
    arpc_free(out);
}

static void test_refusal_without_memory_still_named(void **state)
{
    (void)state;
    static const char refusal[] = ONCE_NO_MEMORY " takes at-most-once calls only (numbered_only); this one was not "
                                                 "numbered";
    size_t named = strlen("ARPC_EREJECTED: ") + sizeof(refusal) - 1; /* jsonrpc_answer's block */
    arpc_server *s;
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, ONCE_NO_MEMORY, test_echo, NULL,
                                                   &(arpc_method_options){.numbered_only = true}));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_jsonrpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_jsonrpc_connect(&c, addr, NULL));
    expect_refused(c, refusal); /* with memory: its words */
    test_alloc_fail_next(named, named + 1);
    expect_refused(c, "(no memory for the words)");
    assert_int_equal(1, test_alloc_sized_failed());
    assert_int_equal(ARPC_OK, arpc_jsonrpc_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

int main(void)
{
    test_alloc_sized_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusal_without_memory_still_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
