/* A server in a child process (support/server_proc.h). */
#define _GNU_SOURCE
#include "support/server_proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/u64_map.h"

#define SERVE_FLAG "--arpc-test-serve"

/* ---- the child ---- */

/* The applied set: touched only inside handlers on one actor or, on the pool, under a lock. */
static struct arpc_u64_map applied;
static uint64_t duplicates;
static pthread_mutex_t applied_mtx = PTHREAD_MUTEX_INITIALIZER;

static uint64_t apply_token(uint64_t token)
{
    pthread_mutex_lock(&applied_mtx);
    uint64_t r = 1;
    if (arpc_u64_map_get(&applied, token) != NULL) {
        duplicates++;
        r = 2;
    } else {
        arpc_u64_map_put(&applied, token, (void *)1);
    }
    pthread_mutex_unlock(&applied_mtx);
    return r;
}

static void recover(void *ctx, enum arpc_recover_kind kind, const void *data, size_t len)
{
    (void)ctx;
    uint64_t token;
    if (kind == ARPC_RECOVER_EFFECT && len == sizeof(token)) {
        memcpy(&token, data, sizeof(token));
        apply_token(token);
    }
}

static void h_apply(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const uint8_t *p = arpc_request_data(req, &len);
    uint64_t token;
    if (len < sizeof(token)) {
        arpc_reply_error(req, "short request");
        return;
    }
    memcpy(&token, p, sizeof(token));
    if (len >= sizeof(token) + 4) {
        uint32_t ms;
        memcpy(&ms, p + sizeof(token), sizeof(ms));
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL); /* a call in flight when the server is killed: the subject */
    }
    uint64_t r = apply_token(token);
    arpc_reply_durable(req, &token, sizeof(token), &r, sizeof(r));
}

static void h_stats(arpc_request *req, void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&applied_mtx);
    uint64_t out[2] = {arpc_u64_map_count(&applied), duplicates};
    pthread_mutex_unlock(&applied_mtx);
    arpc_reply(req, out, sizeof(out));
}

static volatile sig_atomic_t stop_requested;
static void on_term(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int serve(const char *addr, const char *dir, int mode, int ready_fd)
{
    /* SIGTERM blocked before any arpc thread exists (they inherit the mask), so it can only
     * be taken by sigsuspend below: a handler run on another thread, or between the flag's
     * check and pause(), left the server waiting for ever. */
    sigset_t term, waiting;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, &waiting);
    sigdelset(&waiting, SIGTERM);
    signal(SIGTERM, on_term);
    arpc_u64_map_init(&applied, 1024);
    if (mode & SERVER_PROC_SMALL_DISK) {
        signal(SIGXFSZ, SIG_IGN); /* a write past the limit fails with EFBIG instead */
        struct rlimit small;
        if (getrlimit(RLIMIT_FSIZE, &small) != 0)
            return 1;
        small.rlim_cur = small.rlim_max < 64 * 1024 ? small.rlim_max : 64 * 1024;
        if (setrlimit(RLIMIT_FSIZE, &small) != 0)
            return 1;
    }
    char why[256] = "";
    arpc_server_options so = {.workers = 4, /* a slow call never holds up the others */
                              .log_dir = strcmp(dir, "-") == 0 ? NULL : dir,
                              .recover = recover,
                              .errbuf = why,
                              .errbuf_len = sizeof(why),
                              .fsync = ARPC_FSYNC_BATCH,
                              .log_compact_bytes = (mode & SERVER_PROC_COMPACT) ? SERVER_PROC_COMPACT_BYTES : 0,
                              .client_expiry_s = (mode & SERVER_PROC_EXPIRY_1S) ? 1 : 0};
    arpc_server *s;
    if (arpc_server_create(&s, &so) != ARPC_OK) {
        fprintf(stderr, "server_proc: %s\n", why);
        return 1;
    }
    arpc_actor *actor = NULL;
    arpc_method_options mo = {0};
    if (mode & SERVER_PROC_ACTOR) {
        if (arpc_actor_create(&actor, NULL) != ARPC_OK)
            return 1;
        mo.actor = actor;
    }
    char bound[256] = "";
    if (arpc_server_register(s, "t.apply", h_apply, NULL, &mo) != ARPC_OK ||
        arpc_server_register(s, "t.slow", h_apply, NULL, &mo) != ARPC_OK ||
        arpc_server_register(s, "t.stats", h_stats, NULL, &mo) != ARPC_OK ||
        arpc_server_listen(s, addr, bound, sizeof(bound)) != ARPC_OK)
        return 1;
    if (write(ready_fd, bound, sizeof(bound)) != (ssize_t)sizeof(bound))
        return 1;
    close(ready_fd);
    while (!stop_requested)
        sigsuspend(&waiting);
    arpc_server_destroy(s);
    if (actor != NULL)
        arpc_actor_destroy(actor);
    arpc_u64_map_fini(&applied);
    return 0;
}

