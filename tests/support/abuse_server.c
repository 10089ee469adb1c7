/* The abuse suite's server in a child process (support/abuse_server.h). */
#define _GNU_SOURCE
#include "support/abuse_server.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/test_util.h"

#define SERVE_FLAG "--arpc-abuse-serve"

/* ---- the child ---- */

static void h_big(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const void *p = arpc_request_data(req, &len);
    uint32_t n = 0;
    if (len >= sizeof(n))
        memcpy(&n, p, sizeof(n));
    void *buf = calloc(1, n > 0 ? n : 1);
    if (buf == NULL) {
        arpc_reply_error(req, "out of memory");
        return;
    }
    arpc_reply(req, buf, n);
    free(buf);
}

static int serve(const struct abuse_server_limits *lim, int ready_fd)
{
    /* SIGTERM is taken by sigwait below only: blocked before any arpc thread exists (they
     * inherit the mask), so no other thread can take it. */
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, NULL);
    struct sigaction sa = {.sa_handler = SIG_IGN};
    sigaction(SIGPIPE, &sa, NULL);
    /* One line per connection closed would drown the figures: errors only. */
    arpc_set_logger(NULL, NULL, ARPC_LOG_ERROR);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = lim->nofile != 0 ? lim->nofile : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    arpc_server_options so = {
        .handshake_timeout_ms = lim->handshake_timeout_ms,
        .frame_timeout_ms = lim->frame_timeout_ms,
        .idle_timeout_ms = lim->idle_timeout_ms,
        .max_connections = lim->max_connections,
        .max_accept_rate = lim->max_accept_rate,
        .accept_burst = lim->accept_burst,
        .max_fault_rate = lim->max_fault_rate,
    };
    arpc_server *s;
    char bound[256] = "";
    if (arpc_server_create(&s, &so) != ARPC_OK || arpc_server_register(s, "a.echo", test_echo, NULL, NULL) != ARPC_OK ||
        arpc_server_register(s, "a.big", h_big, NULL, NULL) != ARPC_OK ||
        arpc_server_listen(s, "tcp://127.0.0.1:0", bound, sizeof(bound)) != ARPC_OK)
        return 1;
    if (write(ready_fd, bound, sizeof(bound)) != (ssize_t)sizeof(bound))
        return 1;
    close(ready_fd);
    int sig = 0;
    sigwait(&term, &sig);
    return arpc_server_destroy(s) == ARPC_OK ? 0 : 1;
}

void abuse_server_main(int argc, char **argv)
{
    if (argc != 11 || strcmp(argv[1], SERVE_FLAG) != 0)
        return;
    struct abuse_server_limits lim = {
        .handshake_timeout_ms = (uint32_t)strtoul(argv[2], NULL, 10),
        .frame_timeout_ms = (uint32_t)strtoul(argv[3], NULL, 10),
        .idle_timeout_ms = (uint32_t)strtoul(argv[4], NULL, 10),
        .max_connections = (unsigned)strtoul(argv[5], NULL, 10),
        .nofile = (unsigned)strtoul(argv[6], NULL, 10),
        .max_accept_rate = (uint32_t)strtoul(argv[7], NULL, 10),
        .accept_burst = (uint32_t)strtoul(argv[8], NULL, 10),
        .max_fault_rate = (int32_t)strtol(argv[9], NULL, 10),
    };
    exit(serve(&lim, atoi(argv[10])));
}

/* ---- the parent ---- */

bool abuse_server_start(struct abuse_server *as, const struct abuse_server_limits *lim)
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0)
        return false;
    char exe[4096], a[8][16], fd_s[16];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        return false;
    exe[n] = '\0';
    snprintf(a[0], sizeof(a[0]), "%u", lim->handshake_timeout_ms);
    snprintf(a[1], sizeof(a[1]), "%u", lim->frame_timeout_ms);
    snprintf(a[2], sizeof(a[2]), "%u", lim->idle_timeout_ms);
    snprintf(a[3], sizeof(a[3]), "%u", lim->max_connections);
    snprintf(a[4], sizeof(a[4]), "%u", lim->nofile);
    snprintf(a[5], sizeof(a[5]), "%u", lim->max_accept_rate);
    snprintf(a[6], sizeof(a[6]), "%u", lim->accept_burst);
    snprintf(a[7], sizeof(a[7]), "%d", (int)lim->max_fault_rate);
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        int w = dup(pipefd[1]); /* without close-on-exec */
        snprintf(fd_s, sizeof(fd_s), "%d", w);
        int devnull = open("/dev/null", O_WRONLY); /* a server left behind holds no test pipe */
        if (devnull >= 0)
            dup2(devnull, STDOUT_FILENO);
        execl(exe, exe, SERVE_FLAG, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], fd_s, (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    char bound[256] = "";
    ssize_t got = read(pipefd[0], bound, sizeof(bound)); /* until it listens, or dies */
    close(pipefd[0]);
    if (got != (ssize_t)sizeof(bound)) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return false;
    }
    as->as_pid = pid;
    snprintf(as->as_addr, sizeof(as->as_addr), "%s", bound);
    return true;
}

bool abuse_server_alive(const struct abuse_server *as)
{
    return waitpid(as->as_pid, NULL, WNOHANG) == 0;
}

bool abuse_server_stop(struct abuse_server *as)
{
    if (kill(as->as_pid, SIGTERM) != 0)
        return false;
    int status = 0;
    if (waitpid(as->as_pid, &status, 0) != as->as_pid)
        return false;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

long abuse_server_rss_kib(const struct abuse_server *as)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)as->as_pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long kib = -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

long abuse_server_cpu_ms(const struct abuse_server *as)
{
    char path[64], stat[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)as->as_pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(stat, 1, sizeof(stat) - 1, f);
    fclose(f);
    stat[n] = '\0';
    /* After the command name (in parentheses, which may hold spaces): fields 3 on; utime and
     * stime are fields 14 and 15, in clock ticks. */
    const char *p = strrchr(stat, ')');
    unsigned long utime, stime;
    if (p == NULL || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1;
    return (long)((utime + stime) * 1000 / (unsigned long)sysconf(_SC_CLK_TCK));
}
