/*
 * Deadlines: one ev_timer per loop over a heap of intrusive entries (async/deadline_heap.h).
 *
 * arm/cancel only touch the heap; the ev_prepare watcher, which libev runs just before it
 * computes how long to block, points the timer at the heap top when that changed. A task that
 * arms 100k deadlines thus re-arms the timer once. The timer callback fires every due deadline
 * that existed when it started; ones armed (or moved) by those callbacks, even if already due,
 * wait for the next loop iteration so a callback re-arming itself in the past cannot livelock
 * the loop, and the order (time, then arm order) still holds.
 */
#include "async/loop_impl.h"

#include "base/clock.h"

/* Loop thread: points the one ev_timer at top's time; NULL disarms it. */
static void loop_timer_set(arpc_loop *loop, const struct arpc_deadline *top)
{
    ev_timer_stop(loop->l_ev, &loop->l_timer);
    loop->l_timer_armed = top != NULL;
    if (top == NULL)
        return;
    loop->l_timer_when = top->d_when_ns;
    /* libev counts the delay from its cached loop time, which lags behind after long
     * callbacks. Read our clock first, then refresh libev's: the timer then cannot expire
     * before when_ns (timer_cb re-checks anyway, against rounding). */
    uint64_t now = arpc_now_ns();
    ev_now_update(loop->l_ev);
    ev_tstamp delay = top->d_when_ns > now ? (ev_tstamp)(top->d_when_ns - now) * 1e-9 : 0.;
    ev_timer_set(&loop->l_timer, delay, 0.);
    ev_timer_start(loop->l_ev, &loop->l_timer);
}

static void loop_prepare_cb(struct ev_loop *ev, ev_prepare *w, int revents)
{
    arpc_loop *loop = w->data;
    (void)ev;
    (void)revents;
    const struct arpc_deadline *top = arpc_deadline_heap_top(&loop->l_deadlines);
    bool same = top != NULL ? loop->l_timer_armed && loop->l_timer_when == top->d_when_ns
                            : !loop->l_timer_armed;
    if (!same)
        loop_timer_set(loop, top);
}

static void loop_timer_cb(struct ev_loop *ev, ev_timer *w, int revents)
{
    arpc_loop *loop = w->data;
    struct arpc_deadline_heap *h = &loop->l_deadlines;
    (void)ev;
    (void)revents;
    loop->l_timer_armed = false; /* one-shot: inactive now; prepare_cb re-arms it */
    uint64_t now = arpc_now_ns();
    uint64_t seq_end = h->h_next_seq; /* deadlines armed from here on wait one iteration */
    for (size_t n = 0; n < LOOP_FIRE_BATCH; n++) {
        struct arpc_deadline *d = arpc_deadline_heap_top(h);
        if (d == NULL || d->d_when_ns > now || d->d_seq >= seq_end)
            break;
        arpc_deadline_heap_remove(h, d); /* disarmed before its callback, which may re-arm it */
        d->d_fn(d, d->d_arg);
    }
}

#define LOOP_POLL_SLACK_NS 1000000u /* epoll_wait counts in milliseconds */

uint64_t loop_poll_slack_ns(uint64_t timeout_ns)
{
    uint64_t slack = timeout_ns / LOOP_KERNEL_SLACK_DIV;
    slack = slack > LOOP_KERNEL_SLACK_MAX_NS ? LOOP_KERNEL_SLACK_MAX_NS : slack;
    return LOOP_POLL_SLACK_NS + (slack < LOOP_KERNEL_SLACK_MIN_NS ? LOOP_KERNEL_SLACK_MIN_NS : slack);
}

uint64_t loop_next_deadline_ns(arpc_loop *loop)
{
    const struct arpc_deadline *top = arpc_deadline_heap_top(&loop->l_deadlines);
    if (top == NULL || top->d_when_ns >= ARPC_NEVER - LOOP_POLL_SLACK_NS - LOOP_KERNEL_SLACK_MAX_NS)
        return ARPC_NEVER;
    uint64_t now = arpc_now_ns();
    return top->d_when_ns + loop_poll_slack_ns(top->d_when_ns > now ? top->d_when_ns - now : 0);
}

int arpc_deadline_arm(arpc_loop *loop, struct arpc_deadline *d, uint64_t when_ns)
{
    return arpc_deadline_heap_push(&loop->l_deadlines, d, when_ns);
}

int arpc_deadline_arm_after_s(arpc_loop *loop, struct arpc_deadline *d, double seconds)
{
    uint64_t now = arpc_now_ns();
    double ns = seconds > 0 ? seconds * 1e9 : 0.;
    uint64_t when = ns >= (double)(UINT64_MAX - now) ? UINT64_MAX : now + (uint64_t)ns;
    return arpc_deadline_arm(loop, d, when);
}

double arpc_loop_now(const arpc_loop *loop) { return loop->l_now; }

double arpc_loop_now_update(arpc_loop *loop) { return loop->l_now = (double)arpc_now_ns() * 1e-9; }

void arpc_deadline_cancel(arpc_loop *loop, struct arpc_deadline *d)
{
    arpc_deadline_heap_remove(&loop->l_deadlines, d);
}

size_t arpc_loop_deadline_count(arpc_loop *loop)
{
    return arpc_deadline_heap_len(&loop->l_deadlines);
}

void loop_timers_init(arpc_loop *loop)
{
    arpc_deadline_heap_init(&loop->l_deadlines);
    (void)arpc_loop_now_update(loop);
    ev_prepare_init(&loop->l_prepare, loop_prepare_cb);
    loop->l_prepare.data = loop;
    ev_prepare_start(loop->l_ev, &loop->l_prepare);
    ev_timer_init(&loop->l_timer, loop_timer_cb, 0., 0.);
    loop->l_timer.data = loop;
}

void loop_timers_fini(arpc_loop *loop)
{
    ev_prepare_stop(loop->l_ev, &loop->l_prepare);
    ev_timer_stop(loop->l_ev, &loop->l_timer);
    arpc_deadline_heap_fini(&loop->l_deadlines);
}
