/* A client that speaks the wire protocol by hand (support/raw_client.h). */
#include "support/raw_client.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/error.h"
#include "support/test_util.h"
#include "transport/transport.h"

bool raw_send(struct raw_client *r, const void *bytes, size_t len)
{
    const uint8_t *p = bytes;
    while (len > 0) {
        ssize_t n = send(r->rc_fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            struct pollfd pw = {.fd = r->rc_fd, .events = POLLOUT};
            if ((errno != EAGAIN && errno != EINTR) || poll(&pw, 1, RAW_WAIT_MS) <= 0)
                return false;
            continue;
        }
        p += n;
        len -= (size_t)n;
    }
    return true;
}

bool raw_read(struct raw_client *r, struct raw_frame *out, bool keep_pings)
{
    for (;;) {
        if (r->rc_consumed > 0) {
            memmove(r->rc_buf, r->rc_buf + r->rc_consumed, r->rc_len - r->rc_consumed);
            r->rc_len -= r->rc_consumed;
            r->rc_consumed = 0;
        }
        size_t used = 0;
        int rc = arpc_frame_decode(r->rc_buf, r->rc_len, UINT32_MAX, &out->f, &used, NULL);
        if (rc == ARPC_OK) {
            r->rc_consumed = used;
            out->body = r->rc_buf + ARPC_FRAME_HEADER_SIZE;
            out->body_len = used - ARPC_FRAME_HEADER_SIZE;
            if (out->f.f_kind == ARPC_FRAME_PING && !keep_pings) {
                uint8_t pong[ARPC_FRAME_HEADER_SIZE]; /* alive: answer it, as a client does */
                arpc_frame_encode_header(pong, ARPC_FRAME_PONG, out->f.f_xid, 0);
                if (!raw_send(r, pong, sizeof(pong)))
                    return false;
                continue;
            }
            return true;
        }
        if (rc != ARPC_EAGAIN || r->rc_len == sizeof(r->rc_buf))
            return false;
        struct pollfd pr = {.fd = r->rc_fd, .events = POLLIN};
        if (poll(&pr, 1, RAW_WAIT_MS) <= 0)
            return false;
        ssize_t n = read(r->rc_fd, r->rc_buf + r->rc_len, sizeof(r->rc_buf) - r->rc_len);
        if (n <= 0)
            return false;
        r->rc_len += (size_t)n;
    }
}

bool raw_connect(struct raw_client *r, const char *addr, uint64_t client_id)
{
    return raw_connect_with(r, addr, client_id, NULL, 0);
}

/* Sends HELLO on r's connected socket with `first` right behind it, in one write; reads the
 * server's HELLO. */
static bool raw_hello(struct raw_client *r, uint64_t client_id, const char *token, uint64_t incarnation,
                      const void *first, size_t first_len)
{
    uint8_t hello[ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT + 256 + 1024];
    size_t tlen = token != NULL ? strlen(token) : 0;
    if (arpc_frame_hello_token_size((uint32_t)tlen) + first_len > sizeof(hello))
        return false;
    size_t n = token != NULL ? arpc_frame_encode_hello_token(hello, client_id, 0, 0, token, (uint32_t)tlen)
                             : arpc_frame_encode_hello(hello, client_id, 0, 0, 0);
    arpc_frame_stamp_hello_incarnation(hello, incarnation);
    if (first_len > 0)
        memcpy(hello + n, first, first_len);
    struct raw_frame f;
    if (!raw_send(r, hello, n + first_len) || !raw_read(r, &f, false) || f.f.f_kind != ARPC_FRAME_HELLO)
        return false;
    r->rc_hello = f.f;
    return true;
}

static bool raw_connect_sending(struct raw_client *r, const char *addr, uint64_t client_id, const char *token,
                                uint64_t incarnation, const void *first, size_t first_len)
{
    memset(r, 0, sizeof(*r));
    if (arpc_transport_connect(addr, RAW_WAIT_MS, &r->rc_fd, NULL, 0) != ARPC_OK)
        return false;
    return raw_hello(r, client_id, token, incarnation, first, first_len);
}

bool raw_connect_on(struct raw_client *r, int fd, const char *addr, uint64_t client_id)
{
    memset(r, 0, sizeof(*r));
    r->rc_fd = fd;
    return fd_connect_loopback(fd, addr) == 0 && raw_hello(r, client_id, NULL, 0, NULL, 0);
}

