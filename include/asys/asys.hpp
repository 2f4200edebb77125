// <asys/asys.hpp>: C++20 coroutines over the C ABI (<asys/asys.h>).
//
//     asys::context ctx;                                   // owns an asys_ctx
//     asys::task<ssize_t> copy_head(asys::context &ctx, int in, int out) {
//         char buf[4096];
//         auto n = co_await ctx.pread(in, buf, sizeof buf, 0);  // result<ssize_t>
//         if (!n) co_return -n.error();
//         auto w = co_await ctx.write(out, buf, static_cast<size_t>(*n));
//         co_return w.value_or(-1);
//     }
//     ssize_t got = asys::sync_wait(ctx, copy_head(ctx, in, out));
//
// The fast path: an op's await_ready() IS asys_submit(), whose inline attempt
// runs the call on this thread when it would not block. A call that completes
// inline never suspends the coroutine and allocates nothing. A call that
// would block is punted (pool or io_uring) and the coroutine suspends; its
// completion entry (cqe) wakes it when the thread that drives the context
// reaps it in run(), run_one() or poll().
//
// Threads: a coroutine is resumed only by the thread that calls run(),
// run_one(), poll(), sync_wait() or the context's destructor — never by a pool
// worker or the io_uring reaper. One thread drives a context at a time, and
// coroutines that await its ops run on that thread. Ops never throw: errors
// are values (asys::result). Tasks propagate exceptions to their awaiter.
//
// Ownership: the context must outlive every op awaiting on it — or be
// destroyed while they are suspended, which completes each with -ECANCELED
// (or its real result, if it had already finished) and resumes it on the
// destroying thread; ops started after that complete at once with -ECANCELED.
// Buffers and paths given to an op must stay valid until the co_await
// returns. The context's completion entries belong to asys::context: ops
// submitted through native_handle() with the C ABI must use a callback (an
// entry the context cannot match is dropped and counted).
// See docs/cpp.md.
#pragma once
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cerrno>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "asys/asys.h"
#include "asys/chain.hpp"
#include "asys/result.hpp"

namespace asys {

class context;
template <class T = void>
class task;

namespace detail {

struct context_state;

/// Cancels one in-flight op from any thread (a std::stop_callback).
struct op_canceller {
    asys_ctx *ctx;
    uint64_t user_data;
    void operator()() const noexcept { (void)asys_cancel(ctx, user_data); }
};

/// One op of a coroutine: the descriptor, its result, the coroutine waiting
/// for it, and its place in the context's lists (in flight, or waiting for
/// room). Lives inside the awaitable, in the coroutine's frame: no allocation.
class op_node {
public:
    op_node(const op_node &) = delete;
    op_node &operator=(const op_node &) = delete;

protected:
    explicit op_node(context_state *st) noexcept : st_(st) {}
    bool start() noexcept;
    void suspend(std::coroutine_handle<> h) noexcept;
    long res() const noexcept { return res_; }
    void add_flags(uint32_t f) noexcept { op_.flags |= f & ~static_cast<uint32_t>(ASYS_F_CQE_ALWAYS); }

    asys_op op_;
    asys::chain *chain_ = nullptr;  ///< a chain op: submitted by chain::submit
    std::stop_token stop_;

private:
    friend struct context_state;
    friend struct node_list;
    int submit() noexcept;
    void arm_stop() noexcept;

