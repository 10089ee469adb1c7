/* Holding a server's loop still (support/loop_hold.h). */
#include "support/loop_hold.h"

#include <semaphore.h>
#include <stdlib.h>

#include "arpc/arpc.h"
#include "support/raw_client.h"
#include "support/test_util.h"

static sem_t hold_release;

void loop_hold_handler(struct arpc_request *req, void *ctx)
{
    (void)ctx;
    latch_add();
    CHECK(sem_wait_secs(&hold_release, TEST_WAIT_MS / 1000));
    arpc_reply(req, NULL, 0);
}

struct raw_client *loop_hold_begin(const char *addr, const char *method)
{
    struct raw_client *holder = malloc(sizeof(*holder));
    if (holder == NULL)
        return NULL;
    latch_reset();
    if (sem_init(&hold_release, 0, 0) != 0 || !raw_connect(holder, addr, 7) ||
        !raw_request(holder, 1, 0, 0, 0, method, "", 0) || !latch_wait(1, TEST_WAIT_MS)) {
        free(holder);
        return NULL;
    }
    return holder;
}

void loop_hold_end(struct raw_client *holder)
{
    sem_post(&hold_release);
    raw_close(holder);
    free(holder);
}
