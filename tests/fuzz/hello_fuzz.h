/*
 * What hello_fuzz.c and its seed generator (make_corpus.c) share: the one token the fuzzed
 * server lets in, so the seeds can carry it right, wrong, over the limit or not at all.
 */
#ifndef ARPC_HELLO_FUZZ_H
#define ARPC_HELLO_FUZZ_H

#define FUZZ_HELLO_TOKEN "fuzz-hello-token"

#endif
