/*
 * arpc-call's failure line (tools/call_fail.h). It is built whole and written with one call,
 * the library's log lines folded in (tools/call_log.h), so it stays one line.
 */
#include "call_fail.h"

#include <stdio.h>
#include <string.h>

#include "arpc/error.h"
#include "call_log.h"
#include "exit_codes.h"

#define MSG_SHOWN_MAX 512 /* longest server message shown, in bytes before escaping */
#define LINE_MAX_BYTES 8192 /* the message escaped (4 x MSG_SHOWN_MAX) and room for log lines */

/* m[0..len) as printable ASCII, at most MSG_SHOWN_MAX of its bytes ("..." if cut), into text
 * (4 * MSG_SHOWN_MAX + 4 bytes). A backslash stays one: an arpc server's message has its
 * peer's bytes escaped already ("\x0a"), and escaping that again made "\x5cx0a", the name in
 * two spellings on one line. */
static void escape(char *text, size_t size, const unsigned char *m, size_t len)
{
    size_t n = len < MSG_SHOWN_MAX ? len : MSG_SHOWN_MAX, t = 0;
    for (size_t i = 0; i < n; i++) {
        if (m[i] >= 0x20 && m[i] < 0x7f)
            text[t++] = (char)m[i];
        else
            t += (size_t)snprintf(text + t, size - t, "\\x%02x", m[i]);
    }
    snprintf(text + t, size - t, "%s", n < len ? "..." : "");
}

int call_fail(const char *what, int code, const void *msg, size_t msg_len)
{
    char text[4 * MSG_SHOWN_MAX + 4], what_text[4 * MSG_SHOWN_MAX + 4];
    if (msg == NULL || msg_len == 0)
        snprintf(text, sizeof(text), "%s", arpc_strerror(code));
    else
        escape(text, sizeof(text), msg, msg_len);
    /* WHAT is ours (ADDR or METHOD from the command line) but may hold any byte, a line feed
     * or a terminal's escape: escaped too, so the line stays one line. */
    escape(what_text, sizeof(what_text), (const unsigned char *)what, strlen(what));
    char line[LINE_MAX_BYTES];
    size_t room = sizeof(line) - 1; /* the "\n" always fits */
    snprintf(line, room, "arpc-call: %s: %s: %s", what_text, arpc_errname(code), text);
    call_log_fold(line, room, text);
    strcat(line, "\n");
    fputs(line, stderr);
    return ARPC_CALL_EXIT_BASE + code;
}

int call_fail_connect(const char *addr, int code, const char *why)
{
    return call_fail(addr, code == ARPC_ETIMEDOUT ? ARPC_EUNREACHABLE : code, why[0] ? why : NULL, strlen(why));
}
