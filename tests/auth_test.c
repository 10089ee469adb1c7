/*
 * Authentication (arpc/auth.h): the token in HELLO, unix peers' credentials and their
 * allow-list, and at-most-once kept apart per identity.
 *
 * The counting handlers run inline on the server's loop, so a request that was dispatched has
 * run before the loop does anything else: once a refused connection's EOF is read, a request
 * sent behind its HELLO would already have been counted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <inttypes.h>
#include <semaphore.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "base/siphash.h"
#include "core/frame.h"
#include "core/reply_cache_gone.h"
#include "support/raw_client.h"
#include "support/server_proc.h"
#include "support/test_util.h"
#include "transport/transport.h"

static atomic_int runs;

/* Replies "n=<runs> id=<identity> uid=<uid> gid=<gid> pid=<pid> creds=<0|1> <transport>". */
static void h_who(arpc_request *req, void *ctx)
{
    (void)ctx;
    int n = atomic_fetch_add(&runs, 1) + 1;
    const arpc_peer_info *p = arpc_request_peer(req);
    char out[200];
    int m = snprintf(out, sizeof(out), "n=%d id=%" PRIx64 " uid=%u gid=%u pid=%d creds=%d %s", n, p->identity, p->uid,
                     p->gid, (int)p->pid, p->has_creds, p->transport);
    arpc_reply(req, out, (size_t)m);
}

static const char token_a[] = "alpha-secret", token_b[] = "bravo-secret";
static const arpc_auth_token tokens[] = {
    {.token = token_a, .len = sizeof(token_a) - 1, .identity = 0x11},
    {.token = token_b, .len = sizeof(token_b) - 1, .identity = 0x22},
    {.token = NULL},
};

struct fixture {
    arpc_server *s;
    char addr[256];
    char dir[128]; /* a log directory, when the test uses one */
};

/* A server with the who method inline, listening on listen_addr. */
static arpc_server *start_server(arpc_server_options *so, const char *listen_addr, char *bound, size_t boundlen)
{
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, so));
    arpc_method_options inl = {.inline_on_loop = true};
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.who", h_who, NULL, &inl));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, listen_addr, bound, boundlen));
    return s;
}

static int setup_tokens(void **state)
{
    static struct fixture fx;
    memset(&fx, 0, sizeof(fx));
    atomic_store(&runs, 0);
    arpc_server_options so = {.authenticate = arpc_auth_fixed_tokens, .authenticate_ctx = (void *)tokens};
    fx.s = start_server(&so, "tcp://127.0.0.1:0", fx.addr, sizeof(fx.addr));
    *state = &fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    if (fx->s != NULL)
        arpc_server_destroy(fx->s);
    if (fx->dir[0] != '\0')
        server_proc_rmdir(fx->dir);
    return 0;
}

/* Connects with token (NULL: none) and client id (0: random); returns connect's code and
 * fills errbuf. */
static int connect_with(arpc_client **c, const char *addr, const char *token, uint64_t client_id, char *errbuf)
{
    arpc_client_options co = {.auth_token = token,
                              .auth_token_len = token ? strlen(token) : 0,
                              .client_id = client_id,
                              .errbuf = errbuf,
                              .errbuf_len = ARPC_ERRBUF_SIZE};
    return arpc_client_connect(c, addr, &co);
}

/* Calls t.who; the reply, NUL-terminated, in out. */
static void call_who(arpc_client *c, char *out, size_t outlen)
{
    void *rep = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_OK, arpc_call(c, "t.who", NULL, 0, &rep, &len, 10000));
    assert_true(len < outlen);
    memcpy(out, rep, len);
    out[len] = '\0';
    arpc_free(rep);
}

/* ---- pure pieces ---- */

static void test_siphash_reference_vectors(void **state)
{
    (void)state;
    /* From the SipHash paper (appendix A, and the reference vectors.h): key 00..0f, message
     * 00..n-1. */
    uint8_t key[16], msg[16];
    for (int i = 0; i < 16; i++)
        key[i] = msg[i] = (uint8_t)i;
    assert_true(arpc_siphash24(key, msg, 0) == 0x726fdb47dd0e0e31ull);
    assert_true(arpc_siphash24(key, msg, 1) == 0x74f839c593dc67fdull);
    assert_true(arpc_siphash24(key, msg, 8) == 0x93f5f5799a932462ull);
    assert_true(arpc_siphash24(key, msg, 15) == 0xa129ca6149be45e5ull);
}

