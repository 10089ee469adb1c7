/*
 * tools/call_args.h: arpc-call's command line. Options are a table (call_args.c), so adding
 * one is a row and a field.
 */
#ifndef ARPC_TOOLS_CALL_ARGS_H
#define ARPC_TOOLS_CALL_ARGS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct call_args {
    const char *addr;
    const char *method;   /* "arpc.methods" with --list */
    const char *data;     /* DATA from the command line; NULL: none */
    const char *file;     /* --file PATH ("-": standard input); NULL: none */
    bool hex;             /* --hex: DATA (or the file) is hex, and so is the output */
    bool list;            /* --list */
    int64_t deadline_ms;  /* --deadline-ms; 0: none given (no deadline) */
    uint64_t repeat;      /* --repeat N; 0: one call, its reply printed */
    bool json;            /* --json: a JSON-RPC 1.0 call, DATA its params[0] (tools/call_json.h) */
    /* tls:// (arpc_tls_options, tools/call_creds.h); NULL: not given */
    const char *ca_file;     /* --ca FILE */
    const char *ca_dir;      /* --ca-dir DIR */
    const char *cert_file;   /* --cert FILE, with --key FILE: mutual TLS */
    const char *key_file;
    const char *server_name; /* --server-name NAME */
    /* the HELLO's token (arpc_client_options.auth_token); at most one of them */
    const char *token;       /* --token TOKEN (visible in ps: --token-file is better) */
    const char *token_file;  /* --token-file FILE: its contents, the trailing line feed stripped */
};

/* Whether any of --ca, --cert, --key, --server-name was given. */
bool call_args_tls(const struct call_args *a);

enum call_args_result {
    CALL_ARGS_OK,
    CALL_ARGS_HELP,  /* --help or --version was printed: exit 0 */
    CALL_ARGS_USAGE, /* a usage error was printed on stderr: exit 2 */
};

enum call_args_result call_args_parse(int argc, char **argv, struct call_args *a);

/* The --help text, exit statuses included. */
void call_args_usage(FILE *f);

#endif
