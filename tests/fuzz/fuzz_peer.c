/* The fake server: an ev_io on the listener, on the loop the fuzzer drives. */
#include "fuzz_peer.h"

#include <errno.h>
#include <ev.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "async/loop_internal.h"
#include "fuzz_io.h"
#include "transport/transport.h"

static struct arpc_listener *peer_listener;
static ev_io peer_watcher;
/* The largest HELLO hello_fuzz makes: one byte over the handshake bound. */
static uint8_t peer_greeting[ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_MAX + 1];
static size_t peer_greeting_len;
static int peer_fd = -1;

static void peer_on_accept(struct ev_loop *ev, ev_io *w, int revents)
{
    int fd;
    char name[ARPC_ADDR_MAX];
    while (peer_listener->l_ops->t_accept(peer_listener, &fd, name, sizeof(name), NULL, 0) == ARPC_OK) {
        if (peer_fd >= 0)
            close(peer_fd); /* a connection the target did not take: a reconnect, not under test */
        peer_fd = fd;
        if (peer_greeting_len == 0)
            continue;
        /* A connection its client has closed already (one it gave up on, accepted only now:
         * the loop runs while the target waits) refuses the greeting; any other failure is
         * the harness's. */
        ssize_t n = send(fd, peer_greeting, peer_greeting_len, MSG_NOSIGNAL);
        FUZZ_CHECK(n == (ssize_t)peer_greeting_len || (n < 0 && (errno == EPIPE || errno == ECONNRESET)));
    }
}

void fuzz_peer_listen(const char *addr)
{
    const char *rest;
    const struct arpc_transport_ops *ops = arpc_transport_find(addr, &rest);
    FUZZ_CHECK(ops != NULL && ops->t_listen(rest, &peer_listener, NULL, 0) == ARPC_OK);
    ev_io_init(&peer_watcher, peer_on_accept, peer_listener->l_fd, EV_READ);
    arpc_loop *loop = fuzz_loop_get();
    ev_io_start(arpc_loop_ev(loop), &peer_watcher);
}

void fuzz_peer_set_greeting(const void *bytes, size_t len)
{
    FUZZ_CHECK(len <= sizeof(peer_greeting));
    memcpy(peer_greeting, bytes, len);
    peer_greeting_len = len;
}

int fuzz_peer_take(void)
{
    int fd = peer_fd;
    peer_fd = -1;
    return fd;
}