    context_state *st_;
    long res_ = 0;
    bool backlogged_ = false;
    std::coroutine_handle<> waiter_;
    op_node *prev_ = nullptr, *next_ = nullptr;
    std::optional<std::stop_callback<op_canceller>> stop_cb_;
};

/// An intrusive FIFO of op nodes (driving thread only).
struct node_list {
    op_node *head = nullptr, *tail = nullptr;
    bool empty() const noexcept { return head == nullptr; }
    std::size_t size() const noexcept {
        std::size_t n = 0;
        for (const op_node *x = head; x; x = x->next_) ++n;
        return n;
    }
    void push_back(op_node *n) noexcept {
        n->next_ = nullptr;
        n->prev_ = tail;
        (tail ? tail->next_ : head) = n;
        tail = n;
    }
    void erase(op_node *n) noexcept {
        (n->prev_ ? n->prev_->next_ : head) = n->next_;
        (n->next_ ? n->next_->prev_ : tail) = n->prev_;
        n->prev_ = n->next_ = nullptr;
    }
    op_node *pop_front() noexcept {
        op_node *n = head;
        if (n) erase(n);
        return n;
    }
};

/// What a context owns besides its asys_ctx: the suspended ops, the ops
/// waiting for room, the spawned tasks not yet started. Heap-allocated once,
/// so moving the context does not move what the awaitables point to.
struct context_state {
    asys_ctx *ctx = nullptr;
    node_list inflight;  ///< submitted, suspended until their cqe
    node_list backlog;   ///< refused for lack of room; submitted as room frees
    std::vector<std::coroutine_handle<>> ready;  ///< spawned, to start
    std::exception_ptr spawn_error;              ///< first exception of a spawned task
    uint64_t suspensions = 0;
    uint64_t foreign_cqes = 0;
    std::size_t spawned_live = 0;
    bool closing = false;

    static constexpr uint64_t kTag = 1;  ///< user_data of our ops: node address | 1

    /// Resumes a completed op's coroutine.
    static void resume(op_node *n) { n->waiter_.resume(); }

    std::size_t dispatch(const asys_cqe &e) {
        if ((e.user_data & kTag) == 0) {
            ++foreign_cqes;
            return 0;
        }
        auto *n = reinterpret_cast<op_node *>(static_cast<uintptr_t>(e.user_data & ~kTag));
        inflight.erase(n);
        n->stop_cb_.reset();
        n->res_ = e.res;
        resume(n);
        return 1;
    }

    /// Submits ops that waited for room, in order, until the context is full.
    std::size_t pump_backlog() {
        std::size_t resumed = 0;
        while (op_node *n = backlog.head) {
            int rc = -ECANCELED;
            if (!closing && !n->stop_.stop_requested()) {
                rc = n->submit();
                if (rc == -EAGAIN && !inflight.empty()) return resumed;  // still full
            }
            backlog.erase(n);
            n->backlogged_ = false;
            if (rc == 0) {
                inflight.push_back(n);
                n->arm_stop();
                continue;
            }
            if (rc < 0) n->res_ = rc;  // ASYS_DONE: res_ already written
            resume(n);
            ++resumed;
        }
        return resumed;
    }

    std::size_t start_ready() {
        std::size_t resumed = 0;
        while (!ready.empty()) {
            std::vector<std::coroutine_handle<>> batch;
            batch.swap(ready);
            for (auto h : batch) h.resume();
            resumed += batch.size();
        }
        return resumed;
    }

    void rethrow_spawn_error() {
        if (spawn_error) std::rethrow_exception(std::exchange(spawn_error, nullptr));
    }

    /// Reaps what is there (waiting for one entry first if `wait`), resumes
    /// the coroutines, refills from the backlog, starts spawned tasks.
    std::size_t drive(bool wait) {
        std::size_t resumed = start_ready();
        asys_cqe cqes[64];
        for (;;) {
            int got;
            if (wait && resumed == 0 && !inflight.empty()) {
                do {
                    got = asys_wait(ctx, 1, nullptr, cqes, 64);
                } while (got == -EINTR);
            } else {
                got = asys_peek(ctx, cqes, 64);
            }
            if (got <= 0) break;
            for (int i = 0; i < got; ++i) resumed += dispatch(cqes[i]);
            resumed += pump_backlog();
            resumed += start_ready();
            if (static_cast<unsigned>(got) < 64 && (!wait || resumed)) break;
        }
        rethrow_spawn_error();
        return resumed;
    }

