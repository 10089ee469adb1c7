/*
 * Handle checks: a public handle used after its close/destroy/release, or a pointer that is
 * not that kind of handle, is caught on entry instead of corrupting memory.
 *
 * Each public object starts with a magic word: its kind's value while the user may use it,
 * ARPC_MAGIC_DEAD from the moment its close/destroy/last release began (an atomic exchange,
 * so two racing closes see each other). Entry points call arpc_handle_check first.
 *
 * What it catches, honestly: a closed or released handle whose memory is still arpc's (kept
 * alive by an internal reference) or freed and not yet reused; under ASan every freed handle
 * (asked of ASan, never read, while the block is in its quarantine). A block already reused
 * for another object of the same kind cannot be told apart: that stays undefined behaviour.
 */
#ifndef ARPC_BASE_HANDLE_H
#define ARPC_BASE_HANDLE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARPC_MAGIC_CLIENT 0x61436c74u /* "aClt" */
#define ARPC_MAGIC_FUTURE 0x61467574u /* "aFut" */
#define ARPC_MAGIC_CQ 0x6143715fu     /* "aCq_" */
#define ARPC_MAGIC_SERVER 0x61537672u /* "aSvr" */
#define ARPC_MAGIC_ACTOR 0x61416374u  /* "aAct" */
#define ARPC_MAGIC_JSONRPC 0x614a736eu /* "aJsn": arpc_jsonrpc_client */
#define ARPC_MAGIC_LOOP 0x614c6f70u    /* "aLop" */
#define ARPC_MAGIC_GROUP 0x61477270u   /* "aGrp": arpc_actor_group */
#define ARPC_MAGIC_REQUEST 0x61526571u /* "aReq": arpc_request */
#define ARPC_MAGIC_PBCALL 0x61506263u  /* "aPbc": a protobuf method's call record, its closure_data */
#define ARPC_MAGIC_DEAD 0xdeadc105u
/* A client whose close has begun and not returned: its memory is still the client's, and a
 * call started on it then (a then-callback that close's completions run, retrying) is refused
 * ARPC_ESHUTDOWN rather than taken for misuse (core/client_api.c: client_enter). Every other
 * entry point treats it as dead. */
#define ARPC_MAGIC_CLIENT_CLOSING 0x61436c73u /* "aCls" */
#define ARPC_MAGIC_JSONRPC_CLOSING 0x614a436cu /* "aJCl": arpc_jsonrpc_client, likewise */

typedef _Atomic uint32_t arpc_magic;

/* True when h is non-NULL and its magic (the object's first field) is want. NULL is false
 * without a word (the caller returns ARPC_EINVAL). Anything else is misuse: an ERROR line
 * "<fn> on <h>: not a live <kind> (already closed/released, or never one)", then abort() in
 * builds without NDEBUG; with NDEBUG, false (the caller returns ARPC_EINVAL or does nothing). */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define ARPC_HANDLE_FREED(h) (__asan_address_is_poisoned(h) != 0) /* never read a freed block */
#else
#define ARPC_HANDLE_FREED(h) false
#endif

/* Reports misuse of h (not NULL) and aborts, or, with NDEBUG, returns false. */
bool arpc_handle_misuse(const void *h, const char *kind, const char *fn);
/* A destroy of h while users (servers' methods routed to it) still count on it: false when
 * there are none; else reports the misuse (an ERROR line naming fn and route, the option that
 * named h) and aborts, or, with NDEBUG, returns true: the caller destroys nothing (a leak is
 * the lesser harm: the next request would be posted into freed memory). */
bool arpc_handle_in_use(const void *h, unsigned users, const char *route, const char *fn);

/* Inline: it runs on every entry point, several times per call (a load and a compare). */
static inline bool arpc_handle_check(const void *h, uint32_t want, const char *kind, const char *fn)
{
    if (h == NULL)
        return false;
    if (ARPC_HANDLE_FREED(h) || atomic_load_explicit((const arpc_magic *)h, memory_order_relaxed) != want)
        return arpc_handle_misuse(h, kind, fn);
    return true;
}

