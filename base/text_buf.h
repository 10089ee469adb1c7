/*
 * base/text_buf.h: a growing text buffer for writers that produce a document in one go (the
 * stats' JSON and Prometheus text). Out of memory is sticky: every later append does nothing
 * and text_buf_finish reports it once, so writers need no error check per line.
 */
#ifndef ARPC_BASE_TEXT_BUF_H
#define ARPC_BASE_TEXT_BUF_H

#include <stdbool.h>
#include <stddef.h>

struct text_buf {
    char *tb_data; /* NUL-terminated while tb_failed is false */
    size_t tb_len, tb_cap;
    bool tb_failed;
};

void text_buf_init(struct text_buf *b);
void text_buf_append(struct text_buf *b, const char *data, size_t len);
void text_buf_puts(struct text_buf *b, const char *s);
void text_buf_printf(struct text_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A part of the text made elsewhere could not be had (no memory): the text fails, as it does
 * when an append finds no memory. */
void text_buf_fail(struct text_buf *b);
/* Hands the text to the caller (*out, freed with arpc_free; *len may be NULL): ARPC_OK, or
 * ARPC_ENOMEM (nothing to free). */
int text_buf_finish(struct text_buf *b, char **out, size_t *len);

#endif
