/*
 * bench/json.h: writing one flat JSON object on one line.
 *
 * Numbers that are not finite (a ratio over an empty baseline, say) are written as 0 so the
 * line always parses: JSON has no NaN or Infinity.
 */
#ifndef ARPC_BENCH_JSON_H
#define ARPC_BENCH_JSON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct bench_json {
    FILE *j_out;
    bool j_first;
};

void bench_json_begin(struct bench_json *j, FILE *out);
void bench_json_str(struct bench_json *j, const char *key, const char *value);
void bench_json_uint(struct bench_json *j, const char *key, uint64_t value);
void bench_json_num(struct bench_json *j, const char *key, double value); /* 3 decimals */
void bench_json_bool(struct bench_json *j, const char *key, bool value);
void bench_json_str_or_null(struct bench_json *j, const char *key, const char *value); /* NULL: null */
void bench_json_end(struct bench_json *j); /* "}\n" and a flush */

/* For nesting: the key alone (the caller writes the value: an array of objects, each
 * begun with bench_json_begin on the same FILE and ended with bench_json_close, "}"). */
void bench_json_key(struct bench_json *j, const char *key);
void bench_json_close(struct bench_json *j);

#endif
