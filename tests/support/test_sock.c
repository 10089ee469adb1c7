/* Socket helpers: a non-blocking socketpair, a loopback listener and connect, what is waiting
 * to be read, and the pattern stream written and checked through them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/test_util.h"

bool socketpair_nb(int fd[2])
{
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fd) == 0;
}

size_t fd_unread(int fd)
{
    int n = 0;
    if (ioctl(fd, FIONREAD, &n) != 0 || n < 0)
        return 0;
    return (size_t)n;
}

int fd_connect_loopback(int fd, const char *addr)
{
    const char *port = strrchr(addr, ':');
    if (port == NULL)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    sa.sin_port = htons((uint16_t)atoi(port + 1));
    return connect(fd, (struct sockaddr *)&sa, sizeof(sa));
}

int tcp_socket_rcvbuf(int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    if (rcvbuf > 0)
        assert_int_equal(0, setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)));
    return fd;
}

int fd_listen_loopback(int flags, int backlog, int rcvbuf, uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if ((rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) != 0) ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, backlog) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

bool fd_wait_eof(int fd, int ms)
{
    int64_t until = now_ms() + ms;
    for (;;) {
        int left = (int)(until - now_ms());
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, left) <= 0)
            return false;
        static _Thread_local char buf[1 << 16];
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0) /* a close with our bytes unread there is a reset */
            return n == 0 || errno == ECONNRESET;
    }
}

void fill_pattern(uint8_t *buf, uint64_t pos, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = pattern_byte(pos + i);
}

size_t read_pattern(int fd, size_t *pos, size_t max)
{
    uint8_t buf[64 * 1024];
    size_t got = 0;
    while (got < max) {
        size_t want = max - got < sizeof(buf) ? max - got : sizeof(buf);
        ssize_t n = read(fd, buf, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            assert_int_equal(pattern_byte(*pos + (size_t)i), buf[i]);
        *pos += (size_t)n;
        got += (size_t)n;
    }
    return got;
}