static void test_token_equal(void **state)
{
    (void)state;
    assert_true(arpc_auth_token_equal("abc", 3, "abc", 3));
    assert_false(arpc_auth_token_equal("abc", 3, "abd", 3));
    assert_false(arpc_auth_token_equal("xbc", 3, "abc", 3));
    assert_false(arpc_auth_token_equal("abc", 3, "abcd", 4)); /* a prefix is not the token */
    assert_true(arpc_auth_token_equal(NULL, 0, NULL, 0));
    uint64_t id = 0;
    assert_int_equal(ARPC_OK, arpc_auth_fixed_tokens(NULL, token_b, strlen(token_b), &id, (void *)tokens));
    assert_true(id == 0x22);
    id = 0;
    assert_int_equal(ARPC_EAUTH, arpc_auth_fixed_tokens(NULL, "alpha", 5, &id, (void *)tokens));
    assert_int_equal(ARPC_EAUTH, arpc_auth_fixed_tokens(NULL, NULL, 0, &id, (void *)tokens));
    assert_true(id == 0);
}

/* An empty token is no secret: a list holding an empty entry (a token read from an unset
 * variable, say) lets in nobody by it, neither through the function nor over the wire, where
 * only a hand-made HELLO can carry one (an arpc client sends none for auth_token_len 0). */
static const arpc_auth_token with_empty[] = {
    {.token = "", .len = 0, .identity = 0x33},
    {.token = token_a, .len = sizeof(token_a) - 1, .identity = 0x11},
    {.token = NULL},
};

static void test_empty_token_matches_nothing(void **state)
{
    (void)state;
    uint64_t id = 0;
    assert_int_equal(ARPC_EAUTH, arpc_auth_fixed_tokens(NULL, "", 0, &id, (void *)with_empty));
    assert_int_equal(ARPC_EAUTH, arpc_auth_fixed_tokens(NULL, token_a, 0, &id, (void *)with_empty));
    assert_true(id == 0);
    assert_int_equal(ARPC_OK, arpc_auth_fixed_tokens(NULL, token_a, strlen(token_a), &id, (void *)with_empty));
    assert_true(id == 0x11);
}

/* arpc_auth_fixed_tokens' lists are checked at arpc_server_create: an entry's identity 0 (its
 * position + 1) that another entry names too is refused with a reason (before, the two tokens'
 * holders were one client by accident: an attacker's trial), as is a NULL list (nobody could
 * connect); two entries naming one identity on purpose (a token rotation) are fine. */
