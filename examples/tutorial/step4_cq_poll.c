/*
 * Tutorial step 4 (docs/TUTORIAL.md): a completion queue whose file descriptor sits in the
 * application's own poll() loop, next to the application's other descriptors (here a pipe the
 * program writes one line to, standing in for a socket or a terminal).
 * Exits 0 when every call came back right and the pipe's line was read, 1 otherwise.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <arpc/arpc.h>

enum { CALLS = 5 };

static void square(arpc_request *req, void *ctx)
{
    (void)ctx;
    int64_t x;
    size_t len;
    const void *in = arpc_request_data(req, &len);
    if (len != sizeof x) {
        arpc_reply_error(req, "square takes one int64");
        return;
    }
    memcpy(&x, in, sizeof x);
    x *= x;
    arpc_reply(req, &x, sizeof x);
}

int main(void)
{
    arpc_server *server;
    char addr[256];
    int rc = arpc_server_create(&server, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, "math.Square", square, NULL, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_listen(server, "tcp://127.0.0.1:0", addr, sizeof addr);
    arpc_client *client;
    if (rc == ARPC_OK)
        rc = arpc_client_connect(&client, addr, NULL);
    arpc_cq *cq;
    if (rc == ARPC_OK)
        rc = arpc_cq_create(&cq);
    int other[2]; /* the application's own input */
    if (rc != ARPC_OK || pipe(other) != 0) {
        fprintf(stderr, "setup: %s\n", arpc_strerror(rc));
        return 1;
    }

    /* Each call's outcome goes to cq with a tag: here, the number squared. */
    for (intptr_t x = 1; x <= CALLS; x++) {
        int64_t arg = x;
        if (arpc_go(client, "math.Square", &arg, sizeof arg, 2000, cq, (void *)x) != ARPC_OK)
            return 1; /* ARPC_ENOMEM: nothing will reach cq for it */
    }
    if (write(other[1], "hello\n", 6) != 6)
        return 1;

    int64_t squares[CALLS + 1] = {0};
    int completions = 0, lines = 0, ok = 1;
    while (completions < CALLS || lines < 1) {
        struct pollfd fds[2] = {{.fd = arpc_cq_fd(cq), .events = POLLIN},
                                {.fd = other[0], .events = POLLIN}};
        if (poll(fds, 2, 5000) <= 0) { /* every call ends within 2 s: 5 s is only a bound */
            fprintf(stderr, "poll: nothing came\n");
            return 1;
        }
        if (fds[0].revents & POLLIN) {
            arpc_future *f;
            void *tag;
            while (arpc_cq_trynext(cq, &f, &tag) == ARPC_OK) { /* until ARPC_EAGAIN */
                intptr_t x = (intptr_t)tag;
                size_t len;
                const void *data = arpc_future_data(f, &len);
                if (arpc_future_poll(f) == ARPC_OK && len == sizeof squares[x])
                    memcpy(&squares[x], data, len);
                else
                    ok = 0;
                arpc_future_release(f); /* the entry's reference is ours */
                completions++;
            }
        }
        if (fds[1].revents & POLLIN) {
            char line[64];
            ssize_t n = read(other[0], line, sizeof line);
            printf("the loop also read: %.*s", (int)(n > 0 ? n : 0), line);
            lines++;
        }
    }
    for (int x = 1; x <= CALLS; x++) {
        printf("square(%d) = %" PRId64 "\n", x, squares[x]);
        ok &= squares[x] == (int64_t)x * x;
    }

    arpc_cq_destroy(cq);
    close(other[0]);
    close(other[1]);
    arpc_client_close(client);
    arpc_server_destroy(server);
    return ok ? 0 : 1;
}