bool raw_connect_with(struct raw_client *r, const char *addr, uint64_t client_id, const char *token,
                      uint64_t incarnation)
{
    return raw_connect_sending(r, addr, client_id, token, incarnation, NULL, 0);
}

bool raw_connect_then(struct raw_client *r, const char *addr, uint64_t client_id, const void *first, size_t len)
{
    return raw_connect_sending(r, addr, client_id, NULL, 0, first, len);
}

bool raw_connect_then_request(struct raw_client *r, const char *addr, uint64_t client_id, uint64_t xid,
                              uint64_t seq, const char *method, const void *payload, size_t len)
{
    uint8_t frame[1024];
    size_t mlen = strlen(method);
    if (arpc_frame_request_size(mlen, len) > sizeof(frame))
        return false;
    size_t n = arpc_frame_encode_request(frame, ARPC_FRAME_REQUEST, xid, seq, 0, 0, method, (uint16_t)mlen, payload,
                                         (uint32_t)len);
    return raw_connect_then(r, addr, client_id, frame, n);
}

void raw_close(struct raw_client *r)
{
    if (r->rc_fd > 0)
        close(r->rc_fd);
    r->rc_fd = -1;
}

bool raw_request(struct raw_client *r, uint64_t xid, uint64_t seq, uint64_t ack, uint32_t deadline_ms,
                 const char *method, const void *payload, size_t len)
{
    uint8_t small[4096];
    size_t mlen = strlen(method);
    size_t size = arpc_frame_request_size(mlen, len);
    uint8_t *frame = size <= sizeof(small) ? small : malloc(size); /* a large payload's frame */
    if (frame == NULL)
        return false;
    size_t n = arpc_frame_encode_request(frame, ARPC_FRAME_REQUEST, xid, seq, ack, deadline_ms, method,
                                         (uint16_t)mlen, payload, (uint32_t)len);
    bool ok = raw_send(r, frame, n);
    if (frame != small)
        free(frame);
    return ok;
}

bool raw_cancel(struct raw_client *r, uint64_t xid)
{
    uint8_t frame[ARPC_FRAME_HEADER_SIZE];
    arpc_frame_encode_header(frame, ARPC_FRAME_CANCEL, xid, 0);
    return raw_send(r, frame, sizeof(frame));
}

bool raw_goodbye(struct raw_client *r)
{
    uint8_t bye[ARPC_FRAME_HEADER_SIZE + ARPC_ERROR_FIXED_SIZE + 3];
    size_t n = arpc_frame_encode_error(bye, ARPC_FRAME_GOAWAY, 0, ARPC_ESHUTDOWN, 0, "bye", 3);
    return raw_send(r, bye, n);
}

bool raw_next_is_error(struct raw_client *r, uint64_t xid, int code)
{
    struct raw_frame f;
    return raw_read(r, &f, false) && f.f.f_kind == ARPC_FRAME_ERROR && f.f.f_xid == xid && f.f.f_code == (uint32_t)code;
}

int raw_call_taken_in_time(struct raw_client *r, uint64_t *xid, uint64_t seq, uint64_t ack, uint32_t deadline_ms,
                           const char *method, const void *payload, size_t len)
{
    for (int attempt = 0; attempt < 100; attempt++) {
        if (attempt > 0)
            (*xid)++;
        struct raw_frame f;
        if (!raw_request(r, *xid, seq, ack, deadline_ms, method, payload, len) || !raw_read(r, &f, false) ||
            f.f.f_kind != ARPC_FRAME_ERROR || f.f.f_xid != *xid)
            return -1;
        if (f.f.f_code != ARPC_EEXPIRED)
            return (int)f.f.f_code;
    }
    return -1;
}

void raw_expect_error(struct raw_client *r, uint64_t xid, int code)
{
    struct raw_frame f;
    do
        assert_true(raw_read(r, &f, false));
    while (f.f.f_kind == ARPC_FRAME_GOAWAY);
    assert_int_equal(ARPC_FRAME_ERROR, f.f.f_kind);
    assert_int_equal(xid, f.f.f_xid);
    assert_int_equal(code, f.f.f_code);
}

bool raw_wait_eof(struct raw_client *r, int *pings)
{
    *pings = 0;
    for (;;) {
        struct raw_frame f;
        if (!raw_read(r, &f, true)) {
            /* EOF (read returned 0) or a reset: the server closed us. */
            char b;
            return recv(r->rc_fd, &b, 1, MSG_DONTWAIT) <= 0;
        }
        if (f.f.f_kind != ARPC_FRAME_PING)
            return false;
        (*pings)++;
    }
}
