/*
 * The replies of one worker's take handed to the loop with one wake-up.
 *
 * A pool worker takes its whole mailbox at once (async/actor.c): under pipelined load, the
 * requests of one or more of the loop's reads. Each reply used to be posted to the loop as it
 * was made, and the first post into the loop's empty lane woke it: the loop woke, drained the
 * one or two replies there, wrote them, slept, and was woken again by the next, several times
 * per take (a wake-up of a sleeping thread on the other CPU costs microseconds on a VM). Now a
 * reply made in a job that is not the take's last goes on the lane without a wake-up, and the
 * wake-up owed is paid once, after the take's last job (the take-end hook this file installs on
 * the pool's actors) or once REPLY_BATCH_MAX replies wait: the loop wakes once and writes the
 * take's replies together, as it batches the replies of inline handlers per read.
 *
 * The cost: a reply may wait for the handlers taken with it (at most REPLY_BATCH_MAX - 1 of
 * them) before its loop is woken, the way an inline handler's reply waits for the rest of its
 * read's handlers. A take of one job (a caller waiting for each reply) is not held at all, and
 * keeps the direct write (core/reply_direct.c).
 *
 * Only the server's own pool does this: the stop joins its workers (arpc_actor_group_stop)
 * before it returns, so a wake-up paid after the post (outside sv_replying) still finds the
 * loop. An application's actors, which the stop does not join, hand over as before. While a
 * stop is under way nothing is held (its steps wait for the replies).
 */
#include "core/request_internal.h"
#include "core/server_internal.h"

#include "async/actor_internal.h"

#define REPLY_BATCH_MAX 64u /* replies posted before the loop is woken at the latest */

static _Thread_local unsigned batch_held; /* posted without a wake-up since the last one */
static _Thread_local bool batch_owed;      /* one of them found the lane empty */

static void batch_pay(arpc_server *s)
{
    batch_held = 0;
    if (batch_owed) {
        batch_owed = false;
        arpc_loop_kick(s->sv_loop);
    }
}

/* The pool worker's take ended (async/actor_internal.h). */
static void batch_take_end(void *arg)
{
    if (batch_held != 0)
        batch_pay(arg);
}

void reply_batch_install(arpc_server *s)
{
    for (unsigned i = 0; i < arpc_actor_group_size(s->sv_pool); i++)
        arpc_actor_set_take_end(arpc_actor_group_member(s->sv_pool, i), batch_take_end, s);
}

bool reply_batch_may_hold(const arpc_server *s) { return arpc_actor_take_more() == s; }

int reply_batch_post(arpc_server *s, struct arpc_loop_job *job)
{
    int rc = arpc_loop_post_quiet(s->sv_loop, job, &batch_owed);
    if (rc == ARPC_OK && (++batch_held >= REPLY_BATCH_MAX || atomic_load(&s->sv_state) != SV_RUNNING))
        batch_pay(s);
    return rc;
}
