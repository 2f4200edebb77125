// asys::chain: a C++ builder for syslet chains (see <asys/syslet.h> and
// docs/syslets.md), run by the same interpreter as ASYS_OP_CHAIN.
//
//     asys::chain c;
//     auto fd = c.open(path, O_RDONLY);           // chain_step<int>
//     auto n  = c.read(fd, buf, sizeof buf);      // reads the fd just opened
//     c.close(fd);
//     asys::result<long> r = c.run(ctx);          // close's result
//     ssize_t got = n.get().value();              // throws on error
//
// Each step is one atom. An argument is a literal (integer or pointer), an
// earlier step's result (read when the step runs: data flow), or a
// chain_var, a cell of the chain that umem_add() can advance (loops). By
// default every step stops the chain on a negative result; pass SYSLET_*
// flags to choose otherwise. Steps run in order; jump() points a step's
// successor anywhere (backwards: a loop), end_after() ends the chain there.
//
// Running: run() submits the chain as one ASYS_OP_CHAIN op and waits for it
// (atoms run on the caller until one would block; the rest on the pool).
// submit() starts it and returns at once, like asys_submit(); its completion
// arrives through the context's usual channels (cqe or callback).
//
// Lifetime and threads: a chain, its buffers and every pointer it was given
// must outlive its execution. A chain runs at most once at a time; do not
// add steps, run or destroy it while it is in flight. Step and var handles
// are valid as long as their chain exists (moving the chain keeps them
// valid). Different chains may run concurrently on one context.
#pragma once
#include <fcntl.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <type_traits>
#include <vector>

#include "asys/asys.h"
#include "asys/result.hpp"
#include "asys/syslet.h"

namespace asys {

/// The result of one step of a chain, typed as the call's return type.
template <class T>
class chain_step {
public:
    /// True once the step ran in the latest execution of its chain.
    bool ran() const noexcept { return *ret_ != kNotRun; }
    /// Its result; a step that did not run (the chain stopped earlier)
    /// reports ECANCELED.
    result<T> get() const noexcept {
        return ran() ? result<T>::from_syscall(*ret_) : result<T>::from_errno(ECANCELED);
    }
    /// The raw result (-errno on error); LONG_MIN if it did not run.
    long raw() const noexcept { return *ret_; }
    /// Its position in the chain (0-based).
    std::size_t index() const noexcept { return index_; }

    static constexpr long kNotRun = LONG_MIN;

private:
    friend class chain;
    friend class chain_arg;
    chain_step(long *ret, std::size_t index) noexcept : ret_(ret), index_(index) {}
    long *ret_;
    std::size_t index_;
};

/// A cell of a chain: an argument whose current value is read when a step
/// runs, and which umem_add() steps advance (offsets, buffer pointers).
template <class T>
class chain_var {
    static_assert((std::is_integral_v<T> || std::is_pointer_v<T>) && sizeof(T) <= sizeof(unsigned long),
                  "a chain_var holds an integer or a pointer");

public:
    T get() const noexcept {
        if constexpr (std::is_pointer_v<T>) return reinterpret_cast<T>(*cell_);
        else return static_cast<T>(*cell_);
    }
    void set(T v) noexcept {
        if constexpr (std::is_pointer_v<T>) *cell_ = reinterpret_cast<unsigned long>(v);
        else *cell_ = static_cast<unsigned long>(v);
    }

private:
    friend class chain;
    friend class chain_arg;
    explicit chain_var(unsigned long *cell) noexcept : cell_(cell) {}
    unsigned long *cell_;
};

/// One argument of a step: a literal, a step's result, or a var.
class chain_arg {
public:
    template <class I, std::enable_if_t<std::is_integral_v<I> || std::is_enum_v<I>, int> = 0>
    chain_arg(I v) noexcept : literal_(static_cast<unsigned long>(static_cast<long>(v))) {}  // NOLINT
    chain_arg(const void *p) noexcept : literal_(reinterpret_cast<unsigned long>(p)) {}     // NOLINT
    chain_arg(std::nullptr_t) noexcept {}                                                   // NOLINT
    template <class T>
    chain_arg(chain_step<T> s) noexcept  // NOLINT
        // long and unsigned long may alias each other: the interpreter reads
        // the step's result through this pointer.
        : ptr_(reinterpret_cast<unsigned long *>(s.ret_)) {}
    template <class T>
    chain_arg(chain_var<T> v) noexcept : ptr_(v.cell_) {}  // NOLINT

private:
    friend class chain;
    unsigned long literal_ = 0;
    unsigned long *ptr_ = nullptr;  ///< non-null: read through it
};

class chain {
public:
    /// Default stop policy of a step: end the chain on a negative result.
    static constexpr unsigned long kStopOnError = SYSLET_STOP_ON_NEGATIVE;

