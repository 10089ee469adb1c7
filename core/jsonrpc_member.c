/*
 * The text of one member's value in a JSON object (core/jsonrpc_member.h). The object is
 * valid JSON already, so the walk only needs where strings, brackets and scalars end.
 */
#include "core/jsonrpc_member.h"

#include <string.h>

#include "base/utf8.h"
#include "core/jsonrpc_scan.h"

static size_t skip_space(const uint8_t *p, size_t i, size_t n)
{
    while (i < n && jsonrpc_is_space(p[i]))
        i++;
    return i;
}

/* p[i] is a string's opening quote: the index after its closing one. */
static size_t skip_string(const uint8_t *p, size_t i, size_t n)
{
    for (i++; i < n; i++) {
        if (p[i] == '\\')
            i++;
        else if (p[i] == '"')
            return i + 1;
    }
    return n;
}

/* The code unit of the 4 hex digits at p[i..), if they are there before end. */
static bool hex4(const uint8_t *p, size_t i, size_t end, uint32_t *unit)
{
    *unit = 0;
    for (size_t k = 0; k < 4; k++) {
        int v = i + k < end ? jsonrpc_hex_digit(p[i + k]) : -1;
        if (v < 0)
            return false;
        *unit = *unit << 4 | (uint32_t)v;
    }
    return true;
}

/* The next character of a key's text p[*i..end) (end: its closing quote) as a parser reads it,
 * an escape decoded (a surrogate pair to one character), in UTF-8 at out: its length; 0 for
 * an escape that is not JSON (never, in what jansson accepted). */
static size_t key_char(const uint8_t *p, size_t *i, size_t end, uint8_t out[4])
{
    static const char escaped[] = "\"\\/bfnrt", meant[] = "\"\\/\b\f\n\r\t";
    if (p[*i] != '\\') {
        out[0] = p[(*i)++];
        return 1;
    }
    if (*i + 1 >= end)
        return 0;
    uint8_t e = p[*i + 1];
    *i += 2;
    if (e != 'u') {
        const char *at = memchr(escaped, e, sizeof(escaped) - 1);
        if (at == NULL)
            return 0;
        out[0] = (uint8_t)meant[at - escaped];
        return 1;
    }
    uint32_t cp, low;
    if (!hex4(p, *i, end, &cp))
        return 0;
    *i += 4;
    if (cp >= 0xdc00 && cp <= 0xdfff)
        return 0; /* a low surrogate alone */
    if (cp >= 0xd800 && cp <= 0xdbff) { /* a high one: its low one follows */
        if (*i + 6 > end || p[*i] != '\\' || p[*i + 1] != 'u' || !hex4(p, *i + 2, end, &low) || low < 0xdc00 ||
            low > 0xdfff)
            return 0;
        *i += 6;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
    }
    return arpc_utf8_put(cp, out);
}

/* Whether the key whose text (between its quotes) is p[from..end) is key[0..klen) as a parser
 * reads it: "res\u0075lt" is "result" (jansson's json_object_get finds it so). */
static bool key_is(const uint8_t *p, size_t from, size_t end, const char *key, size_t klen)
{
    size_t k = 0;
    for (size_t i = from; i < end;) {
        uint8_t c[4];
        size_t n = key_char(p, &i, end, c);
        if (n == 0 || n > klen - k || memcmp(key + k, c, n) != 0)
            return false;
        k += n;
    }
    return k == klen;
}

/* p[i] starts a value: the index after it. */
static size_t skip_value(const uint8_t *p, size_t i, size_t n)
{
    if (p[i] == '"')
        return skip_string(p, i, n);
    if (p[i] == '{' || p[i] == '[') {
        unsigned depth = 0;
        while (i < n) {
            if (p[i] == '"') {
                i = skip_string(p, i, n);
                continue;
            }
            if (p[i] == '{' || p[i] == '[')
                depth++;
            else if ((p[i] == '}' || p[i] == ']') && --depth == 0)
                return i + 1;
            i++;
        }
        return n;
    }
    while (i < n && p[i] != ',' && p[i] != '}' && p[i] != ']' && !jsonrpc_is_space(p[i]))
        i++; /* a number, true, false, null */
    return i;
}

bool jsonrpc_member_text(const uint8_t *obj, size_t len, const char *key, size_t *at, size_t *value_len)
{
    size_t klen = strlen(key), i = skip_space(obj, 0, len);
    if (i >= len || obj[i] != '{')
        return false;
    i = skip_space(obj, i + 1, len);
    while (i < len && obj[i] == '"') {
        size_t key_end = skip_string(obj, i, len); /* after its closing quote */
        bool match = key_end - i >= 2 && key_is(obj, i + 1, key_end - 1, key, klen);
        i = skip_space(obj, key_end, len);
        if (i >= len || obj[i] != ':')
            return false;
        i = skip_space(obj, i + 1, len);
        if (i >= len)
            return false;
        size_t end = skip_value(obj, i, len);
        if (match) {
            *at = i;
            *value_len = end - i;
            return true;
        }
        i = skip_space(obj, end, len);
        if (i >= len || obj[i] != ',')
            return false;
        i = skip_space(obj, i + 1, len);
    }
    return false;
}