static void test_fixed_tokens_checked_at_create(void **state)
{
    (void)state;
    static const arpc_auth_token clash[] = {{.token = "alice", .len = 5, .identity = 2},
                                            {.token = "bob", .len = 3}, /* 0: position + 1 = 2 */
                                            {.token = NULL}};
    static const arpc_auth_token rotation[] = {{.token = "old", .len = 3, .identity = 7},
                                               {.token = "new", .len = 3, .identity = 7},
                                               {.token = "ops", .len = 3}, /* 3 */
                                               {.token = NULL}};
    char err[ARPC_ERRBUF_SIZE] = "";
    arpc_server_options so = {.authenticate = arpc_auth_fixed_tokens,
                              .authenticate_ctx = (void *)clash,
                              .errbuf = err,
                              .errbuf_len = sizeof(err)};
    arpc_server *s = NULL;
    assert_int_equal(ARPC_EINVAL, arpc_server_create(&s, &so));
    assert_null(s);
    assert_non_null(strstr(err, "entry 1 has identity 0, which stands for its position + 1 (2), and entry 0"));
    static const arpc_auth_token repeat[] = {{.token = "same", .len = 4, .identity = 5},
                                             {.token = "same", .len = 4, .identity = 6},
                                             {.token = NULL}};
    so.authenticate_ctx = (void *)repeat;
    assert_int_equal(ARPC_EINVAL, arpc_server_create(&s, &so));
    assert_non_null(strstr(err, "entry 1 repeats entry 0's token with another identity"));
    so.authenticate_ctx = NULL;
    assert_int_equal(ARPC_EINVAL, arpc_server_create(&s, &so));
    assert_non_null(strstr(err, "authenticate_ctx (its array of tokens) is NULL"));
    so.authenticate_ctx = (void *)rotation;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

static void raw_refused(const char *addr, size_t len, int code, const char *why);

static void test_empty_token_refused_over_the_wire(void **state)
{
    (void)state;
    atomic_store(&runs, 0);
    arpc_server_options so = {.authenticate = arpc_auth_fixed_tokens, .authenticate_ctx = (void *)with_empty};
    char addr[256];
    arpc_server *s = start_server(&so, "tcp://127.0.0.1:0", addr, sizeof(addr));
    raw_refused(addr, 0, ARPC_EAUTH, "refused the client's token");
    assert_int_equal(0, atomic_load(&runs));
    arpc_server_destroy(s);
}

/* A callback is handed an empty token as none (NULL): one comparing the len bytes it is given
 * (memcmp(token, secret, len)) would otherwise let an empty token in. */
static atomic_int empty_seen_as_null = -1;

static int auth_note_empty(const arpc_peer_info *peer, const void *token, size_t len, uint64_t *identity, void *ctx)
{
    (void)peer, (void)identity, (void)ctx;
    if (len == 0)
        atomic_store(&empty_seen_as_null, token == NULL);
    return ARPC_EAUTH;
}

static void test_empty_token_given_to_callback_as_none(void **state)
{
    (void)state;
    arpc_server_options so = {.authenticate = auth_note_empty};
    char addr[256];
    arpc_server *s = start_server(&so, "tcp://127.0.0.1:0", addr, sizeof(addr));
    raw_refused(addr, 0, ARPC_EAUTH, "refused the client's token");
    assert_int_equal(1, atomic_load(&empty_seen_as_null));
    arpc_server_destroy(s);
}

static void test_hello_token_codec(void **state)
{
    (void)state;
    uint8_t buf[ARPC_FRAME_HEADER_SIZE + 64];
    size_t n = arpc_frame_encode_hello_token(buf, 42, 0, 4096, "tok", 3);
    assert_int_equal(n, arpc_frame_hello_token_size(3));
    struct arpc_frame f;
    size_t used;
    assert_int_equal(ARPC_OK, arpc_frame_decode(buf, n, 1 << 20, &f, &used, NULL));
    assert_int_equal(n, used);
    assert_true(f.f_client_id == 42 && (f.f_flags & ARPC_HELLO_TOKEN) && f.f_token_len == 3);
    assert_memory_equal("tok", f.f_token, 3);
    /* A token running past the body is malformed, at any prefix of the body length. */
    buf[ARPC_FRAME_HEADER_SIZE + 24] = 4;
    assert_int_equal(ARPC_EPROTO, arpc_frame_decode(buf, n, 1 << 20, &f, &used, NULL));
    /* A plain HELLO has no token. */
    n = arpc_frame_encode_hello(buf, 42, 0, 4096, 0);
    assert_int_equal(ARPC_OK, arpc_frame_decode(buf, n, 1 << 20, &f, &used, NULL));
    assert_null(f.f_token);
}

/* ---- the token ---- */

static void test_right_token_connects(void **state)
{
    struct fixture *fx = *state;
    arpc_client *c;
    char err[ARPC_ERRBUF_SIZE] = "";
    assert_int_equal(ARPC_OK, connect_with(&c, fx->addr, token_b, 0, err));
    char out[200];
    call_who(c, out, sizeof(out));
    assert_string_equal("n=1 id=22 uid=0 gid=0 pid=0 creds=0 tcp", out);
    arpc_client_close(c);
}

static void expect_refused(const char *addr, const char *token, const char *why)
{
    arpc_client *c = NULL;
    char err[ARPC_ERRBUF_SIZE] = "";
    assert_int_equal(ARPC_EAUTH, connect_with(&c, addr, token, 0, err));
    assert_null(c);
    if (strstr(err, why) == NULL)
        fail_msg("errbuf \"%s\" does not say \"%s\"", err, why);
}

static void test_wrong_token_refused(void **state)
{
    struct fixture *fx = *state;
    expect_refused(fx->addr, "alpha-secreT", "refused the client's token");
    assert_int_equal(0, atomic_load(&runs));
}

static void test_missing_token_refused(void **state)
{
    struct fixture *fx = *state;
    expect_refused(fx->addr, NULL, "requires a token and the client sent none");
    assert_int_equal(0, atomic_load(&runs));
}

static void test_client_refuses_oversized_token(void **state)
{
    struct fixture *fx = *state;
    static char big[ARPC_AUTH_TOKEN_MAX_BYTES + 2];
    memset(big, 'x', sizeof(big) - 1);
    arpc_client *c = NULL;
    char err[ARPC_ERRBUF_SIZE] = "";
    assert_int_equal(ARPC_EINVAL, connect_with(&c, fx->addr, big, 0, err));
    assert_non_null(strstr(err, "auth_token"));
}

/* A hand-made HELLO with token (len bytes of fill), then a request in the same write: the
 * server answers GOAWAY(code) and closes; the request never ran. */
static void raw_refused(const char *addr, size_t len, int code, const char *why)
{
    struct raw_client *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    assert_int_equal(ARPC_OK, arpc_transport_connect(addr, RAW_WAIT_MS, &r->rc_fd, NULL, 0));
    size_t cap = arpc_frame_hello_token_size((uint32_t)len) + arpc_frame_request_size(5, 0);
    uint8_t *buf = malloc(cap), *tok = malloc(len + 1);
    assert_true(buf != NULL && tok != NULL);
    memset(tok, 'x', len);
    size_t n = arpc_frame_encode_hello_token(buf, 77, 0, 0, tok, (uint32_t)len);
    n += arpc_frame_encode_request(buf + n, ARPC_FRAME_REQUEST, 1, 1, 0, 0, "t.who", 5, NULL, 0);
    assert_true(raw_send(r, buf, n));
    struct raw_frame f;
    assert_true(raw_read(r, &f, false));
    assert_int_equal(ARPC_FRAME_GOAWAY, f.f.f_kind);
    assert_int_equal(code, f.f.f_code);
    char msg[256];
    snprintf(msg, sizeof(msg), "%.*s", (int)f.f.f_msg_len, f.f.f_msg);
    if (strstr(msg, why) == NULL)
        fail_msg("GOAWAY \"%s\" does not say \"%s\"", msg, why);
    int pings = 0;
    assert_true(raw_wait_eof(r, &pings)); /* nothing else: no answer to the request */
    raw_close(r);
    free(buf);
    free(tok);
    free(r);
}

static void test_request_behind_bad_hello_never_runs(void **state)
{
    struct fixture *fx = *state;
    raw_refused(fx->addr, 5, ARPC_EAUTH, "refused the client's token");
    raw_refused(fx->addr, 0, ARPC_EAUTH, "refused the client's token");
    assert_int_equal(0, atomic_load(&runs));
}

static void test_oversized_token_refused_by_server(void **state)
{
    struct fixture *fx = *state;
    raw_refused(fx->addr, ARPC_AUTH_TOKEN_MAX_BYTES + 1, ARPC_EAUTH, "over the limit of 4096");
    /* Beyond the handshake's frame bound, the HELLO is not even buffered. */
    raw_refused(fx->addr, ARPC_HELLO_BODY_MAX, ARPC_ETOOLARGE, "larger than the server accepts");
    assert_int_equal(0, atomic_load(&runs));
}

static void test_server_without_auth_takes_any_client(void **state)
{
    (void)state;
    char addr[256];
    arpc_server_options so = {0};
    arpc_server *s = start_server(&so, "tcp://127.0.0.1:0", addr, sizeof(addr));
    arpc_client *with, *without;
    char err[ARPC_ERRBUF_SIZE] = "", out[200];
    assert_int_equal(ARPC_OK, connect_with(&with, addr, token_a, 0, err)); /* ignored */
    assert_int_equal(ARPC_OK, connect_with(&without, addr, NULL, 0, err));
    call_who(with, out, sizeof(out));
    assert_non_null(strstr(out, " id=0 "));
    call_who(without, out, sizeof(out));
    assert_non_null(strstr(out, " id=0 "));
    arpc_client_close(with);
    arpc_client_close(without);
    arpc_server_destroy(s);
}

/* The handshake's bound is the largest HELLO, not max_frame: a small max_frame still takes a
 * token at its cap. */
static int auth_long_token(const arpc_peer_info *peer, const void *token, size_t len, uint64_t *identity, void *ctx)
{
    (void)peer;
    (void)ctx;
    *identity = 7;
    return len == ARPC_AUTH_TOKEN_MAX_BYTES && ((const char *)token)[len - 1] == 'z' ? ARPC_OK : ARPC_EAUTH;
}

static void test_token_at_cap_with_small_max_frame(void **state)
{
    (void)state;
    char addr[256], out[200], err[ARPC_ERRBUF_SIZE] = "";
    arpc_server_options so = {.max_frame = 1024, .authenticate = auth_long_token};
    arpc_server *s = start_server(&so, "tcp://127.0.0.1:0", addr, sizeof(addr));
    static char tok[ARPC_AUTH_TOKEN_MAX_BYTES + 1];
    memset(tok, 'z', ARPC_AUTH_TOKEN_MAX_BYTES);
    arpc_client *c;
    assert_int_equal(ARPC_OK, connect_with(&c, addr, tok, 0, err));
    call_who(c, out, sizeof(out));
    assert_non_null(strstr(out, " id=7 "));
    arpc_client_close(c);
    arpc_server_destroy(s);
}

/* ---- unix peers ---- */

static void unix_addr(char *addr, size_t len, const char *tag)
{
    snprintf(addr, len, "unix:///tmp/arpc-auth-%s-%d.sock", tag, (int)getpid());
}

static void test_unix_peer_on_allow_list(void **state)
{
    (void)state;
    char addr[256], out[200], want[200], err[ARPC_ERRBUF_SIZE] = "";
    unix_addr(addr, sizeof(addr), "on");
    uint32_t uids[] = {4000000001u, (uint32_t)getuid()};
    arpc_server_options so = {.allow_uids = uids, .allow_uids_count = 2};
    arpc_server *s = start_server(&so, addr, NULL, 0);
    arpc_client *c;
    assert_int_equal(ARPC_OK, connect_with(&c, addr, NULL, 0, err));
    call_who(c, out, sizeof(out));
    snprintf(want, sizeof(want), "n=1 id=%" PRIx64 " uid=%u gid=%u pid=%d creds=1 unix",
             ARPC_AUTH_UID_IDENTITY(getuid()), (unsigned)getuid(), (unsigned)getgid(), (int)getpid());
    assert_string_equal(want, out);
    arpc_client_close(c);
    arpc_server_destroy(s);
}

static void test_unix_peer_not_on_allow_list(void **state)
{
    (void)state;
    char addr[256];
    unix_addr(addr, sizeof(addr), "off");
    uint32_t uids[] = {4000000001u}; /* nobody's */
    uint32_t gids[] = {4000000002u};
    arpc_server_options so = {.allow_uids = uids, .allow_uids_count = 1, .allow_gids = gids, .allow_gids_count = 1};
    arpc_server *s = start_server(&so, addr, NULL, 0);
    char why[64];
    snprintf(why, sizeof(why), "uid %u (gid %u) is not on the server's allow-list", (unsigned)getuid(),
             (unsigned)getgid());
    expect_refused(addr, NULL, why);
    assert_int_equal(0, atomic_load(&runs));
    arpc_server_destroy(s);
}

/* unix_mode sets the socket file's permissions whatever the umask, so that other users can
 * reach the allow-list at all (connecting needs write permission on the file); bits beyond
 * 0777 are refused. */
static void test_unix_mode_sets_the_socket_file(void **state)
{
    (void)state;
    char addr[256];
    unix_addr(addr, sizeof(addr), "mode");
    mode_t old = umask(022);
    arpc_server_options so = {.unix_mode = 0666};
    arpc_server *s = start_server(&so, addr, NULL, 0);
    struct stat st;
    assert_int_equal(0, stat(addr + strlen("unix://"), &st));
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(0666, st.st_mode & 0777);
    arpc_server_destroy(s);
    arpc_server_options bad = {.unix_mode = 04777};
    arpc_server *s2 = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create(&s2, &bad));
    assert_int_equal(ARPC_EINVAL, arpc_server_listen(s2, addr, NULL, 0));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s2));
    umask(old);
}

