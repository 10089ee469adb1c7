/*
 * arpc-call's credentials (tools/call_creds.h). The token is held in a fixed buffer, never
 * allocated, so wiping it is one call; a token file's last line feed is an editor's or
 * `echo`'s, not the token's, and is stripped.
 */
#define _DEFAULT_SOURCE /* explicit_bzero */
#include "call_creds.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "exit_codes.h"

#ifdef ARPC_CALL_WITH_TLS

/* A file named on the command line that cannot be read is a local failure (exit 1), as an
 * unreadable --file is, not the TLS refusal the library would make of it. */
static bool tls_file_readable(const char *path)
{
    if (path == NULL || access(path, R_OK) == 0)
        return true;
    fprintf(stderr, "arpc-call: %s: cannot read: %m\n", path); /* as --file's and --token-file's */
    return false;
}

static int tls_apply(const struct call_args *a, struct call_creds *cr, arpc_client_options *o)
{
    if (!call_args_tls(a))
        return -1;
    if (!tls_file_readable(a->ca_file) || !tls_file_readable(a->cert_file) || !tls_file_readable(a->key_file))
        return ARPC_CALL_EXIT_LOCAL;
    cr->tls.ca_file = a->ca_file;
    cr->tls.ca_dir = a->ca_dir;
    cr->tls.cert_file = a->cert_file;
    cr->tls.key_file = a->key_file;
    cr->tls.server_name = a->server_name;
    o->tls = &cr->tls;
    return -1;
}

#else

/* The library would refuse the tls:// address; the option is named at once instead. */
static int tls_apply(const struct call_args *a, struct call_creds *cr, arpc_client_options *o)
{
    (void)cr;
    (void)o;
    if (!call_args_tls(a))
        return -1;
    const char *flag = a->ca_file != NULL     ? "--ca"
                       : a->ca_dir != NULL    ? "--ca-dir"
                       : a->cert_file != NULL ? "--cert"
                       : a->key_file != NULL  ? "--key"
                                              : "--server-name";
    fprintf(stderr, "arpc-call: %s: built without TLS (OpenSSL 3): rebuild arpc with libssl-dev installed\n", flag);
    return ARPC_CALL_EXIT_USAGE;
}

#endif

/* The token file's bytes into cr->token, the trailing "\n" (or "\r\n") stripped. */
static int token_read(const char *path, struct call_creds *cr)
{
    FILE *f = fopen(path, "rb");
    size_t n = f == NULL ? 0 : fread(cr->token, 1, sizeof(cr->token), f);
    bool bad = f == NULL || ferror(f);
    if (f != NULL)
        fclose(f);
    if (bad) {
        fprintf(stderr, "arpc-call: %s: cannot read: %m\n", path);
        return ARPC_CALL_EXIT_LOCAL;
    }
    if (n > 0 && cr->token[n - 1] == '\n')
        n--;
    if (n > 0 && cr->token[n - 1] == '\r')
        n--;
    cr->token_len = n;
    return -1;
}

static int token_apply(const struct call_args *a, struct call_creds *cr, arpc_client_options *o)
{
    const char *flag = a->token_file != NULL ? "--token-file" : "--token";
    if (a->token_file != NULL) {
        int status = token_read(a->token_file, cr);
        if (status >= 0)
            return status;
    } else if (a->token != NULL) {
        cr->token_len = strnlen(a->token, sizeof(cr->token));
        memcpy(cr->token, a->token, cr->token_len);
    } else {
        return -1;
    }
    if (cr->token_len == 0 || cr->token_len > ARPC_AUTH_TOKEN_MAX_BYTES) {
        fprintf(stderr, "arpc-call: %s: the token is %s (1 to %u bytes)\n", flag,
                cr->token_len == 0 ? "empty" : "too long", ARPC_AUTH_TOKEN_MAX_BYTES);
        return ARPC_CALL_EXIT_USAGE;
    }
    o->auth_token = cr->token;
    o->auth_token_len = cr->token_len;
    return -1;
}

int call_creds_apply(const struct call_args *a, struct call_creds *cr, arpc_client_options *o)
{
    memset(cr, 0, sizeof(*cr));
    int status = tls_apply(a, cr, o);
    return status >= 0 ? status : token_apply(a, cr, o);
}

void call_creds_clear(struct call_creds *cr) { explicit_bzero(cr->token, sizeof(cr->token)); }