    chain() = default;
    chain(const chain &) = delete;
    chain &operator=(const chain &) = delete;
    chain(chain &&) noexcept = default;
    chain &operator=(chain &&) noexcept = default;

    // ----------------------------------------------------------- steps
    /// Any system call (the deny list applies when it runs), or __NR_umem_add.
    template <class T = long>
    chain_step<T> call(long nr, std::initializer_list<chain_arg> args, unsigned long flags = kStopOnError) {
        const std::size_t i = atoms_.size();
        syslet_uatom a{};
        a.flags = flags;
        a.nr = static_cast<unsigned long>(nr);
        rets_.push_back(chain_step<T>::kNotRun);
        a.ret_ptr = &rets_.back();
        unsigned k = 0;
        for (const chain_arg &x : args) {
            if (k == 6) break;
            if (x.ptr_) {
                a.arg_ptr[k] = x.ptr_;
            } else {
                literals_.push_back(x.literal_);
                a.arg_ptr[k] = &literals_.back();
            }
            ++k;
        }
        atoms_.push_back(a);
        next_.push_back(kFallThrough);
        linked_ = false;
        return chain_step<T>(&rets_.back(), i);
    }

    chain_step<int> openat(chain_arg dfd, const char *path, int flags, mode_t mode = 0,
                           unsigned long stop = kStopOnError) {
        return call<int>(SYS_openat, {dfd, path, flags, mode}, stop);
    }
    chain_step<int> open(const char *path, int flags, mode_t mode = 0, unsigned long stop = kStopOnError) {
        return openat(AT_FDCWD, path, flags, mode, stop);
    }
    chain_step<ssize_t> read(chain_arg fd, chain_arg buf, chain_arg len, unsigned long stop = kStopOnError) {
        return call<ssize_t>(SYS_read, {fd, buf, len}, stop);
    }
    chain_step<ssize_t> pread(chain_arg fd, chain_arg buf, chain_arg len, chain_arg off,
                              unsigned long stop = kStopOnError) {
        return call<ssize_t>(SYS_pread64, {fd, buf, len, off}, stop);
    }
    chain_step<ssize_t> write(chain_arg fd, chain_arg buf, chain_arg len, unsigned long stop = kStopOnError) {
        return call<ssize_t>(SYS_write, {fd, buf, len}, stop);
    }
    chain_step<ssize_t> pwrite(chain_arg fd, chain_arg buf, chain_arg len, chain_arg off,
                               unsigned long stop = kStopOnError) {
        return call<ssize_t>(SYS_pwrite64, {fd, buf, len, off}, stop);
    }
    chain_step<int> fsync(chain_arg fd, unsigned long stop = kStopOnError) {
        return call<int>(SYS_fsync, {fd}, stop);
    }
    chain_step<int> fdatasync(chain_arg fd, unsigned long stop = kStopOnError) {
        return call<int>(SYS_fdatasync, {fd}, stop);
    }
    chain_step<int> close(chain_arg fd, unsigned long stop = kStopOnError) {
        return call<int>(SYS_close, {fd}, stop);
    }
    /// var += inc when the step runs; its result is the new value.
    template <class T>
    chain_step<long> umem_add(chain_var<T> v, chain_arg inc, unsigned long stop = 0) {
        literals_.push_back(reinterpret_cast<unsigned long>(v.cell_));
        return add_umem(&literals_.back(), inc, stop);
    }

    /// A new cell with an initial value.
    template <class T>
    chain_var<T> var(T initial) {
        literals_.push_back(0);
        chain_var<T> v(&literals_.back());
        v.set(initial);
        return v;
    }

    // ---------------------------------------------------- control flow
    /// After `from` (when it does not stop the chain), run `to` next.
    template <class A, class B>
    void jump(chain_step<A> from, chain_step<B> to) {
        next_.at(from.index_) = static_cast<long>(to.index_);
        linked_ = false;
    }
    /// The chain ends after `s` (whatever follows it in order).
    template <class A>
    void end_after(chain_step<A> s) {
        next_.at(s.index_) = kEnd;
        linked_ = false;
    }
    /// Replaces a step's SYSLET_* flags.
    template <class A>
    void set_flags(chain_step<A> s, unsigned long flags) {
        atoms_.at(s.index_).flags = flags;
    }