static void test_gid_allow_list_and_tcp_peer_without_creds(void **state)
{
    (void)state;
    char addr[256], tcp[256], out[200], err[ARPC_ERRBUF_SIZE] = "";
    unix_addr(addr, sizeof(addr), "gid");
    uint32_t gids[] = {(uint32_t)getgid()};
    arpc_server_options so = {.allow_gids = gids, .allow_gids_count = 1};
    arpc_server *s = start_server(&so, addr, NULL, 0);
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", tcp, sizeof(tcp)));
    arpc_client *c;
    assert_int_equal(ARPC_OK, connect_with(&c, addr, NULL, 0, err));
    call_who(c, out, sizeof(out));
    assert_non_null(strstr(out, " creds=1 unix"));
    arpc_client_close(c);
    /* The allow-list cannot judge a tcp peer, and no callback can let it in. */
    expect_refused(tcp, NULL, "admits listed uids and gids only, and tcp peers have none");
    assert_int_equal(1, atomic_load(&runs));
    arpc_server_destroy(s);
}

/* A credential revoked while the client was away: its reconnect is refused, and a call
 * waiting for that connection ends ARPC_EAUTH at once (not at its deadline), as does any later
 * call. */
static atomic_bool revoked;
static sem_t conn_lost;

/* Passes lines on to stderr, and tells the test when the client saw its connection go. */
static void log_watch(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)ctx;
    fprintf(stderr, "arpc: %s: %s\n", arpc_log_level_name(level), line);
    if (strstr(line, "lost: closed by the server") != NULL)
        sem_post(&conn_lost);
}