    /// The destructor's part: cancel everything, then resume every waiting
    /// coroutine until none is left (new ops fail at once).
    void close() noexcept {
        closing = true;
        // A stop callback must not call asys_cancel while the context dies.
        for (op_node *n = inflight.head; n; n = n->next_) n->stop_cb_.reset();
        (void)asys_ctx_destroy(ctx, ASYS_DESTROY_CANCEL);  // writes every ret_ptr
        ctx = nullptr;
        for (;;) {
            try {
                if (op_node *n = inflight.pop_front()) {
                    resume(n);  // res_ was written by the destroy
                } else if (!backlog.empty()) {
                    pump_backlog();
                } else if (!ready.empty()) {
                    start_ready();
                } else {
                    break;
                }
            } catch (...) {  // a spawned task's exception: nobody is left to take it
            }
        }
        spawn_error = nullptr;
    }
};

inline int op_node::submit() noexcept {
    op_.ret_ptr = &res_;
    op_.user_data = reinterpret_cast<uintptr_t>(this) | context_state::kTag;
    return chain_ ? chain_->submit(st_->ctx, op_) : asys_submit(st_->ctx, &op_);
}

inline void op_node::arm_stop() noexcept {
    if (stop_.stop_possible()) stop_cb_.emplace(stop_, op_canceller{st_->ctx, op_.user_data});
}

/// await_ready(): the inline attempt. True when the op is finished.
inline bool op_node::start() noexcept {
    if (!st_) {  // an op of a moved-from context
        res_ = -EBADF;
        return true;
    }
    if (st_->closing || stop_.stop_requested()) {
        res_ = -ECANCELED;
        return true;
    }
    const int rc = submit();
    if (rc == ASYS_DONE) return true;  // res_ written inline
    if (rc == 0) return false;         // in flight: suspend
    const bool may_wait = !(op_.flags & (ASYS_F_NOWAIT | ASYS_F_ATOMIC));
    if (rc == -EAGAIN && may_wait && !st_->inflight.empty()) {
        backlogged_ = true;  // the context is full: retry as our ops complete
        return false;
    }
    res_ = rc;
    return true;
}

inline void op_node::suspend(std::coroutine_handle<> h) noexcept {
    waiter_ = h;
    ++st_->suspensions;
    if (backlogged_) {
        st_->backlog.push_back(this);
    } else {
        st_->inflight.push_back(this);
        arm_stop();
    }
}

template <class T>
struct value_of {
    using type = T;
};
template <>
struct value_of<void> {
    using type = std::monostate;
};
template <class T>
using value_of_t = typename value_of<T>::type;

}  // namespace detail

template <class R>
class op;

/// A modified op (with_flags, with_stop): refers to the op, a temporary of
/// the same full expression, so it lives until the co_await returns.
template <class R>
class [[nodiscard]] op_ref {
public:
    explicit op_ref(op<R> &o) noexcept : o_(&o) {}
    op_ref with_flags(uint32_t flags) noexcept;
    op_ref with_stop(std::stop_token token) noexcept;
    bool await_ready() noexcept { return o_->await_ready(); }
    void await_suspend(std::coroutine_handle<> h) noexcept { o_->await_suspend(h); }
    result<R> await_resume() const noexcept { return o_->await_resume(); }

private:
    op<R> *o_;
};

/// The awaitable of one op: `co_await` yields asys::result<R>. Not copyable
/// or movable: it holds the op while it is in flight. Modifiers (on the
/// temporary, before co_await): with_flags(ASYS_F_*), with_stop(token).
template <class R>
class [[nodiscard]] op : private detail::op_node {
public:
    template <class Prep>
    op(detail::context_state *st, Prep &&prep) noexcept : op_node(st) {
        prep(op_);
    }
    op(detail::context_state *st, asys::chain &c) noexcept : op_node(st) {
        op_ = asys_op{};
        chain_ = &c;
    }

    /// Adds ASYS_F_* flags (ASYNC, NOWAIT, ATOMIC, SYNC, BUFFERED).
    op_ref<R> with_flags(uint32_t flags) noexcept {
        add_flags(flags);
        return op_ref<R>(*this);
    }
    /// A stop request cancels the op: it completes with ECANCELED (or its
    /// real result, if the call had already finished).
    op_ref<R> with_stop(std::stop_token token) noexcept {
        stop_ = std::move(token);
        return op_ref<R>(*this);
    }