    // ----------------------------------------------------------- running
    /// Runs the chain as one op and waits for it. Returns the result of the
    /// step that ended the chain (last()), or the error that kept the op
    /// from running (EAGAIN with ASYS_F_NOWAIT when a step would block:
    /// last() is then the first step that did not run). An empty chain is
    /// EINVAL.
    result<long> run(asys_ctx *ctx, uint32_t op_flags = 0) {
        waiter w;
        asys_op op;
        if (int rc = prepare(op, op_flags)) return result<long>::from_errno(-rc);
        op.ret_ptr = &w.res;
        op.callback = &waiter::done;
        op.cb_arg = &w;
        const int rc = asys_submit(ctx, &op);
        if (rc < 0) return result<long>::from_errno(-rc);
        if (rc == 0) w.wait();
        return result<long>::from_syscall(w.res);
    }

    /// Starts the chain as one op, like asys_submit(): ASYS_DONE (finished
    /// inline; *ret_ptr is set), 0 (in flight: one cqe or callback with
    /// opcode ASYS_OP_CHAIN will follow), or -errno. `tmpl` supplies flags,
    /// ret_ptr, user_data and callback; its opcode and args are ignored.
    int submit(asys_ctx *ctx, const asys_op &tmpl) {
        asys_op op = tmpl;
        if (int rc = prepare(op, tmpl.flags)) return rc;
        op.ret_ptr = tmpl.ret_ptr;
        op.user_data = tmpl.user_data;
        op.callback = tmpl.callback;
        op.cb_arg = tmpl.cb_arg;
        return asys_submit(ctx, &op);
    }

    /// The index of the step that ended the latest execution (or, after
    /// EAGAIN, the first step that did not run); -1 before any.
    long last() const noexcept {
        return last_ ? static_cast<long>(last_ - atoms_.data()) : -1;
    }
    std::size_t size() const noexcept { return atoms_.size(); }
    /// The linked atoms, for asys_async_exec() or asys_prep_chain(). Marks
    /// every step "not run".
    syslet_uatom *head() {
        link();
        reset();
        return atoms_.empty() ? nullptr : atoms_.data();
    }

private:
    static constexpr long kFallThrough = -1, kEnd = -2;

    struct waiter {
        long res = 0;
        int done_flag = 0;
        static void done(const asys_cqe *, void *arg) noexcept {
            auto *w = static_cast<waiter *>(arg);
            // release: ret_ptr (w->res) was written before the callback. The
            // wake may reach an address whose waiter already returned: a
            // futex wake does not touch the memory, so that is harmless.
            __atomic_store_n(&w->done_flag, 1, __ATOMIC_RELEASE);
            ::syscall(SYS_futex, &w->done_flag, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
        }
        void wait() noexcept {
            while (!__atomic_load_n(&done_flag, __ATOMIC_ACQUIRE))
                ::syscall(SYS_futex, &done_flag, FUTEX_WAIT_PRIVATE, 0, nullptr, nullptr, 0);
        }
    };

    chain_step<long> add_umem(unsigned long *cellp, chain_arg inc, unsigned long stop) {
        chain_arg p(nullptr);
        p.ptr_ = cellp;  // the cell's address, read as argument 0
        return call<long>(__NR_umem_add, {p, inc}, stop);
    }

    void link() noexcept {
        if (linked_) return;
        const std::size_t n = atoms_.size();
        for (std::size_t i = 0; i < n; ++i) {
            const long nx = next_[i];
            atoms_[i].next = nx == kEnd                          ? nullptr
                             : nx >= 0                           ? &atoms_[static_cast<std::size_t>(nx)]
                             : i + 1 < n                         ? &atoms_[i + 1]
                                                                 : nullptr;
        }
        linked_ = true;
    }
    void reset() noexcept {
        for (long &r : rets_) r = chain_step<long>::kNotRun;
        last_ = nullptr;
    }
    int prepare(asys_op &op, uint32_t op_flags) {
        if (atoms_.empty()) return -EINVAL;
        link();
        reset();
        asys_prep_chain(&op, atoms_.data(), &last_);
        op.flags = op_flags;
        return 0;
    }

    std::vector<syslet_uatom> atoms_;  ///< contiguous: SKIP_TO_NEXT_ON_STOP is atom + 1
    std::vector<long> next_;           ///< per step: kFallThrough, kEnd or an index
    std::deque<long> rets_;            ///< results (stable addresses)
    std::deque<unsigned long> literals_;  ///< literal arguments and vars (stable)
    syslet_uatom *last_ = nullptr;
    bool linked_ = false;
};

}  // namespace asys