/* A caller's way into a handle whose close frees it while other callers may be on their way
 * in (the clients). The handle is checked first, so a call on one closed long ago (misuse,
 * reported) writes nothing; then the caller counts itself in *live and looks again. Close
 * kills the handle (seq_cst, arpc_handle_kill) before it waits for *live to reach 0, so
 * either the second look sees it dead (misuse, reported, the count given back) or close
 * waits for this caller: Dekker's pattern. True: in, counted; the caller gives the count back
 * (or hands it on) after its last touch of the object. h not NULL. */
static inline bool arpc_handle_enter(void *h, atomic_size_t *live, uint32_t want, const char *kind, const char *fn)
{
    if (!arpc_handle_check(h, want, kind, fn))
        return false;
    atomic_fetch_add(live, 1);
    if (atomic_load((arpc_magic *)h) == want)
        return true;
    (void)arpc_handle_check(h, want, kind, fn); /* reports the misuse, before the count that keeps h goes */
    atomic_fetch_sub(live, 1);
    return false;
}

/* True when h (not yet freed) is in state `closing` (arpc_handle_kill_to's): its close has
 * begun and not returned. seq_cst: arpc_handle_enter_unless's second look pairs with the
 * close's kill. */
static inline bool arpc_handle_in_state(const void *h, uint32_t closing)
{
    return h != NULL && !ARPC_HANDLE_FREED(h) && atomic_load((const arpc_magic *)h) == closing;
}

enum arpc_handle_entry {
    ARPC_HANDLE_REFUSED, /* NULL or not live: misuse, reported */
    ARPC_HANDLE_IN,      /* counted in *live, as arpc_handle_enter */
    ARPC_HANDLE_CLOSING, /* in state `closing`: not counted, and not misuse */
};

/* arpc_handle_enter for a kind whose close passes through a state of its own (`closing`)
 * in which callers are turned away without a misuse report (a client: a then-callback that
 * close's completions run may start a call). The state is read before the caller counts
 * itself (it then touches nothing more) or after (the close waits for it). */
static inline enum arpc_handle_entry arpc_handle_enter_unless(void *h, atomic_size_t *live, uint32_t want,
                                                               uint32_t closing, const char *kind, const char *fn)
{
    if (h == NULL)
        return ARPC_HANDLE_REFUSED;
    if (ARPC_HANDLE_FREED(h) || atomic_load((const arpc_magic *)h) != want) {
        /* Closing (its close may also have begun just now, as a then-callback on the loop
         * thread starts a call while another thread closes): turned away, not misuse. */
        if (arpc_handle_in_state(h, closing))
            return ARPC_HANDLE_CLOSING;
        (void)arpc_handle_misuse(h, kind, fn);
        return ARPC_HANDLE_REFUSED;
    }
    atomic_fetch_add(live, 1);
    if (atomic_load((arpc_magic *)h) == want)
        return ARPC_HANDLE_IN;
    enum arpc_handle_entry e = ARPC_HANDLE_CLOSING;
    if (!arpc_handle_in_state(h, closing)) {
        (void)arpc_handle_check(h, want, kind, fn); /* misuse, before the count that keeps h goes */
        e = ARPC_HANDLE_REFUSED;
    }
    atomic_fetch_sub(live, 1);
    return e;
}

/* Marks a live handle dead (its close/destroy/last release begins). False, after reporting
 * misuse as arpc_handle_check does, when it was not live: a second close. */
bool arpc_handle_kill(void *h, uint32_t want, const char *kind, const char *fn);
/* The same, marking it `to` (ARPC_MAGIC_DEAD, or a closing state its kind knows) instead. */
bool arpc_handle_kill_to(void *h, uint32_t want, uint32_t to, const char *kind, const char *fn);

/* Marks a handle dead that no other thread can reach any more (its last reference is going):
 * a plain store, the count already settled the race. */
static inline void arpc_handle_poison(void *h) { atomic_store_explicit((arpc_magic *)h, ARPC_MAGIC_DEAD, memory_order_relaxed); }

#endif
