#include "support/raw_server.h"

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>

#include <cmocka.h>

#include "support/test_util.h"

static void *raw_server_main(void *arg)
{
    struct raw_server *s = arg;
    s->rs_ok = s->rs_script(s, s->rs_arg);
    return NULL;
}

void raw_server_start(struct raw_server *s, raw_script_fn script, void *arg)
{
    uint16_t port;
    s->rs_listen = fd_listen_loopback(0, 4, 0, &port);
    assert_true(s->rs_listen >= 0);
    snprintf(s->rs_addr, sizeof(s->rs_addr), "tcp://127.0.0.1:%u", port);
    s->rs_script = script;
    s->rs_arg = arg;
    s->rs_ok = false;
    assert_int_equal(0, pthread_create(&s->rs_thread, NULL, raw_server_main, s));
}

bool raw_server_accept(struct raw_server *s, struct raw_client *r, const void *hello, size_t len)
{
    memset(r, 0, sizeof(*r));
    r->rc_fd = accept(s->rs_listen, NULL, NULL);
    struct raw_frame f;
    return r->rc_fd >= 0 && raw_read(r, &f, false) && f.f.f_kind == ARPC_FRAME_HELLO && raw_send(r, hello, len);
}

bool raw_server_accept_dedup(struct raw_server *s, struct raw_client *r)
{
    uint8_t hello[ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT];
    size_t n = arpc_frame_encode_hello(hello, 0x5eed, ARPC_HELLO_CANCEL | ARPC_HELLO_DEDUP, ARPC_DEFAULT_MAX_FRAME, 600);
    return raw_server_accept(s, r, hello, n);
}

bool raw_server_accept_call(struct raw_server *s, struct raw_client *r, struct raw_frame *f)
{
    return raw_server_accept_dedup(s, r) && raw_read(r, f, false) && f->f.f_kind == ARPC_FRAME_REQUEST;
}

bool raw_server_read_twice(struct raw_server *s, struct raw_client *r, raw_read_calls_fn read, void *arg)
{
    bool ok = raw_server_accept_dedup(s, r) && read(r, arg, 0);
    if (r->rc_fd >= 0) {
        shutdown(r->rc_fd, SHUT_RDWR); /* unanswered: every call waits for the next connection */
        raw_close(r);
    }
    return ok && raw_server_accept_dedup(s, r) && read(r, arg, 1);
}

bool raw_server_reply_byte(struct raw_client *r, uint64_t xid, uint8_t byte)
{
    uint8_t frame[ARPC_FRAME_HEADER_SIZE + 1];
    arpc_frame_encode_header(frame, ARPC_FRAME_REPLY, xid, 1);
    frame[ARPC_FRAME_HEADER_SIZE] = byte;
    return raw_send(r, frame, sizeof(frame));
}

void raw_server_read_to_end(struct raw_client *r)
{
    struct raw_frame f;
    while (raw_read(r, &f, false))
        ;
}

bool raw_server_join(struct raw_server *s)
{
    pthread_join(s->rs_thread, NULL);
    close(s->rs_listen);
    return s->rs_ok;
}
