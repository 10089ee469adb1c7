/*
 * arpc-call as a child process (support/call_run.h): its outputs go to unlinked temporary
 * files, read back once it exited, so no pipe can fill and stall it.
 */
#include "support/call_run.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CALL_RUN_ARGS_MAX 30

extern char **environ;

static int temp_file(void)
{
    char path[] = "/tmp/arpc-call-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    return fd;
}

static size_t slurp(int fd, char *buf, size_t cap)
{
    lseek(fd, 0, SEEK_SET);
    size_t n = 0;
    ssize_t r;
    while (n < cap - 1 && (r = read(fd, buf + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = '\0';
    close(fd);
    return n;
}

#include <fcntl.h>

/* call_run, its standard output out_path when not NULL. */
static void run(struct call_run *r, const char *bin, const void *in, size_t in_len, const char *out_path,
                const char *const *args)
{
    char *argv[CALL_RUN_ARGS_MAX + 2];
    int argc = 0;
    argv[argc++] = (char *)bin;
    for (; args[argc - 1] != NULL; argc++) {
        assert_true(argc <= CALL_RUN_ARGS_MAX);
        argv[argc] = (char *)args[argc - 1];
    }
    argv[argc] = NULL;
    int out = out_path != NULL ? open(out_path, O_WRONLY) : temp_file(), err = temp_file(), input = temp_file();
    assert_true(out >= 0);
    if (in != NULL) {
        assert_int_equal((ssize_t)in_len, write(input, in, in_len));
        lseek(input, 0, SEEK_SET);
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, input, 0);
    posix_spawn_file_actions_adddup2(&fa, out, 1);
    posix_spawn_file_actions_adddup2(&fa, err, 2);
    pid_t pid;
    assert_int_equal(0, posix_spawn(&pid, bin, &fa, NULL, argv, environ));
    posix_spawn_file_actions_destroy(&fa);
    int ws;
    assert_int_equal(pid, waitpid(pid, &ws, 0));
    r->status = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
    close(input);
    if (out_path != NULL) {
        close(out);
        r->out[0] = '\0';
        r->out_len = 0;
    } else {
        r->out_len = slurp(out, r->out, sizeof(r->out));
    }
    r->err_len = slurp(err, r->err, sizeof(r->err));
    if (r->err_len > 0)
        print_message("%s stderr: %s", strrchr(bin, '/') != NULL ? strrchr(bin, '/') + 1 : bin, r->err);
}

void call_run(struct call_run *r, const char *bin, const void *in, size_t in_len, const char *const *args)
{
    run(r, bin, in, in_len, NULL, args);
}

void call_run_stdout(struct call_run *r, const char *bin, const char *out_path, const char *const *args)
{
    run(r, bin, NULL, 0, out_path, args);
}

size_t call_run_lines(const char *text)
{
    size_t n = 0;
    for (; *text != '\0'; text++)
        n += *text == '\n';
    return n;
}
