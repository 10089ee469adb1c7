/*
 * Command-line values for bank_server and bank_client: "--flag VALUE" pairs, where a missing
 * or malformed value ends the program with status 2 and a line saying which flag and why.
 */
#ifndef BANK_ARGS_H
#define BANK_ARGS_H

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The value after argv[*i] (a flag), moving *i onto it. */
static inline const char *bank_arg(int argc, char **argv, int *i, const char *prog)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "%s: %s needs a value\n", prog, argv[*i]);
        exit(2);
    }
    return argv[++*i];
}

/* The value after argv[*i] as a decimal number in [min, max]. */
static inline uint64_t bank_arg_u64(int argc, char **argv, int *i, const char *prog, uint64_t min, uint64_t max)
{
    const char *flag = argv[*i], *s = bank_arg(argc, argv, i, prog);
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno != 0 || v < min || v > max) {
        fprintf(stderr, "%s: %s wants a number from %" PRIu64 " to %" PRIu64 ", not \"%s\"\n", prog, flag, min, max, s);
        exit(2);
    }
    return (uint64_t)v;
}

#endif
