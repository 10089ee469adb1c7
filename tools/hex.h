/*
 * tools/hex.h: bytes as hex text and back, for arpc-call --hex.
 */
#ifndef ARPC_TOOLS_HEX_H
#define ARPC_TOOLS_HEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decodes hex text (upper or lower case; spaces, tabs and line feeds between bytes are
 * skipped) into out, which has room for len / 2 bytes. False for an odd digit count or a
 * character that is not a hex digit. */
bool hex_decode(const char *text, size_t len, uint8_t *out, size_t *out_len);

/* Writes 2 * len lower-case hex digits to out (no NUL). */
void hex_encode(const uint8_t *data, size_t len, char *out);

#endif
