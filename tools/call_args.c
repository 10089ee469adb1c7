/*
 * arpc-call's options: each is a row of opts[] with the function that takes its value.
 * "--name VALUE" and "--name=VALUE" are both accepted; "--" ends the options.
 */
#include "call_args.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/error.h"
#include "arpc/version.h"
#include "exit_codes.h"

struct opt {
    const char *name;
    bool takes_value;
    bool (*take)(struct call_args *a, const char *value); /* false: bad value */
    const char *help;
    const char *wants; /* what a value must be, said when take refuses one (NULL: takes none) */
};

static bool parse_u64(const char *s, uint64_t *out)
{
    if (s[0] < '0' || s[0] > '9')
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

static bool take_hex(struct call_args *a, const char *v)
{
    (void)v;
    a->hex = true;
    return true;
}

static bool take_list(struct call_args *a, const char *v)
{
    (void)v;
    a->list = true;
    return true;
}

static bool take_json(struct call_args *a, const char *v)
{
    (void)v;
    a->json = true;
    return true;
}

static bool take_file(struct call_args *a, const char *v)
{
    a->file = v;
    return v[0] != '\0';
}

static bool take_deadline(struct call_args *a, const char *v)
{
    uint64_t ms;
    if (!parse_u64(v, &ms) || ms == 0 || ms > INT64_MAX)
        return false;
    a->deadline_ms = (int64_t)ms;
    return true;
}

static bool take_repeat(struct call_args *a, const char *v)
{
    return parse_u64(v, &a->repeat) && a->repeat > 0;
}

/* The TLS and token options: each a file or a name, not empty. */
static bool take_string(const char **field, const char *v)
{
    *field = v;
    return v[0] != '\0';
}

static bool take_ca(struct call_args *a, const char *v) { return take_string(&a->ca_file, v); }
static bool take_ca_dir(struct call_args *a, const char *v) { return take_string(&a->ca_dir, v); }
static bool take_cert(struct call_args *a, const char *v) { return take_string(&a->cert_file, v); }
static bool take_key(struct call_args *a, const char *v) { return take_string(&a->key_file, v); }
static bool take_server_name(struct call_args *a, const char *v) { return take_string(&a->server_name, v); }
static bool take_token(struct call_args *a, const char *v) { return take_string(&a->token, v); }
static bool take_token_file(struct call_args *a, const char *v) { return take_string(&a->token_file, v); }

static const struct opt opts[] = {
    {"hex", false, take_hex, "DATA (or the file) is hex digits; the reply is printed as hex", NULL},
    {"file", true, take_file, "PATH: the request body is the file's bytes ('-': standard input)",
     "a path, not empty"},
    {"deadline-ms", true, take_deadline,
     "N: the call's deadline in ms; connecting gets as long again (default: none,\n"
     "                 and 5000 ms to connect)",
     "a whole number of milliseconds, 1 or more"},
    {"repeat", true, take_repeat,
     "N: make the call N times, pipelined, and print a summary line instead of the\n"
     "                 reply (calls, failures, p50/p99/max in us of every call, failed\n"
     "                 or not, rate)",
     "a whole number, 1 or more"},
    {"list", false, take_list, "call the server's built-in arpc.methods: its method names, one per line", NULL},
    {"json", false, take_json,
     "call METHOD (e.g. KV.Get) as JSON-RPC 1.0, as Go's net/rpc/jsonrpc does: DATA is\n"
     "                 params[0] as JSON (default: null); the result's JSON is printed, and a\n"
     "                 server's error string fails with the outcome it names (a handler's:\n"
     "                 ARPC_EHANDLER; arpc's own, e.g. ARPC_ESHUTDOWN); tcp:// and unix:// only\n"
     "                 (a tls:// ADDR fails with ARPC_EADDR: nothing is sent without TLS)",
     NULL},
    {"ca", true, take_ca, "FILE: the CAs (PEM) that vouch for a tls:// server (default: the system's)",
     "a file name, not empty"},
    {"ca-dir", true, take_ca_dir,
     "DIR: a directory of CAs (PEM, named by their subject hash as c_rehash makes\n"
     "                 them), with --ca or alone",
     "a directory name, not empty"},
    {"cert", true, take_cert, "FILE: our certificate (PEM) for mutual TLS, with --key", "a file name, not empty"},
    {"key", true, take_key, "FILE: --cert's private key (PEM)", "a file name, not empty"},
    {"server-name", true, take_server_name,
     "NAME: the name the tls:// server's certificate must carry (default: ADDR's host)", "a name, not empty"},
    {"token-file", true, take_token_file,
     "FILE: the token sent to a server that checks one: FILE's contents, a trailing\n"
     "                 line feed stripped",
     "a file name, not empty"},
    {"token", true, take_token, "TOKEN: the token itself (seen by ps and kept in shell history: prefer\n"
                                "                 --token-file)",
     "a token, not empty"},
};
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

void call_args_usage(FILE *f)
{
    fprintf(f, "usage: arpc-call [OPTIONS] ADDR METHOD [DATA]\n"
               "       arpc-call [OPTIONS] --list ADDR\n"
               "Calls METHOD on the arpc server at ADDR (tcp://HOST:PORT, unix:///PATH, tls://HOST:PORT)\n"
               "with DATA as the request body (default: empty) and writes the reply's bytes to standard\n"
               "output.\n\n");
    for (size_t i = 0; i < NOPTS; i++)
        fprintf(f, "  --%-12s %s\n", opts[i].name, opts[i].help);
    fprintf(f, "  --%-12s %s\n", "help", "this text");
    fprintf(f, "  --%-12s %s\n", "version", "the arpc version it runs with");
    fprintf(f, "\nOn failure standard error gets one line, 'arpc-call: METHOD: ARPC_EXXX: text', and the exit\n"
               "status says which:\n"
               "  0   the call succeeded (with --repeat: every call)\n"
               "  1   a local failure (reading --file, --token-file, --ca, --cert or --key; writing\n"
               "      the output)\n"
               "  2   a usage error (--hex or --json DATA that does not parse included)\n"
               "  %d + the error code otherwise (--repeat: the first failure's; connecting included,\n"
               "      where nothing was sent, so a connect that timed out is ARPC_EUNREACHABLE):\n",
            ARPC_CALL_EXIT_BASE);
    for (int code = 1; code < ARPC_ERROR_COUNT_; code++) {
        fprintf(f, "%s%3d %-18s", code % 4 == 1 ? "      " : "", ARPC_CALL_EXIT_BASE + code, arpc_errname(code));
        if (code % 4 == 0)
            fprintf(f, "\n");
    }
    fprintf(f, "\n");
}

static const struct opt *find_opt(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0)
            return &opts[i];
    return NULL;
}

