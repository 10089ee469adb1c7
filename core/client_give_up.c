/*
 * The waiting calls' give-up times (reconnect_give_up_ms): one loop deadline for them all.
 *
 * A call that begins to wait for a connection gives up at now + cl_give_up_ms, the same span
 * for every call of the client, and joins cl_waiting at its tail (client_resend.c): the list
 * is in the order calls began to wait, so in the order of their give-up times, and the first
 * waiting call's is the soonest. One loop deadline waits for it (cl_give_up_timer, armed no
 * later than that); when it fires, the calls at the head whose time has come end, and it
 * waits again for the new head's. A call leaving the list early (sent, finished) is not told
 * to the deadline: it fires at the old time and waits again. (This was a wheel node per call,
 * 16 bytes in every call's block; the wheel is now for deadlines only, in the blocks of calls
 * that have one: client_deadlines.c.)
 *
 * Only calls_on_connected changes the list's order (its re-sends go in arrival order); it
 * puts what it did not send back into give-up order. One-way messages held for a connection
 * (core/client_park.c) give up alike, on the same deadline: their list is in give-up order
 * too. Loop thread only.
 *
 * A loop that could not run for a while (the process stopped, a VM paused) finds the give-up
 * time long past, with the back-off's next attempt due as well: the calls would end without
 * one try, on the error of an attempt made before the stall. So a give-up that comes late by
 * GIVE_UP_STALL_NS while the client waits out a back-off starts that attempt first (or finds
 * it started), and waits for it (its connect_timeout_ms, or reconnect_give_up_ms when that has
 * none); the calls then go if it connects, and end at the next firing if not.
 */
#include "arpc/error.h"
#include "base/clock.h"
#include "core/client_resend.h"

#define GIVE_UP_STALL_NS (500 * ARPC_NS_PER_MS)

/* A late give-up's attempt (see the top): true when the timer was re-armed for one, started
 * now or already under way (the back-off's deadline, due too, may have come first). */
static bool give_up_try_first(arpc_client *c, uint64_t now, uint64_t give_up)
{
    const struct client_connector *cn = &c->cl_connector;
    if (c->cl_give_up_stalled || c->cl_wheel_stopped || now - give_up < GIVE_UP_STALL_NS ||
        (!cn->cn_waiting && !cn->cn_attempting))
        return false;
    c->cl_give_up_stalled = true;
    int64_t wait_ms = c->cl_connect_timeout_ms >= 0 ? c->cl_connect_timeout_ms : c->cl_give_up_ms;
    (void)arpc_deadline_arm(c->cl_loop, &c->cl_give_up_timer, arpc_deadline_after(now, wait_ms) + ARPC_NS_PER_MS);
    if (cn->cn_waiting)
        client_connect_start(c);
    return true;
}

/* The soonest give-up time among the waiting calls and the held one-way messages (each list
 * in give-up order: its head's), or ARPC_NEVER. */
static uint64_t soonest_give_up(arpc_client *c)
{
    uint64_t give_up = ARPC_NEVER, held = c->cl_held_first != NULL ? c->cl_held_first->om_give_up : ARPC_NEVER;
    (void)waiting_first(&c->cl_waiting, &give_up); /* (untouched when none waits) */
    return held < give_up ? held : give_up;
}

static void on_give_up(struct arpc_deadline *d, void *arg)
{
    (void)d;
    arpc_client *c = arg;
    uint64_t now = arpc_now_ns();
    /* Armed again first, while the loop's heap still has the room this deadline just left
     * (as client_deadlines.c's wheel deadline): the calls' callbacks below may arm others. */
    (void)arpc_deadline_arm(c->cl_loop, &c->cl_give_up_timer, now + ARPC_NS_PER_MS);
    struct client_call *call;
    uint64_t give_up = soonest_give_up(c);
    if (give_up <= now && give_up_try_first(c, now, give_up))
        return;
    c->cl_give_up_stalled = false;
    while ((call = waiting_first(&c->cl_waiting, &give_up)) != NULL && give_up <= now)
        call_finish_lost(call, CALL_LOST_GAVE_UP); /* leaves the list (never sent: ARPC_EUNREACHABLE) */
    client_expire_held_oneways(c, now); /* held one-way messages give up alike */
    give_up = soonest_give_up(c);
    if (give_up == ARPC_NEVER || c->cl_wheel_stopped)
        arpc_deadline_cancel(c->cl_loop, &c->cl_give_up_timer);
    else if (arpc_deadline_is_armed(&c->cl_give_up_timer))
        (void)arpc_deadline_arm(c->cl_loop, &c->cl_give_up_timer, give_up); /* a move */
    else
        (void)give_up_arm(c, give_up); /* out of memory even before the callbacks: the next call
                                        * to wait tries again */
}

void give_up_init(arpc_client *c) { arpc_deadline_init(&c->cl_give_up_timer, on_give_up, c); }

void give_up_stop(arpc_client *c) { arpc_deadline_cancel(c->cl_loop, &c->cl_give_up_timer); }

int give_up_arm(arpc_client *c, uint64_t when)
{
    struct arpc_deadline *t = &c->cl_give_up_timer;
    if (when == ARPC_NEVER || c->cl_wheel_stopped || (arpc_deadline_is_armed(t) && t->d_when_ns <= when))
        return ARPC_OK;
    return arpc_deadline_arm(c->cl_loop, t, when);
}