    bool await_ready() noexcept { return start(); }
    void await_suspend(std::coroutine_handle<> h) noexcept { suspend(h); }
    result<R> await_resume() const noexcept { return result<R>::from_syscall(res()); }
};

template <class R>
op_ref<R> op_ref<R>::with_flags(uint32_t flags) noexcept {
    return o_->with_flags(flags);
}
template <class R>
op_ref<R> op_ref<R>::with_stop(std::stop_token token) noexcept {
    return o_->with_stop(std::move(token));
}

/// Owns an asys_ctx. Move-only. See the header comment for the rules.
class context {
public:
    /// A context with default parameters. Throws std::system_error.
    context() : context(nullptr) {}
    /// A context with these parameters. Throws std::system_error.
    explicit context(const asys_params &p) : context(&p) {}

    context(context &&o) noexcept = default;
    context &operator=(context &&o) noexcept {
        if (this != &o) {
            reset();
            st_ = std::move(o.st_);
        }
        return *this;
    }
    context(const context &) = delete;
    context &operator=(const context &) = delete;
    /// Cancels the ops in flight and resumes their coroutines (ECANCELED),
    /// on this thread; spawned tasks not started yet start and see
    /// ECANCELED on their first op.
    ~context() { reset(); }

    asys_ctx *native_handle() const noexcept { return st_ ? st_->ctx : nullptr; }
    /// The eventfd, readable while completions wait to be reaped by poll().
    result<int> fd() const noexcept { return result<int>::from_syscall(asys_ctx_fd(native_handle())); }

    // ------------------------------------------------------------ driving
    /// Resumes what is ready without waiting. Returns the coroutines resumed.
    std::size_t poll() { return state().drive(false); }
    /// Waits for at least one completion (unless something is ready), then
    /// as poll(). 0: nothing in flight, nothing to start.
    std::size_t run_one() { return state().drive(true); }
    /// Drives until no op is in flight and no spawned task waits to start.
    std::size_t run() {
        std::size_t n = 0;
        while (std::size_t k = run_one()) n += k;
        return n;
    }

    // ------------------------------------------------------------ counters
    /// Times an op suspended its coroutine (it did not complete inline).
    uint64_t suspensions() const noexcept { return st_ ? st_->suspensions : 0; }
    /// Ops suspended now (in flight or waiting for room).
    std::size_t pending() const noexcept {
        return st_ ? st_->inflight.size() + st_->backlog.size() : 0;
    }
    /// Spawned tasks that have not finished.
    std::size_t spawned() const noexcept { return st_ ? st_->spawned_live : 0; }
    /// Completion entries that were not the context's ops (dropped).
    uint64_t foreign_completions() const noexcept { return st_ ? st_->foreign_cqes : 0; }

