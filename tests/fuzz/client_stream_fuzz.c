/*
 * libFuzzer target: a real client (on a loop this thread drives) connected through a
 * socketpair (inproc://) to a fake server that answers a valid HELLO and then sends arbitrary
 * bytes, cut where the input says.
 *
 * Input: one byte of set-up (bits 0-2: the HELLO's flags: CANCEL, DEDUP, DURABLE), then
 * chunks (fuzz_io.h). Before the chunks the client has four calls out, each with an xid an
 * input can answer (a fresh client numbers from 1): at-most-once (its seq with
 * ARPC_XID_SEQ_BIT: 0x4000000000000001), at-least-once (1), no-retry (2), and at-most-once
 * again (0x4000000000000002), cancelled after the chunks; and one one-way message.
 *
 * Checked on every input: no crash, no sanitizer report, no leak; what the client writes is a
 * well-formed frame stream of the kinds a client sends; its log lines are printable ASCII;
 * when the fake server hangs up every call completes, each with an arpc_error code (the
 * client does not reconnect), and the client closes cleanly.
 */
#include <string.h>
#include <unistd.h>

#include "fuzz_io.h"
#include "fuzz_peer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ADDR "inproc://fuzz-client"
#define CALLS 4

static arpc_loop *loop;
static struct fuzz_out out;

static const uint32_t CLIENT_KINDS = 1u << ARPC_FRAME_HELLO | 1u << ARPC_FRAME_REQUEST | 1u << ARPC_FRAME_ONEWAY |
                                     1u << ARPC_FRAME_PING | 1u << ARPC_FRAME_PONG | 1u << ARPC_FRAME_GOAWAY |
                                     1u << ARPC_FRAME_CANCEL;

static bool six_frames(void *arg) { return out.fo_frames >= 2 + CALLS; } /* HELLO, calls, one-way */

static bool all_done(void *arg)
{
    arpc_future **fs = arg;
    for (size_t i = 0; i < CALLS; i++)
        if (arpc_future_poll(fs[i]) == ARPC_EPENDING)
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (loop == NULL) {
        loop = fuzz_loop();
        fuzz_log_checked();
        fuzz_peer_listen(ADDR);
    }
    if (size == 0)
        return 0;
    uint8_t hello[ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT];
    uint32_t flags = data[0] & (ARPC_HELLO_CANCEL | ARPC_HELLO_DEDUP | ARPC_HELLO_DURABLE);
    fuzz_peer_set_greeting(hello, arpc_frame_encode_hello(hello, 7, flags, 4096, 600));

    arpc_client_options co = {
        .loop = loop,
        .max_frame = 4096, /* so small inputs reach the oversized-reply path */
        .no_reconnect = true,
        .client_id = 99,
    };
    arpc_client *c = NULL;
    FUZZ_CHECK(arpc_client_connect(&c, ADDR, &co) == ARPC_OK);
    int fd = fuzz_peer_take();
    FUZZ_CHECK(fd >= 0);

    static const enum arpc_call_semantics sem[CALLS] = {ARPC_AT_MOST_ONCE, ARPC_AT_LEAST_ONCE, ARPC_NO_RETRY,
                                                        ARPC_AT_MOST_ONCE};
    arpc_future *fs[CALLS];
    for (size_t i = 0; i < CALLS; i++) {
        arpc_call_options o = {.deadline_ms = ARPC_FOREVER, .semantics = sem[i]};
        fs[i] = arpc_call_async_opts(c, "f.m", "x", 1, &o);
        FUZZ_CHECK(fs[i] != NULL);
    }
    FUZZ_CHECK(arpc_notify(c, "f.n", "y", 1) == ARPC_OK);
    fuzz_out_reset(&out, CLIENT_KINDS);
    FUZZ_CHECK(fuzz_turn_until(fd, &out, six_frames, NULL, 1000));

    struct fuzz_chunks in = {data + 1, size - 1};
    const uint8_t *chunk;
    size_t len;
    while (fuzz_next_chunk(&in, &chunk, &len)) {
        if (len == 0)
            fuzz_turn();
        else if (!fuzz_feed(fd, chunk, len, &out))
            break;
    }
    arpc_future_cancel(fs[CALLS - 1]);
    fuzz_turn();
    fuzz_out_read(&out, fd);
    close(fd); /* the server hangs up: with no_reconnect every call ends now */
    FUZZ_CHECK(fuzz_turn_until(-1, &out, all_done, fs, 1000));
    for (size_t i = 0; i < CALLS; i++) {
        int st = arpc_future_poll(fs[i]);
        FUZZ_CHECK(st >= ARPC_OK && st < ARPC_ERROR_COUNT_ && st != ARPC_EPENDING);
        arpc_future_release(fs[i]);
    }
    FUZZ_CHECK(arpc_client_close(c) == ARPC_OK);
    return 0;
}
