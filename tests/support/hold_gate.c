/* A server whose calls wait for the test (support/hold_gate.h). */
#include "support/hold_gate.h"

#include <semaphore.h>
#include <stdatomic.h>

#include "arpc/arpc.h"
#include "support/test_util.h"

char hold_gate_addr[256];

static arpc_server *server;
static arpc_request *_Atomic held;
static sem_t held_sem; /* posted as t.hold's request arrives */
static sem_t gate_sem; /* lets t.gate answer */

static void h_hold(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_store(&held, req);
    sem_post(&held_sem);
}

static void h_gate(arpc_request *req, void *ctx)
{
    (void)ctx;
    sem_wait_secs(&gate_sem, TEST_WAIT_S); /* bounded: a failing test ends */
    arpc_reply(req, "g", 1);
}

int hold_gate_setup(void **state)
{
    (void)state;
    sem_init(&held_sem, 0, 0);
    sem_init(&gate_sem, 0, 0);
    if (arpc_server_create(&server, NULL) != ARPC_OK ||
        arpc_server_register(server, "t.echo", test_echo, NULL, NULL) != ARPC_OK ||
        arpc_server_register(server, "t.hold", h_hold, NULL, NULL) != ARPC_OK ||
        arpc_server_register(server, "t.gate", h_gate, NULL, NULL) != ARPC_OK)
        return -1;
    return arpc_server_listen(server, "tcp://127.0.0.1:0", hold_gate_addr, sizeof(hold_gate_addr)) == ARPC_OK ? 0 : -1;
}

int hold_gate_teardown(void **state)
{
    (void)state;
    arpc_server_destroy(server);
    sem_destroy(&held_sem);
    sem_destroy(&gate_sem);
    return 0;
}

arpc_request *hold_gate_held(void)
{
    return sem_wait_secs(&held_sem, TEST_WAIT_S) ? atomic_exchange(&held, NULL) : NULL;
}

void hold_gate_open(void) { sem_post(&gate_sem); }