static int auth_revocable(const arpc_peer_info *peer, const void *token, size_t len, uint64_t *identity, void *ctx)
{
    (void)peer;
    (void)identity;
    (void)ctx;
    return !atomic_load(&revoked) && arpc_auth_token_equal(token, len, token_a, strlen(token_a)) ? ARPC_OK
                                                                                               : ARPC_EAUTH;
}

static void test_reconnect_refused_ends_waiting_calls(void **state)
{
    (void)state;
    atomic_store(&revoked, false);
    char addr[256], out[200], err[ARPC_ERRBUF_SIZE] = "";
    unix_addr(addr, sizeof(addr), "revoke");
    arpc_server_options so = {.authenticate = auth_revocable};
    arpc_server *s = start_server(&so, addr, NULL, 0);
    arpc_client *c;
    /* Only the refusal can end the waiting call with ARPC_EAUTH: giving up on the connection
     * or the deadline would end it ARPC_EUNREACHABLE. */
    arpc_client_options co = {.auth_token = token_a, .auth_token_len = strlen(token_a),
                              .reconnect_give_up_ms = ARPC_FOREVER};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    call_who(c, out, sizeof(out));
    sem_init(&conn_lost, 0, 0);
    arpc_set_logger(log_watch, NULL, ARPC_LOG_INFO);
    arpc_server_destroy(s);
    /* Once the client knows, the call below waits for its next connection (never sent). */
    assert_true(sem_wait_secs(&conn_lost, 30));
    arpc_future *f = arpc_call_async(c, "t.who", NULL, 0, 120000);
    assert_non_null(f);
    atomic_store(&revoked, true);
    s = start_server(&so, addr, NULL, 0);
    assert_int_equal(ARPC_EAUTH, arpc_future_wait(f));
    size_t said_len = 0;
    char *said = arpc_future_take(f, &said_len);
    assert_non_null(said);
    assert_non_null(strstr(said, "refused the client's token"));
    arpc_free(said);
    arpc_future_release(f);
    void *rep = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_EAUTH, arpc_call(c, "t.who", NULL, 0, &rep, &len, 10000));
    /* The call says why itself (before, the code alone: a chaos trial's client, stopped by a
     * GOAWAY, failed 546 calls in 0 ms without a word). */
    assert_non_null(rep);
    assert_non_null(strstr(rep, "this client will not connect again: "));
    assert_non_null(strstr(rep, "refused the client's token"));
    arpc_free(rep);
    assert_int_equal(ARPC_EAUTH, arpc_client_last_error(c, err, sizeof(err)));
    assert_non_null(strstr(err, "refused the client's token"));
    assert_int_equal(1, atomic_load(&runs));
    arpc_client_close(c);
    arpc_server_destroy(s);
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
    sem_destroy(&conn_lost);
}

