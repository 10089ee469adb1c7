/*
 * A loop turn's budget for bulk reads: bytes of large frames' bodies, across every connection
 * the loop serves (async/loop_internal.h).
 *
 * Why a budget per turn and not only per connection: a turn serves every ready connection, so
 * its length grows with how many stream large bodies at once (each read into memory faulted in
 * as it is written: ~1 ms a MiB here). A connection that finds the budget spent leaves its
 * bytes in the socket; level-triggered readiness brings it back next turn, after the rest of
 * the ready connections (epoll returns a level-triggered fd again behind the others), so
 * the connections streaming share the turns and a small call waits behind one budget at most.
 * The turn is libev's iteration (ev_iteration), which wrapped and stepped loops count too.
 */
#include "async/loop_impl.h"

/* Two connections' worth of core/conn.c's 64 KiB a readiness: one bulk client is never slowed. */
#define LOOP_BULK_PER_TURN (128u * 1024u)

static void bulk_turn(arpc_loop *loop)
{
    unsigned turn = ev_iteration(loop->l_ev) + 1; /* never 0, the value a new loop starts with */
    if (loop->l_bulk_turn != turn) {
        loop->l_bulk_turn = turn;
        loop->l_bulk_left = LOOP_BULK_PER_TURN;
    }
}

bool arpc_loop_bulk_spent(arpc_loop *loop)
{
    bulk_turn(loop);
    return loop->l_bulk_left == 0;
}

void arpc_loop_bulk_spend(arpc_loop *loop, size_t n)
{
    bulk_turn(loop);
    loop->l_bulk_left = n < loop->l_bulk_left ? loop->l_bulk_left - n : 0;
}
