/* A server with a blocking method, for tests (support/block_server.h). */
#include "support/block_server.h"

#include <semaphore.h>
#include <stdatomic.h>
#include <stddef.h>

#include "arpc/error.h"
#include "support/test_util.h"

/* More than any test leaves blocked: the teardown lets them all go. */
#define BLOCK_RELEASE_ALL 4

static atomic_int runs;
static sem_t started, released;

/* Holds its actor until released (bounded: a test that fails does not hang the stop). */
static void block(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&runs, 1);
    sem_post(&started);
    (void)sem_wait_secs(&released, TEST_WAIT_S);
    arpc_reply(req, "b", 1);
}

int block_server_setup(struct block_server *bs, unsigned mailbox_size)
{
    *bs = (struct block_server){0};
    atomic_store(&runs, 0);
    sem_init(&started, 0, 0);
    sem_init(&released, 0, 0);
    arpc_actor_options ao = {.mailbox_size = mailbox_size};
    if (arpc_server_create(&bs->bs_server, NULL) != ARPC_OK || arpc_actor_create(&bs->bs_actor, &ao) != ARPC_OK)
        return -1;
    arpc_method_options on_actor = {.actor = bs->bs_actor};
    if (arpc_server_register(bs->bs_server, "block", block, NULL, &on_actor) != ARPC_OK ||
        arpc_server_register(bs->bs_server, "echo", test_echo, NULL, NULL) != ARPC_OK)
        return -1;
    return 0;
}

int block_server_listen(struct block_server *bs)
{
    return arpc_server_listen(bs->bs_server, "tcp://127.0.0.1:0", bs->bs_addr, sizeof(bs->bs_addr)) == ARPC_OK ? 0
                                                                                                                  : -1;
}

void block_server_teardown(struct block_server *bs)
{
    block_release(BLOCK_RELEASE_ALL);
    arpc_server_destroy(bs->bs_server);
    arpc_actor_destroy(bs->bs_actor);
    sem_destroy(&started);
    sem_destroy(&released);
}

int block_runs(void) { return atomic_load(&runs); }

bool block_wait_started(void) { return sem_wait_secs(&started, TEST_WAIT_S); }

void block_release(int n)
{
    for (int i = 0; i < n; i++)
        sem_post(&released);
}