static enum call_args_result usage_error(const char *fmt, const char *what)
{
    fprintf(stderr, "arpc-call: ");
    fprintf(stderr, fmt, what);
    fprintf(stderr, "\n(arpc-call --help for usage)\n");
    return CALL_ARGS_USAGE;
}

/* "bad value '0' for --deadline-ms: it takes a whole number of milliseconds, 1 or more" */
static enum call_args_result bad_value(const struct opt *o, const char *value)
{
    fprintf(stderr, "arpc-call: bad value '%s' for --%s: it takes %s\n(arpc-call --help for usage)\n", value, o->name,
            o->wants);
    return CALL_ARGS_USAGE;
}

enum call_args_result call_args_parse(int argc, char **argv, struct call_args *a)
{
    memset(a, 0, sizeof(*a));
    const char *pos[3];
    int npos = 0;
    bool options_done = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (options_done || arg[0] != '-' || strcmp(arg, "-") == 0) {
            if (npos == 3)
                return usage_error("too many arguments at '%s'", arg);
            pos[npos++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            options_done = true;
            continue;
        }
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            call_args_usage(stdout);
            return CALL_ARGS_HELP;
        }
        if (strcmp(arg, "--version") == 0) { /* the library's: arpc-call carries it */
            printf("arpc-call %s\n", arpc_version_string());
            return CALL_ARGS_HELP;
        }
        if (strncmp(arg, "--", 2) != 0)
            return usage_error("unknown option '%s'", arg);
        const char *name = arg + 2, *eq = strchr(name, '=');
        const struct opt *o = find_opt(name, eq ? (size_t)(eq - name) : strlen(name));
        if (o == NULL)
            return usage_error("unknown option '%s'", arg);
        const char *value = NULL;
        if (o->takes_value) {
            if (eq != NULL)
                value = eq + 1;
            else if (i + 1 < argc)
                value = argv[++i];
            else
                return usage_error("option '%s' needs a value", arg);
        } else if (eq != NULL) {
            return usage_error("option '%s' takes no value", arg);
        }
        if (!o->take(a, value))
            return bad_value(o, value);
    }
    int need = a->list ? 1 : 2;
    if (npos < need)
        return usage_error("%s", a->list ? "--list needs ADDR" : "ADDR and METHOD are needed");
    a->addr = pos[0];
    if (a->list) {
        if (npos > 1)
            return usage_error("--list takes ADDR only, not '%s'", pos[1]);
        a->method = "arpc.methods";
    } else {
        a->method = pos[1];
        a->data = npos > 2 ? pos[2] : NULL;
    }
    if (a->json && (a->hex || a->list || a->repeat > 0))
        return usage_error("%s", "--json goes with --file and --deadline-ms only (not --hex, --list, --repeat)");
    if (a->data != NULL && a->file != NULL)
        return usage_error("%s", "DATA and --file both give the request body: choose one");
    if ((a->cert_file == NULL) != (a->key_file == NULL))
        return usage_error("%s", "--cert and --key go together (mutual TLS)");
    if (a->token != NULL && a->token_file != NULL)
        return usage_error("%s", "--token and --token-file both give the token: choose one");
    if (a->json && (call_args_tls(a) || a->token != NULL || a->token_file != NULL))
        return usage_error("%s", "--json takes no TLS or token options (JSON-RPC is tcp:// and unix:// only)");
    static const char tls_scheme[] = "tls://";
    if (call_args_tls(a) && strncmp(a->addr, tls_scheme, sizeof(tls_scheme) - 1) != 0)
        return usage_error("%s", "--ca, --ca-dir, --cert, --key and --server-name need a tls:// ADDR");
    return CALL_ARGS_OK;
}

bool call_args_tls(const struct call_args *a)
{
    return a->ca_file != NULL || a->ca_dir != NULL || a->cert_file != NULL || a->key_file != NULL ||
           a->server_name != NULL;
}
