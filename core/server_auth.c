/*
 * Who may talk to the server (arpc/auth.h): the checks a client's HELLO passes before the
 * connection runs anything, on the loop thread, and the ready-made token check.
 *
 * Design notes
 * - One place decides, at HELLO: the token (the authenticate callback) and the uid/gid
 *   allow-list (SO_PEERCRED, taken at accept). Checking both there gives one refusal path
 *   (GOAWAY(ARPC_EAUTH), then close) that the client's connect already turns into its error.
 * - Every check that applies must pass, and with a check configured at least one must apply:
 *   an allow-list cannot judge a tcp peer, so such a peer gets in only through the callback.
 * - A refused connection reads nothing more (arpc_conn_close_after_flush stops its parse loop),
 *   so requests pipelined behind a bad HELLO never reach a handler.
 */
#include <stdio.h>
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/le.h"
#include "base/log.h"
#include "core/frame.h"
#include "core/peer_log.h"
#include "core/server_internal.h"

static uint32_t *copy_ids(const uint32_t *ids, size_t n, int *rc)
{
    if (n == 0)
        return NULL;
    if (ids == NULL) {
        *rc = ARPC_EINVAL;
        return NULL;
    }
    uint32_t *copy = arpc_malloc(n * sizeof(*copy));
    if (copy == NULL) {
        *rc = ARPC_ENOMEM;
        return NULL;
    }
    memcpy(copy, ids, n * sizeof(*copy));
    return copy;
}

int auth_init(arpc_server *s, const arpc_server_options *o)
{
    int rc = ARPC_OK;
    s->sv_authenticate = o->authenticate;
    s->sv_authenticate_ctx = o->authenticate_ctx;
    s->sv_allow_uids = copy_ids(o->allow_uids, o->allow_uids_count, &rc);
    s->sv_allow_uids_count = s->sv_allow_uids ? o->allow_uids_count : 0;
    if (rc == ARPC_OK) {
        s->sv_allow_gids = copy_ids(o->allow_gids, o->allow_gids_count, &rc);
        s->sv_allow_gids_count = s->sv_allow_gids ? o->allow_gids_count : 0;
    }
    return rc;
}

/* The identity entry i of an arpc_auth_fixed_tokens list gives: its own, or its position + 1. */
static uint64_t fixed_token_identity(const arpc_auth_token *list, size_t i)
{
    return list[i].identity ? list[i].identity : i + 1;
}

int auth_fixed_tokens_refusal(const arpc_auth_token *list, char *why, size_t whylen)
{
    if (list == NULL) {
        snprintf(why, whylen, "authenticate is arpc_auth_fixed_tokens and authenticate_ctx (its array of tokens) "
                              "is NULL: no client could connect");
        return ARPC_EINVAL;
    }
    /* An entry's identity 0 stands for its position + 1, which another entry may name too: the
     * two tokens' holders would share an identity (their at-most-once replies, their handlers'
     * view) by accident. Two entries that name one identity on purpose (a token and its
     * replacement, during a rotation) are fine. */
    for (size_t i = 0; list[i].token != NULL; i++) {
        for (size_t j = i + 1; list[j].token != NULL; j++) { /* a repeat could never match */
            if (list[j].len == list[i].len && list[i].len != 0 && memcmp(list[j].token, list[i].token, list[i].len) == 0 &&
                fixed_token_identity(list, j) != fixed_token_identity(list, i)) {
                snprintf(why, whylen,
                         "arpc_auth_fixed_tokens: entry %zu repeats entry %zu's token with another identity: the "
                         "first match is taken, so it would never match",
                         j, i);
                return ARPC_EINVAL;
            }
        }
        if (list[i].identity != 0)
            continue;
        for (size_t j = 0; list[j].token != NULL; j++) {
            if (list[j].identity == i + 1) {
                snprintf(why, whylen,
                         "arpc_auth_fixed_tokens: entry %zu has identity 0, which stands for its position + 1 "
                         "(%zu), and entry %zu names identity %zu too: their holders would be one client; "
                         "give entry %zu an identity of its own",
                         i, i + 1, j, i + 1, i);
                return ARPC_EINVAL;
            }
        }
    }
    return ARPC_OK;
}

void auth_fini(arpc_server *s)
{
    arpc_free(s->sv_allow_uids);
    arpc_free(s->sv_allow_gids);
    s->sv_allow_uids = s->sv_allow_gids = NULL;
}

