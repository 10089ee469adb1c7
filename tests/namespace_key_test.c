/*
 * The namespace secret kept beside a reply log (core/server_namespace.c): a log that
 * remembers clients and lost its namespace.key refuses to start, naming the file and what to
 * do (a new secret, under the same epoch, would let calls made before run again); a new
 * directory, or a log that remembers no client, gets a new one.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "base/le.h"
#include "base/siphash.h"
#include "support/server_proc.h"
#include "support/test_util.h"

#define KEY_SIZE 16

static void key_path(const char *dir, char *out, size_t len) { snprintf(out, len, "%s/namespace.key", dir); }

static bool read_key(const char *dir, uint8_t key[KEY_SIZE])
{
    char path[512];
    key_path(dir, path, sizeof(path));
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, key, KEY_SIZE);
    close(fd);
    return n == KEY_SIZE;
}

static void write_key(const char *dir, const uint8_t key[KEY_SIZE])
{
    char path[512];
    key_path(dir, path, sizeof(path));
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(KEY_SIZE, write(fd, key, KEY_SIZE));
    close(fd);
}

static void remove_key(const char *dir)
{
    char path[512];
    key_path(dir, path, sizeof(path));
    assert_int_equal(0, unlink(path));
}

static bool check_exists(const char *dir)
{
    char path[512];
    struct stat st;
    snprintf(path, sizeof(path), "%s/namespace.check", dir);
    return stat(path, &st) == 0;
}

/* The check's 8 bytes into out; false if it cannot be read. */
static bool read_check(const char *dir, uint8_t out[8])
{
    char path[512];
    snprintf(path, sizeof(path), "%s/namespace.check", dir);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, out, 8);
    close(fd);
    return n == 8;
}

static void remove_check(const char *dir)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/namespace.check", dir);
    assert_int_equal(0, unlink(path));
}

/* Removes the log's segments (*.arpclog); returns how many. */
static int remove_segments(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    char path[1024];
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len > 8 && strcmp(e->d_name + len - 8, ".arpclog") == 0) {
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            assert_int_equal(0, unlink(path));
            n++;
        }
    }
    closedir(d);
    return n;
}

static void expect_words(const char *why, const char *want)
{
    if (strstr(why, want) == NULL)
        print_message("want \"%s\" in \"%s\"\n", want, why);
    assert_non_null(strstr(why, want));
}

static int create(arpc_server **s, const char *dir, char *why, size_t whylen)
{
    arpc_server_options so = {.log_dir = dir, .errbuf = why, .errbuf_len = whylen};
    why[0] = '\0';
    return arpc_server_create(s, &so);
}

/* One at-most-once call, logged. The server stops while its client is still there (no
 * goodbye: the log remembers the client), or, with goodbye, after the client said goodbye
 * and the server forgot it (the log remembers its floor only). */
static void serve_one_call_then(const char *dir, bool goodbye)
{
    arpc_server *s;
    char why[512];
    assert_int_equal(ARPC_OK, create(&s, dir, why, sizeof(why)));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    assert_int_equal(ARPC_OK, arpc_call(c, "t.echo", "x", 1, NULL, NULL, 10000));
    if (goodbye) {
        arpc_client_close(c);
        assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, reply_cache_clients), 0, TEST_WAIT_MS));
    }
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    if (!goodbye)
        arpc_client_close(c);
}

static void serve_one_call(const char *dir) { serve_one_call_then(dir, false); }

static void test_missing_key_beside_a_log_with_clients_refuses(void **state)
{
    (void)state;
    char dir[256];
    server_proc_mkdir(dir, sizeof(dir));
    serve_one_call(dir);
    uint8_t key[KEY_SIZE];
    assert_true(read_key(dir, key));
    remove_key(dir);

    arpc_server *s;
    char why[1024], want[600];
    assert_int_equal(ARPC_EPROTO, create(&s, dir, why, sizeof(why)));
    snprintf(want, sizeof(want), "namespace secret %s/namespace.key is missing", dir);
    if (strstr(why, want) == NULL)
        print_message("want \"%s\" in \"%s\"\n", want, why);
    assert_non_null(strstr(why, want));
    assert_non_null(strstr(why, "refusing to start"));
    assert_non_null(strstr(why, "restore namespace.key from a backup"));
    assert_non_null(strstr(why, "move the directory away"));
    uint8_t none[KEY_SIZE];
    assert_false(read_key(dir, none)); /* no new secret was made */

    /* The secret restored: the server starts. */
    write_key(dir, key);
    assert_int_equal(ARPC_OK, create(&s, dir, why, sizeof(why)));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    server_proc_rmdir(dir);
}

