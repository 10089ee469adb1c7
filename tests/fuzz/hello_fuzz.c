/*
 * libFuzzer target: the HELLO handshake, both sides, with an arbitrary HELLO body (client id
 * or epoch, flags, max_frame, the extension fields expiry_s and reserved, any length) behind
 * a well-formed header.
 *
 * Input: byte 0 bit 0 picks the side under test (0: a real server gets the HELLO, then a good
 * call; 1: a real client gets it from a fake server while connecting); the rest is the body.
 * The server lets in one token (FUZZ_HELLO_TOKEN, judged by arpc_auth_fixed_tokens) and the
 * fuzzer's uid, so a HELLO's token (ARPC_HELLO_TOKEN) may be right, wrong, over the limit of
 * ARPC_AUTH_TOKEN_MAX_BYTES, cut short or missing. A body may be up to ARPC_HELLO_BODY_MAX + 1
 * bytes (scripts/fuzz.sh gives this target a larger -max_len), so both over-limit cases are
 * reachable.
 *
 * Checked on every input, besides no crash, leak or sanitizer report and printable log lines:
 *   server side: it answers HELLO and then the call (a REPLY, or an ERROR when the HELLO's
 *     max_frame is too small for the reply), or it refuses the HELLO with a GOAWAY and
 *     closes; either way no connection stays open once the peer left. A HELLO that decodes
 *     is answered exactly when it carries the right token, and otherwise refused with
 *     GOAWAY(ARPC_EAUTH): nothing runs behind a wrong, oversized or missing token;
 *   client side: the connect succeeds or fails with an arpc_error code; once connected, a
 *     call is answered (ARPC_OK), or refused locally as ARPC_ETOOLARGE when the server's
 *     max_frame cannot hold it; the client closes cleanly.
 */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/server_internal.h"
#include "fuzz_io.h"
#include "fuzz_peer.h"
#include "hello_fuzz.h"
#include "transport/transport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SERVER_ADDR "inproc://fuzz-hello-server"
#define PEER_ADDR "inproc://fuzz-hello-peer"

static arpc_loop *loop;
static arpc_server *srv;
static struct fuzz_out out;
static uint8_t hello[ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_MAX + 1];
static const arpc_auth_token tokens[] = {{FUZZ_HELLO_TOKEN, sizeof(FUZZ_HELLO_TOKEN) - 1, 0}, {NULL, 0, 0}};
static uint32_t allow_uid;

static void h_echo(arpc_request *req, void *ctx)
{
    size_t len;
    const void *p = arpc_request_data(req, &len);
    arpc_reply(req, p, len);
}

static void setup(void)
{
    loop = fuzz_loop();
    fuzz_log_checked();
    allow_uid = (uint32_t)getuid(); /* inproc peers have credentials: the allow-list is read too */
    arpc_server_options so = {.loop = loop,
                              .workers = 1,
                              .reply_cache_bytes = 1u << 20,
                              .authenticate = arpc_auth_fixed_tokens,
                              .authenticate_ctx = (void *)tokens,
                              .allow_uids = &allow_uid,
                              .allow_uids_count = 1};
    FUZZ_CHECK(arpc_server_create(&srv, &so) == ARPC_OK);
    arpc_method_options inl = {.inline_on_loop = true};
    FUZZ_CHECK(arpc_server_register(srv, "f.echo", h_echo, NULL, &inl) == ARPC_OK);
    FUZZ_CHECK(arpc_server_listen(srv, SERVER_ADDR, NULL, 0) == ARPC_OK);
    fuzz_peer_listen(PEER_ADDR);
}

/* A HELLO header (as arpc_frame_encode_header would write one) around body. */
static size_t hello_frame(const uint8_t *body, size_t len)
{
    if (len > sizeof(hello) - ARPC_FRAME_HEADER_SIZE)
        len = sizeof(hello) - ARPC_FRAME_HEADER_SIZE;
    size_t n = arpc_frame_encode_header(hello, ARPC_FRAME_HELLO, 0, (uint32_t)len);
    memcpy(hello + n, body, len);
    return n + len;
}

/* ---- a real server gets the HELLO ---- */

static bool server_answered; /* a REPLY or ERROR for xid 1 */
static uint32_t goaway_code;  /* the GOAWAY's code, 0 before one */
static void server_on_frame(struct fuzz_out *o, const struct arpc_frame *f)
{
    if ((f->f_kind == ARPC_FRAME_REPLY || f->f_kind == ARPC_FRAME_ERROR) && f->f_xid == 1)
        server_answered = true;
    if (f->f_kind == ARPC_FRAME_GOAWAY)
        goaway_code = f->f_code;
}

/* The server's verdict told in advance: the HELLO decodes (else *decodes = false) and carries
 * the token it lets in. */
static bool hello_has_token(const uint8_t *frame, size_t len, bool *decodes)
{
    struct arpc_frame f;
    size_t used = 0;
    *decodes = arpc_frame_decode(frame, len, ARPC_HELLO_BODY_MAX, &f, &used, NULL) == ARPC_OK && used == len;
    return *decodes && f.f_token != NULL &&
           arpc_auth_token_equal(f.f_token, f.f_token_len, tokens[0].token, tokens[0].len);
}
static bool answered_or_closed(void *arg) { return server_answered || out.fo_eof; }

