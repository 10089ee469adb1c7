/*
 * Opening the client side: our own loops (rather than one owned by each client) so several
 * connections can share a loop thread (--threads), and so each loop thread can be tagged
 * for the memory accounting before it allocates anything for a client.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>

#include "arpc_side.h"
#include "memacct.h"

static void tag_task(arpc_loop *loop, void *arg)
{
    (void)loop;
    bench_memacct_tag_client();
    /* So the CPU split by thread tells it from the embedded server's loop (bench_threads). */
    pthread_setname_np(pthread_self(), BENCH_CLIENT_LOOP_NAME);
    sem_post(arg);
}

static int start_loop(arpc_loop **out, bool caller_driven)
{
    sem_t tagged;
    int rv = arpc_loop_create(out, NULL);
    if (rv == ARPC_OK && caller_driven)
        return 0; /* nobody runs it: arpc_call drives it on the calling thread */
    if (rv == ARPC_OK && (rv = arpc_loop_start(*out)) != ARPC_OK)
        arpc_loop_destroy(*out);
    if (rv != ARPC_OK) {
        fprintf(stderr, "arpc-bench: client loop: %s\n", arpc_strerror(rv));
        return -1;
    }
    /* Wait until the tag is on: everything the loop allocates afterwards is counted. */
    sem_init(&tagged, 0, 0);
    if (arpc_loop_submit(*out, tag_task, &tagged) == ARPC_OK)
        while (sem_wait(&tagged) != 0)
            ;
    sem_destroy(&tagged);
    return 0;
}

int bench_clients_open(struct bench_clients *bc, const char *addr, unsigned nclients,
                       unsigned nloops, bool caller_driven, const struct bench_config *cfg)
{
    const arpc_tls_options tls = {.ca_file = cfg->tls_ca != NULL ? cfg->tls_ca : cfg->tls_cert};
    bc->bc_nloops = bc->bc_nclients = 0;
    bc->bc_loops = calloc(nloops, sizeof(*bc->bc_loops));
    bc->bc_clients = calloc(nclients, sizeof(*bc->bc_clients));
    if (bc->bc_loops == NULL || bc->bc_clients == NULL) {
        fprintf(stderr, "arpc-bench: out of memory\n");
        goto fail;
    }
    for (; bc->bc_nloops < nloops; bc->bc_nloops++)
        if (start_loop(&bc->bc_loops[bc->bc_nloops], caller_driven) != 0)
            goto fail;
    for (; bc->bc_nclients < nclients; bc->bc_nclients++) {
        char why[ARPC_ERRBUF_SIZE] = "";
        arpc_client_options opts = {.loop = bc->bc_loops[bc->bc_nclients % nloops],
                                    .semantics = bench_semantics(cfg), .tls = &tls,
                                    .default_deadline_ms = cfg->deadline_ms,
                                    .errbuf = why, .errbuf_len = sizeof(why)};
        int rv = arpc_client_connect(&bc->bc_clients[bc->bc_nclients], addr, &opts);
        if (rv != ARPC_OK) {
            /* The library's words say what is in the way (no such socket, refused, not an
             * arpc server, a certificate not trusted); the code's text alone does not. */
            fprintf(stderr, "arpc-bench: connect to %s: %s: %s\n", addr, arpc_errname(rv),
                    why[0] != '\0' ? why : arpc_strerror(rv));
            goto fail;
        }
    }
    return 0;
fail:
    bench_clients_close(bc);
    return -1;
}

void bench_clients_close(struct bench_clients *bc)
{
    for (unsigned i = 0; i < bc->bc_nclients; i++)
        arpc_client_close(bc->bc_clients[i]);
    for (unsigned i = 0; i < bc->bc_nloops; i++)
        arpc_loop_destroy(bc->bc_loops[i]);
    free(bc->bc_clients);
    free(bc->bc_loops);
    bc->bc_clients = NULL;
    bc->bc_loops = NULL;
    bc->bc_nclients = bc->bc_nloops = 0;
}
