/*
 * The TLS stream (transport/tls.h): a connection's bytes through an OpenSSL SSL object over
 * its non-blocking socket, on the connection's loop thread, with no thread of its own.
 *
 * Design notes.
 *
 * Handshake: never driven on its own. The stream is made in connect or accept state, and the
 * connection's first reads and writes (the client's HELLO is queued at once) run it inside
 * SSL_read / SSL_write; SSL_ERROR_WANT_READ / WANT_WRITE become the stream's WANT results, so
 * the connection's own watchers wait for the socket. A handshake that stalls is the server's
 * handshake timeout's business (no HELLO arrives before it completes). Any failure before the
 * handshake ends, a close included, is ARPC_ETLS (but a server's peer that closes before
 * sending a byte: ARPC_ECONNLOST, as on a plain socket); after it, a peer that goes away is
 * ARPC_ECONNLOST like on any socket, a TLS alert (e.g. TLS 1.3's "certificate required",
 * which a client hears only after its side of the handshake is done) ARPC_ETLS.
 *
 * A stranger's cost: the thread CPU time of the reads and writes that run the handshake, and
 * on a server those until its owner lets the peer in (s_let_in: its HELLO accepted), is
 * counted (s_setup_ns; two clock reads per call until then, none after), so that a peer that
 * faults after making the server do its key exchange, its signature, a chain's parsing, or
 * the records of a HELLO sent a byte at a time, is charged for them (core/fault_rate.c), not
 * as one plain fault.
 *
 * Reading is bounded by records, not by the bytes they yield (struct tls_wire): a read may
 * make TLS_READ_RECVS recv calls, and two more per record of room it was given, then stops
 * with what it has (or WANT_READ), and the socket's readiness brings the connection back next
 * turn. A peer of 1-byte records, or of handshake messages that yield nothing (a KeyUpdate
 * flood), costs the loop a bounded slice a turn like any other. A server's stranger may send
 * at most TLS_CLIENT_HELLO_MAX of ClientHello and TLS_HANDSHAKE_READ_MAX of handshake.
 *
 * Reading fills the caller's buffer record after record until the socket has nothing more or
 * the read's share of recv calls is spent (below): a short read then leaves bytes in the
 * socket, whose level-triggered readiness brings the connection back; a record larger than
 * the room left stays partly in OpenSSL (s_buffered tells the connection, which comes back
 * for it).
 *
 * Writing: the connection hands a batch of frames (an iovec). Each SSL_write makes at least
 * one record (29 bytes of overhead with AES-GCM) and one send(2), so small frames are
 * gathered into one buffer of up to one record's plaintext (16 KiB) first; a frame that alone
 * fills a record is written from its own memory, one record at a time (a write that ends
 * the handshake may write application data after it: below). A write that must wait during the handshake is
 * retried with the same bytes (OpenSSL's rule): the connection calls again with the same first
 * bytes, and the stream, remembering how many it had offered (ts_offered), offers them again
 * from where they were.
 *
 * After the handshake nothing waits inside OpenSSL: the BIO keeps what the socket did not take
 * (tls_bio.c, w_out), so that a peer's KeyUpdate request read meanwhile can be answered
 * (OpenSSL 3.0 fails the connection, "bad length", when it must answer one while a record of
 * its own waits for a retry). A write then offers nothing new while bytes wait there: it sends
 * them first, and says WANT_WRITE while the socket is full. A record only partly sent is not
 * counted yet (ts_held): the connection keeps its bytes queued, and with them its watch for
 * writability and what it knows of what left (a frame counts as written only once it has
 * left), until the record has; the next write, given the same bytes first, counts them then.
 */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/le.h"
#include "transport/tls_internal.h"

#define TLS_RECORD_MAX 16384     /* the largest plaintext one TLS record carries */
/* recv calls a read may make beyond two per record of its room (a record's header, then its
 * body): a record whose body comes in pieces takes a few more. */
#define TLS_READ_RECVS 16u

