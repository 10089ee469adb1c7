/* The loop driven on the fuzzer's thread, chunked input, feeding a peer, checking its output. */
#include "fuzz_io.h"

#include <errno.h>
#include <linux/sockios.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

/* Turns without a byte of progress after which a peer is taken to hold its input. A peer
 * that reads reads within one turn (the bytes are in its socket before the turn starts);
 * the margin covers a close queued behind a flush. */
#define STALL_TURNS 4

static arpc_loop *fz_loop;
static arpc_future *fz_never; /* never completed: one run_until(…, 0) is one turn */

void fuzz_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "fuzz check failed at %s:%d: %s\n", file, line, what);
    abort();
}

arpc_loop *fuzz_loop(void)
{
    FUZZ_CHECK(arpc_loop_create(&fz_loop, NULL) == ARPC_OK);
    FUZZ_CHECK(arpc_future_create(&fz_never) == ARPC_OK);
    return fz_loop;
}

arpc_loop *fuzz_loop_get(void) { return fz_loop; }

void fuzz_turn(void)
{
    int rc = arpc_loop_run_until(fz_loop, fz_never, 0);
    FUZZ_CHECK(rc == ARPC_EPENDING);
}

static void log_checked(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)ctx;
    (void)level;
    for (const char *p = line; *p != '\0'; p++)
        FUZZ_CHECK(*p >= 0x20 && *p <= 0x7e);
}

void fuzz_log_checked(void) { arpc_set_logger(log_checked, NULL, ARPC_LOG_DEBUG); }

bool fuzz_next_chunk(struct fuzz_chunks *c, const uint8_t **chunk, size_t *len)
{
    if (c->fc_left == 0)
        return false;
    size_t n = c->fc_p[0];
    c->fc_p++;
    c->fc_left--;
    if (n > c->fc_left)
        n = c->fc_left;
    *chunk = c->fc_p;
    *len = n;
    c->fc_p += n;
    c->fc_left -= n;
    return true;
}

void fuzz_out_reset(struct fuzz_out *o, uint32_t kinds)
{
    o->fo_len = 0;
    o->fo_kinds = kinds;
    o->fo_seen = 0;
    o->fo_frames = 0;
    o->fo_eof = false;
    o->fo_json = false;
    o->fo_on_frame = NULL;
}

/* A JSON-RPC server's output: every whole line one object, no control bytes in it. */
static void out_json_lines(struct fuzz_out *o)
{
    size_t off = 0;
    for (;;) {
        uint8_t *nl = memchr(o->fo_buf + off, '\n', o->fo_len - off);
        if (nl == NULL)
            break;
        size_t len = (size_t)(nl - (o->fo_buf + off));
        FUZZ_CHECK(len >= 2 && o->fo_buf[off] == '{' && o->fo_buf[off + len - 1] == '}');
        for (size_t i = 0; i < len; i++)
            FUZZ_CHECK(o->fo_buf[off + i] >= 0x20);
        o->fo_frames++;
        off += len + 1;
    }
    memmove(o->fo_buf, o->fo_buf + off, o->fo_len - off);
    o->fo_len -= off;
}

/* Decodes every whole frame in o's buffer; keeps the partial rest. */
static void out_decode(struct fuzz_out *o)
{
    /* An arpc frame starts with its magic, never '{': a stream that began like JSON made the
     * server speak JSON-RPC (core/jsonrpc_server.c). */
    if (o->fo_frames == 0 && o->fo_len > 0 && o->fo_buf[0] == '{')
        o->fo_json = true;
    if (o->fo_json) {
        out_json_lines(o);
        return;
    }
    size_t off = 0;
    for (;;) {
        struct arpc_frame f;
        size_t consumed;
        int rc = arpc_frame_decode(o->fo_buf + off, o->fo_len - off, UINT32_MAX, &f, &consumed, NULL);
        if (rc == ARPC_EAGAIN)
            break;
        FUZZ_CHECK(rc == ARPC_OK); /* arpc never writes a malformed frame */
        FUZZ_CHECK(f.f_kind < 32 && (o->fo_kinds & (1u << f.f_kind)) != 0);
        o->fo_seen |= 1u << f.f_kind;
        o->fo_frames++;
        if (o->fo_on_frame != NULL)
            o->fo_on_frame(o, &f);
        off += consumed;
    }
    memmove(o->fo_buf, o->fo_buf + off, o->fo_len - off);
    o->fo_len -= off;
}

void fuzz_out_read(struct fuzz_out *o, int fd)
{
    while (!o->fo_eof) {
        FUZZ_CHECK(o->fo_len < sizeof(o->fo_buf)); /* a frame this big is not in any test */
        ssize_t n = read(fd, o->fo_buf + o->fo_len, sizeof(o->fo_buf) - o->fo_len);
        if (n > 0) {
            o->fo_len += (size_t)n;
            out_decode(o);
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            o->fo_eof = true; /* closed (or reset: the same to a peer) */
        if (n < 0 && errno == EINTR)
            continue;
        return;
    }
}

/* Bytes written to a unix stream socket that its peer has not read yet. */
static size_t unread_by_peer(int fd)
{
    int n = 0;
    FUZZ_CHECK(ioctl(fd, SIOCOUTQ, &n) == 0);
    return (size_t)n;
}

bool fuzz_feed(int fd, const void *buf, size_t len, struct fuzz_out *o)
{
    const uint8_t *p = buf;
    unsigned stalled = 0;
    while (len > 0 && !o->fo_eof && stalled < STALL_TURNS) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            stalled = 0;
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            o->fo_eof = true; /* EPIPE: the peer closed */
            break;
        } else {
            stalled++;
        }
        fuzz_turn();
        fuzz_out_read(o, fd);
    }
    size_t last = unread_by_peer(fd);
    stalled = 0;
    while (!o->fo_eof && last > 0 && stalled < STALL_TURNS) {
        fuzz_turn();
        fuzz_out_read(o, fd);
        size_t now = unread_by_peer(fd);
        stalled = now < last ? 0 : stalled + 1;
        last = now;
    }
    /* One more turn: what the peer read may have queued a reply or a close. */
    fuzz_turn();
    fuzz_out_read(o, fd);
    return !o->fo_eof;
}

bool fuzz_turn_until(int fd, struct fuzz_out *o, bool (*cond)(void *arg), void *arg, unsigned turns)
{
    for (unsigned i = 0; i < turns; i++) {
        if (cond != NULL ? cond(arg) : o->fo_eof)
            return true;
        fuzz_turn();
        if (fd >= 0)
            fuzz_out_read(o, fd);
    }
    return cond != NULL ? cond(arg) : o->fo_eof;
}
