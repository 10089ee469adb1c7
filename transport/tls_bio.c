/*
 * The socket under a TLS stream, as an OpenSSL BIO that writes with send(MSG_NOSIGNAL).
 * OpenSSL's own socket BIO writes with write(2): a peer that went away would raise SIGPIPE,
 * which kills a program that did not ignore it; a library must not ask that of its users.
 * Reads are plain recv(2). The fd is not the BIO's: the stream closes it. Its data is the
 * stream (its fd, and the count of bytes sent, s_sent).
 */
#include <errno.h>
#include <openssl/bio.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>

#include "transport/tls_internal.h"

static BIO_METHOD *bio_method; /* made once, never changed after: shared by every stream */
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static struct arpc_stream *bio_stream(BIO *b) { return BIO_get_data(b); }

static bool bio_again(void) { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR; }

static int bio_write(BIO *b, const char *buf, size_t len, size_t *written)
{
    BIO_clear_retry_flags(b);
    ssize_t n = send(bio_stream(b)->s_fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0) {
        arpc_stream_sent(bio_stream(b), (size_t)n);
        *written = (size_t)n;
        return 1;
    }
    if (bio_again())
        BIO_set_retry_write(b);
    return 0;
}

static int bio_read(BIO *b, char *buf, size_t len, size_t *readbytes)
{
    BIO_clear_retry_flags(b);
    ssize_t n = recv(bio_stream(b)->s_fd, buf, len, 0);
    if (n > 0) {
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
        return 1; /* nothing is buffered here */
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

BIO *tls_bio_socket(struct arpc_stream *s)
{
    pthread_once(&bio_once, bio_method_make);
    BIO *b = bio_method != NULL ? BIO_new(bio_method) : NULL;
    if (b != NULL) {
        BIO_set_data(b, s);
        BIO_set_init(b, 1);
    }
    return b;
}
