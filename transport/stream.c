/*
 * The plain stream: a non-blocking socket as it is. One read(2) or sendmsg(2) per call, so a
 * connection over it costs one indirect call per read or gathered write more than the system
 * calls alone.
 */
#include "transport/stream.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/error.h"

static ssize_t plain_failed(struct arpc_stream *s)
{
    s->s_error = ARPC_ECONNLOST;
    s->s_why = errno == ECONNRESET ? "connection reset by the peer" : "the connection broke";
    return ARPC_STREAM_FAILED;
}

static ssize_t plain_read(struct arpc_stream *s, void *buf, size_t len)
{
    for (;;) {
        ssize_t n = read(s->s_fd, buf, len);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return ARPC_STREAM_WANT_READ;
        return plain_failed(s);
    }
}

static ssize_t plain_writev(struct arpc_stream *s, const struct iovec *iov, int iovcnt)
{
    /* sendmsg rather than writev: MSG_NOSIGNAL turns a peer that went away into EPIPE
     * instead of a process-killing SIGPIPE. Every transport yields a socket. */
    struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    for (;;) {
        ssize_t w = sendmsg(s->s_fd, &msg, MSG_NOSIGNAL);
        if (w >= 0) {
            arpc_stream_sent(s, (size_t)w);
            return w;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return ARPC_STREAM_WANT_WRITE;
        return plain_failed(s);
    }
}

static void plain_close(struct arpc_stream *s)
{
    if (s->s_fd >= 0)
        close(s->s_fd);
    s->s_fd = -1;
}

static int plain_shut_write(struct arpc_stream *s)
{
    return shutdown(s->s_fd, SHUT_WR) == 0 ? ARPC_OK : ARPC_ECONNLOST;
}

static const struct arpc_stream_ops plain_ops = {
    .s_read = plain_read,
    .s_writev = plain_writev,
    .s_shut_write = plain_shut_write,
    .s_close = plain_close,
};

void arpc_stream_plain_init(struct arpc_stream *s, int fd)
{
    *s = (struct arpc_stream){.s_ops = &plain_ops, .s_fd = fd, .s_thread_safe = true, .s_why = ""};
}