    // ---------------------------------------------------------------- ops
    op<long> nop(long value) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_nop(&o, value); }};
    }
    op<ssize_t> read(int fd, void *buf, std::size_t len) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_read(&o, fd, buf, len); }};
    }
    op<ssize_t> pread(int fd, void *buf, std::size_t len, int64_t off) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_pread(&o, fd, buf, len, off); }};
    }
    op<ssize_t> readv(int fd, const iovec *iov, int cnt) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_readv(&o, fd, iov, cnt); }};
    }
    op<ssize_t> preadv(int fd, const iovec *iov, int cnt, int64_t off, int rwf = 0) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_preadv(&o, fd, iov, cnt, off, rwf); }};
    }
    op<ssize_t> write(int fd, const void *buf, std::size_t len) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_write(&o, fd, buf, len); }};
    }
    op<ssize_t> pwrite(int fd, const void *buf, std::size_t len, int64_t off) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_pwrite(&o, fd, buf, len, off); }};
    }
    op<ssize_t> writev(int fd, const iovec *iov, int cnt) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_writev(&o, fd, iov, cnt); }};
    }
    op<ssize_t> pwritev(int fd, const iovec *iov, int cnt, int64_t off, int rwf = 0) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_pwritev(&o, fd, iov, cnt, off, rwf); }};
    }
    op<int> openat(int dirfd, const char *path, int flags, mode_t mode = 0) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_openat(&o, dirfd, path, flags, mode); }};
    }
    op<void> close(int fd) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_close(&o, fd); }};
    }
    op<void> fsync(int fd) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_fsync(&o, fd); }};
    }
    op<void> fdatasync(int fd) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_fdatasync(&o, fd); }};
    }
    op<void> statx(int dirfd, const char *path, int flags, unsigned mask, struct statx *out) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_statx(&o, dirfd, path, flags, mask, out); }};
    }
    op<void> unlinkat(int dirfd, const char *path, int flags = 0) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_unlinkat(&o, dirfd, path, flags); }};
    }
    op<void> renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
                      unsigned flags = 0) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_renameat(&o, olddirfd, oldpath, newdirfd, newpath, flags); }};
    }
    op<void> mkdirat(int dirfd, const char *path, mode_t mode) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_mkdirat(&o, dirfd, path, mode); }};
    }
    op<void> fallocate(int fd, int mode, int64_t off, int64_t len) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_fallocate(&o, fd, mode, off, len); }};
    }
    op<void> ftruncate(int fd, int64_t len) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_ftruncate(&o, fd, len); }};
    }
    op<int> accept(int fd, sockaddr *addr = nullptr, socklen_t *addrlen = nullptr, int flags = 0) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_accept(&o, fd, addr, addrlen, flags); }};
    }
    op<void> connect(int fd, const sockaddr *addr, socklen_t addrlen) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_connect(&o, fd, addr, addrlen); }};
    }
    op<ssize_t> recv(int fd, void *buf, std::size_t len, int flags = 0) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_recv(&o, fd, buf, len, flags); }};
    }
    op<ssize_t> send(int fd, const void *buf, std::size_t len, int flags = 0) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_send(&o, fd, buf, len, flags); }};
    }
    /// The POLL op: one descriptor; the result is revents (0 on timeout).
    /// (Without arguments, poll() drives the context.)
    op<int> poll(int fd, unsigned events, int timeout_ms = -1) noexcept {
        return {st(), [&](asys_op &o) { asys_prep_poll(&o, fd, events, timeout_ms); }};
    }
    /// Any system call generic submission allows (asys_syscall_allowed);
    /// up to six integer or pointer arguments.
    template <class... A>
    op<long> syscall(long nr, A... args) noexcept {
        static_assert(sizeof...(A) <= 6, "a system call takes at most six arguments");
        static_assert(((std::is_integral_v<A> || std::is_enum_v<A> || std::is_pointer_v<A> ||
                        std::is_null_pointer_v<A>) && ...),
                      "syscall arguments are integers or pointers");
        return {st(), [&](asys_op &o) {
                    const uint64_t a[6] = {arg(args)...};
                    asys_prep_syscall(&o, nr, a);
                }};
    }
    /// Runs an asys::chain as one op; the result is its last step's. The
    /// chain must not be changed or run elsewhere until the op completes.
    op<long> chain(asys::chain &c) noexcept { return {st(), c}; }

private:
    template <class T>
    friend void spawn(context &, task<T>);

    explicit context(const asys_params *p) : st_(std::make_unique<detail::context_state>()) {
        if (int rc = asys_ctx_create(p, &st_->ctx); rc < 0)
            throw std::system_error(-rc, std::system_category(), "asys_ctx_create");
    }
    void reset() noexcept {
        if (st_) st_->close();
        st_.reset();
    }
    detail::context_state &state() {
        if (!st_) throw std::logic_error("asys::context: moved-from");
        return *st_;
    }
    detail::context_state *st() noexcept { return st_.get(); }

    template <class A>
    static uint64_t arg(A a) noexcept {
        if constexpr (std::is_pointer_v<A>) return reinterpret_cast<uintptr_t>(a);
        else if constexpr (std::is_null_pointer_v<A>) return 0;
        else return static_cast<uint64_t>(static_cast<int64_t>(a));
    }

    std::unique_ptr<detail::context_state> st_;
};