/* A log whose one client said goodbye remembers only its floor (its replies are gone): that
 * still guards the key, or a late copy of a call from before the goodbye would run again. */
static void test_missing_key_beside_a_log_with_only_a_goodbye_refuses(void **state)
{
    (void)state;
    char dir[256];
    server_proc_mkdir(dir, sizeof(dir));
    serve_one_call_then(dir, true);
    arpc_server *s;
    char why[1024];
    remove_key(dir);
    assert_int_equal(ARPC_EPROTO, create(&s, dir, why, sizeof(why)));
    expect_words(why, "is missing, but the reply log there remembers clients");
    server_proc_rmdir(dir);
}

static void test_new_directory_and_log_without_clients_get_a_key(void **state)
{
    (void)state;
    char dir[256];
    server_proc_mkdir(dir, sizeof(dir));
    arpc_server *s;
    char why[1024];
    assert_int_equal(ARPC_OK, create(&s, dir, why, sizeof(why)));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    uint8_t first[KEY_SIZE], second[KEY_SIZE];
    assert_true(read_key(dir, first));
    /* Its log has segments but remembers no client (as after a first start that crashed
     * before writing the secret): a new secret loses nothing. */
    remove_key(dir);
    assert_int_equal(ARPC_OK, create(&s, dir, why, sizeof(why)));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    assert_true(read_key(dir, second));
    assert_memory_not_equal(first, second, KEY_SIZE);
    /* A key its check does not match, beside a log that remembers no client: nothing to lose,
     * it is taken and the check made anew for it. */
    uint8_t check_second[8], check_first[8];
    assert_true(read_check(dir, check_second));
    write_key(dir, first);
    assert_int_equal(ARPC_OK, create(&s, dir, why, sizeof(why)));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    assert_true(read_check(dir, check_first));
    assert_memory_not_equal(check_second, check_first, 8);
    /* Which then guards it: once the log remembers a client, the other key is refused. */
    serve_one_call(dir);
    write_key(dir, second);
    assert_int_equal(ARPC_EPROTO, create(&s, dir, why, sizeof(why)));
    write_key(dir, first);
    assert_int_equal(ARPC_OK, create(&s, dir, why, sizeof(why)));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    server_proc_rmdir(dir);
}

/* A key that is not the log's (a wrong backup, or one made by hand for a log that had one):
 * before, the server started with it and the calls the log remembered ran again. */
static void test_wrong_key_beside_a_log_with_clients_refuses(void **state)
{
    (void)state;
    char dir[256];
    server_proc_mkdir(dir, sizeof(dir));
    serve_one_call(dir);
    uint8_t key[KEY_SIZE], other[KEY_SIZE];
    assert_true(read_key(dir, key));
    assert_true(check_exists(dir));
    memcpy(other, key, KEY_SIZE);
    other[0] ^= 0x01;
    write_key(dir, other);

    arpc_server *s;
    char why[1024], want[600];
    assert_int_equal(ARPC_EPROTO, create(&s, dir, why, sizeof(why)));
    snprintf(want, sizeof(want), "namespace secret %s/namespace.key is not the one the reply log there was written with",
             dir);
    expect_words(why, want);
    expect_words(why, "refusing to start");
    expect_words(why, "move the directory away");

    /* The log's own key back: the server starts. */
    write_key(dir, key);
    assert_int_equal(ARPC_OK, create(&s, dir, why, sizeof(why)));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    server_proc_rmdir(dir);
}

/* A log written before the check existed (or a crash between the key and its check) gets a
 * check from the key there, which then guards it. */
static void test_key_without_a_check_gets_one(void **state)
{
    (void)state;
    char dir[256];
    server_proc_mkdir(dir, sizeof(dir));
    serve_one_call(dir);
    remove_check(dir);
    arpc_server *s;
    char why[1024];
    assert_int_equal(ARPC_OK, create(&s, dir, why, sizeof(why)));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    assert_true(check_exists(dir));
    uint8_t other[KEY_SIZE] = {1, 2, 3};
    write_key(dir, other);
    assert_int_equal(ARPC_EPROTO, create(&s, dir, why, sizeof(why)));
    expect_words(why, "is not the one the reply log there was written with");
    server_proc_rmdir(dir);
}

