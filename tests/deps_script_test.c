/*
 * scripts/deps.sh, as the README's Quick start meets it: ./scripts/demo.sh (arpc_build_release)
 * run by a user who is not root must build with what a build needs, whatever the test suite's
 * own tools (cmocka, Go, clang, ninja) or the optional parts' packages; ./scripts/test.sh
 * (arpc_install_deps) still asks for everything. Run in bash with stubs first in PATH:
 * dpkg-query (the packages in $DEPS_TEST_MISSING are not installed), id (uid 1000), apt-get
 * (must not run) and cmake (records that it ran).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support/call_run.h"

#ifndef ARPC_SOURCE_DIR
#error "tests/CMakeLists.txt defines ARPC_SOURCE_DIR, the source tree holding scripts/deps.sh"
#endif

static char g_dir[64];        /* the stubs */
static char g_cmake_log[128]; /* a line per cmake the script ran */
static char g_path[4096 + 64];
static char g_path_before[4096]; /* PATH as the test found it, put back by the teardown */

static const char *const g_stubs[][2] = {
    {"dpkg-query", "#!/bin/sh\nfor p; do :; done\n"
                   "case \" $DEPS_TEST_MISSING \" in *\" $p \"*) exit 1;; esac\n"
                   "printf 'install ok installed'\n"},
    {"id", "#!/bin/sh\necho 1000\n"},
    {"apt-get", "#!/bin/sh\necho \"apt-get ran as a user\" >&2\nexit 99\n"},
    {"cmake", "#!/bin/sh\necho \"cmake $*\" >> \"$DEPS_TEST_CMAKE_LOG\"\n"},
};
#define NSTUBS (sizeof(g_stubs) / sizeof(g_stubs[0]))

static void stub_path(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", g_dir, name);
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof(g_dir), "/tmp/arpc-deps-test-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    for (size_t i = 0; i < NSTUBS; i++) {
        char p[128];
        stub_path(p, sizeof(p), g_stubs[i][0]);
        FILE *f = fopen(p, "w");
        assert_non_null(f);
        fputs(g_stubs[i][1], f);
        assert_int_equal(0, fclose(f));
        assert_int_equal(0, chmod(p, 0755));
    }
    snprintf(g_cmake_log, sizeof(g_cmake_log), "%s/cmake.log", g_dir);
    const char *path = getenv("PATH");
    snprintf(g_path_before, sizeof(g_path_before), "%s", path != NULL ? path : "/usr/bin:/bin");
    snprintf(g_path, sizeof(g_path), "%s:%s", g_dir, g_path_before);
    assert_int_equal(0, setenv("PATH", g_path, 1));
    assert_int_equal(0, setenv("DEPS_TEST_CMAKE_LOG", g_cmake_log, 1));
    assert_int_equal(0, unsetenv("BUILD"));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < NSTUBS; i++) {
        char p[128];
        stub_path(p, sizeof(p), g_stubs[i][0]);
        unlink(p);
    }
    unlink(g_cmake_log);
    rmdir(g_dir);
    setenv("PATH", g_path_before, 1);
    return 0;
}

/* Runs FN (a function of deps.sh) in the source tree with the packages in missing absent. */
static void run_deps(struct call_run *r, const char *fn, const char *missing)
{
    unlink(g_cmake_log);
    assert_int_equal(0, setenv("DEPS_TEST_MISSING", missing, 1));
    char script[256];
    snprintf(script, sizeof(script), "cd \"$1\" && source scripts/deps.sh && %s", fn);
    call_run(r, "/bin/bash", NULL, 0, (const char *const[]){"-c", script, "bash", ARPC_SOURCE_DIR, NULL});
}

static bool cmake_ran(void) { return access(g_cmake_log, F_OK) == 0; }

/* The README's first command needs no test tools: a user without Go, clang or cmocka builds. */
static void test_demo_builds_without_the_test_tools(void **state)
{
    (void)state;
    struct call_run r;
    run_deps(&r, "arpc_build_release", "libcmocka-dev golang-go clang libclang-rt-dev ninja-build");
    assert_int_equal(0, r.status);
    assert_true(cmake_ran());
    assert_null(strstr(r.err, "needs"));
}

/* An optional part's package missing: said, with the line to install it, and the build goes on. */
static void test_demo_builds_without_an_optional_part(void **state)
{
    (void)state;
    struct call_run r;
    run_deps(&r, "arpc_build_release", "libjansson-dev golang-go");
    assert_int_equal(0, r.status);
    assert_true(cmake_ran());
    assert_non_null(strstr(r.err, "sudo apt-get install libjansson-dev\n"));
}

/* A package the build needs: named alone (not the test tools), and nothing is built. */
static void test_demo_stops_without_a_build_package(void **state)
{
    (void)state;
    struct call_run r;
    run_deps(&r, "arpc_build_release", "libev-dev golang-go");
    assert_int_equal(1, r.status);
    assert_false(cmake_ran());
    assert_non_null(strstr(r.err, "arpc needs these Debian packages: libev-dev\n"));
    assert_non_null(strstr(r.err, "sudo apt-get install libev-dev\n"));
}

/* The test suite still needs every package, the test tools included. */
static void test_suite_needs_everything(void **state)
{
    (void)state;
    struct call_run r;
    run_deps(&r, "arpc_install_deps", "golang-go");
    assert_int_equal(1, r.status);
    assert_non_null(strstr(r.err, "arpc needs these Debian packages: golang-go\n"));
    run_deps(&r, "arpc_install_deps", "");
    assert_int_equal(0, r.status);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_demo_builds_without_the_test_tools, setup, teardown),
        cmocka_unit_test_setup_teardown(test_demo_builds_without_an_optional_part, setup, teardown),
        cmocka_unit_test_setup_teardown(test_demo_stops_without_a_build_package, setup, teardown),
        cmocka_unit_test_setup_teardown(test_suite_needs_everything, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