/* ---- at-most-once per identity ---- */

#define SHARED_ID 0x5eed5eed5eedull

/* Calls t.who as seq 1 of client id SHARED_ID from a hand-made client with token, as a client
 * without an incarnation (an older client, or one with a random id) does; the reply in out.
 * It says no goodbye: its cached reply stays. */
static void raw_who(const char *addr, const char *token, char *out, size_t outlen)
{
    struct raw_client *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    assert_true(raw_connect_with(r, addr, SHARED_ID, token, 0));
    assert_true(raw_request(r, 1, 1, 0, 0, "t.who", NULL, 0));
    struct raw_frame f;
    assert_true(raw_read(r, &f, false));
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    assert_true(f.body_len < outlen);
    memcpy(out, f.body, f.body_len);
    out[f.body_len] = '\0';
    raw_close(r);
    free(r);
}

static void test_same_client_id_other_identity_not_answered_from_cache(void **state)
{
    struct fixture *fx = *state;
    char out[200], err[ARPC_ERRBUF_SIZE] = "";
    raw_who(fx->addr, token_a, out, sizeof(out)); /* seq 1 of (identity 0x11, SHARED_ID): runs */
    assert_string_equal("n=1 id=11 uid=0 gid=0 pid=0 creds=0 tcp", out);
    /* B's seq 1 under the same client id: not A's reply. */
    raw_who(fx->addr, token_b, out, sizeof(out));
    assert_string_equal("n=2 id=22 uid=0 gid=0 pid=0 creds=0 tcp", out);
    /* The same identity and client id is the same caller: seq 1 is answered from the cache
     * (so the check above could have failed). */
    raw_who(fx->addr, token_a, out, sizeof(out));
    assert_string_equal("n=1 id=11 uid=0 gid=0 pid=0 creds=0 tcp", out);
    assert_int_equal(2, atomic_load(&runs));
    /* arpc's client with that id chosen sends an incarnation of its own: a new caller. */
    arpc_client *a;
    assert_int_equal(ARPC_OK, connect_with(&a, fx->addr, token_a, SHARED_ID, err));
    call_who(a, out, sizeof(out));
    assert_string_equal("n=3 id=11 uid=0 gid=0 pid=0 creds=0 tcp", out);
    arpc_client_close(a);
}

