/*
 * How many of arpc's threads are running rather than asleep, so that a thread about to sleep
 * can tell whether spinning a little first would take a CPU from another of ours.
 *
 * A loop thread counts from the end of its poll to the start of the next (its check and
 * prepare watchers), and not once a run of ev returns to whoever drove it (arpc_loop_run_until,
 * arpc_loop_run_nowait, a loop's last run: loop_awake_leave), as its thread may sleep anywhere
 * then; an actor from the end of its wait to the start of the next. An application stepping a
 * wrapped loop with its own ev_run (EVRUN_ONCE, EVRUN_NOWAIT) leaves it counted between its
 * steps, which errs towards no CPU spare. Threads of
 * the application are not counted, so the count errs towards CPUs looking free; the
 * spinners using it spin briefly and yield (async/actor.c).
 *
 * Thread-safe; one atomic add per change, on a line of its own.
 */
#ifndef ARPC_ASYNC_AWAKE_H
#define ARPC_ASYNC_AWAKE_H

#include <stdbool.h>
#include <stdint.h>

/* Once per process, from the creation of an actor or a loop (any thread; later calls do
 * nothing): the CPU count, and /proc/loadavg opened. Until then no CPU is spare. */
void arpc_awake_init(void);

/* +1 when a thread of ours starts running, -1 when it goes to sleep; called by that thread
 * (after a fork the child's count is the forking thread's own: async/awake.c). */
void arpc_awake_add(int delta);

/* For a thread that is counted as running: whether arpc's running threads, this one
 * included, and the machine's runnable threads are no more than the CPUs the process may use,
 * and those are more than one. */
bool arpc_awake_cpu_spare(void);

/* Polls done(arg), yielding between polls, until it is true (returns true), budget_ns have
 * passed or no CPU is spare (arpc_awake_cpu_spare; returns false). For a thread about to
 * sleep until done: when it becomes true within the budget, the sleep, and its waker's wake-up
 * call, are saved. */
bool arpc_awake_poll(bool (*done)(const void *arg), const void *arg, uint64_t budget_ns);

/* The count itself (tests). */
int arpc_awake_running(void);

#endif
