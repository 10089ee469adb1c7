/*
 * arpc/tls.h: TLS for "tls://HOST:PORT" addresses (OpenSSL 3; docs/SECURITY.md).
 *
 * A tls:// address is tcp:// with TLS 1.2 or later on top: the server proves who it is with
 * its certificate, the client checks it against its CAs and the host name it dialled, and,
 * with require_client_cert, the server checks the client's certificate too (mutual TLS), and
 * its handlers see the client's subject (arpc_request_peer_subject). Defaults are the modern
 * ones: no compression, no renegotiation, the server's cipher preference, OpenSSL's default
 * security level; TLS 1.2 only with ECDHE and AEAD ciphers (AES-GCM, ChaCha20-Poly1305, as
 * Mozilla's "intermediate" profile), TLS 1.3 with OpenSSL's default suites. A peer offering
 * nothing else (e.g. only CBC or SHA-1 suites) fails the handshake.
 *
 * The options are read during arpc_server_create / arpc_client_connect only (and
 * arpc_server_tls_reload, which rotates a server's certificate): the files are loaded there,
 * and the strings need not outlive the call. A certificate or key that cannot
 * be loaded fails that call with ARPC_ETLS (errbuf says which file and why). A handshake that
 * fails (an unknown CA, an expired certificate, a wrong host name, no client certificate
 * where one is required, a peer that does not speak TLS) closes the connection: the client's
 * connect or call ends ARPC_ETLS with OpenSSL's reason in words (arpc_client_last_error,
 * errbuf), and the server logs it. A handshake counts against the server's
 * handshake_timeout_ms (a peer that stalls in it is closed).
 *
 * Built without TLS (ARPC_WITH_TLS off, e.g. no libssl-dev), a tls:// address is ARPC_EADDR
 * ("built without TLS").
 */
#ifndef ARPC_TLS_H
#define ARPC_TLS_H

#include "arpc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Zero-initialise. File names are PEM files. Unlike the arpc_*_options structs it is not passed
 * with its size (docs/ABI.md): a field is appended only with a new soname (a new minor while the
 * major is 0), so a program never hands a library a struct shorter than it reads. */
typedef struct arpc_tls_options {
    /* Our certificate (chain, leaf first) and its private key. A server needs them for
     * tls://; a client gives them only for mutual TLS. */
    const char *cert_file;
    const char *key_file;
    /* The CAs that vouch for the peer: a file, a directory prepared with `openssl rehash`,
     * or both. Neither: the system's store (a client), or no client certificates accepted
     * (a server). Revocation: CRLs (PEM) appended to ca_file (not in ca_dir: they are not
     * seen) turn on the check of the peer's certificate (the leaf, not its intermediate CAs)
     * against its issuer's CRL, so every CA that issues peers' certificates then needs its
     * CRL there, and a current one (without one, or past its nextUpdate, its certificates
     * fail: "unable to get certificate CRL", "CRL has expired"). A server takes new CRLs with
     * arpc_server_tls_reload, a client when it is created (not on its reconnects). No CRLs:
     * no such check. ca_file is read once, when the context is made; ca_dir (and the
     * system's directory) is looked up during each handshake, on the loop's thread, for each
     * issuer a peer's chain names (OpenSSL reads such a directory lazily, a miss again every
     * time): keep it on a local disk, or prefer ca_file, where the loop must not wait for a
     * slow file system (review 238). */
    const char *ca_file;
    const char *ca_dir;
    /* Client: the name the server's certificate must carry (and the SNI sent); NULL: the
     * address's HOST (an IP address is then checked against the certificate's IP entries).
     * An empty name is ARPC_EINVAL. */
    const char *server_name;
    /* Server: every client must present a certificate that ca_file/ca_dir verify (mutual TLS).
     * Without it, a client certificate is still asked for and verified when ca_file/ca_dir
     * are given, but not required. A client's chain (its certificate and the intermediates it
     * sends) is at most 16 KiB: a longer one fails the handshake ("excessive message size"); its
     * ClientHello at most 16 KiB, and all it sends before the handshake ends 64 KiB ("TLS
     * handshake failed: the peer sent a ClientHello over 16384 bytes"). */
    bool require_client_cert;
} arpc_tls_options;

#ifdef __cplusplus
}
#endif

#endif
