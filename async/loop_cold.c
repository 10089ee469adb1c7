/*
 * Cold fd watchers: read readiness served a bounded slice per loop turn.
 *
 * Why. libev hands one loop turn every fd epoll_wait found ready (its event array grows to
 * fit), so 10,000 connections closed at once by their peers make one turn of 10,000 reads and
 * closes, milliseconds long, while a connection with a call in flight waits behind them.
 * Leaving some ready fds unread does not bound the turn: a level-triggered fd is returned again
 * by every epoll_wait (and libev's lazy removal of a stopped watcher's fd costs an epoll_ctl per
 * fd in the next poll, as many at once). What bounds it is not asking the kernel for more than
 * we will serve.
 *
 * How. Cold watchers (an owner's connections that have not earned a place in the loop proper:
 * a server's connections until their first request) sit in an epoll set of their own, beside
 * libev's, and are never started in libev. The set's fd is one ordinary watcher of the loop
 * (through arpc_loop_io_start, so pollable and wrapped loops see it like any other), at the
 * lowest priority: in a turn, the loop's other watchers run first. Its callback asks the set
 * for at most lc_budget ready fds and invokes their watchers (ev_invoke, as libev would). Level
 * triggering does the rest: epoll puts each fd it returned back at the tail of its ready list,
 * so the cold fds are served round-robin, lc_budget a turn, and the set's fd stays readable
 * (the loop polls again at once) while any is ready.
 *
 * Reentrancy. A watcher invoked from a batch may stop another one of the same batch (a close
 * that frees a connection): cold_stop clears its entry in the batch, as ev_io_stop clears a
 * pending event. An event fed to a cold watcher (ev_feed_event, e.g. TLS bytes the stream holds)
 * is libev's, and is cleared by cold_stop too.
 */
#include "async/loop_impl.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/log.h"

/* Cold fds served per loop turn, by default. With 16, the good client's p50 while 10,000
 * connections closed was 2-3x what it is with 4 (tests/abuse_test.c). */
#define LOOP_COLD_BUDGET 4u

struct loop_cold {
    int lc_epfd;                   /* the cold watchers' fds, EPOLLIN (or hangups only), data.ptr = the watcher */
    ev_io lc_io;                   /* lc_epfd readable: some cold fd is ready */
    unsigned lc_budget;            /* fds per turn */
    size_t lc_count;               /* watchers in the set */
    struct epoll_event *lc_batch;  /* the batch being invoked (lc_budget entries) */
    int lc_batch_n;                /* its size; entries cleared by cold_stop have data.ptr NULL */
};

static void cold_on_ready(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)revents;
    struct loop_cold *lc = w->data;
    int n;
    do /* (a signal each time would leave the set unserved for good) */
        n = epoll_wait(lc->lc_epfd, lc->lc_batch, (int)lc->lc_budget, 0);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return; /* nothing after all: level-triggered, the loop comes back */
    lc->lc_batch_n = n;
    for (int i = 0; i < n; i++) {
        ev_io *cw = lc->lc_batch[i].data.ptr;
        if (cw != NULL) {
            lc->lc_batch[i].data.ptr = NULL;
            ev_invoke(ev, cw, EV_READ); /* hangups and errors too: the read sees them */
        }
    }
    lc->lc_batch_n = 0;
}

