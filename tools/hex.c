#include "hex.h"

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool hex_decode(const char *text, size_t len, uint8_t *out, size_t *out_len)
{
    size_t n = 0;
    int high = -1; /* the first digit of a byte, while its second is awaited */
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            if (high >= 0)
                return false; /* a byte's two digits belong together */
            continue;
        }
        int d = hex_digit(c);
        if (d < 0)
            return false;
        if (high < 0) {
            high = d;
        } else {
            out[n++] = (uint8_t)(high << 4 | d);
            high = -1;
        }
    }
    if (high >= 0)
        return false;
    *out_len = n;
    return true;
}

void hex_encode(const uint8_t *data, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 15];
    }
}