// ------------------------------------------------------------------ task
namespace detail {

template <class T>
class task_promise;

struct task_final_awaiter {
    bool await_ready() const noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
        return h.promise().continuation;
    }
    void await_resume() const noexcept {}
};

struct task_promise_base {
    std::coroutine_handle<> continuation = std::noop_coroutine();
    std::exception_ptr error;
    std::suspend_always initial_suspend() const noexcept { return {}; }
    task_final_awaiter final_suspend() const noexcept { return {}; }
    void unhandled_exception() noexcept { error = std::current_exception(); }
};

template <class T>
class task_promise : public task_promise_base {
public:
    task<T> get_return_object() noexcept;
    template <class U>
    void return_value(U &&v) {
        value_.emplace(std::forward<U>(v));
    }
    T take() {
        if (error) std::rethrow_exception(error);
        return std::move(*value_);
    }

private:
    std::optional<T> value_;
};

template <>
class task_promise<void> : public task_promise_base {
public:
    task<void> get_return_object() noexcept;
    void return_void() const noexcept {}
    void take() const {
        if (error) std::rethrow_exception(error);
    }
};

}  // namespace detail

/// A lazy coroutine: it starts when awaited (or by sync_wait/spawn/when_all)
/// and resumes its awaiter when it ends. Move-only. An exception escaping
/// the body is rethrown to the awaiter.
template <class T>
class [[nodiscard]] task {
public:
    using promise_type = detail::task_promise<T>;
    using handle_type = std::coroutine_handle<promise_type>;

    task() noexcept = default;
    explicit task(handle_type h) noexcept : h_(h) {}
    task(task &&o) noexcept : h_(std::exchange(o.h_, {})) {}
    task &operator=(task &&o) noexcept {
        if (this != &o) {
            if (h_) h_.destroy();
            h_ = std::exchange(o.h_, {});
        }
        return *this;
    }
    task(const task &) = delete;
    task &operator=(const task &) = delete;
    ~task() {
        if (h_) h_.destroy();
    }

    bool valid() const noexcept { return static_cast<bool>(h_); }
    bool done() const noexcept { return h_ && h_.done(); }

    auto operator co_await() && noexcept {
        struct awaiter {
            handle_type h;
            bool await_ready() const noexcept { return !h || h.done(); }
            std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiting) noexcept {
                h.promise().continuation = awaiting;
                return h;
            }
            T await_resume() {
                if (!h) throw std::logic_error("asys::task: awaited an empty task");
                return h.promise().take();
            }
        };
        return awaiter{h_};
    }

    /// For sync_wait, when_all, spawn: the coroutine (still owned here).
    handle_type handle() const noexcept { return h_; }
    /// The result of a finished task (rethrows its exception).
    T take() { return h_.promise().take(); }

private:
    handle_type h_;
};

namespace detail {
template <class T>
task<T> task_promise<T>::get_return_object() noexcept {
    return task<T>(std::coroutine_handle<task_promise<T>>::from_promise(*this));
}
inline task<void> task_promise<void>::get_return_object() noexcept {
    return task<void>(std::coroutine_handle<task_promise<void>>::from_promise(*this));
}

/// A coroutine that owns its frame: it starts suspended, and frees itself
/// when it ends. spawn() and when_all() use it.
struct detached {
    struct promise_type {
        detached get_return_object() noexcept {
            return detached{std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        std::suspend_never final_suspend() const noexcept { return {}; }
        void return_void() const noexcept {}
        void unhandled_exception() const noexcept { std::terminate(); }  // bodies catch all
    };
    std::coroutine_handle<promise_type> h;
};

template <class T>
detached spawned_body(context_state *st, task<T> t) {
    try {
        (void)co_await std::move(t);
    } catch (...) {
        if (!st->spawn_error) st->spawn_error = std::current_exception();
    }
    --st->spawned_live;
}

/// The join of when_all: the parent resumes when `remaining` reaches zero.
struct join_state {
    std::size_t remaining = 0;
    std::coroutine_handle<> parent;
    std::exception_ptr error;

