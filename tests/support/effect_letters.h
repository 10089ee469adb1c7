/*
 * The effects a restarted server's reply log hands back, for tests whose effects are one
 * letter each: a recover callback (arpc_server_options.recover, with the struct as
 * recover_ctx) that keeps them in log order.
 */
#ifndef ARPC_TEST_EFFECT_LETTERS_H
#define ARPC_TEST_EFFECT_LETTERS_H

#include <stddef.h>

#include "arpc/server.h"

struct effect_letters {
    char el_letters[64]; /* the one-byte effects recovered, in order (not NUL-terminated) */
    size_t el_count;
};

/* Appends each one-byte effect to ctx (a struct effect_letters); ignores the rest. */
void effect_letters_recover(void *ctx, enum arpc_recover_kind kind, const void *data, size_t len);

#endif
