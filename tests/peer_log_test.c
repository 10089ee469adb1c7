/*
 * Peer bytes never reach a log line raw: a raw client sends method names made of newlines,
 * terminal escape codes and bytes above 0x7f (255 bytes, the wire's limit, and a frame that
 * claims 10 KB of them); every line the server logs, caught by a logger hook, is one line of
 * printable ASCII, and the peer's field in it is escaped and cut (arpc_log_escape).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "arpc/log.h"
#include "base/log.h"
#include "support/log_capture.h"
#include "support/raw_client.h"
#include "support/test_util.h"

static bool printable(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] < 0x20 || s[i] > 0x7e)
            return false;
    return true;
}

/* The only captured line containing what (a copy: free it); every captured line must be
 * printable. */
static char *only_line_with(const char *what)
{
    assert_int_equal(0, log_capture_unprintable());
    assert_int_equal(1, LOG_LINES_WITH(what));
    return log_capture_last_with(what);
}

/* ---- hostile bytes ---- */

static const char forged[] = "evil\n2026-11-30 arpc: INFO all good\x1b[31m";

/* forged, then every byte value from 0x80 up, repeated: len bytes, no NUL. */
static void fill_hostile(uint8_t *buf, size_t len)
{
    size_t head = sizeof(forged) - 1 < len ? sizeof(forged) - 1 : len;
    memcpy(buf, forged, head);
    for (size_t i = head; i < len; i++)
        buf[i] = (uint8_t)(0x80 + i % 0x80);
}

static void echo(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const void *d = arpc_request_data(req, &len);
    arpc_reply(req, d, len);
}

static arpc_server *server_up(char *addr, size_t addrlen)
{
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "echo", echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, addrlen));
    return s;
}

/* A raw client connected to addr (its HELLO exchanged), the log cleared: free it after
 * raw_close. */
static struct raw_client *raw_up(const char *addr)
{
    struct raw_client *r = malloc(sizeof(*r));
    assert_non_null(r);
    assert_true(raw_connect(r, addr, 1));
    log_capture_clear();
    return r;
}

/* The next frame is a GOAWAY ARPC_EPROTO saying said, and the server logged the close with the
 * same words. */
static void expect_refused_saying(struct raw_client *r, const char *said)
{
    struct raw_frame f;
    assert_true(raw_read(r, &f, false)); /* sent after the line was logged */
    assert_int_equal(ARPC_FRAME_GOAWAY, f.f.f_kind);
    assert_int_equal(ARPC_EPROTO, f.f.f_code);
    assert_int_equal(strlen(said), f.f.f_msg_len);
    assert_memory_equal(said, f.f.f_msg, strlen(said));
    char *line = only_line_with("closing the connection");
    assert_null(strstr(line, "evil")); /* none of the peer's bytes */
    assert_non_null(strstr(line, said));
    free(line);
}

/* A one-way message to a method named with 255 hostile bytes is logged as dropped: one line,
 * printable, the name escaped and cut with "...". A request to it gets an error whose message
 * (which may reach the client's log) is escaped the same way. */