static bool id_listed(const uint32_t *ids, size_t n, uint32_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

/* A verified certificate names its holder: the same subject, names and issuer's key, the same
 * identity, on every server (transport/tls.h, arpc_tls_peer_subject's digest is the hash's
 * key): a server trusting two authorities must not take the "CN=alice" one vouched for for
 * the other's, even where the two have the same name, nor two holders whose certificates
 * name them only by their alternative names (their subjects empty) for one (this separates
 * holders, it hides nothing). */
static uint64_t cert_identity(const char *subject, const uint8_t holder[ARPC_SIPHASH_KEY_SIZE])
{
    uint64_t h = arpc_siphash24(holder, subject, strlen(subject));
    return ARPC_AUTH_CERT_IDENTITY | (h & (ARPC_AUTH_CERT_IDENTITY - 1));
}

/* The identity at-most-once state is kept under, where the callback named a client the
 * transport proved something of too (a certificate, a uid): both. Holders of one token (a
 * shared one, or a fixed list's entry, which names all its holders alike) with different
 * certificates or uids are different clients to the reply cache, so one cannot be answered
 * from another's replies by sending its client id. The key is fixed (any will do: the reply
 * cache's own key is a keyed hash of this under the server's secret). */
static uint64_t key_identity(uint64_t named, uint64_t proven)
{
    static const uint8_t join_key[ARPC_SIPHASH_KEY_SIZE] = "arpc identities";
    if (named == 0 || proven == 0)
        return named != 0 ? named : proven;
    uint8_t both[16];
    le_st64(both, named);
    le_st64(both + 8, proven);
    return arpc_siphash24(join_key, both, sizeof(both));
}

/* Why the peer may not in, in words for the client and the log; NULL: it may. Sets the
 * peer's identity when it may. */
static const char *auth_judge(struct server_conn *sc, const struct arpc_frame *f, char *buf, size_t len)
{
    arpc_server *s = sc->sc_server;
    arpc_peer_info *peer = &sc->sc_peer;
    bool allow_list = s->sv_allow_uids_count + s->sv_allow_gids_count > 0;
    if (allow_list && peer->has_creds && !id_listed(s->sv_allow_uids, s->sv_allow_uids_count, peer->uid) &&
        !id_listed(s->sv_allow_gids, s->sv_allow_gids_count, peer->gid)) {
        snprintf(buf, len, "uid %u (gid %u) is not on the server's allow-list", peer->uid, peer->gid);
        return buf;
    }
    uint64_t identity = 0;
    if (s->sv_authenticate != NULL) {
        if (f->f_token_len > ARPC_AUTH_TOKEN_MAX_BYTES) {
            snprintf(buf, len, "token of %u bytes is over the limit of %u", f->f_token_len, ARPC_AUTH_TOKEN_MAX_BYTES);
            return buf;
        }
        /* An empty token is none (arpc/auth.h): a callback comparing the bytes it was given
         * must not be handed a pointer to zero of them. */
        const void *token = f->f_token_len > 0 ? f->f_token : NULL;
        if (s->sv_authenticate(peer, token, f->f_token_len, &identity, s->sv_authenticate_ctx) != ARPC_OK)
            return f->f_token == NULL ? "the server requires a token and the client sent none"
                                      : "the server refused the client's token";
    } else if (allow_list && !peer->has_creds) {
        snprintf(buf, len, "the server admits listed uids and gids only, and %s peers have none", peer->transport);
        return buf;
    }
    uint64_t proven = peer->cert_subject != NULL ? cert_identity(peer->cert_subject, sc->sc_peer_holder)
                      : peer->has_creds          ? ARPC_AUTH_UID_IDENTITY(peer->uid)
                                                 : 0;
    peer->identity = identity != 0 ? identity : proven;
    sc->sc_key_identity = key_identity(identity, proven);
    return NULL;
}

const char *auth_judge_tokenless(struct server_conn *sc, char *buf, size_t len)
{
    struct arpc_frame none = {0};
    return auth_judge(sc, &none, buf, len);
}

bool auth_admit(struct server_conn *sc, const struct arpc_frame *f)
{
    char buf[128];
    const char *why = auth_judge(sc, f, buf, sizeof(buf));
    if (why == NULL)
        return true;
    sc->sc_refused = true;
    const arpc_peer_info *p = &sc->sc_peer;
    char who[64] = "";
    if (p->has_creds) /* a unix peer's address is the listener's: say which process it was */
        snprintf(who, sizeof(who), " (pid %d, uid %u)", (int)p->pid, p->uid);
    peer_log(sc->sc_conn.c_loop, ARPC_LOG_WARN, "closing the connection from %s%s: authentication failed: %s",
             sc->sc_conn.c_peer, who, why);
    sconn_send_goaway(&sc->sc_conn, ARPC_EAUTH, why);
    arpc_conn_close_after_flush(&sc->sc_conn, ARPC_EAUTH);
    return false;
}

/* ---- public helpers ---- */

bool arpc_auth_token_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    /* Every byte of the shorter length is compared, whatever differs first; volatile keeps
     * the compiler from ending the loop once diff is non-zero. */
    const volatile uint8_t *x = a, *y = b;
    size_t n = alen < blen ? alen : blen;
    volatile uint8_t diff = alen != blen;
    for (size_t i = 0; i < n; i++)
        diff |= x[i] ^ y[i];
    return diff == 0;
}

int arpc_auth_fixed_tokens(const arpc_peer_info *peer, const void *token, size_t len, uint64_t *identity, void *ctx)
{
    (void)peer;
    const arpc_auth_token *list = ctx;
    /* An empty token is no secret: it matches nothing, an empty entry included (an arpc
     * client never sends one, so such an entry would let in hand-made HELLOs only). */
    if (list == NULL || token == NULL || len == 0)
        return ARPC_EAUTH;
    uint64_t found = 0;
    /* Every entry is compared, so the time says nothing about which one (if any) matched. */
    for (size_t i = 0; list[i].token != NULL; i++) {
        bool eq = arpc_auth_token_equal(token, len, list[i].token, list[i].len);
        uint64_t id = fixed_token_identity(list, i);
        uint64_t first_match = (uint64_t)0 - (uint64_t)(eq & (found == 0)); /* all ones or zero */
        found |= first_match & id;
    }
    if (found == 0)
        return ARPC_EAUTH;
    *identity = found;
    return ARPC_OK;
}
