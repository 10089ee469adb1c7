/*
 * tests/support/call_run.h: runs the arpc-call program (tools/), or another (bash for
 * deps_script_test), as a child process and keeps its exit status, standard output and
 * standard error, for the tests of the tool.
 */
#ifndef ARPC_TEST_CALL_RUN_H
#define ARPC_TEST_CALL_RUN_H

#include <stddef.h>

struct call_run {
    int status; /* exit status; -1 if it did not exit normally */
    char out[8192], err[8192];
    size_t out_len, err_len;
};

/* Runs the program at bin with args (NULL-terminated, at most 30), its stdin from
 * in[0..in_len) when in is not NULL (else empty), and waits for it to exit. The outputs are
 * NUL-terminated; a non-empty stderr is printed as a test message. */
void call_run(struct call_run *r, const char *bin, const void *in, size_t in_len, const char *const *args);

/* As call_run with no input, its standard output the file at out_path instead (e.g.
 * "/dev/full", where every write fails): r->out is then empty. */
void call_run_stdout(struct call_run *r, const char *bin, const char *out_path, const char *const *args);

/* The number of lines (line feeds) in text. */
size_t call_run_lines(const char *text);

#endif
