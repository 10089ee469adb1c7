/*
 * arpc-call's failure line (tools/call_fail.h).
 */
#include "call_fail.h"

#include <stdio.h>

#include "arpc/error.h"
#include "exit_codes.h"

#define MSG_SHOWN_MAX 512 /* longest server message shown, in bytes before escaping */

int call_fail(const char *what, int code, const void *msg, size_t msg_len)
{
    fprintf(stderr, "arpc-call: %s: %s: ", what, arpc_errname(code));
    if (msg == NULL || msg_len == 0) {
        fputs(arpc_strerror(code), stderr);
    } else {
        const unsigned char *m = msg;
        size_t n = msg_len < MSG_SHOWN_MAX ? msg_len : MSG_SHOWN_MAX;
        for (size_t i = 0; i < n; i++) {
            if (m[i] >= 0x20 && m[i] < 0x7f && m[i] != '\\')
                fputc(m[i], stderr);
            else
                fprintf(stderr, "\\x%02x", m[i]);
        }
        if (n < msg_len)
            fputs("...", stderr);
    }
    fputc('\n', stderr);
    return ARPC_CALL_EXIT_BASE + code;
}
