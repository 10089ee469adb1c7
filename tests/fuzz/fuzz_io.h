/*
 * What the stream fuzz targets share: an arpc loop driven on the fuzzer's own thread, the
 * input cut into chunks, bytes fed to a peer until it has read them, and a check that what
 * arpc writes back is a well-formed frame stream.
 *
 * Why the loop is driven here rather than on a thread of its own: every turn is a
 * non-blocking libev iteration on the fuzzer's thread, so an input replays the same way
 * each time (no scheduling decides where a read splits) and no iteration ever sleeps.
 *
 * Input format (every stream target): a sequence of chunks, each one length byte n then n
 * bytes; n = 0 means "turn the loop once without writing". A short last chunk is cut to
 * what is left. tests/fuzz/make_corpus.c writes seeds in this format.
 */
#ifndef ARPC_FUZZ_IO_H
#define ARPC_FUZZ_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "arpc/arpc.h"
#include "core/frame.h"

/* Aborts (libFuzzer reports it as a crash, with the input) when cond is false. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fuzz_fail(__FILE__, __LINE__, #cond);                                                  \
    } while (0)
_Noreturn void fuzz_fail(const char *file, int line, const char *what);

/* ---- the loop, turned on this thread ---- */

/* Creates the loop (never started: fuzz_turn drives it) and a future that never completes
 * (what arpc_loop_run_until waits on for one non-blocking iteration). Aborts on failure. */
arpc_loop *fuzz_loop(void);
/* The loop fuzz_loop() made. */
arpc_loop *fuzz_loop_get(void);
/* One non-blocking iteration of the loop: ready sockets are read, queued frames flushed. */
void fuzz_turn(void);

/* Installs a logger that aborts on any byte outside printable ASCII in a line: peer bytes
 * must be escaped before they reach a log (docs/SECURITY.md). Lines are dropped. */
void fuzz_log_checked(void);

/* ---- chunks ---- */

struct fuzz_chunks {
    const uint8_t *fc_p;
    size_t fc_left;
};
/* The next chunk of the input; false at the end. */
bool fuzz_next_chunk(struct fuzz_chunks *c, const uint8_t **chunk, size_t *len);

/* ---- what the peer under test writes back ---- */

/* Accumulates the bytes arpc wrote and decodes them as they come: a malformed frame, a kind
 * that side never sends, or more than FUZZ_OUT_MAX bytes not yet decoded aborts. */
#define FUZZ_OUT_MAX (1u << 20)
struct fuzz_out {
    uint8_t fo_buf[FUZZ_OUT_MAX];
    size_t fo_len;
    uint32_t fo_kinds;   /* bit k set: the peer may send frame kind k */
    uint32_t fo_seen;    /* bit k set: a frame of kind k came */
    uint64_t fo_frames;  /* frames decoded */
    bool fo_eof;         /* the peer closed */
    bool fo_json;        /* the server answers in JSON-RPC (the stream began like JSON): one
                          * object per line instead of frames */
    /* Called for every frame decoded (may be NULL). */
    void (*fo_on_frame)(struct fuzz_out *o, const struct arpc_frame *f);
};
void fuzz_out_reset(struct fuzz_out *o, uint32_t kinds);
/* Reads what fd has waiting (non-blocking) into o. */
void fuzz_out_read(struct fuzz_out *o, int fd);

/* Writes len bytes to fd (non-blocking), turning the loop and reading o between writes, then
 * turns the loop until the peer has read every byte, has closed, or has read nothing for a
 * number of turns (it holds its input, e.g. after a bad frame). False once the peer closed. */
bool fuzz_feed(int fd, const void *buf, size_t len, struct fuzz_out *o);
/* Turns the loop (reading o from fd, unless fd < 0) until cond(arg), for at most turns turns;
 * true if it held. cond NULL: until the peer closed. */
bool fuzz_turn_until(int fd, struct fuzz_out *o, bool (*cond)(void *arg), void *arg, unsigned turns);

#endif