static void write_check(const char *dir, const uint8_t check[8])
{
    char path[512];
    snprintf(path, sizeof(path), "%s/namespace.check", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(8, write(fd, check, 8));
    close(fd);
}

/* Two logs that remember a client each, in directories of 256 bytes. */
static void two_logs_with_a_client(char *dir, char *other_dir)
{
    server_proc_mkdir(dir, 256);
    server_proc_mkdir(other_dir, 256);
    serve_one_call(dir);
    serve_one_call(other_dir);
}

/* Another log's key and check, both restored from the wrong backup: they agree with each
 * other, not with this log. Before, the check covered the key alone, so the pair was taken,
 * and a re-sent call the log remembered ran again (a review). */
static void test_another_logs_key_and_check_refuse(void **state)
{
    (void)state;
    char dir[256], other_dir[256];
    two_logs_with_a_client(dir, other_dir);
    uint8_t key[KEY_SIZE], check[8], other_key[KEY_SIZE], other_check[8];
    assert_true(read_key(dir, key) && read_check(dir, check));
    assert_true(read_key(other_dir, other_key) && read_check(other_dir, other_check));
    write_key(dir, other_key);
    write_check(dir, other_check);
    arpc_server *s;
    char why[1024];
    assert_int_equal(ARPC_EPROTO, create(&s, dir, why, sizeof(why)));
    expect_words(why, "is not the one the reply log there was written with");
    write_key(dir, key); /* its own pair back: it starts */
    write_check(dir, check);
    assert_int_equal(ARPC_OK, create(&s, dir, why, sizeof(why)));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    server_proc_rmdir(dir);
    server_proc_rmdir(other_dir);
}

/* A check of the key alone (written before the log's epoch was in it) is taken, and written
 * again tied to the log: from then on another log's pair is refused. */
static void test_a_check_of_the_key_alone_is_tied_to_the_log(void **state)
{
    (void)state;
    char dir[256], other_dir[256];
    two_logs_with_a_client(dir, other_dir);
    uint8_t key[KEY_SIZE], alone[8], now[8];
    assert_true(read_key(dir, key));
    static const char msg[] = "arpc namespace.key check";
    le_st64(alone, arpc_siphash24(key, msg, sizeof(msg) - 1));
    write_check(dir, alone);
    arpc_server *s;
    char why[1024];
    assert_int_equal(ARPC_OK, create(&s, dir, why, sizeof(why)));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    assert_true(read_check(dir, now));
    assert_memory_not_equal(alone, now, 8); /* written again, with the epoch */
    uint8_t other_key[KEY_SIZE], other_check[8];
    assert_true(read_key(other_dir, other_key) && read_check(other_dir, other_check));
    write_key(dir, other_key);
    write_check(dir, other_check);
    assert_int_equal(ARPC_EPROTO, create(&s, dir, why, sizeof(why)));
    server_proc_rmdir(dir);
    server_proc_rmdir(other_dir);
}

/* The key is written after the log's first segment, so a key without segments means they were
 * removed: before, the server started empty under a new epoch, its state gone, in silence. */
static void test_removed_segments_refuse(void **state)
{
    (void)state;
    char dir[256];
    server_proc_mkdir(dir, sizeof(dir));
    serve_one_call(dir);
    assert_true(remove_segments(dir) > 0);
    arpc_server *s;
    char why[1024], want[600];
    for (int i = 0; i < 2; i++) { /* and it stays refused: nothing was created */
        assert_int_equal(ARPC_EPROTO, create(&s, dir, why, sizeof(why)));
        snprintf(want, sizeof(want), "reply log %s holds no segment", dir);
        expect_words(why, want);
        expect_words(why, "namespace.key");
        expect_words(why, "refusing to start");
        assert_int_equal(0, remove_segments(dir));
    }
    server_proc_rmdir(dir);
}

int main(int argc, char **argv)
{
    server_proc_main(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_key_beside_a_log_with_clients_refuses),
        cmocka_unit_test(test_missing_key_beside_a_log_with_only_a_goodbye_refuses),
        cmocka_unit_test(test_new_directory_and_log_without_clients_get_a_key),
        cmocka_unit_test(test_wrong_key_beside_a_log_with_clients_refuses),
        cmocka_unit_test(test_key_without_a_check_gets_one),
        cmocka_unit_test(test_removed_segments_refuse),
        cmocka_unit_test(test_another_logs_key_and_check_refuse),
        cmocka_unit_test(test_a_check_of_the_key_alone_is_tied_to_the_log),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
