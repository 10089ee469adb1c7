/*
 * The client's call deadlines: a timing wheel (async/timer_wheel.h) under one loop deadline.
 *
 * A call's deadline was a loop heap entry of 40 bytes in every call record, used or not; a
 * wheel node is 16 (two links), in the block of a call that has a deadline only (struct
 * call_timed, with the deadline), and the wheel itself (8 KiB) is the client's. The node keeps
 * no time: the wheel asks call_due_ms, which reads the call's deadline; it never changes, so a
 * node stays armed from the call's first send or wait to its end (a waiting call's give-up
 * time is client_give_up.c's). Times are
 * whole milliseconds, rounded up, so a call never ends before its time; the loop deadline
 * (cl_wheel_timer) waits for the wheel's next time and fires through the loop as any other,
 * whichever kind of loop it is. Loop thread only.
 */
#include "arpc/error.h"
#include "base/clock.h"
#include "core/client_resend.h"

static uint64_t ms_now(void) { return arpc_now_ns() / ARPC_NS_PER_MS; }

static struct client_call *call_of_node(const struct arpc_wheel_node *n)
{
    return (struct client_call *)(void *)((char *)n - offsetof(struct call_timed, ct_node) + sizeof(struct call_timed));
}

/* When the call's node is due (ms, rounded up): its deadline (it has one). */
static uint64_t call_due_ms(const struct client_call *call)
{
    uint64_t when = call_timed(call)->ct_when;
    return when / ARPC_NS_PER_MS + (when % ARPC_NS_PER_MS != 0);
}

/* The wheel's time function: a call's node is due when the call says. */
static uint64_t node_due_ms(const struct arpc_wheel_node *n, void *arg)
{
    (void)arg;
    return call_due_ms(call_of_node(n));
}

/* Waits for the wheel's time need_ms, unless the loop deadline comes sooner already. */
static int wheel_wait_for(arpc_client *c, uint64_t need_ms)
{
    struct arpc_deadline *t = &c->cl_wheel_timer;
    uint64_t at = need_ms * ARPC_NS_PER_MS;
    if (c->cl_wheel_stopped || (arpc_deadline_is_armed(t) && t->d_when_ns <= at))
        return ARPC_OK;
    return arpc_deadline_arm(c->cl_loop, t, at);
}

static void on_call_due(struct arpc_wheel_node *n, void *arg)
{
    (void)arg;
    call_on_deadline(call_of_node(n));
}

static void on_wheel_timer(struct arpc_deadline *d, void *arg)
{
    (void)d;
    arpc_client *c = arg;
    uint64_t now = ms_now();
    /* Armed again first, while the loop's heap still has the room this deadline just left
     * (it shrinks only when a quarter full): the calls' callbacks below may arm other
     * deadlines into that room and leave none. Moved afterwards, in place: no memory, so the
     * calls still in the wheel cannot be left waiting for some later call to arm it. */
    (void)arpc_deadline_arm(c->cl_loop, &c->cl_wheel_timer, (now + 1) * ARPC_NS_PER_MS);
    (void)arpc_wheel_expire(&c->cl_wheel, now, on_call_due, NULL);
    uint64_t next = arpc_wheel_next(&c->cl_wheel);
    if (next == ARPC_WHEEL_NONE || c->cl_wheel_stopped)
        arpc_deadline_cancel(c->cl_loop, &c->cl_wheel_timer);
    else if (arpc_deadline_is_armed(&c->cl_wheel_timer))
        (void)arpc_deadline_arm(c->cl_loop, &c->cl_wheel_timer, next * ARPC_NS_PER_MS); /* a move */
    else
        (void)wheel_wait_for(c, next); /* out of memory even before the callbacks: the next
                                        * call_arm tries again */
}

void client_deadlines_init(arpc_client *c)
{
    arpc_wheel_init(&c->cl_wheel, ms_now(), node_due_ms, NULL);
    arpc_deadline_init(&c->cl_wheel_timer, on_wheel_timer, c);
    c->cl_wheel_stopped = false;
    give_up_init(c);
}

void client_deadlines_stop(arpc_client *c)
{
    /* Calls still in the wheel leave it as they finish (call_finish). */
    c->cl_wheel_stopped = true;
    arpc_deadline_cancel(c->cl_loop, &c->cl_wheel_timer);
    give_up_stop(c);
}

int call_arm(struct client_call *call)
{
    arpc_client *c = call_client(call);
    struct arpc_wheel_node *n = &call_timed(call)->ct_node;
    uint64_t need = arpc_wheel_add(&c->cl_wheel, n, call_due_ms(call));
    if (wheel_wait_for(c, need) != ARPC_OK) {
        arpc_wheel_remove(&c->cl_wheel, n);
        return ARPC_ENOMEM;
    }
    return ARPC_OK;
}

void call_disarm(struct client_call *call)
{
    if (call->cc_timed)
        arpc_wheel_remove(&call_client(call)->cl_wheel, &call_timed(call)->ct_node);
}
