/* maybe_fork() — fork only when the code would block (docs/threadlets.md).
 *
 * Exactly the interface of the proposal it comes from:
 *
 *     jmp_buf buffer;
 *     int childpid = maybe_fork(&buffer, FORK_ON_BLOCKING);
 *     if (!childpid) {
 *         read(...);                              // may fork here
 *         int our_new_pid = maybe_fork(0, MAYBE_FORK_END);
 *         bar();
 *         if (our_new_pid) exit(0);               // we are the child
 *     }
 *     foo();
 *     if (childpid) waitpid(childpid, &status, 0);
 *     qat();
 *
 * maybe_fork(&buf, FORK_ON_BLOCKING) saves the caller's state (like
 * setjmp) and returns 0; from then on, on this thread, the first system
 * call that would block forks the process: the parent resumes at that
 * maybe_fork() call, which returns the child's pid (the region ends for
 * it); the child completes the blocked call and goes on. In the child,
 * maybe_fork(0, MAYBE_FORK_END) returns its pid; with no fork it returns 0.
 * It returns twice, like setjmp: the function that called it must not have
 * returned when the fork happens.
 *
 * FORK_ON_SOMETHING is refused (-EINVAL). Errors are negative errno:
 * -EFAULT (no buffer), -EINVAL, -EBUSY (already in a region, or inside a
 * threadlet), -EOPNOTSUPP (the kernel has no syscall user dispatch).
 * The region catches system calls made outside the asys library's own code
 * (libc's read(), a third-party library), not calls made by code linked
 * into the same object as a static asys. */
#ifndef ASYS_MAYBE_FORK_H
#define ASYS_MAYBE_FORK_H

#include <setjmp.h>

#include "asys/asys.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MAYBE_FORK_END    0
#define FORK_ON_BLOCKING  1
#define FORK_ON_SOMETHING 2 /* Other ideas to reuse this? (refused: -EINVAL) */

#if defined(__GNUC__)
__attribute__((returns_twice))
#endif
ASYS_API int maybe_fork(jmp_buf *buf, int flags);

#ifdef __cplusplus
}
#endif
#endif /* ASYS_MAYBE_FORK_H */
