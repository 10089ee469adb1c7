/*
 * The text of one member's value in a JSON object (core/jsonrpc_member.h). The object is
 * valid JSON already, so the walk only needs where strings, brackets and scalars end.
 */
#include "core/jsonrpc_member.h"

#include <string.h>

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
        bool match = key_end - i - 2 == klen && memcmp(obj + i + 1, key, klen) == 0;
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