struct tls_stream {
    struct arpc_stream ts_base;
    SSL *ts_ssl;
    struct tls_wire ts_wire; /* the socket under ts_ssl, as its BIO reads it */
    bool ts_failed;     /* a fatal error: no close_notify, no further SSL calls but free */
    bool ts_gathered;   /* the offered bytes are in ts_wbuf (else they are iov[0]'s own) */
    bool ts_read_any;   /* application bytes came from the peer */
    bool ts_no_cert;    /* client: the server asked for a certificate and we have none */
    size_t ts_held;     /* bytes written, counted once the BIO's w_out has left (the first
                         * bytes of the next write, offered again as they are) */
    bool ts_notified;   /* close_notify is written (it may still wait in w_out) */
    size_t ts_offered;  /* bytes of a write that must be retried as they are; 0: none */
    uint8_t *ts_wbuf;   /* TLS_RECORD_MAX bytes while a write is under way, else NULL */
    char ts_why[ARPC_WHY_MAX];
};

static const struct arpc_stream_ops tls_stream_ops;

/* Whether any byte came from the peer (the handshake's first included). */
static bool peer_sent_any(const struct tls_stream *ts) { return BIO_number_read(SSL_get_rbio(ts->ts_ssl)) > 0; }

/* Whether the handshake got past the peer's first message (a server read its ClientHello, a
 * client its ServerHello): the peer speaks TLS, whatever it did next. */
static bool peer_spoke_tls(const struct tls_stream *ts)
{
    OSSL_HANDSHAKE_STATE st = SSL_get_state(ts->ts_ssl);
    return st != TLS_ST_BEFORE && st != TLS_ST_CW_CLNT_HELLO;
}

