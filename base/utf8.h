/*
 * UTF-8 as RFC 3629 defines it: what a JSON writer may pass through as it is, and a code point
 * written out (a JSON reader's \uXXXX escapes).
 */
#ifndef ARPC_BASE_UTF8_H
#define ARPC_BASE_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* The length (2 to 4) of the well-formed multi-byte character that begins at p, or 0 when the
 * bytes there are not one (ASCII included, a stray continuation byte, an overlong form, a
 * surrogate, beyond U+10FFFF, cut short by a NUL). p is NUL-terminated. */
size_t arpc_utf8_multibyte_len(const unsigned char *p);

/* Code point cp (at most U+10FFFF, not a surrogate: the caller's to check) as UTF-8 in out:
 * its length, 1 to 4. */
size_t arpc_utf8_put(uint32_t cp, uint8_t out[4]);

#endif
