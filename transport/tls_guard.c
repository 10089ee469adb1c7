/*
 * Reading a stranger's plaintext handshake headers (transport/tls_guard.h).
 */
#include "transport/tls_guard.h"

#define RECORD_HEAD 5
#define MESSAGE_HEAD 4
#define TYPE_CHANGE_CIPHER_SPEC 20
#define TYPE_HANDSHAKE 22

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

/* A handshake record's body bytes: message headers read, message bodies skipped. */
static bool guard_messages(struct tls_guard *g, const uint8_t *p, size_t n, uint32_t max)
{
    while (n > 0) {
        if (g->g_msg_left > 0) {
            size_t skip = min_size(n, g->g_msg_left);
            g->g_msg_left -= (uint32_t)skip;
            p += skip;
            n -= skip;
            continue;
        }
        g->g_msg_head[g->g_msg_got++] = *p++;
        n--;
        if (g->g_msg_got < MESSAGE_HEAD)
            continue;
        g->g_msg_got = 0;
        g->g_msg_left = (uint32_t)g->g_msg_head[1] << 16 | (uint32_t)g->g_msg_head[2] << 8 | g->g_msg_head[3];
        if (g->g_msg_left > max)
            return false;
    }
    return true;
}

bool tls_guard_feed(struct tls_guard *g, const uint8_t *p, size_t n, uint32_t max, bool tls12)
{
    while (n > 0 && !g->g_refused) {
        if (g->g_rec_left == 0) {
            g->g_rec_head[g->g_rec_got++] = *p++;
            n--;
            if (g->g_rec_got < RECORD_HEAD)
                continue;
            g->g_rec_got = 0;
            g->g_type = g->g_rec_head[0];
            g->g_rec_left = (uint32_t)g->g_rec_head[3] << 8 | g->g_rec_head[4];
            if (g->g_type == TYPE_CHANGE_CIPHER_SPEC && tls12)
                g->g_encrypted = true;
            continue;
        }
        size_t body = min_size(n, g->g_rec_left);
        if (g->g_type == TYPE_HANDSHAKE && !g->g_encrypted && !guard_messages(g, p, body, max))
            g->g_refused = true;
        g->g_rec_left -= (uint32_t)body;
        p += body;
        n -= body;
    }
    return !g->g_refused;
}
