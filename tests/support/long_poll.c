/* A long poll for tests (support/long_poll.h). */
#include "support/long_poll.h"

#include <semaphore.h>
#include <stdatomic.h>

#include "arpc/server.h"
#include "support/test_util.h"

static atomic_int lp_runs, lp_cancelled;
static sem_t lp_started, lp_cancel;

void long_poll_reset(void)
{
    atomic_store(&lp_runs, 0);
    atomic_store(&lp_cancelled, 0);
    sem_init(&lp_started, 0, 0);
    sem_init(&lp_cancel, 0, 0);
}

void long_poll_fini(void)
{
    sem_destroy(&lp_started);
    sem_destroy(&lp_cancel);
}

static void long_poll_on_cancel(struct arpc_request *req, void *arg)
{
    (void)arg;
    atomic_fetch_add(&lp_cancelled, 1);
    arpc_reply_error(req, "cancelled");
    sem_post(&lp_cancel);
}

void long_poll(struct arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&lp_runs, 1);
    arpc_request_on_cancel(req, long_poll_on_cancel, NULL);
    sem_post(&lp_started);
}

int long_poll_runs(void) { return atomic_load(&lp_runs); }
int long_poll_cancelled(void) { return atomic_load(&lp_cancelled); }
bool long_poll_wait_started(int secs) { return sem_wait_secs(&lp_started, secs); }
bool long_poll_wait_cancelled(int secs) { return sem_wait_secs(&lp_cancel, secs); }