static void test_unknown_method_name_escaped(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = server_up(addr, sizeof(addr));
    struct raw_client *r = raw_up(addr);
    uint8_t name[ARPC_METHOD_MAX + 1];
    fill_hostile(name, ARPC_METHOD_MAX);
    name[ARPC_METHOD_MAX] = '\0';

    uint8_t frame[ARPC_FRAME_HEADER_SIZE + ARPC_REQUEST_FIXED_SIZE + ARPC_METHOD_MAX];
    size_t n = arpc_frame_encode_request(frame, ARPC_FRAME_ONEWAY, 0, 0, 0, 0, (const char *)name,
                                         ARPC_METHOD_MAX, NULL, 0);
    assert_true(raw_send(r, frame, n));
    /* Frames on one connection are handled in order: once this reply is here, the one-way
     * message before it was handled (and logged) too. */
    assert_true(raw_request(r, 7, 0, 0, 0, (const char *)name, "x", 1));
    struct raw_frame f;
    assert_true(raw_read(r, &f, false));
    assert_int_equal(ARPC_FRAME_ERROR, f.f.f_kind);
    assert_int_equal(ARPC_ENOMETHOD, f.f.f_code);
    assert_true(printable(f.f.f_msg, f.f.f_msg_len));
    assert_non_null(memmem(f.f.f_msg, f.f.f_msg_len, "evil\\x0a2026", 12));

    char *line = only_line_with("unknown method");
    assert_non_null(strstr(line, "evil\\x0a2026-11-30 arpc: INFO all good\\x1b[31m"));
    const char *field = strstr(line, "evil");
    const char *end = strstr(field, "...");
    assert_non_null(end); /* cut, and says so */
    assert_true((size_t)(end + 3 - field) < ARPC_LOG_FIELD_MAX);
    free(line);
    raw_close(r);
    free(r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    log_capture_clear();
}

/* A frame whose method claims 10 KB of hostile bytes (over the wire's 255) closes the
 * connection: the line saying so has none of the peer's bytes. */
static void test_oversized_method_not_logged(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = server_up(addr, sizeof(addr));
    struct raw_client *r = raw_up(addr);

    enum { NAME_LEN = 10 * 1024, METHOD_LEN_AT = ARPC_FRAME_HEADER_SIZE + 8 + 8 + 4 /* seq, ack, deadline */ };
    size_t size = arpc_frame_request_size(1, NAME_LEN - 1);
    uint8_t *frame = malloc(size);
    uint8_t *name = malloc(NAME_LEN);
    assert_non_null(frame);
    assert_non_null(name);
    fill_hostile(name, NAME_LEN);
    /* Encoded as a 1-byte method and the rest as payload, then the method length made 10 KB. */
    size_t n = arpc_frame_encode_request(frame, ARPC_FRAME_REQUEST, 9, 0, 0, 0, (const char *)name, 1, name + 1,
                                         NAME_LEN - 1);
    frame[METHOD_LEN_AT] = NAME_LEN & 0xff;
    frame[METHOD_LEN_AT + 1] = NAME_LEN >> 8;
    assert_true(raw_send(r, frame, n));
    expect_refused_saying(r, "REQUEST frame's method name length is 0, over 255, or past its body");
    raw_close(r);
    free(r);
    free(frame);
    free(name);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    log_capture_clear();
}

/* A server's frame from a client (a REPLY) is refused with words, as bad input is: a GOAWAY
 * naming it, then EOF; and bytes that are not arpc at all (an HTTP request on the port) are
 * logged as such. */
static void test_wrong_frames_named(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = server_up(addr, sizeof(addr));
    struct raw_client *r = raw_up(addr);
    uint8_t frame[ARPC_FRAME_HEADER_SIZE + 2];
    size_t n = arpc_frame_encode_header(frame, ARPC_FRAME_REPLY, 5, 2);
    memcpy(frame + n, "hi", 2);
    assert_true(raw_send(r, frame, sizeof(frame)));
    expect_refused_saying(r, "a client sent a REPLY frame (a server's)");
    int pings;
    assert_true(raw_wait_eof(r, &pings));
    raw_close(r);
    free(r);
    /* An ERROR, with its article. */
    r = raw_up(addr);
    uint8_t error[ARPC_FRAME_HEADER_SIZE + ARPC_ERROR_FIXED_SIZE];
    n = arpc_frame_encode_error(error, ARPC_FRAME_ERROR, 5, ARPC_EHANDLER, 0, "", 0);
    assert_true(raw_send(r, error, n));
    expect_refused_saying(r, "a client sent an ERROR frame (a server's)");
    assert_true(raw_wait_eof(r, &pings));
    raw_close(r);

    /* Not arpc: an HTTP client on the port, its request in the HELLO's place. */
    log_capture_clear();
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(0, fd_connect_loopback(fd, addr));
    static const char get[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(sizeof(get) - 1, write(fd, get, sizeof(get) - 1));
    struct timeval bound = {.tv_sec = TEST_WAIT_S};
    assert_int_equal(0, setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof(bound)));
    char sink[256];
    ssize_t got;
    while ((got = read(fd, sink, sizeof(sink))) > 0) /* the server's GOAWAY, then EOF */
        ;
    assert_int_equal(0, got); /* EOF, not the bound */
    close(fd);
    char *line = only_line_with("closing the connection");
    assert_non_null(strstr(line, "not an arpc frame (an HTTP request)"));
    free(line);
    free(r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    log_capture_clear();
}

/* ---- arpc_log_escape itself ---- */

static void test_escape_rules(void **state)
{
    (void)state;
    char out[64];
    assert_string_equal("a\\x0ab\\x5cc\\x1b[\\xff", arpc_log_escape(out, sizeof(out), "a\nb\\c\x1b[\xff", 8));
    /* Fits exactly: no mark. */
    assert_string_equal("abcdefg", arpc_log_escape(out, 8, "abcdefg", 7));
    /* One byte too many: cut, marked, and within outlen. */
    assert_string_equal("abcd...", arpc_log_escape(out, 8, "abcdefgh", 8));
    /* An escape that does not fit whole is not split. */
    assert_string_equal("ab...", arpc_log_escape(out, 8, "ab\n\n\n", 5));
    assert_string_equal("", arpc_log_escape(out, 1, "abc", 3));
    assert_string_equal("", arpc_log_escape(out, sizeof(out), NULL, 0));
}

int main(void)
{
    test_alloc_install();
    log_capture_start(ARPC_LOG_DEBUG); /* before other arpc calls */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_rules),
        cmocka_unit_test_no_leak(test_unknown_method_name_escaped),
        cmocka_unit_test_no_leak(test_oversized_method_not_logged),
        cmocka_unit_test_no_leak(test_wrong_frames_named),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    log_capture_clear();
    return rc;
}