/* A failed SSL call: its WANT result, 0 for a clean close, or ARPC_STREAM_FAILED with why. */
static ssize_t tls_result(struct tls_stream *ts, int ret, bool reading)
{
    int err = SSL_get_error(ts->ts_ssl, ret);
    if (err == SSL_ERROR_WANT_READ) {
        ERR_clear_error();
        return ARPC_STREAM_WANT_READ;
    }
    if (err == SSL_ERROR_WANT_WRITE) {
        ERR_clear_error();
        return ARPC_STREAM_WANT_WRITE;
    }
    /* (OpenSSL counts a connection that failed as back in its handshake: the callback's word.) */
    bool shaken = ts->ts_wire.w_shaken || SSL_is_init_finished(ts->ts_ssl);
    if (ts->ts_wire.w_out_over) { /* a peer that reads nothing kept asking for messages */
        ERR_clear_error();
        ts->ts_failed = true;
        ts->ts_base.s_error = ARPC_ETLS;
        ts->ts_base.s_why = ts->ts_why;
        snprintf(ts->ts_why, sizeof(ts->ts_why),
                 "TLS failed: the peer reads nothing, and what it asked for (key updates, alerts) would "
                 "hold over %d bytes here",
                 TLS_OUT_MAX);
        return ARPC_STREAM_FAILED;
    }
    if (ts->ts_wire.w_over != NULL) { /* a stranger sent more than its handshake may take */
        ERR_clear_error();
        ts->ts_failed = true;
        ts->ts_base.s_error = ARPC_ETLS;
        ts->ts_base.s_why = ts->ts_why;
        snprintf(ts->ts_why, sizeof(ts->ts_why), "TLS handshake failed: the peer sent a %s over %zu bytes",
                 ts->ts_wire.w_over, ts->ts_wire.w_over_limit);
        return ARPC_STREAM_FAILED;
    }
    if (err == SSL_ERROR_ZERO_RETURN && reading && shaken)
        return 0; /* close_notify */
    unsigned long e = ERR_peek_last_error();
    bool eof = err == SSL_ERROR_ZERO_RETURN || (err == SSL_ERROR_SYSCALL && e == 0) ||
               (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING);
    ts->ts_failed = true;
    ts->ts_base.s_why = ts->ts_why;
    if (shaken && (eof || err == SSL_ERROR_SYSCALL) && ts->ts_no_cert && !ts->ts_read_any) {
        /* TLS 1.3: a client's handshake ends before the server has checked its certificate;
         * the server's refusal (an alert) may be lost to a reset when our first frame
         * reaches its closed socket. What we know says why. */
        ERR_clear_error();
        ts->ts_base.s_error = ARPC_ETLS;
        snprintf(ts->ts_why, sizeof(ts->ts_why),
                 "TLS failed: the server asked for a client certificate, none is configured, and it closed "
                 "the connection (mutual TLS: certificate required)");
        return ARPC_STREAM_FAILED;
    }
    if (shaken && (eof || err == SSL_ERROR_SYSCALL)) {
        ERR_clear_error();
        ts->ts_base.s_error = ARPC_ECONNLOST;
        snprintf(ts->ts_why, sizeof(ts->ts_why), "the connection broke");
        return ARPC_STREAM_FAILED;
    }
    if (!shaken && (eof || err == SSL_ERROR_SYSCALL) && SSL_is_server(ts->ts_ssl) && !peer_sent_any(ts)) {
        /* A peer that connected and went without a byte (a TCP health check, a probe): as
         * on a plain socket, a lost connection, not a TLS failure (nor a fault of its:
         * core/fault_rate.c). A client keeps ARPC_ETLS: a server that closes before its
         * handshake refused it (max_connections on tls://). */
        ERR_clear_error();
        ts->ts_base.s_error = ARPC_ECONNLOST;
        snprintf(ts->ts_why, sizeof(ts->ts_why), "the peer closed the connection before its TLS handshake");
        return ARPC_STREAM_FAILED;
    }
    ts->ts_base.s_error = ARPC_ETLS;
    const char *what = shaken ? "TLS failed" : "TLS handshake failed";
    if (eof || (err == SSL_ERROR_SYSCALL && e == 0)) {
        ERR_clear_error();
        snprintf(ts->ts_why, sizeof(ts->ts_why), "%s: the peer closed the connection%s", what,
                 shaken || peer_spoke_tls(ts) ? ""
                                                : " (does it speak TLS? a tls:// server with no room for a connection, "
                                                  "at max_connections or out of descriptors or memory, closes so too)");
    } else if (err == SSL_ERROR_SYSCALL) {
        ERR_clear_error();
        snprintf(ts->ts_why, sizeof(ts->ts_why), "%s: the connection broke", what);
    } else {
        tls_error_text(ts->ts_why, sizeof(ts->ts_why), what, ts->ts_ssl, shaken);
    }
    return ARPC_STREAM_FAILED;
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* A read's or write's start: its share of recv calls (room bytes of plaintext wanted), and
 * its start on the set-up clock: the thread's CPU time while the handshake lasts, or on a
 * server until the peer is let in; 0 (no clock read) after. */
static uint64_t wire_arm(struct tls_stream *ts, size_t room)
{
    struct tls_wire *w = &ts->ts_wire;
    size_t records = room / TLS_RECORD_MAX + 1;
    w->w_recvs_left = TLS_READ_RECVS + (unsigned)(records < 1024 ? 2 * records : 2048);
    bool shaken = SSL_is_init_finished(ts->ts_ssl);
    return shaken && (!SSL_is_server(ts->ts_ssl) || ts->ts_base.s_let_in) ? 0 : thread_cpu_ns();
}

/* Counts what the read or write that started at t0 (wire_arm) cost before the peer was in. */
static void setup_count(struct tls_stream *ts, uint64_t t0)
{
    if (t0 != 0)
        ts->ts_base.s_setup_ns += thread_cpu_ns() - t0;
}

static ssize_t tls_read_records(struct tls_stream *ts, void *buf, size_t len)
{
    if (ts->ts_failed)
        return ARPC_STREAM_FAILED; /* as it was: OpenSSL would not say it the same way twice */
    size_t got = 0;
    while (got < len) {
        size_t n;
        int ret = SSL_read_ex(ts->ts_ssl, (uint8_t *)buf + got, len - got, &n);
        if (ret == 1) {
            got += n;
            ts->ts_read_any = true;
            continue;
        }
        ssize_t r = tls_result(ts, ret, true);
        /* What was read goes up first; a failure or close is seen again on the next call
         * (OpenSSL keeps it: tls_buffered asks for that call), a WANT on the next readiness. */
        return got > 0 ? (ssize_t)got : r;
    }
    return (ssize_t)got;
}

static ssize_t tls_read(struct arpc_stream *s, void *buf, size_t len)
{
    struct tls_stream *ts = (struct tls_stream *)s;
    uint64_t t0 = wire_arm(ts, len);
    ssize_t r = tls_read_records(ts, buf, len);
    setup_count(ts, t0);
    /* What the read made OpenSSL write (a KeyUpdate's answer) leaves now if the socket takes
     * it; else with the next write (a failed socket is that write's to report). */
    if (ts->ts_wire.w_out_len > 0 && ts->ts_held == 0)
        (void)tls_bio_flush(&ts->ts_wire);
    return r;
}

/* Offers what to write: iov[0] alone when it fills a record, else the iovecs gathered. */
static const void *tls_offer(struct tls_stream *ts, const struct iovec *iov, int iovcnt)
{
    if (ts->ts_offered == 0) {
        /* (without memory for the gathering buffer, the first buffer is a record alone) */
        ts->ts_gathered = iov[0].iov_len < TLS_RECORD_MAX && ts->ts_wbuf != NULL;
        if (!ts->ts_gathered) {
            /* One record: all that may wait in the BIO's w_out for the socket (TLS_OUT_MAX). */
            ts->ts_offered = iov[0].iov_len < TLS_RECORD_MAX ? iov[0].iov_len : TLS_RECORD_MAX;
        } else {
            for (int i = 0; i < iovcnt && ts->ts_offered < TLS_RECORD_MAX; i++) {
                size_t take = iov[i].iov_len < TLS_RECORD_MAX - ts->ts_offered ? iov[i].iov_len
                                                                                 : TLS_RECORD_MAX - ts->ts_offered;
                memcpy(ts->ts_wbuf + ts->ts_offered, iov[i].iov_base, take);
                ts->ts_offered += take;
            }
        }
    }
    return ts->ts_gathered ? (const void *)ts->ts_wbuf : iov[0].iov_base;
}

/* Sends what waits in the BIO: ARPC_OK once nothing does, else the write's result. */
static ssize_t tls_write_waiting(struct tls_stream *ts)
{
    int rc = tls_bio_flush(&ts->ts_wire);
    if (rc == ARPC_OK)
        return ARPC_OK;
    if (rc == ARPC_EAGAIN)
        return ARPC_STREAM_WANT_WRITE;
    ts->ts_failed = true;
    ts->ts_base.s_error = ARPC_ECONNLOST;
    ts->ts_base.s_why = "the connection broke";
    return ARPC_STREAM_FAILED;
}

static ssize_t tls_write_record(struct tls_stream *ts, const struct iovec *iov, int iovcnt)
{
    if (ts->ts_failed)
        return ARPC_STREAM_FAILED;
    if (ts->ts_wire.w_out_len > 0) {
        ssize_t r = tls_write_waiting(ts);
        if (r != ARPC_OK)
            return r;
    }
    if (ts->ts_held > 0) { /* iov's first bytes made the record that has now left */
        size_t n = ts->ts_held;
        ts->ts_held = 0;
        return (ssize_t)n;
    }
    bool gathering = ts->ts_offered == 0 && iov[0].iov_len < TLS_RECORD_MAX; /* tls_offer's choice */
    if (gathering && ts->ts_wbuf == NULL)
        ts->ts_wbuf = arpc_malloc(TLS_RECORD_MAX); /* NULL: a smaller record, the connection goes on */
    const void *data = tls_offer(ts, iov, iovcnt);
    size_t n = 0;
    if (ts->ts_offered != 0) { /* (else empty buffers only: nothing for a record) */
        int ret = SSL_write_ex(ts->ts_ssl, data, ts->ts_offered, &n);
        if (ret != 1) /* a WANT keeps ts_offered and ts_wbuf: the same bytes next time */
            return tls_result(ts, ret, false);
        ts->ts_offered = 0;
    }
    /* Given back as OpenSSL gives back its own (SSL_MODE_RELEASE_BUFFERS): an idle connection
     * holds none of them. */
    arpc_free(ts->ts_wbuf);
    ts->ts_wbuf = NULL;
    if (ts->ts_wire.w_out_len > 0) { /* the record waits in part: counted once it has left */
        ts->ts_held = n;
        return 0;
    }
    return (ssize_t)n;
}

static ssize_t tls_writev(struct arpc_stream *s, const struct iovec *iov, int iovcnt)
{
    struct tls_stream *ts = (struct tls_stream *)s;
    uint64_t t0 = wire_arm(ts, 0); /* (a write reads during the handshake only) */
    ssize_t r = tls_write_record(ts, iov, iovcnt);
    setup_count(ts, t0);
    return r;
}

/* close_notify, then the socket's FIN; reading goes on (TLS 1.3 and OpenSSL allow a half-close):
 * the peer reads what came before to its end. An alert the full socket did not take is sent
 * again when it is writable (OpenSSL's rule: the same call again). Not while a record waits to
 * be retried, nor before the handshake ended: the caller then closes. */
static int tls_shut_write(struct arpc_stream *s)
{
    struct tls_stream *ts = (struct tls_stream *)s;
    if (ts->ts_failed || ts->ts_offered != 0 || ts->ts_held || !SSL_is_init_finished(ts->ts_ssl))
        return ARPC_ECONNLOST;
    if (!ts->ts_notified) {
        int ret = SSL_shutdown(ts->ts_ssl);
        if (ret < 0) {
            int err = SSL_get_error(ts->ts_ssl, ret);
            ERR_clear_error();
            return err == SSL_ERROR_WANT_WRITE ? ARPC_EAGAIN : ARPC_ECONNLOST;
        }
        ts->ts_notified = true;
    }
    int rc = tls_bio_flush(&ts->ts_wire); /* the alert (and what waited before it) first */
    if (rc != ARPC_OK)
        return rc;
    return shutdown(s->s_fd, SHUT_WR) == 0 ? ARPC_OK : ARPC_ECONNLOST;
}

static size_t tls_write_owed(const struct arpc_stream *s)
{
    const struct tls_stream *ts = (const struct tls_stream *)s;
    return ts->ts_offered + ts->ts_held;
}

static size_t tls_buffered(const struct arpc_stream *s)
{
    const struct tls_stream *ts = (const struct tls_stream *)s;
    /* An end (close_notify, or a failure) makes no readiness of its own once read: a close_notify
     * with no FIN after it (a TLS half-close, as Go's CloseWrite) leaves the socket silent, and
     * its peer waiting for its answers and our end for ever. Every read from here on returns
     * it, so it counts as one byte held until the reader has met it. */
    if (ts->ts_failed || (SSL_get_shutdown(ts->ts_ssl) & SSL_RECEIVED_SHUTDOWN) != 0)
        return 1;
    return (size_t)SSL_pending(ts->ts_ssl);
}

/* A refused peer may have sent more (a client's first frame right after its side of the
 * handshake): closing with it unread would send a reset, which can overtake our alert and
 * leave the peer without the reason. Drop what has arrived (a bounded amount), then close. */
static void tls_drain(int fd)
{
    char junk[4096];
    for (int i = 0; i < 16 && read(fd, junk, sizeof(junk)) > 0; i++) {
    }
}

static void tls_close(struct arpc_stream *s)
{
    struct tls_stream *ts = (struct tls_stream *)s;
    if (ts->ts_failed && ts->ts_base.s_error == ARPC_ETLS)
        tls_drain(s->s_fd);
    /* close_notify, one non-blocking try: the peer learns the end was meant (not a cut). Not
     * behind a record that waits in part: the connection counts its frames as never written
     * (the peer, given the rest now, would read them too), and the cut record ends the peer's
     * stream anyway. */
    if (!ts->ts_failed && ts->ts_held == 0) {
        if (!ts->ts_notified && SSL_is_init_finished(ts->ts_ssl))
            SSL_shutdown(ts->ts_ssl);
        (void)tls_bio_flush(&ts->ts_wire);
    }
    tls_bio_out_free(&ts->ts_wire);
    ERR_clear_error();
    SSL_free(ts->ts_ssl);
    close(s->s_fd);
    arpc_free(ts->ts_wbuf);
    arpc_free(ts);
}

static enum arpc_stream_handshake tls_handshake(const struct arpc_stream *s)
{
    const struct tls_stream *ts = (const struct tls_stream *)s;
    if (SSL_is_init_finished(ts->ts_ssl))
        return ARPC_STREAM_HANDSHAKE_DONE;
    return peer_sent_any(ts) ? ARPC_STREAM_HANDSHAKE_BEGUN : ARPC_STREAM_NO_HANDSHAKE; /* failed since, or not */
}

static const struct arpc_stream_ops tls_stream_ops = {
    .s_read = tls_read,
    .s_writev = tls_writev,
    .s_buffered = tls_buffered,
    .s_write_owed = tls_write_owed,
    .s_shut_write = tls_shut_write,
    .s_handshake = tls_handshake,
    .s_close = tls_close,
};

int tls_no_client_cert(SSL *ssl, X509 **cert, EVP_PKEY **key)
{
    (void)cert;
    (void)key;
    struct tls_stream *ts = SSL_get_app_data(ssl);
    ts->ts_no_cert = true;
    return 0; /* none: go on without */
}

/* OpenSSL's word that a handshake completed (it may complete and a record fail in one read). */
static void tls_info(const SSL *ssl, int where, int ret)
{
    (void)ret;
    if (where & SSL_CB_HANDSHAKE_DONE)
        ((struct tls_stream *)SSL_get_app_data(ssl))->ts_wire.w_shaken = true;
}

/* A client's SSL: the name to send (SNI) and to find in the server's certificate. */
static bool tls_client_setup(const struct arpc_tls *tls, SSL *ssl)
{
    SSL_set_connect_state(ssl);
    if (tls->t_host_is_ip)
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), tls->t_host) == 1;
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    return SSL_set_tlsext_host_name(ssl, tls->t_host) == 1 && SSL_set1_host(ssl, tls->t_host) == 1;
}