/* The fixture's server replaced by one with a reply log in a fresh directory (the options,
 * for a restart, in *so). */
static void restart_with_log(struct fixture *fx, arpc_server_options *so, enum arpc_fsync fsync)
{
    arpc_server_destroy(fx->s);
    fx->s = NULL;
    server_proc_mkdir(fx->dir, sizeof(fx->dir));
    *so = (arpc_server_options){.authenticate = arpc_auth_fixed_tokens, .authenticate_ctx = (void *)tokens,
                                .log_dir = fx->dir, .fsync = fsync};
    fx->s = start_server(so, "tcp://127.0.0.1:0", fx->addr, sizeof(fx->addr));
}

static void test_identity_namespaces_survive_restart_with_log(void **state)
{
    struct fixture *fx = *state;
    arpc_server_options so;
    restart_with_log(fx, &so, ARPC_FSYNC_ALWAYS);
    char out[200];
    raw_who(fx->addr, token_a, out, sizeof(out));
    assert_string_equal("n=1 id=11 uid=0 gid=0 pid=0 creds=0 tcp", out);
    /* Restart on the same directory. */
    arpc_server_destroy(fx->s);
    char key[200];
    struct stat st;
    snprintf(key, sizeof(key), "%s/namespace.key", fx->dir);
    assert_int_equal(0, stat(key, &st));
    assert_int_equal(16, st.st_size);
    fx->s = start_server(&so, "tcp://127.0.0.1:0", fx->addr, sizeof(fx->addr));
    /* Another identity with the same client id and seq runs; the same identity is answered
     * from the replayed log without running. */
    raw_who(fx->addr, token_b, out, sizeof(out));
    assert_string_equal("n=2 id=22 uid=0 gid=0 pid=0 creds=0 tcp", out);
    raw_who(fx->addr, token_a, out, sizeof(out));
    assert_string_equal("n=1 id=11 uid=0 gid=0 pid=0 creds=0 tcp", out);
    assert_int_equal(2, atomic_load(&runs));
}

/* Calls t.who as seq 1 of (client_id, incarnation) with token and says goodbye; an unnumbered
 * call after it, answered, shows the goodbye was taken (one connection's frames are taken in
 * order). */
