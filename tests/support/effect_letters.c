/* A recover callback for tests whose effects are letters (support/effect_letters.h). */
#include "support/effect_letters.h"

void effect_letters_recover(void *ctx, enum arpc_recover_kind kind, const void *data, size_t len)
{
    struct effect_letters *e = ctx;
    if (kind == ARPC_RECOVER_EFFECT && len == 1 && e->el_count < sizeof(e->el_letters))
        e->el_letters[e->el_count++] = *(const char *)data;
}
