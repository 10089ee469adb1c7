/*
 * libarpc.so stays mapped after dlclose (docs/ABI.md, "Unloading"): a client's name lookup
 * runs on a thread nobody waits for, which may still be in arpc's code after every client is
 * closed; a plugin unloaded then crashed the process (SIGSEGV in that thread, a trial). The
 * library is linked -z nodelete, so a dlclose that drops its last reference leaves it loaded:
 * RTLD_NOLOAD still finds it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dlfcn.h>

#include "arpc/version.h"

static void test_dlclose_leaves_the_library_mapped(void **state)
{
    (void)state;
    void *lib = dlopen(ARPC_SHARED_LIB, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL)
        fail_msg("dlopen %s: %s", ARPC_SHARED_LIB, dlerror());
    unsigned (*version)(void) = (unsigned (*)(void))dlsym(lib, "arpc_version");
    assert_non_null(version);
    assert_int_equal(ARPC_VERSION_NUMBER, version());
    assert_int_equal(0, dlclose(lib)); /* the only reference */
    void *still = dlopen(ARPC_SHARED_LIB, RTLD_NOW | RTLD_NOLOAD);
    assert_non_null(still); /* without -z nodelete: NULL, the code unmapped */
    dlclose(still);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dlclose_leaves_the_library_mapped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
