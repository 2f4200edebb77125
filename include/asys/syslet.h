/* asys syslets — Ingo Molnar's syslet API (docs/design.md), in user space.
 *
 * A syslet is a chain of atoms. Each atom names one system call; its
 * arguments are read through arg_ptr[] at the moment it runs, so an earlier
 * atom's result (written through its ret_ptr) can feed a later atom. Atoms
 * run on the caller's thread while they would not block; the first atom that
 * would block (and everything after it) continues on an asys worker, and the
 * caller gets control back at once. See docs/syslets.md.
 *
 * The original names operate on a process-wide default context; the asys_*
 * variants take an explicit context. Compiles as C99 and as C++.
 */
#ifndef ASYS_SYSLET_H
#define ASYS_SYSLET_H

#include <errno.h>

#include "asys/asys.h"

#ifdef __cplusplus
extern "C" {
#endif

struct syslet_uatom {
    unsigned long flags;             /* SYSLET_*                                      */
    unsigned long nr;                /* system call number, or __NR_umem_add          */
    long *ret_ptr;                   /* the result is written here (may be NULL)      */
    struct syslet_uatom *next;       /* next atom (may point backwards: loops)        */
    unsigned long *arg_ptr[6];       /* argument i is *arg_ptr[i], read when the atom
                                        runs; a NULL pointer passes 0                 */
#ifdef __cplusplus
    void *private_;                  /* `private` in C (a C++ keyword); same slot     */
#else
    void *private;                   /* the caller's; never touched                   */
#endif
};

/* Stop conditions, tested on the atom's result. */
#define SYSLET_STOP_ON_NONZERO      0x00000001UL
#define SYSLET_STOP_ON_ZERO         0x00000002UL
#define SYSLET_STOP_ON_NEGATIVE     0x00000004UL
#define SYSLET_STOP_ON_NON_POSITIVE 0x00000008UL
/* On stop, continue at the atom placed right after this one in memory
 * (this + 1) instead of ending the chain. */
#define SYSLET_SKIP_TO_NEXT_ON_STOP 0x00000010UL
/* Run this atom (and the rest) asynchronously, without an inline attempt. */
#define SYSLET_ASYNC                0x00000020UL
/* Run this atom on the current thread even if it blocks (wins over ASYNC). */
#define SYSLET_SYNC                 0x00000040UL
#define SYSLET__ALL                 0x0000007fUL

/* Pseudo system call usable as an atom's nr: umem_add(ptr, inc). */
#define __NR_umem_add 1025

/* The library exports asys_* symbols only: the original names (umem_add,
 * async_exec, async_register, async_wait) are static inline functions of
 * this header over these. The asys_async_* calls take an explicit context;
 * chains of one context share its ring. */
ASYS_API unsigned long asys_umem_add(unsigned long *ptr, unsigned long inc);
ASYS_API long asys_async_exec(asys_ctx *ctx, struct syslet_uatom *atom);
ASYS_API long asys_async_register(asys_ctx *ctx, struct syslet_uatom **ring, unsigned int nr_entries);
ASYS_API long asys_async_wait(asys_ctx *ctx, unsigned long min_events);

/* The process-wide context used by async_exec/async_register/async_wait
 * (created on first use; NULL if it cannot be created: then they return
 * -ENOMEM). */
ASYS_API asys_ctx *asys_syslet_default_ctx(void);

/* *ptr += inc; returns the new value. */
static inline unsigned long umem_add(unsigned long *ptr, unsigned long inc)
{ return asys_umem_add(ptr, inc); }

/* Runs a chain. Returns:
 *   the address of the last atom that ran (the one that ended the chain):
 *     the whole chain completed synchronously; every ret_ptr is written.
 *   0: the chain continues asynchronously; when it ends, the address of its
 *     last atom is placed in the registered completion ring.
 *   -EINVAL: atom is NULL, or an atom has unknown flags (nothing ran, or the
 *     chain stopped there with -EINVAL in that atom's ret_ptr).
 *   -ENXIO: the chain would have to go asynchronous but no completion ring
 *     is registered (the atoms before it ran; their results are written; the
 *     blocking atom did not run). Register a ring, or use SYSLET_SYNC.
 * An atom naming a denied system call (see asys_syscall_allowed), or one
 * that acts on or reads the calling thread (gettid, setpriority of thread
 * 0, ...: docs/api.md), stops the chain with -EPERM in its ret_ptr; an
 * unknown number with -ENOSYS. */
static inline long async_exec(struct syslet_uatom *atom)
{
    asys_ctx *asys_dflt = asys_syslet_default_ctx();
    return asys_dflt ? asys_async_exec(asys_dflt, atom) : -ENOMEM;
}

/* Registers the completion ring: an array of nr_entries atom pointers. A
 * non-NULL entry is never overwritten; the consumer resets it to NULL. The
 * library fills entries in order, cyclically. Returns 0 or -errno (-EINVAL
 * for a NULL ring or 0 entries, -EBUSY while chains are in flight). */
static inline long async_register(struct syslet_uatom **ring, unsigned int nr_entries)
{
    asys_ctx *asys_dflt = asys_syslet_default_ctx();
    return asys_dflt ? asys_async_register(asys_dflt, ring, nr_entries) : -ENOMEM;
}

/* Waits until at least min_events entries of the ring are non-NULL.
 * Returns how many are non-NULL, or -errno (-EINVAL: more than the ring
 * holds; -ENXIO: no ring). */
static inline long async_wait(unsigned long min_events)
{
    asys_ctx *asys_dflt = asys_syslet_default_ctx();
    return asys_dflt ? asys_async_wait(asys_dflt, min_events) : -ENOMEM;
}

/* Cancels the asynchronous chain(s) started by async_exec(head). A queued
 * chain ends at once: its next atom gets -ECANCELED (not run) and is posted
 * as the chain's last atom. A running chain stops at its next atom boundary,
 * and an atom whose blocking call the cancel interrupts gets -ECANCELED (a
 * call that finishes without blocking keeps its real result).
 * Returns 0 (was queued), -EALREADY (was running: interrupted), -ENOENT (no
 * such chain in flight), -EINVAL (head is NULL). */
ASYS_API long asys_async_cancel(asys_ctx *ctx, struct syslet_uatom *head);

/* Optional step limit per chain (0: none, the default). A chain that would
 * run more atoms than this ends before the next atom, whose ret_ptr receives
 * -ELOOP (that atom is the chain's last atom). */
ASYS_API int asys_syslet_step_limit(asys_ctx *ctx, unsigned long max_steps);

#ifdef __cplusplus
}
#endif
#endif /* ASYS_SYSLET_H */
