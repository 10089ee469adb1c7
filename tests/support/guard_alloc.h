/*
 * An allocator for tests of use after free: every block sits on pages of its own, and freeing
 * it makes them unreadable (PROT_NONE) for good, never to be reused, so a later touch faults
 * in any build, not only under ASan. One mapping per block and none ever given back: for tests
 * that allocate a few hundred blocks, not for load.
 */
#ifndef ARPC_TEST_GUARD_ALLOC_H
#define ARPC_TEST_GUARD_ALLOC_H

/* Installs the allocator (arpc_set_allocator). on_free (may be NULL) is called on the freeing
 * thread with each block's address once the block is unreadable. */
void guard_alloc_install(void (*on_free)(void *block));

#endif
