/*
 * arpc/auth.h: who a server's peer is, and letting in only whom it should (docs/SECURITY.md).
 *
 * A server checks each connection once, at the client's HELLO, on its loop thread, before any
 * call of that connection runs (frames the client sent behind its HELLO wait for the check and
 * are dropped with the connection if it fails). Three checks, each optional, in the server's
 * options (arpc/server.h):
 *  - a token: the client's auth_token (arpc/client.h), at most ARPC_AUTH_TOKEN_MAX_BYTES,
 *    judged by the server's authenticate callback (arpc_auth_fixed_tokens is a ready-made one);
 *  - for unix:// peers, an allow-list of uids and gids against the peer's SO_PEERCRED;
 *  - none: a server without either lets every client in (clients sending a token included).
 * A refused client is sent GOAWAY(ARPC_EAUTH) and closed, and a line is logged naming the peer
 * and why; its arpc_client_connect returns ARPC_EAUTH, with the server's reason in errbuf /
 * arpc_client_last_error. The token travels in clear text unless the transport encrypts it.
 *
 * Identity: the callback may name the client (a non-zero 64-bit identity); without one, a
 * tls:// client with a verified certificate is named by its certificate (ARPC_AUTH_CERT_IDENTITY
 * bit set, the rest a hash of its subject and alternative names keyed by a digest of its
 * issuer's public key: a server trusting several CAs, even two of the same name, keeps apart
 * the "CN=alice" each vouches for, though handlers see the same arpc_request_peer_subject; and
 * certificates naming their holders by alternative names alone, their subjects empty, name
 * different holders) and a peer with known credentials is ARPC_AUTH_UID_IDENTITY(uid).
 * At-most-once replies are kept per (identity, client id), so a client cannot be answered
 * from, nor fill, the reply cache of a client with another identity by sending its client
 * id. Where the callback names a client that the transport also proved something of (a
 * verified certificate, a uid), the reply cache keys it by both: holders of one token with
 * different certificates or uids are different clients there, though peer->identity (what
 * handlers see) is the callback's for all of them.
 */
#ifndef ARPC_AUTH_H
#define ARPC_AUTH_H

#include "arpc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The longest token a server accepts; a longer one is refused with ARPC_EAUTH (and a client
 * refuses to send one: ARPC_EINVAL at connect). */
#define ARPC_AUTH_TOKEN_MAX_BYTES 4096u

/* The identity of a peer known only by its uid (the top bit keeps it apart from small
 * identities a callback chooses). */
#define ARPC_AUTH_UID_IDENTITY(uid) ((UINT64_C(1) << 63) | (uint64_t)(uint32_t)(uid))
/* Set in the identity of a client named by its certificate (and clear in uid ones). */
#define ARPC_AUTH_CERT_IDENTITY (UINT64_C(1) << 62)

/* What the server knows about the other end of a connection. Owned by the server: valid
 * while the request (or the authenticate call) it came from is. */
typedef struct arpc_peer_info {
    const char *transport; /* "tcp", "tls", "unix" or "inproc" */
    const char *address;   /* tcp and tls: the peer's "tcp://10.1.2.3:5555" ("tls://..."); unix
                            * and inproc peers have no address of their own: the listener's */
    bool has_creds;        /* uid, gid and pid are known (unix:// and inproc://: SO_PEERCRED,
                            * taken when the connection was accepted) */
    uint32_t uid, gid;     /* the peer process's effective uid and gid at connect time */
    int32_t pid;
    uint64_t identity;     /* who the checks found the client to be (see above); 0: nobody in
                            * particular (no check named it). Set once the HELLO is accepted */
    const char *cert_subject; /* tls:// with a client certificate the server verified: its
                               * subject, as arpc_request_peer_subject gives it; else NULL */
} arpc_peer_info;

/*
 * Judges a client's token. Runs on the server's loop thread, once per connection, before any
 * call of that connection runs: it must be quick and must not block (every connection waits
 * for it). token is NULL (len 0) when the client sent none, or an empty one (an empty token
 * is none). Returns ARPC_OK to let the client in, with *identity (0 on entry) optionally set
 * to name it; anything else refuses it with ARPC_EAUTH. ctx is the options'
 * authenticate_ctx. Compare secrets with arpc_auth_token_equal, which takes the same time
 * whatever bytes differ.
 */
typedef int (*arpc_authenticate_fn)(const arpc_peer_info *peer, const void *token, size_t len,
                                    uint64_t *identity, void *ctx);

/* True when a[0..alen) equals b[0..blen). Its time depends on the lengths only, never on
 * where the bytes differ (a volatile accumulation, so no early exit can be compiled in).
 * Any thread. */
ARPC_API bool arpc_auth_token_equal(const void *a, size_t alen, const void *b, size_t blen);

/* One accepted token and the identity it gives (0: its position in the array + 1). The
 * identity keys the client's at-most-once calls, in the reply log too: a list whose entries
 * move between two runs on one log renames clients, whose re-sent calls then run again
 * (docs/SECURITY.md). Give each entry an identity where the list may change. Two entries may
 * name one identity (a token and its replacement); an entry's 0 that stands for an identity
 * another entry names is refused by arpc_server_create (ARPC_EINVAL, errbuf says which), as is
 * a token listed twice with two identities. */
typedef struct arpc_auth_token {
    const void *token; /* NULL ends an array of them */
    size_t len;
    uint64_t identity;
} arpc_auth_token;

/* A ready-made arpc_authenticate_fn: ctx is an array of arpc_auth_token ending with one whose
 * token is NULL (it must outlive the server). Lets in a client whose token equals one of them,
 * compared in constant time against every entry, and names it with that entry's identity;
 * refuses a missing, empty or unknown token (an entry of len 0 matches nothing). */
ARPC_API int arpc_auth_fixed_tokens(const arpc_peer_info *peer, const void *token, size_t len,
                                    uint64_t *identity, void *ctx);

#ifdef __cplusplus
}
#endif

#endif