int arpc_tls_stream_new(struct arpc_tls *tls, int fd, struct arpc_stream **out)
{
    struct tls_stream *ts = arpc_calloc(1, sizeof(*ts));
    SSL *ssl = ts != NULL ? SSL_new(tls->t_ctx) : NULL;
    if (ts != NULL)
        ts->ts_wire = (struct tls_wire){.w_stream = &ts->ts_base};
    BIO *bio = ssl != NULL ? tls_bio_socket(&ts->ts_wire) : NULL; /* (its fd is set below) */
    bool ok = bio != NULL && SSL_set_app_data(ssl, ts) == 1;
    if (bio != NULL)
        SSL_set_bio(ssl, bio, bio); /* the SSL owns it now */
    if (ok)
        SSL_set_info_callback(ssl, tls_info);
    if (ok && tls->t_client)
        ok = tls_client_setup(tls, ssl);
    else if (ok)
        SSL_set_accept_state(ssl);
    if (!ok) { /* memory: the host's name or address was parsed when the context was made */
        ERR_clear_error();
        SSL_free(ssl);
        arpc_free(ts);
        close(fd);
        return ARPC_ENOMEM;
    }
    ts->ts_ssl = ssl;
    ts->ts_wire.w_ssl = ssl;
    ts->ts_base = (struct arpc_stream){.s_ops = &tls_stream_ops, .s_fd = fd, .s_thread_safe = false, .s_why = ""};
    *out = &ts->ts_base;
    return ARPC_OK;
}

