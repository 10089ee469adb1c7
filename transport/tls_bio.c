/*
 * The socket under a TLS stream, as an OpenSSL BIO that writes with send(MSG_NOSIGNAL).
 * OpenSSL's own socket BIO writes with write(2): a peer that went away would raise SIGPIPE,
 * which kills a program that did not ignore it; a library must not ask that of its users.
 * Reads are plain recv(2), within the limits of the stream's struct tls_wire (its data): so
 * many recv calls per read or write of the stream, and a stranger's handshake bytes. The fd is
 * not the BIO's: the stream closes it.
 *
 * Writes after the handshake never wait (struct tls_wire, w_out): what the socket does not
 * take is kept, in order, and sent before anything else (tls_bio_flush; the stream offers
 * nothing new while some waits). Before the handshake completed a full socket is OpenSSL's
 * retry, as with its own socket BIO: the handshake's flights are driven by reads and writes
 * alike, and nothing else would send what waited.
 */
#include <errno.h>
#include <openssl/bio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "transport/tls_internal.h"

static BIO_METHOD *bio_method; /* made once, never changed after: shared by every stream */
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static struct tls_wire *bio_wire(BIO *b) { return BIO_get_data(b); }

static struct arpc_stream *bio_stream(BIO *b) { return bio_wire(b)->w_stream; }

static bool bio_again(void) { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR; }

/* Keeps bytes the socket did not take after those already waiting; false (the write fails,
 * and the stream with it) past TLS_OUT_MAX or without memory. */
static bool out_keep(struct tls_wire *w, const char *bytes, size_t n)
{
    size_t waiting = w->w_out_len - w->w_out_off;
    if (waiting + n > TLS_OUT_MAX) {
        w->w_out_over = true;
        return false;
    }
    if (w->w_out_off > 0) { /* what was sent goes first (at most TLS_OUT_MAX moved) */
        memmove(w->w_out, w->w_out + w->w_out_off, waiting);
        w->w_out_off = 0;
        w->w_out_len = waiting;
    }
    if (w->w_out_len + n > w->w_out_cap) {
        size_t cap = w->w_out_len + n < 2 * w->w_out_cap ? 2 * w->w_out_cap : w->w_out_len + n;
        uint8_t *grown = arpc_realloc(w->w_out, cap);
        if (grown == NULL)
            return false;
        w->w_out = grown;
        w->w_out_cap = cap;
    }
    memcpy(w->w_out + w->w_out_len, bytes, n);
    w->w_out_len += n;
    return true;
}

static int bio_write(BIO *b, const char *buf, size_t len, size_t *written)
{
    BIO_clear_retry_flags(b);
    struct tls_wire *w = bio_wire(b);
    size_t sent = 0;
    if (w->w_out_len == 0) { /* (nothing waits: else these bytes go behind it) */
        ssize_t n = send(bio_stream(b)->s_fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && !bio_again())
            return 0; /* broken: OpenSSL fails the stream */
        if (n > 0) {
            arpc_stream_sent(bio_stream(b), (size_t)n);
            sent = (size_t)n;
        }
        if (!w->w_shaken) {
            if (n < 0) {
                BIO_set_retry_write(b);
                return 0;
            }
            *written = sent;
            return 1;
        }
    }
    if (sent < len && !out_keep(w, buf + sent, len - sent))
        return 0;
    *written = len;
    return 1;
}

int tls_bio_flush(struct tls_wire *w)
{
    while (w->w_out_off < w->w_out_len) {
        ssize_t n = send(w->w_stream->s_fd, w->w_out + w->w_out_off, w->w_out_len - w->w_out_off, MSG_NOSIGNAL);
        if (n < 0)
            return bio_again() ? ARPC_EAGAIN : ARPC_ECONNLOST;
        arpc_stream_sent(w->w_stream, (size_t)n);
        w->w_out_off += (size_t)n;
    }
    tls_bio_out_free(w); /* an idle connection holds none of it */
    return ARPC_OK;
}

void tls_bio_out_free(struct tls_wire *w)
{
    arpc_free(w->w_out);
    w->w_out = NULL;
    w->w_out_off = w->w_out_len = w->w_out_cap = 0;
}

/* A server's peer that sends more handshake than any client needs is refused (w_over): the
 * bytes would be held, and parsed, before anything else is known of it. */
static bool bio_hello_fits(struct tls_wire *w, const uint8_t *bytes, size_t n)
{
    if (!SSL_is_server(w->w_ssl) || SSL_is_init_finished(w->w_ssl))
        return true;
    w->w_shake_bytes += n;
    if (atomic_load_explicit(&w->w_stream->s_sent, memory_order_relaxed) == 0)
        w->w_hello_bytes += n;
    if (w->w_hello_bytes > TLS_CLIENT_HELLO_MAX) {
        w->w_over = "ClientHello";
        w->w_over_limit = TLS_CLIENT_HELLO_MAX;
    } else if (w->w_shake_bytes > TLS_HANDSHAKE_READ_MAX) {
        w->w_over = "handshake";
        w->w_over_limit = TLS_HANDSHAKE_READ_MAX;
    } else if (!tls_guard_feed(&w->w_guard, bytes, n, TLS_CLIENT_HELLO_MAX, SSL_version(w->w_ssl) == TLS1_2_VERSION)) {
        w->w_over = "handshake message announcing";
        w->w_over_limit = TLS_CLIENT_HELLO_MAX;
    }
    return w->w_over == NULL;
}

static int bio_read(BIO *b, char *buf, size_t len, size_t *readbytes)
{
    BIO_clear_retry_flags(b);
    struct tls_wire *w = bio_wire(b);
    if (w->w_over != NULL)
        return 0; /* the stream fails with w_over's words */
    if (w->w_recvs_left == 0) {
        BIO_set_retry_read(b); /* this read's share is spent: the rest next turn */
        return 0;
    }
    w->w_recvs_left--;
    ssize_t n = recv(w->w_stream->s_fd, buf, len, 0);
    if (n > 0) {
        if (!bio_hello_fits(w, (const uint8_t *)buf, (size_t)n))
            return 0;
        *readbytes = (size_t)n;
        return 1;
    }
    if (n < 0 && bio_again())
        BIO_set_retry_read(b);
    return 0; /* 0 bytes without a retry: the peer closed */
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1; /* what waits in w_out is the stream's to send (tls_bio_flush) */
    case BIO_C_GET_FD:
        if (ptr != NULL)
            *(int *)ptr = bio_stream(b)->s_fd;
        return bio_stream(b)->s_fd;
    default:
        return 0;
    }
}

static void bio_method_make(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR, "arpc socket");
    if (m != NULL && (BIO_meth_set_write_ex(m, bio_write) != 1 || BIO_meth_set_read_ex(m, bio_read) != 1 ||
                      BIO_meth_set_ctrl(m, bio_ctrl) != 1)) {
        BIO_meth_free(m);
        m = NULL;
    }
    bio_method = m;
}

BIO *tls_bio_socket(struct tls_wire *w)
{
    pthread_once(&bio_once, bio_method_make);
    BIO *b = bio_method != NULL ? BIO_new(bio_method) : NULL;
    if (b != NULL) {
        BIO_set_data(b, w);
        BIO_set_init(b, 1);
    }
    return b;
}
