/* The growing text buffer (base/text_buf.h): out of memory is sticky, so a writer checks once. */
#include "base/text_buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"

void text_buf_init(struct text_buf *b)
{
    memset(b, 0, sizeof(*b));
}

/* Room for want more bytes and the NUL. */
static bool text_buf_reserve(struct text_buf *b, size_t want)
{
    if (b->tb_failed)
        return false;
    if (b->tb_len + want + 1 <= b->tb_cap)
        return true;
    size_t cap = b->tb_cap ? b->tb_cap : 1024;
    while (cap < b->tb_len + want + 1)
        cap *= 2;
    char *p = arpc_realloc(b->tb_data, cap);
    if (p == NULL) {
        b->tb_failed = true;
        return false;
    }
    b->tb_data = p;
    b->tb_cap = cap;
    return true;
}

void text_buf_append(struct text_buf *b, const char *data, size_t len)
{
    if (!text_buf_reserve(b, len))
        return;
    memcpy(b->tb_data + b->tb_len, data, len);
    b->tb_len += len;
    b->tb_data[b->tb_len] = '\0';
}

void text_buf_puts(struct text_buf *b, const char *s) { text_buf_append(b, s, strlen(s)); }

void text_buf_printf(struct text_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !text_buf_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->tb_data + b->tb_len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->tb_len += (size_t)n;
}

void text_buf_fail(struct text_buf *b) { b->tb_failed = true; }

int text_buf_finish(struct text_buf *b, char **out, size_t *len)
{
    if (text_buf_reserve(b, 0)) /* an empty text still gets its NUL */
        b->tb_data[b->tb_len] = '\0';
    if (b->tb_failed) {
        arpc_free(b->tb_data);
        text_buf_init(b);
        return ARPC_ENOMEM;
    }
    *out = b->tb_data;
    if (len != NULL)
        *len = b->tb_len;
    text_buf_init(b);
    return ARPC_OK;
}