    void part_done() {
        if (--remaining == 0) parent.resume();
    }
};

template <class T>
detached join_part(join_state &js, task<T> &t, std::optional<value_of_t<T>> &slot) {
    try {
        if constexpr (std::is_void_v<T>) {
            co_await std::move(t);
            slot.emplace();
        } else {
            slot.emplace(co_await std::move(t));
        }
    } catch (...) {
        if (!js.error) js.error = std::current_exception();
    }
    js.part_done();
}

/// Starts every part; the parent suspends unless all finished inline.
struct join_awaiter {
    join_state &js;
    std::vector<std::coroutine_handle<>> &parts;
    bool await_ready() const noexcept { return parts.empty(); }
    bool await_suspend(std::coroutine_handle<> parent) {
        js.parent = parent;
        js.remaining = parts.size() + 1;  // + 1: no part resumes the parent while we start them
        for (auto h : parts) h.resume();
        return --js.remaining != 0;
    }
    void await_resume() const {
        if (js.error) std::rethrow_exception(js.error);
    }
};

}  // namespace detail

/// Runs `t` on this thread to its end, driving `ctx` while it waits. Returns
/// its value or rethrows its exception. (Spawned tasks that ctx resumes
/// meanwhile run too; the first exception one of them throws is rethrown
/// here once `t` has ended.)
template <class T>
T sync_wait(context &ctx, task<T> t) {
    auto h = t.handle();
    if (!h) throw std::logic_error("asys::sync_wait: an empty task");
    h.resume();
    std::exception_ptr spawned_error;
    while (!h.done()) {
        std::size_t resumed = 0;
        try {
            resumed = ctx.run_one();
        } catch (...) {  // a spawned task's: t may be suspended in an op, keep driving
            if (!spawned_error) spawned_error = std::current_exception();
            continue;
        }
        if (resumed == 0 && !h.done())
            throw std::logic_error("asys::sync_wait: the task waits for something no op of the context completes");
    }
    if (spawned_error) std::rethrow_exception(spawned_error);
    return t.take();
}

/// Runs the tasks concurrently on the awaiting thread; yields their values
/// (void as std::monostate) when all have ended. The first exception is
/// rethrown after all ended.
template <class... T>
task<std::tuple<detail::value_of_t<T>...>> when_all(task<T>... ts) {
    std::tuple<std::optional<detail::value_of_t<T>>...> slots;
    detail::join_state js;
    std::vector<std::coroutine_handle<>> parts;
    parts.reserve(sizeof...(T));
    std::apply([&](auto &...slot) { (parts.push_back(detail::join_part(js, ts, slot).h), ...); }, slots);
    co_await detail::join_awaiter{js, parts};
    co_return std::apply([](auto &...slot) { return std::tuple<detail::value_of_t<T>...>(std::move(*slot)...); },
                         slots);
}

/// when_all over a vector of tasks: their values in order.
template <class T>
task<std::vector<detail::value_of_t<T>>> when_all(std::vector<task<T>> ts) {
    std::vector<std::optional<detail::value_of_t<T>>> slots(ts.size());
    detail::join_state js;
    std::vector<std::coroutine_handle<>> parts;
    parts.reserve(ts.size());
    for (std::size_t i = 0; i < ts.size(); ++i) parts.push_back(detail::join_part(js, ts[i], slots[i]).h);
    co_await detail::join_awaiter{js, parts};
    std::vector<detail::value_of_t<T>> out;
    out.reserve(slots.size());
    for (auto &s : slots) out.push_back(std::move(*s));
    co_return out;
}

/// Fire and forget: `t` starts in the next run()/run_one()/poll() of `ctx`
/// and runs on its driving thread; its value is dropped. An exception that
/// escapes it is rethrown by the run()/run_one()/poll() that resumed it.
/// Call from the driving thread (or before anyone drives).
template <class T>
void spawn(context &ctx, task<T> t) {
    detail::context_state &st = ctx.state();
    auto h = detail::spawned_body(&st, std::move(t)).h;
    ++st.spawned_live;
    st.ready.push_back(h);
}

}  // namespace asys
