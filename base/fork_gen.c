/* The process generation objects are made in (base/fork_gen.h). */
#include "base/fork_gen.h"

#include <pthread.h>

#include "base/log.h"

atomic_uint arpc_fork_generation = 0;
static pthread_once_t fork_gen_once = PTHREAD_ONCE_INIT;

static void fork_gen_child(void) { atomic_fetch_add_explicit(&arpc_fork_generation, 1, memory_order_relaxed); }

static void fork_gen_install(void) { (void)pthread_atfork(NULL, NULL, fork_gen_child); }

bool arpc_fork_gen_misuse(const void *h, const char *kind, const char *fn)
{
    arpc_log(ARPC_LOG_ERROR, "%s on %p: refused: the %s was made in the parent of this child of a fork; its "
             "threads are not here, and its sockets and eventfds are the parent's (used here, they would take "
             "or spoil the parent's calls): make a new one in the child", fn, h, kind);
    return false;
}

unsigned arpc_fork_gen_start(void)
{
    pthread_once(&fork_gen_once, fork_gen_install);
    return arpc_fork_gen();
}