static void server_side(const uint8_t *body, size_t len)
{
    int fd = -1;
    FUZZ_CHECK(arpc_transport_connect(SERVER_ADDR, 1000, &fd, NULL, 0) == ARPC_OK);
    fuzz_out_reset(&out, 1u << ARPC_FRAME_HELLO | 1u << ARPC_FRAME_REPLY | 1u << ARPC_FRAME_ERROR |
                             1u << ARPC_FRAME_PING | 1u << ARPC_FRAME_GOAWAY);
    out.fo_on_frame = server_on_frame;
    server_answered = false;
    goaway_code = 0;
    uint8_t call[64];
    size_t cn = arpc_frame_encode_request(call, ARPC_FRAME_REQUEST, 1, 0, 0, 0, "f.echo", 6, "ok", 2);
    size_t hn = hello_frame(body, len);
    bool decodes;
    bool token_ok = hello_has_token(hello, hn, &decodes);
    fuzz_feed(fd, hello, hn, &out);
    fuzz_feed(fd, call, cn, &out);
    FUZZ_CHECK(fuzz_turn_until(fd, &out, answered_or_closed, NULL, 1000));
    bool said_hello = (out.fo_seen & 1u << ARPC_FRAME_HELLO) != 0;
    FUZZ_CHECK(said_hello ? server_answered : (out.fo_seen & 1u << ARPC_FRAME_GOAWAY) != 0);
    FUZZ_CHECK(!said_hello || token_ok);
    if (decodes)
        FUZZ_CHECK(said_hello == token_ok && (token_ok || goaway_code == ARPC_EAUTH));
    shutdown(fd, SHUT_WR);
    FUZZ_CHECK(fuzz_turn_until(fd, &out, NULL, NULL, 1000));
    close(fd);
    FUZZ_CHECK(sconn_first(srv) == NULL);
}

/* ---- a real client gets it ---- */

static bool request_seen(void *arg) { return (out.fo_seen & 1u << ARPC_FRAME_REQUEST) != 0 || arpc_future_poll(arg) != ARPC_EPENDING; }
static bool future_done(void *arg) { return arpc_future_poll(arg) != ARPC_EPENDING; }

/* The xid the client sent its call under (a numbered call's is its seq with
 * ARPC_XID_SEQ_BIT: the reply must echo what came, whatever the numbering). */
static uint64_t request_xid;

static void client_on_frame(struct fuzz_out *o, const struct arpc_frame *f)
{
    (void)o;
    if (f->f_kind == ARPC_FRAME_REQUEST)
        request_xid = f->f_xid;
}

static void client_side(const uint8_t *body, size_t len)
{
    fuzz_peer_set_greeting(hello, hello_frame(body, len));
    arpc_client_options co = {.loop = loop, .no_reconnect = true, .client_id = 5, .connect_timeout_ms = 2000};
    arpc_client *c = NULL;
    int rc = arpc_client_connect(&c, PEER_ADDR, &co);
    int fd = fuzz_peer_take();
    if (rc != ARPC_OK) {
        FUZZ_CHECK(rc > ARPC_OK && rc < ARPC_ERROR_COUNT_ && rc != ARPC_EPENDING && c == NULL);
        if (fd >= 0)
            close(fd);
        return;
    }
    FUZZ_CHECK(fd >= 0);
    fuzz_out_reset(&out, 1u << ARPC_FRAME_HELLO | 1u << ARPC_FRAME_REQUEST | 1u << ARPC_FRAME_PING |
                             1u << ARPC_FRAME_GOAWAY);
    out.fo_on_frame = client_on_frame;
    request_xid = 0;
    arpc_call_options o = {.deadline_ms = ARPC_FOREVER, .semantics = ARPC_AT_MOST_ONCE};
    arpc_future *f = arpc_call_async_opts(c, "f.m", "x", 1, &o);
    FUZZ_CHECK(f != NULL);
    FUZZ_CHECK(fuzz_turn_until(fd, &out, request_seen, f, 1000));
    if (arpc_future_poll(f) != ARPC_EPENDING) {
        FUZZ_CHECK(arpc_future_poll(f) == ARPC_ETOOLARGE); /* the server's max_frame is below it */
    } else {
        uint8_t reply[ARPC_FRAME_HEADER_SIZE + 2];
        FUZZ_CHECK(request_xid != 0);
        size_t n = arpc_frame_encode_header(reply, ARPC_FRAME_REPLY, request_xid, 2);
        memcpy(reply + n, "ok", 2);
        fuzz_feed(fd, reply, n + 2, &out);
        FUZZ_CHECK(fuzz_turn_until(fd, &out, future_done, f, 1000));
        FUZZ_CHECK(arpc_future_poll(f) == ARPC_OK);
    }
    arpc_future_release(f);
    close(fd);
    FUZZ_CHECK(arpc_client_close(c) == ARPC_OK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (loop == NULL)
        setup();
    if (size == 0)
        return 0;
    if (data[0] & 1)
        client_side(data + 1, size - 1);
    else
        server_side(data + 1, size - 1);
    return 0;
}