void server_proc_main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], SERVE_FLAG) == 0)
        exit(serve(argv[2], argv[3], atoi(argv[4]), atoi(argv[5])));
}

/* ---- the parent ---- */

#define SERVER_PROC_MAX 16
static pid_t running[SERVER_PROC_MAX];

static void track(pid_t pid, bool on)
{
    for (int i = 0; i < SERVER_PROC_MAX; i++) {
        if (on ? running[i] == 0 : running[i] == pid) {
            running[i] = on ? pid : 0;
            return;
        }
    }
}

int server_proc_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < SERVER_PROC_MAX; i++) {
        if (running[i] != 0) {
            kill(running[i], SIGKILL);
            waitpid(running[i], NULL, 0);
            running[i] = 0;
        }
    }
    return 0;
}

bool server_proc_start(struct server_proc *sp, const char *addr, const char *dir, int mode)
{
    int pipefd[2];
    if (pipe(pipefd) != 0)
        return false;
    char mode_s[16], fd_s[16], exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        return false;
    exe[n] = '\0';
    snprintf(mode_s, sizeof(mode_s), "%d", mode);
    snprintf(fd_s, sizeof(fd_s), "%d", pipefd[1]);
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        close(pipefd[0]);
        /* Not the test's stdout: a server left behind must not hold a pipe reader open. */
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, STDOUT_FILENO);
        execl(exe, exe, SERVE_FLAG, addr, dir, mode_s, fd_s, (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    char bound[256] = "";
    ssize_t got = read(pipefd[0], bound, sizeof(bound)); /* blocks until it listens (or dies) */
    close(pipefd[0]);
    if (got != (ssize_t)sizeof(bound)) {
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        fprintf(stderr, "server_proc: the server on %s did not come up (exit %d, signal %d)\n", addr,
                WIFEXITED(status) ? WEXITSTATUS(status) : -1, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        return false;
    }
    sp->sp_pid = pid;
    track(pid, true);
    sp->sp_mode = mode;
    snprintf(sp->sp_addr, sizeof(sp->sp_addr), "%s", bound);
    snprintf(sp->sp_dir, sizeof(sp->sp_dir), "%s", dir);
    return true;
}

void server_proc_kill(struct server_proc *sp)
{
    kill(sp->sp_pid, SIGKILL);
    waitpid(sp->sp_pid, NULL, 0);
    track(sp->sp_pid, false);
}

void server_proc_stop(struct server_proc *sp)
{
    kill(sp->sp_pid, SIGTERM);
    waitpid(sp->sp_pid, NULL, 0);
    track(sp->sp_pid, false);
}

void server_proc_mkdir(char *dir, size_t len)
{
    snprintf(dir, len, "/tmp/arpc-test-log-XXXXXX");
    if (mkdtemp(dir) == NULL)
        dir[0] = '\0';
}

void server_proc_rmdir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

bool server_proc_stats(const char *addr, uint64_t *applied_out, uint64_t *dups)
{
    arpc_client *c;
    if (arpc_client_connect(&c, addr, NULL) != ARPC_OK)
        return false;
    void *reply = NULL;
    size_t len = 0;
    int rc = arpc_call(c, "t.stats", "", 0, &reply, &len, 10000);
    bool ok = rc == ARPC_OK && len == 2 * sizeof(uint64_t);
    if (ok) {
        memcpy(applied_out, reply, sizeof(uint64_t));
        memcpy(dups, (uint8_t *)reply + sizeof(uint64_t), sizeof(uint64_t));
    }
    arpc_free(reply);
    arpc_client_close(c);
    return ok;
}
