/*
 * tools/call_fail.h: arpc-call's one failure line, shared by its arpc and JSON-RPC paths.
 */
#ifndef ARPC_TOOLS_CALL_FAIL_H
#define ARPC_TOOLS_CALL_FAIL_H

#include <stddef.h>

/* Writes "arpc-call: WHAT: ARPC_EXXX: text" on stderr, where text is msg (a peer's bytes, may
 * be NULL: arpc_strerror(code) then), escaped and cut to a readable length (WHAT too: a
 * command line's METHOD may hold a line feed), and the library's
 * log lines that add to it (tools/call_log.h). Returns the exit status for code
 * (tools/exit_codes.h). */
int call_fail(const char *what, int code, const void *msg, size_t msg_len);
/* call_fail for a connection that could not be made to addr (why: the library's errbuf, may
 * be empty): nothing was sent, so a connect that timed out is ARPC_EUNREACHABLE ("did not
 * run"), not ARPC_ETIMEDOUT ("may have run"), whose status a script would take for a call's. */
int call_fail_connect(const char *addr, int code, const char *why);

#endif
