/* The error table: one name and one message per code, all distinct; unknown codes handled;
 * ARPC_EABANDONED's message names every way it comes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "arpc/error.h"

static void test_every_code_named(void **state)
{
    (void)state;
    assert_string_equal("ARPC_OK", arpc_errname(ARPC_OK));
    assert_string_equal("ARPC_ETIMEDOUT", arpc_errname(ARPC_ETIMEDOUT));
    assert_string_equal("ARPC_ECONNLOST", arpc_errname(ARPC_ECONNLOST));
    for (int i = 0; i < ARPC_ERROR_COUNT_; i++) {
        assert_int_equal(0, strncmp(arpc_errname(i), "ARPC_", 5));
        assert_true(strlen(arpc_strerror(i)) > 3);
        for (int j = 0; j < i; j++) {
            assert_string_not_equal(arpc_errname(i), arpc_errname(j));
            assert_string_not_equal(arpc_strerror(i), arpc_strerror(j));
        }
    }
}

static void test_unknown_codes(void **state)
{
    (void)state;
    assert_string_equal("ARPC_EUNKNOWN", arpc_errname(-1));
    assert_string_equal("ARPC_EUNKNOWN", arpc_errname(ARPC_ERROR_COUNT_));
    assert_string_equal("unknown error", arpc_strerror(1 << 30));
}

/* ARPC_EABANDONED covers both ways the server gives up on a call that may have run (its stop,
 * a reply it could not make: docs/SEMANTICS.md); its text must not name the stop alone. */
static void test_abandoned_says_what_it_covers(void **state)
{
    (void)state;
    const char *text = arpc_strerror(ARPC_EABANDONED);
    assert_non_null(strstr(text, "stopped"));
    assert_non_null(strstr(text, "could not make the reply"));
    assert_non_null(strstr(text, "may have run"));
    assert_non_null(strstr(text, "reply log failed"));
}

/* The numbers are on the wire: they must never change (only append to the table). */
static void test_wire_numbers_stable(void **state)
{
    (void)state;
    assert_int_equal(0, ARPC_OK);
    assert_int_equal(5, ARPC_ETIMEDOUT);
    assert_int_equal(7, ARPC_ESHUTDOWN);
    assert_int_equal(8, ARPC_ECONNLOST);
    assert_int_equal(12, ARPC_EREJECTED);
    assert_int_equal(13, ARPC_ENOMETHOD);
    assert_int_equal(14, ARPC_EHANDLER);
    assert_int_equal(15, ARPC_ETOOLARGE);
    assert_int_equal(16, ARPC_EPROTO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_named),
        cmocka_unit_test(test_unknown_codes),
        cmocka_unit_test(test_wire_numbers_stable),
        cmocka_unit_test(test_abandoned_says_what_it_covers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
