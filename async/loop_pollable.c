/*
 * Driving a loop from another event loop (epoll, poll, glib, ...) with no arpc thread: the
 * application polls one fd and calls arpc_loop_run_nowait, which runs what is ready and says
 * how long the application may sleep, the way libuv's backend fd, backend timeout and
 * UV_RUN_NOWAIT do.
 *
 * The fd. libev does not give out its backend's fd, so a pollable loop keeps an epoll set of
 * its own beside libev's: every fd watcher start and stop goes through arpc_loop_io_start/stop,
 * which mirror the interest (read, write) of each fd into the set, and every wake-up of the
 * loop (the ev_async other threads send) also writes an eventfd that sits in the set. The set
 * is readable exactly when libev would have something to do but timers. Its cost, one
 * epoll_ctl per watcher change, is paid by pollable loops only.
 *
 * The timeout. Every timer arpc arms for connections and calls is a deadline on the loop's heap
 * (async/loop_timers.c; the one ev_timer left, arpc_loop_run_until's, lives only in a blocking wait),
 * so its top is the next time the loop needs to run.
 *
 * A step. A connection flushes its queued frames in a prepare watcher at the start of the next
 * libev iteration; frames queued by this iteration's callbacks must leave before the driver
 * sleeps, so a step iterates while such work is due (a bounded number of times, then it
 * reports a zero timeout).
 */
#include "async/loop_impl.h"

#include <errno.h>
#include <limits.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"

#define LOOP_STEP_ITERATIONS 16 /* libev iterations per step, at most */
#define LOOP_DEGRADED_MS 10     /* sleep bound once the mirror could not follow (no memory) */

struct fd_interest {
    uint32_t fi_readers, fi_writers; /* active watchers of the fd, per direction */
};

struct loop_poll_set {
    int ps_epoll;                   /* what arpc_loop_fd gives out */
    int ps_wake;                    /* eventfd in ps_epoll, written by every wake-up */
    struct fd_interest *ps_fds;     /* indexed by fd */
    size_t ps_nfds;
    bool ps_degraded;               /* the mirror missed a change: never sleep long */
};

int loop_poll_init(arpc_loop *loop)
{
    struct loop_poll_set *ps = arpc_calloc(1, sizeof(*ps));
    if (ps == NULL)
        return ARPC_ENOMEM;
    ps->ps_epoll = epoll_create1(EPOLL_CLOEXEC);
    ps->ps_wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ps->ps_wake};
    if (ps->ps_epoll < 0 || ps->ps_wake < 0 || epoll_ctl(ps->ps_epoll, EPOLL_CTL_ADD, ps->ps_wake, &ev) != 0) {
        if (ps->ps_epoll >= 0)
            close(ps->ps_epoll);
        if (ps->ps_wake >= 0)
            close(ps->ps_wake);
        arpc_free(ps);
        return ARPC_ESYSTEM;
    }
    loop->l_poll = ps;
    return ARPC_OK;
}

void loop_poll_fini(arpc_loop *loop)
{
    struct loop_poll_set *ps = loop->l_poll;
    if (ps == NULL)
        return;
    close(ps->ps_epoll);
    close(ps->ps_wake);
    arpc_free(ps->ps_fds);
    arpc_free(ps);
    loop->l_poll = NULL;
}

void loop_poll_signal(arpc_loop *loop)
{
    if (loop->l_poll != NULL)
        (void)eventfd_write(loop->l_poll->ps_wake, 1); /* only fails when the counter is full: still readable */
}

static void poll_set_degraded(struct loop_poll_set *ps, const char *why)
{
    if (!ps->ps_degraded)
        arpc_log(ARPC_LOG_ERROR, "pollable loop: %s; arpc_loop_run_nowait now asks to be called every %d ms",
                 why, LOOP_DEGRADED_MS);
    ps->ps_degraded = true;
}

static struct fd_interest *poll_interest(struct loop_poll_set *ps, int fd)
{
    if ((size_t)fd >= ps->ps_nfds) {
        size_t n = ps->ps_nfds ? ps->ps_nfds : 64;
        while (n <= (size_t)fd)
            n *= 2;
        struct fd_interest *fds = arpc_realloc(ps->ps_fds, n * sizeof(*fds));
        if (fds == NULL)
            return NULL;
        for (size_t i = ps->ps_nfds; i < n; i++)
            fds[i] = (struct fd_interest){0, 0};
        ps->ps_fds = fds;
        ps->ps_nfds = n;
    }
    return &ps->ps_fds[fd];
}

static uint32_t interest_mask(const struct fd_interest *fi)
{
    return (fi->fi_readers ? EPOLLIN : 0u) | (fi->fi_writers ? EPOLLOUT : 0u);
}

