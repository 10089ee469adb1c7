/*
 * libFuzzer target: a real server (inline handlers, on a loop this thread drives) fed an
 * arbitrary byte stream through a socketpair (inproc://), cut where the input says
 * (fuzz_io.h: length-prefixed chunks).
 *
 * Checked on every input: no crash, no sanitizer report, no leak (LSan); whatever the server
 * writes back is a well-formed frame stream of the kinds a server sends; its log lines are
 * printable ASCII (peer bytes escaped); once the peer has closed, the server closes the
 * connection too and holds none open; and a good call on a fresh connection is answered.
 * The server lives across inputs (creating one costs threads), so a state one input leaves
 * behind is what the next one meets, as on a real server.
 *
 * Methods: f.echo (replies its request), f.fail (replies an error), f.big (replies
 * 4 KiB x the first request byte, to fill the output queue), f.later (replies only when
 * cancelled, or at the end of the input: a late reply after its connection is gone).
 */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/server_internal.h"
#include "fuzz_io.h"
#include "transport/transport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ADDR "inproc://fuzz-server"
#define LATER_MAX 64

static arpc_server *srv;
static arpc_request *later[LATER_MAX]; /* f.later calls not yet answered (loop thread) */
static struct fuzz_out out;

static void h_echo(arpc_request *req, void *ctx)
{
    size_t len;
    const void *p = arpc_request_data(req, &len);
    arpc_reply(req, p, len);
}

static void h_fail(arpc_request *req, void *ctx) { arpc_reply_error(req, "f.fail \x1b[31m\n always fails"); }

static void h_big(arpc_request *req, void *ctx)
{
    static uint8_t big[255 * 4096];
    size_t len;
    const uint8_t *p = arpc_request_data(req, &len);
    arpc_reply(req, big, len > 0 ? (size_t)p[0] * 4096 : 0);
}

static void later_cancelled(arpc_request *req, void *arg)
{
    arpc_request **slot = arg;
    *slot = NULL;
    arpc_reply(req, "cancelled", 9);
}

static void h_later(arpc_request *req, void *ctx)
{
    for (size_t i = 0; i < LATER_MAX; i++) {
        if (later[i] == NULL) {
            later[i] = req;
            FUZZ_CHECK(arpc_request_on_cancel(req, later_cancelled, &later[i]) == ARPC_OK);
            return;
        }
    }
    arpc_reply(req, NULL, 0);
}

static void answer_later(void)
{
    for (size_t i = 0; i < LATER_MAX; i++) {
        arpc_request *req = later[i];
        later[i] = NULL;
        if (req != NULL)
            arpc_reply(req, "late", 4);
    }
}

static void setup(void)
{
    arpc_loop *loop = fuzz_loop();
    fuzz_log_checked();
    arpc_server_options so = {
        .loop = loop,
        .workers = 1,
        .max_frame = 1024,            /* so small inputs reach the oversized-call paths (an arpc
                                       * frame's header says it; a JSON-RPC object must be longer) */
        .reply_cache_bytes = 1u << 20, /* numbered calls are remembered: bounded across inputs */
    };
    FUZZ_CHECK(arpc_server_create(&srv, &so) == ARPC_OK);
    arpc_method_options inl = {.inline_on_loop = true};
    FUZZ_CHECK(arpc_server_register(srv, "f.echo", h_echo, NULL, &inl) == ARPC_OK);
    FUZZ_CHECK(arpc_server_register(srv, "f.fail", h_fail, NULL, &inl) == ARPC_OK);
    FUZZ_CHECK(arpc_server_register(srv, "f.big", h_big, NULL, &inl) == ARPC_OK);
    FUZZ_CHECK(arpc_server_register(srv, "f.later", h_later, NULL, &inl) == ARPC_OK);
    FUZZ_CHECK(arpc_server_listen(srv, ADDR, NULL, 0) == ARPC_OK);
}

static int connect_server(void)
{
    int fd = -1;
    FUZZ_CHECK(arpc_transport_connect(ADDR, 1000, &fd, NULL, 0) == ARPC_OK);
    return fd;
}

static const uint32_t SERVER_KINDS = 1u << ARPC_FRAME_HELLO | 1u << ARPC_FRAME_REPLY | 1u << ARPC_FRAME_ERROR |
                                     1u << ARPC_FRAME_PING | 1u << ARPC_FRAME_PONG | 1u << ARPC_FRAME_GOAWAY;

/* ---- a good call on a fresh connection ---- */

static bool good_answered;
static void good_on_frame(struct fuzz_out *o, const struct arpc_frame *f)
{
    if (f->f_kind == ARPC_FRAME_REPLY && f->f_xid == 1 && f->f_payload_len == 2 && memcmp(f->f_payload, "ok", 2) == 0)
        good_answered = true;
}
static bool good_done(void *arg) { return good_answered; }

static void good_call(void)
{
    uint8_t buf[128];
    size_t n = arpc_frame_encode_hello(buf, 42, 0, 0, 0);
    n += arpc_frame_encode_request(buf + n, ARPC_FRAME_REQUEST, 1, 0, 0, 0, "f.echo", 6, "ok", 2);
    int fd = connect_server();
    fuzz_out_reset(&out, SERVER_KINDS);
    out.fo_on_frame = good_on_frame;
    good_answered = false;
    FUZZ_CHECK(fuzz_feed(fd, buf, n, &out));
    FUZZ_CHECK(fuzz_turn_until(fd, &out, good_done, NULL, 1000));
    close(fd);
    fuzz_turn(); /* the server sees the close */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (srv == NULL)
        setup();
    int fd = connect_server();
    fuzz_out_reset(&out, SERVER_KINDS);
    struct fuzz_chunks in = {data, size};
    const uint8_t *chunk;
    size_t len;
    while (fuzz_next_chunk(&in, &chunk, &len)) {
        if (len == 0)
            fuzz_turn();
        else if (!fuzz_feed(fd, chunk, len, &out))
            break;
    }
    /* The peer half-closes, then leaves: the server keeps the connection while calls it
     * read are held (a half-closed peer still reads its answers), and closes it once they are
     * answered; their replies meet a peer that is gone. */
    shutdown(fd, SHUT_WR);
    fuzz_turn();
    close(fd);
    answer_later();
    for (int i = 0; i < 1000 && sconn_first(srv) != NULL; i++)
        fuzz_turn();
    FUZZ_CHECK(sconn_first(srv) == NULL);
    good_call();
    return 0;
}
