#include "json.h"

#include <math.h>

void bench_json_key(struct bench_json *j, const char *k)
{
    fputs(j->j_first ? "" : ",", j->j_out);
    j->j_first = false;
    bench_json_str(j, NULL, k);
    fputc(':', j->j_out);
}

void bench_json_begin(struct bench_json *j, FILE *out)
{
    j->j_out = out;
    j->j_first = true;
    fputc('{', out);
}

/* With key NULL, writes just the quoted, escaped string. */
void bench_json_str(struct bench_json *j, const char *k, const char *value)
{
    if (k != NULL)
        bench_json_key(j, k);
    fputc('"', j->j_out);
    for (const unsigned char *p = (const unsigned char *)value; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(j->j_out, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(j->j_out, "\\u%04x", *p);
        else
            fputc(*p, j->j_out);
    }
    fputc('"', j->j_out);
}

void bench_json_uint(struct bench_json *j, const char *k, uint64_t value)
{
    bench_json_key(j, k);
    fprintf(j->j_out, "%llu", (unsigned long long)value);
}

void bench_json_num(struct bench_json *j, const char *k, double value)
{
    bench_json_key(j, k);
    fprintf(j->j_out, "%.3f", isfinite(value) ? value : 0.0);
}

void bench_json_bool(struct bench_json *j, const char *k, bool value)
{
    bench_json_key(j, k);
    fputs(value ? "true" : "false", j->j_out);
}

void bench_json_str_or_null(struct bench_json *j, const char *k, const char *value)
{
    if (value != NULL) {
        bench_json_str(j, k, value);
        return;
    }
    bench_json_key(j, k);
    fputs("null", j->j_out);
}

void bench_json_close(struct bench_json *j) { fputc('}', j->j_out); }

void bench_json_end(struct bench_json *j)
{
    fputs("}\n", j->j_out);
    fflush(j->j_out);
}