/* Applies one watcher's start (+1) or stop (-1) on fd to the set. */
static void poll_mirror(struct loop_poll_set *ps, int fd, int events, int delta)
{
    struct fd_interest *fi = poll_interest(ps, fd);
    if (fi == NULL) {
        poll_set_degraded(ps, "out of memory for the fd table");
        return;
    }
    uint32_t before = interest_mask(fi);
    if (events & EV_READ)
        fi->fi_readers += (uint32_t)delta;
    if (events & EV_WRITE)
        fi->fi_writers += (uint32_t)delta;
    uint32_t after = interest_mask(fi);
    if (before == after)
        return;
    struct epoll_event ev = {.events = after, .data.fd = fd};
    int op = before == 0 ? EPOLL_CTL_ADD : after == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (epoll_ctl(ps->ps_epoll, op, fd, &ev) == 0)
        return;
    /* A closed fd leaves the set by itself (ENOENT, EBADF on the way out); one reused before
     * its old watcher stopped is already in it (EEXIST). */
    if (op == EPOLL_CTL_ADD && errno == EEXIST && epoll_ctl(ps->ps_epoll, EPOLL_CTL_MOD, fd, &ev) == 0)
        return;
    if (op == EPOLL_CTL_MOD && errno == ENOENT && epoll_ctl(ps->ps_epoll, EPOLL_CTL_ADD, fd, &ev) == 0)
        return;
    if (op != EPOLL_CTL_DEL)
        poll_set_degraded(ps, "epoll_ctl failed");
}

void arpc_loop_io_start(arpc_loop *loop, ev_io *w)
{
    if (ev_is_active(w))
        return;
    ev_io_start(loop->l_ev, w);
    if (loop->l_poll != NULL)
        poll_mirror(loop->l_poll, w->fd, w->events, +1);
}

void arpc_loop_io_stop(arpc_loop *loop, ev_io *w)
{
    if (!ev_is_active(w))
        return;
    ev_io_stop(loop->l_ev, w);
    if (loop->l_poll != NULL)
        poll_mirror(loop->l_poll, w->fd, w->events, -1);
}

void arpc_loop_prepare_due(arpc_loop *loop) { loop->l_prepare_due = true; }

int arpc_loop_fd(arpc_loop *loop)
{
    if (!loop_live(loop, __func__) || loop->l_poll == NULL)
        return -1;
    return loop->l_poll->ps_epoll;
}

/* Claimed, on the driving thread: how long the driver may sleep. */
static int loop_sleep_ms(arpc_loop *loop)
{
    /* Jobs other threads posted need no look here: their wake-up makes the fd readable. */
    if (loop->l_prepare_due || loop->l_taken != NULL || ev_pending_count(loop->l_ev) > 0)
        return 0;
    int limit = loop->l_poll->ps_degraded ? LOOP_DEGRADED_MS : -1;
    const struct arpc_deadline *top = arpc_deadline_heap_top(&loop->l_deadlines);
    if (top == NULL)
        return limit;
    int ms = arpc_ms_left_int(top->d_when_ns); /* rounded up: never wakes before it is due */
    return ms < 0 || (limit >= 0 && ms > limit) ? limit : ms;
}

int arpc_loop_run_nowait(arpc_loop *loop, int *timeout_ms)
{
    if (timeout_ms != NULL)
        *timeout_ms = 0;
    if (!loop_live(loop, __func__) || loop->l_poll == NULL)
        return ARPC_EINVAL;
    if (loop_inside(loop) || !loop_owned_here(loop))
        return ARPC_EBUSY; /* inside one of its callbacks, or not the thread that runs it */
    int rc = loop_claim(loop);
    if (rc != ARPC_OK)
        return rc;
    eventfd_t ignored;
    (void)eventfd_read(loop->l_poll->ps_wake, &ignored); /* before running: a later wake-up stays seen */
    arpc_loop *outer = loop_tl_current;
    loop_tl_current = loop;
    for (int i = 0; i < LOOP_STEP_ITERATIONS && !loop->l_finished; i++) {
        loop->l_prepare_due = false;
        ev_run(loop->l_ev, EVRUN_NOWAIT);
        if (!loop->l_prepare_due)
            break;
    }
    int sleep_ms = loop_sleep_ms(loop);
    loop_tl_current = outer;
    if (loop->l_finished) {
        loop_end_run(loop); /* stopped during the step: ends its run as arpc_loop_run does */
        return ARPC_ESHUTDOWN;
    }
    loop_release(loop);
    if (timeout_ms != NULL)
        *timeout_ms = sleep_ms;
    return ARPC_OK;
}