static void raw_who_goodbye(const char *addr, const char *token, uint64_t client_id, uint64_t incarnation)
{
    struct raw_client *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    assert_true(raw_connect_with(r, addr, client_id, token, incarnation));
    assert_true(raw_request(r, 1, 1, 0, 0, "t.who", NULL, 0));
    struct raw_frame f;
    assert_true(raw_read(r, &f, false));
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    assert_true(raw_goodbye(r));
    assert_true(raw_request(r, 2, 0, 0, 0, "t.who", NULL, 0));
    assert_true(raw_read(r, &f, false));
    assert_int_equal(2, f.f.f_xid);
    raw_close(r);
    free(r);
}

/* One identity's goodbyes, however many client ids it makes up, never make the server forget
 * another identity's, also across a restart: the log keeps whose each goodbye is. Alpha calls
 * seq 1 and says goodbye; bravo then says goodbye under ARPC_RC_GONE_MAX + 16 made-up client
 * ids; after a restart on the log, a late copy of alpha's call is refused, not run again.
 * (Before, the log's goodbye record had no identity and a restart brought back the newest
 * 4,096 whoever said them: the copy ran again, a second "transfer".) */
static void test_goodbye_floors_shared_by_identity_across_restart(void **state)
{
    struct fixture *fx = *state;
    arpc_server_options so;
    restart_with_log(fx, &so, ARPC_FSYNC_OFF); /* a restart, not a crash */
    enum { ALPHA_ID = 0xa1, ALPHA_INC = 0xa2, FLOOD = ARPC_RC_GONE_MAX + 16 };
    raw_who_goodbye(fx->addr, token_a, ALPHA_ID, ALPHA_INC);
    for (uint64_t i = 0; i < FLOOD; i++)
        raw_who_goodbye(fx->addr, token_b, 0xb0000 + i, 1 + i);
    int ran = atomic_load(&runs);
    assert_int_equal(ARPC_OK, arpc_server_destroy(fx->s)); /* closes the log after what it was handed */
    fx->s = start_server(&so, "tcp://127.0.0.1:0", fx->addr, sizeof(fx->addr));
    struct raw_client *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    assert_true(raw_connect_with(r, fx->addr, ALPHA_ID, token_a, ALPHA_INC));
    assert_true(raw_request(r, 3, 1, 0, 0, "t.who", NULL, 0)); /* alpha's late copy */
    raw_expect_error(r, 3, ARPC_EREJECTED);
    raw_close(r);
    free(r);
    assert_int_equal(ran, atomic_load(&runs));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siphash_reference_vectors),
        cmocka_unit_test(test_token_equal),
        cmocka_unit_test(test_hello_token_codec),
        cmocka_unit_test(test_empty_token_matches_nothing),
        cmocka_unit_test(test_fixed_tokens_checked_at_create),
        cmocka_unit_test(test_empty_token_refused_over_the_wire),
        cmocka_unit_test(test_empty_token_given_to_callback_as_none),
        cmocka_unit_test_setup_teardown(test_right_token_connects, setup_tokens, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_token_refused, setup_tokens, teardown),
        cmocka_unit_test_setup_teardown(test_missing_token_refused, setup_tokens, teardown),
        cmocka_unit_test_setup_teardown(test_client_refuses_oversized_token, setup_tokens, teardown),
        cmocka_unit_test_setup_teardown(test_request_behind_bad_hello_never_runs, setup_tokens, teardown),
        cmocka_unit_test_setup_teardown(test_oversized_token_refused_by_server, setup_tokens, teardown),
        cmocka_unit_test_setup_teardown(test_server_without_auth_takes_any_client, setup_tokens, teardown),
        cmocka_unit_test(test_token_at_cap_with_small_max_frame),
        cmocka_unit_test_setup_teardown(test_unix_peer_on_allow_list, setup_tokens, teardown),
        cmocka_unit_test_setup_teardown(test_unix_peer_not_on_allow_list, setup_tokens, teardown),
        cmocka_unit_test_setup_teardown(test_unix_mode_sets_the_socket_file, setup_tokens, teardown),
        cmocka_unit_test_setup_teardown(test_gid_allow_list_and_tcp_peer_without_creds, setup_tokens, teardown),
        cmocka_unit_test_setup_teardown(test_reconnect_refused_ends_waiting_calls, setup_tokens, teardown),
        cmocka_unit_test_setup_teardown(test_same_client_id_other_identity_not_answered_from_cache, setup_tokens,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_identity_namespaces_survive_restart_with_log, setup_tokens, teardown),
        cmocka_unit_test_setup_teardown(test_goodbye_floors_shared_by_identity_across_restart, setup_tokens,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
