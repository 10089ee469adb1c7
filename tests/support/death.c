/*
 * Death tests (death.h). The child's stderr goes to a pipe the parent reads to the end
 * before it waits, so a chatty child cannot block on a full pipe.
 */
#include "support/death.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "arpc/log.h"

bool dies_with_abort(void (*fn)(void *arg), void *arg, const char *needle)
{
    int fds[2];
    if (pipe(fds) != 0)
        return false;
    fflush(NULL); /* nothing buffered is written twice */
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return false;
    }
    if (pid == 0) {
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        arpc_set_logger(NULL, NULL, ARPC_LOG_ERROR);
        fn(arg);
        _exit(0);
    }
    close(fds[1]);
    char out[4096], spill[512];
    size_t len = 0;
    for (;;) {
        /* Past the first 4 KiB the rest is read and dropped. */
        bool room = len < sizeof(out) - 1;
        ssize_t n = room ? read(fds[0], out + len, sizeof(out) - 1 - len) : read(fds[0], spill, sizeof(spill));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (room)
            len += (size_t)n;
    }
    close(fds[0]);
    out[len] = '\0';
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        return false;
    bool aborted = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
    if (!aborted || strstr(out, needle) == NULL)
        fprintf(stderr, "death test: status 0x%x, wanted SIGABRT and \"%s\"; the child wrote:\n%s\n", status,
                needle, out);
    return aborted && strstr(out, needle) != NULL;
}