/* The holder's digest (transport/tls.h): SHA-256 of the issuer's key, the subject and the
 * subject alternative names, each DER, each after its length (no two lists of parts run
 * together into the same bytes). The issuer is the verified chain's second certificate, or
 * the leaf itself where it was trusted as it is. */
static bool holder_digest(SSL *ssl, X509 *cert, uint8_t holder[ARPC_TLS_HOLDER_DIGEST])
{
    STACK_OF(X509) *chain = SSL_get0_verified_chain(ssl);
    X509 *issuer = chain != NULL && sk_X509_num(chain) > 1 ? sk_X509_value(chain, 1) : cert;
    unsigned char key[EVP_MAX_MD_SIZE], md[EVP_MAX_MD_SIZE];
    unsigned int key_len = 0, md_len = 0;
    unsigned char *subject = NULL;
    int subject_len = i2d_X509_NAME(X509_get_subject_name(cert), &subject);
    int san_at = X509_get_ext_by_NID(cert, NID_subject_alt_name, -1);
    const ASN1_OCTET_STRING *san = san_at >= 0 ? X509_EXTENSION_get_data(X509_get_ext(cert, san_at)) : NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint32_t san_len = san != NULL ? (uint32_t)ASN1_STRING_length(san) : 0;
    bool ok = ctx != NULL && subject_len > 0 && X509_pubkey_digest(issuer, EVP_sha256(), key, &key_len) == 1;
    uint8_t lens[12]; /* little-endian: the same digest on every server */
    le_st32(lens, key_len);
    le_st32(lens + 4, subject_len > 0 ? (uint32_t)subject_len : 0);
    le_st32(lens + 8, san_len);
    ok = ok && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 && EVP_DigestUpdate(ctx, lens, sizeof(lens)) == 1 &&
         EVP_DigestUpdate(ctx, key, key_len) == 1 && EVP_DigestUpdate(ctx, subject, (size_t)subject_len) == 1 &&
         (san == NULL || EVP_DigestUpdate(ctx, ASN1_STRING_get0_data(san), san_len) == 1) &&
         EVP_DigestFinal_ex(ctx, md, &md_len) == 1 && md_len >= ARPC_TLS_HOLDER_DIGEST;
    if (ok)
        memcpy(holder, md, ARPC_TLS_HOLDER_DIGEST);
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(subject);
    return ok;
}

