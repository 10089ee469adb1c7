/* The process generation objects are made in (base/fork_gen.h). */
#include "base/fork_gen.h"

#include <pthread.h>

atomic_uint arpc_fork_generation;
static pthread_once_t fork_gen_once = PTHREAD_ONCE_INIT;

static void fork_gen_child(void) { atomic_fetch_add_explicit(&arpc_fork_generation, 1, memory_order_relaxed); }

static void fork_gen_install(void) { (void)pthread_atfork(NULL, NULL, fork_gen_child); }

unsigned arpc_fork_gen_start(void)
{
    pthread_once(&fork_gen_once, fork_gen_install);
    return arpc_fork_gen();
}