/* The set, made on first use (most loops never have a cold watcher). */
static struct loop_cold *cold_get(arpc_loop *loop)
{
    if (loop->l_cold != NULL)
        return loop->l_cold;
    struct loop_cold *lc = arpc_calloc(1, sizeof(*lc));
    if (lc == NULL)
        return NULL;
    lc->lc_budget = LOOP_COLD_BUDGET;
    lc->lc_batch = arpc_calloc(lc->lc_budget, sizeof(*lc->lc_batch));
    lc->lc_epfd = epoll_create1(EPOLL_CLOEXEC);
    if (lc->lc_batch == NULL || lc->lc_epfd < 0) {
        if (lc->lc_epfd >= 0)
            close(lc->lc_epfd);
        arpc_free(lc->lc_batch);
        arpc_free(lc);
        return NULL;
    }
    ev_io_init(&lc->lc_io, cold_on_ready, lc->lc_epfd, EV_READ);
    ev_set_priority(&lc->lc_io, EV_MINPRI);
    lc->lc_io.data = lc;
    arpc_loop_io_start(loop, &lc->lc_io);
    /* In the application's loop, the set keeps its ev_run going only while it holds watchers,
     * as their own libev watchers would (cold_start, cold_stop). */
    if (loop->l_wrapped)
        ev_unref(loop->l_ev);
    loop->l_cold = lc;
    return lc;
}

/* events: EPOLLIN, or 0 for the hangups and errors epoll always reports. */
static int cold_add(arpc_loop *loop, ev_io *w, uint32_t events)
{
    struct loop_cold *lc = cold_get(loop);
    if (lc == NULL)
        return ARPC_ENOMEM;
    struct epoll_event e = {.events = events, .data.ptr = w};
    if (epoll_ctl(lc->lc_epfd, EPOLL_CTL_ADD, w->fd, &e) != 0)
        return ARPC_ESYSTEM;
    if (lc->lc_count++ == 0 && loop->l_wrapped)
        ev_ref(loop->l_ev);
    return ARPC_OK;
}

int arpc_loop_cold_start(arpc_loop *loop, ev_io *w) { return cold_add(loop, w, EPOLLIN); }

int arpc_loop_cold_start_hangup(arpc_loop *loop, ev_io *w) { return cold_add(loop, w, 0); }

void arpc_loop_cold_stop(arpc_loop *loop, ev_io *w)
{
    struct loop_cold *lc = loop->l_cold;
    ev_clear_pending(loop->l_ev, w); /* an event fed to it must not run after this */
    if (lc == NULL)
        return;
    for (int i = 0; i < lc->lc_batch_n; i++)
        if (lc->lc_batch[i].data.ptr == w)
            lc->lc_batch[i].data.ptr = NULL;
    struct epoll_event e = {0}; /* pre-2.6.9 kernels want one for DEL */
    if (epoll_ctl(lc->lc_epfd, EPOLL_CTL_DEL, w->fd, &e) != 0)
        arpc_log(ARPC_LOG_ERROR, "cold watcher of fd %d: epoll_ctl DEL failed (errno %d)", w->fd, errno);
    else if (--lc->lc_count == 0 && loop->l_wrapped)
        ev_unref(loop->l_ev);
}

int arpc_loop_cold_budget(arpc_loop *loop, unsigned per_turn)
{
    if (per_turn == 0)
        return ARPC_EINVAL;
    struct loop_cold *lc = cold_get(loop);
    if (lc == NULL)
        return ARPC_ENOMEM;
    if (lc->lc_batch_n != 0)
        return ARPC_EBUSY; /* from inside a batch: it is being walked */
    struct epoll_event *batch = arpc_calloc(per_turn, sizeof(*batch));
    if (batch == NULL)
        return ARPC_ENOMEM;
    arpc_free(lc->lc_batch);
    lc->lc_batch = batch;
    lc->lc_budget = per_turn;
    return ARPC_OK;
}

size_t arpc_loop_cold_count(arpc_loop *loop) { return loop->l_cold != NULL ? loop->l_cold->lc_count : 0; }

void loop_cold_fini(arpc_loop *loop)
{
    struct loop_cold *lc = loop->l_cold;
    if (lc == NULL)
        return;
    if (loop->l_wrapped && lc->lc_count == 0)
        ev_ref(loop->l_ev); /* give back what cold_get took off */
    arpc_loop_io_stop(loop, &lc->lc_io);
    close(lc->lc_epfd);
    arpc_free(lc->lc_batch);
    arpc_free(lc);
    loop->l_cold = NULL;
}