int arpc_tls_peer_subject(const struct arpc_stream *s, char **out, uint8_t holder[ARPC_TLS_HOLDER_DIGEST])
{
    *out = NULL;
    if (s == NULL || s->s_ops != &tls_stream_ops)
        return ARPC_OK;
    const struct tls_stream *ts = (const struct tls_stream *)s;
    X509 *cert = SSL_get0_peer_certificate(ts->ts_ssl);
    if (cert == NULL || SSL_get_verify_result(ts->ts_ssl) != X509_V_OK)
        return ARPC_OK;
    /* From here on the peer is a verified holder: no subject is a failure, never "nobody".
     * Printing fails only without memory: a name it could not print (a UTF8String that is not
     * UTF-8, say) is refused when the certificate is parsed (OpenSSL canonicalises names). */
    BIO *bio = BIO_new(BIO_s_mem());
    int rc = ARPC_ENOMEM;
    if (bio != NULL && holder_digest(ts->ts_ssl, cert, holder) &&
        X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0) {
        char *text;
        long n = BIO_get_mem_data(bio, &text);
        if (n >= 0 && (*out = arpc_malloc((size_t)n + 1)) != NULL) {
            if (n > 0) /* (an empty subject: no bytes, and no buffer) */
                memcpy(*out, text, (size_t)n);
            (*out)[n] = '\0';
            rc = ARPC_OK;
        }
    }
    BIO_free(bio);
    ERR_clear_error();
    return rc;
}
