/*
 * A reply's xid is the server's to write: one no call of the client's has (both top bits set,
 * ARPC_XID_CALLER_BIT and ARPC_XID_SEQ_BIT) is dropped as no call's, and the call's own reply
 * still ends it. A scripted server says HELLO, reads the call, sends a REPLY under xid
 * 0xC000000000000001 (with the call's low bits), then the real reply. Before, the pending
 * table picked its ring by the top two bits and read past its three rings (ASan/UBSan: a
 * misaligned read of code bytes as a call); client_stream_fuzz found it first.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "arpc/client.h"
#include "arpc/error.h"
#include "arpc/future.h"
#include "core/frame.h"
#include "support/raw_client.h"
#include "support/test_util.h"

struct script {
    int sc_listen;
    pthread_t sc_thread;
    bool sc_ok;
};

static bool script_run(struct script *s)
{
    struct raw_client *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return false;
    uint8_t hello[ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT];
    size_t n = arpc_frame_encode_hello(hello, 0x5eed, ARPC_HELLO_CANCEL | ARPC_HELLO_DEDUP, ARPC_DEFAULT_MAX_FRAME, 600);
    struct raw_frame f;
    r->rc_fd = accept(s->sc_listen, NULL, NULL);
    bool ok = r->rc_fd >= 0 && raw_read(r, &f, false) && f.f.f_kind == ARPC_FRAME_HELLO && raw_send(r, hello, n);
    ok = ok && raw_read(r, &f, false) && f.f.f_kind == ARPC_FRAME_REQUEST;
    uint64_t xid = f.f.f_xid;
    uint8_t frame[ARPC_FRAME_HEADER_SIZE + 1];
    /* The stray one: both of the top bits. */
    arpc_frame_encode_header(frame, ARPC_FRAME_REPLY, 0xC000000000000001ull | (xid & 0xffff), 1);
    frame[ARPC_FRAME_HEADER_SIZE] = 'x';
    ok = ok && raw_send(r, frame, sizeof(frame));
    arpc_frame_encode_header(frame, ARPC_FRAME_REPLY, xid, 1);
    frame[ARPC_FRAME_HEADER_SIZE] = 'r';
    ok = ok && raw_send(r, frame, sizeof(frame));
    while (ok && raw_read(r, &f, false))
        ;
    if (r->rc_fd >= 0)
        close(r->rc_fd);
    free(r);
    return ok;
}

static void *script_main(void *p)
{
    struct script *s = p;
    s->sc_ok = script_run(s);
    return NULL;
}

static void test_reply_with_both_top_bits(void **state)
{
    (void)state;
    struct script s = {0};
    uint16_t port;
    s.sc_listen = fd_listen_loopback(0, 4, 0, &port);
    assert_true(s.sc_listen >= 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%u", port);
    assert_int_equal(0, pthread_create(&s.sc_thread, NULL, script_main, &s));
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    arpc_future *f = arpc_call_async(c, "t.m", "A", 1, ARPC_FOREVER);
    assert_int_equal(ARPC_OK, arpc_future_wait_for(f, TEST_WAIT_MS));
    size_t len = 0;
    const char *got = arpc_future_data(f, &len);
    assert_int_equal(1, len);
    assert_int_equal('r', got[0]); /* the call's own reply, not the stray one */
    arpc_future_release(f);
    arpc_client_close(c);
    pthread_join(s.sc_thread, NULL);
    close(s.sc_listen);
    assert_true(s.sc_ok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_with_both_top_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
