#include "socket/sock_server.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <new>
#include <unordered_set>
#include <vector>

#include "asys/socket.h"
#include "base/library_fds.hpp"
#include "base/sigpipe.hpp"
#include "core/context.hpp"
#include "socket/sock_protocol.hpp"

namespace asys::internal {

std::atomic<int> g_sock_servers{0};

namespace {

constexpr unsigned kMaxFdsPerMsg = 8;  // more are received (and closed) but refused

class sock_server;

/// One request in flight: its header, its buffer (READ data, WRITE data,
/// the timer's 8 bytes) and the op's result. In flight means waiting
/// (parked: the server polls wait_fd and retries without blocking), queued
/// (beyond the client's share of the context: it waits for one of the
/// client's ops to complete) or running as an op in the context.
struct request {
    sock_server *srv = nullptr;
    asys_sock_msg h{};
    long res = 0;
    int event_fd = -1;  ///< TIMER: its timerfd; SIGNAL: its signalfd (closed with it)
    uint32_t handle = UINT32_MAX;  ///< a registered fd it uses (refcounted)
    int wait_fd = -1;              ///< parked: the fd it waits for (event_fd or the handle's)
    short wait_events = 0;         ///< parked: POLLIN or POLLOUT
    uint32_t moved = 0;            ///< WRITE of a stream: bytes already written
    std::unique_ptr<uint8_t[]> buf;
    /// The done list (on_done -> server), then the reply backlog.
    request *next = nullptr;
    /// A reply waiting in the backlog: its header; out.len payload bytes
    /// (a READ's data, a SIGNAL's siginfo) are in buf.
    asys_sock_msg out{};
    request() = default;
    request(const request &) = delete;
    request &operator=(const request &) = delete;
    ~request() {
        if (event_fd >= 0) ::close(event_fd);
    }
};

class sock_server {
public:
    sock_server(asys_ctx *ctx, int fd, int efd, unsigned flags)
        : ctx_(ctx), fd_(fd), efd_(efd), no_signals_((flags & ASYS_SOCK_NO_SIGNALS) != 0) {
        int err = 0;
        if (context *c = context::from_handle(ctx_, &err)) spin_ns_ = c->server_spin_ns();
        asys_metrics m;
        if (asys_ctx_metrics(ctx_, &m) == 0) context_cap_ = std::max<size_t>(1, m.workers_max / 2);
        library_fds::add(fd_);  // out of reach of the ops this server submits
        library_fds::add(efd_);
    }
    ~sock_server() {
        drop_backlog();
        drop_waiting();
        for (const registered &e : handles_)
            if (e.fd >= 0) ::close(e.fd);
        library_fds::remove(fd_);
        library_fds::remove(efd_);
        ::close(fd_);
        ::close(efd_);
    }
    sock_server(const sock_server &) = delete;
    sock_server &operator=(const sock_server &) = delete;
    bool ok() const noexcept { return rx_ != nullptr; }
    void run() noexcept;

private:
    static void on_done(const asys_cqe *, void *arg) noexcept;
    void handle_message(size_t n, int *fds, unsigned nfds, bool truncated) noexcept;
    void submit(request *r, const asys_op &op) noexcept;
    /// A request that needs an op in the context (file I/O, syncs, a
    /// stream that cannot be read or written without blocking): submitted,
    /// unless the client already runs context_cap_ of them; then only a
    /// nonblocking attempt (a cached read) is made, and if it would block
    /// the request joins the client's queue.
    void run_in_context(request *r, asys_op op) noexcept;
    /// Submits queued requests, oldest first, while the client runs fewer
    /// than context_cap_ ops in the context.
    void submit_queued() noexcept;
    /// What a nonblocking attempt left to do.
    enum class step { done, wait, context };
    /// Runs the request's next nonblocking step on this thread (a read of
    /// its timerfd or signalfd; preadv2/pwritev2 with RWF_NOWAIT on a
    /// stream): done (r->res holds the result), wait (for wait_fd), or
    /// context (the fd cannot be used without blocking).
    step try_now(request *r) noexcept;
    /// try_now, then: finish it, park it, or run it in the context.
    step advance(request *r) noexcept;
    /// The op that runs a stream request's rest in the context.
    void context_op_of(const request *r, int fd, asys_op *op) noexcept;
    /// Parked requests whose fd poll reported (pfds_ from index 2).
    void retry_ready() noexcept;
    /// Drops the requests that hold nothing in the context (parked and
    /// queued): they never run and are not answered.
    void drop_waiting() noexcept;
    /// CANCEL of a parked or queued request (it holds nothing in the
    /// context): the cancel is answered 0 and the request -ECANCELED (a
    /// stream write that wrote part: its count). False: not found there.
    bool cancel_waiting(const asys_sock_msg &cancel, uint64_t cookie) noexcept;
    /// Answers `req`: sends the reply now, or queues it behind the backlog.
    /// `owner` (may be null: a header-only reply) holds the payload and is
    /// freed once the reply is sent or dropped.
    void reply(const asys_sock_msg &req, long res, const void *payload = nullptr, size_t len = 0,
               request *owner = nullptr) noexcept;
    /// One non-blocking sendmsg: 0, -EAGAIN (the client's buffer is full) or
    /// the -errno that means the client is gone.
    int send_reply(asys_sock_msg &m, const void *payload, size_t len) noexcept;
    bool flush_backlog() noexcept;  ///< true: sent at least one reply
    /// METRICS: the serving context's metrics as text (the parser checked
    /// the format).
    void reply_metrics(const asys_sock_msg &h) noexcept;
    void drop_backlog() noexcept;
    /// The client is gone (hung up, failed, or would not take its replies):
    /// shut the connection, drop its replies, cancel its requests. The
    /// server ends once they have completed.
    void lose_client() noexcept;
    void finish(request *r) noexcept;
    void drain_done() noexcept;
    bool receive_one() noexcept;  ///< false: nothing to receive now
    int handle_fd(uint32_t h) const noexcept {
        return h < handles_.size() ? handles_[h].fd : -1;
    }
    bool done() const noexcept {
        return inflight_.empty() && parked_.empty() && queue_.empty() &&
               (gone_ || (!reading_ && !out_head_));
    }

    asys_ctx *ctx_;
    int fd_, efd_;
    int64_t spin_ns_ = 0;  ///< the context's server spin
    const bool no_signals_;           ///< SIGNAL requests are refused (-EPERM)
    bool reading_ = true;             ///< false once the client shut its write side (or is gone)
    bool gone_ = false;               ///< no reply can reach the client any more
    request *out_head_ = nullptr;     ///< replies the client's socket had no room for, oldest first
    request *out_tail_ = nullptr;
    unsigned out_count_ = 0;
    std::unique_ptr<uint8_t[]> rx_{new (std::nothrow) uint8_t[sizeof(asys_sock_msg) + ASYS_SOCK_MAX_IO]};
    /// A registered fd: the fd (-1: a free handle), the requests in flight
    /// that use it, and whether it is a stream (anything but a regular
    /// file, block device or directory: a pipe, socket, eventfd, tty...),
    /// whose reads and writes may wait for ever.
    struct registered {
        int fd = -1;
        unsigned refs = 0;
        bool stream = false;
    };
    std::vector<registered> handles_;  ///< by handle
    std::unordered_set<request *> inflight_;  ///< ops in the context; server thread only
    std::vector<request *> parked_;   ///< waiting for their wait_fd; server thread only
    /// A request waiting for room in the client's share of the context,
    /// with the op that will run it.
    struct queued {
        request *r;
        asys_op op;
    };
    /// Beyond the cap, oldest first; not empty only while inflight_ holds
    /// context_cap_ ops. Server thread only.
    std::deque<queued> queue_;
    std::vector<struct pollfd> pfds_; ///< the sleep's poll set: efd_, fd_, then parked_
    /// The last retry of parked requests made no progress at all: poll
    /// said ready and every retry would still block (a reader of the same
    /// pipe was faster). The next sleep leaves them out for 1 ms, so that
    /// a descriptor whose poll and nonblocking read disagree cannot make
    /// this thread spin.
    bool parked_spurious_ = false;
    /// Ops one client may run in the context at once: half the context's
    /// workers, at least 1 (docs/socket.md).
    size_t context_cap_ = 1;

    std::mutex mu_;                   ///< guards done_ (callbacks run on other threads)
    request *done_ = nullptr;
    /// done_ is not empty. Set (release) under mu_ by on_done, cleared when
    /// the list is taken; the server polls it while spinning.
    std::atomic<bool> has_done_{false};
};

void sock_server::on_done(const asys_cqe *, void *arg) noexcept {
    auto *r = static_cast<request *>(arg);
    sock_server *s = r->srv;
    // The wake is written under the lock: the server cannot take this
    // request (and perhaps exit, closing the eventfd) before it is done.
    std::lock_guard lk(s->mu_);
    r->next = s->done_;
    s->done_ = r;
    s->has_done_.store(true, std::memory_order_release);
    uint64_t one = 1;
    (void)!::write(s->efd_, &one, sizeof one);
}

int sock_server::send_reply(asys_sock_msg &m, const void *payload, size_t len) noexcept {
    struct iovec iov[2] = {{&m, sizeof m}, {const_cast<void *>(payload), len}};
    struct msghdr mh {};
    mh.msg_iov = iov;
    mh.msg_iovlen = len ? 2 : 1;
    // Never blocks: a client that does not read its replies must not stop
    // this server from noticing completions, hang-ups and more requests.
    while (::sendmsg(fd_, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return -EAGAIN;
        if (errno == EMSGSIZE && mh.msg_iovlen == 2) {  // a send buffer set smaller than a record
            m.res = -EMSGSIZE;
            m.len = 0;
            mh.msg_iovlen = 1;
            continue;
        }
        return -errno;  // EPIPE (the client shut its read side or left), ECONNRESET, ENOBUFS ...
    }
    return 0;
}

void sock_server::reply(const asys_sock_msg &req, long res, const void *payload, size_t len,
                        request *owner) noexcept {
    std::unique_ptr<request> own(owner);
    if (gone_) return;
    asys_sock_msg m = req;
    m.magic = ASYS_SOCK_MAGIC;
    m.version = ASYS_SOCK_VERSION;
    m.type = ASYS_SOCK_DONE;
    m.res = res;
    m.len = static_cast<uint32_t>(len);
    if (!out_head_) {  // nothing queued ahead of it: send now
        const int rc = send_reply(m, payload, len);
        if (rc == 0) return;
        if (rc != -EAGAIN) return lose_client();
    }
    // Queue it. The backlog holds at most ASYS_SOCK_MAX_INFLIGHT replies: a
    // client that keeps no more requests than that unanswered never
    // overflows it; one that floods requests without reading is let go.
    if (out_count_ >= ASYS_SOCK_MAX_INFLIGHT) return lose_client();
    if (!own) {  // a header-only reply (payloads live in their request)
        own.reset(new (std::nothrow) request);
        if (!own) return lose_client();
    }
    own->out = m;  // m.len: 0 if the payload had to go (EMSGSIZE above)
    own->next = nullptr;
    request *r = own.release();
    if (out_tail_) out_tail_->next = r;
    else out_head_ = r;
    out_tail_ = r;
    ++out_count_;
}

void sock_server::reply_metrics(const asys_sock_msg &h) noexcept {
    asys_metrics m;
    if (int rc = asys_ctx_metrics(ctx_, &m); rc < 0) return reply(h, rc);
    const auto format = static_cast<unsigned>(h.offset);
    const long need = asys_metrics_format(&m, format, nullptr, 0);
    if (need < 0) return reply(h, need);
    if (static_cast<unsigned long>(need) > ASYS_SOCK_MAX_IO) return reply(h, -EMSGSIZE);
    std::unique_ptr<request> r(new (std::nothrow) request);
    if (!r) return reply(h, -ENOMEM);
    r->buf.reset(new (std::nothrow) uint8_t[static_cast<size_t>(need) + 1]);
    if (!r->buf) return reply(h, -ENOMEM);
    const long len = asys_metrics_format(&m, format, reinterpret_cast<char *>(r->buf.get()),
                                         static_cast<size_t>(need) + 1);
    const uint8_t *text = r->buf.get();
    reply(h, len, text, static_cast<size_t>(len), r.release());
}

bool sock_server::flush_backlog() noexcept {
    bool sent = false;
    while (out_head_ && !gone_) {
        request *r = out_head_;
        const int rc = send_reply(r->out, r->out.len ? r->buf.get() : nullptr, r->out.len);
        if (rc == -EAGAIN) break;
        if (rc != 0) {
            lose_client();
            break;
        }
        out_head_ = r->next;
        if (!out_head_) out_tail_ = nullptr;
        --out_count_;
        delete r;
        sent = true;
    }
    return sent;
}

void sock_server::drop_backlog() noexcept {
    while (request *r = out_head_) {
        out_head_ = r->next;
        delete r;
    }
    out_tail_ = nullptr;
    out_count_ = 0;
}

void sock_server::lose_client() noexcept {
    if (gone_) return;
    gone_ = true;
    reading_ = false;
    // The client learns at once: its reads end, its sends fail (EPIPE).
    ::shutdown(fd_, SHUT_RDWR);
    drop_backlog();
    drop_waiting();
    for (request *r : inflight_) asys_cancel(ctx_, reinterpret_cast<uint64_t>(r));
}

void sock_server::drop_waiting() noexcept {
    const auto drop = [this](request *r) {
        if (r->handle != UINT32_MAX) --handles_[r->handle].refs;
        delete r;
    };
    for (request *r : parked_) drop(r);
    parked_.clear();
    for (const queued &q : queue_) drop(q.r);
    queue_.clear();
}

bool sock_server::cancel_waiting(const asys_sock_msg &cancel, uint64_t cookie) noexcept {
    request *r = nullptr;
    if (auto p = std::find_if(parked_.begin(), parked_.end(), [&](const request *x) { return x->h.cookie == cookie; });
        p != parked_.end()) {
        r = *p;
        parked_.erase(p);
    } else if (auto q = std::find_if(queue_.begin(), queue_.end(), [&](const queued &x) { return x.r->h.cookie == cookie; });
               q != queue_.end()) {
        r = q->r;
        queue_.erase(q);
    } else {
        return false;
    }
    reply(cancel, 0);  // it was waiting: cancelled before it ran
    // A write that wrote part already says how much, as write(2) would.
    r->res = -ECANCELED;
    finish(r);
    return true;
}

void sock_server::submit(request *r, const asys_op &op_in) noexcept {
    asys_op op = op_in;
    op.user_data = reinterpret_cast<uint64_t>(r);
    op.ret_ptr = &r->res;
    op.callback = on_done;
    op.cb_arg = r;
    const int rc = asys_submit(ctx_, &op);
    if (rc == 0) {  // in flight: on_done will hand it back
        inflight_.insert(r);
        return;
    }
    if (rc != ASYS_DONE) r->res = rc;  // refused (-EAGAIN, -EBADF after destroy, ...)
    finish(r);
}

void sock_server::run_in_context(request *r, asys_op op) noexcept {
    if (inflight_.size() < context_cap_) return submit(r, op);
    // The client's share is in use: what finishes without blocking is
    // answered now (a cached read), the rest waits here, holding nothing in
    // the context, until one of the client's ops completes.
    asys_op now = op;
    now.flags |= ASYS_F_NOWAIT;
    now.ret_ptr = &r->res;
    const int rc = asys_submit(ctx_, &now);
    // A read that came back short may have stopped where the page cache
    // ends (pread(2) would go on): it waits whole, as if it had not run (a
    // read at the file position first puts the position back; where that
    // fails, the short count is what was read). Read again later, a short
    // read at the end of the file is short again.
    const bool short_read = rc == ASYS_DONE && r->h.type == ASYS_SOCK_READ && r->res > 0 &&
                            static_cast<uint64_t>(r->res) < r->h.len;
    if (rc == -EAGAIN ||
        (short_read && (r->h.offset >= 0 || ::lseek(static_cast<int>(op.args[0]), -r->res, SEEK_CUR) >= 0))) {
        queue_.push_back(queued{r, op});
        return;
    }
    if (rc != ASYS_DONE) r->res = rc;  // -EBADF after destroy, ...
    finish(r);
}

void sock_server::submit_queued() noexcept {
    while (!queue_.empty() && inflight_.size() < context_cap_ && !gone_) {
        const queued q = queue_.front();
        queue_.pop_front();
        submit(q.r, q.op);  // in flight, or answered (finished inline, or refused)
    }
}

void sock_server::context_op_of(const request *r, int fd, asys_op *op) noexcept {
    const asys_sock_msg &h = r->h;
    if (h.type == ASYS_SOCK_READ) {
        if (h.offset >= 0) asys_prep_pread(op, fd, r->buf.get(), h.len, h.offset);
        else asys_prep_read(op, fd, r->buf.get(), h.len);
    } else {
        const uint32_t rest = h.len - r->moved;
        if (h.offset >= 0) asys_prep_pwrite(op, fd, r->buf.get() + r->moved, rest, h.offset + r->moved);
        else asys_prep_write(op, fd, r->buf.get() + r->moved, rest);
    }
}

sock_server::step sock_server::try_now(request *r) noexcept {
    asys_op op{};
    const asys_sock_msg &h = r->h;
    const bool event = h.type == ASYS_SOCK_TIMER || h.type == ASYS_SOCK_SIGNAL;
    const int fd = event ? r->event_fd : handle_fd(r->handle);
    struct iovec iov{};
    if (event) {
        // Its own fd, opened nonblocking: a plain read never waits.
        asys_prep_read(&op, fd, r->buf.get(), h.type == ASYS_SOCK_TIMER ? 8 : sizeof(signalfd_siginfo));
    } else if (h.type == ASYS_SOCK_READ) {
        iov = {r->buf.get(), h.len};
        asys_prep_preadv(&op, fd, &iov, 1, h.offset, RWF_NOWAIT);
    } else {
        iov = {r->buf.get() + r->moved, h.len - r->moved};
        asys_prep_pwritev(&op, fd, &iov, 1, h.offset >= 0 ? h.offset + r->moved : -1, RWF_NOWAIT);
    }
    // On this thread: with RWF_NOWAIT (or on a nonblocking fd) it cannot block.
    op.flags = ASYS_F_SYNC;
    op.ret_ptr = &r->res;
    long res = 0;
    if (const int rc = asys_submit(ctx_, &op); rc != ASYS_DONE) res = rc;  // -EBADF after destroy
    else res = r->res;
    // Its reader is gone: SIGPIPE, raised on this thread (which blocks it),
    // goes to the process, as from a pool worker (docs/api.md).
    if (res == -EPIPE) forward_sigpipe();
    r->wait_fd = fd;
    r->wait_events = h.type == ASYS_SOCK_WRITE ? POLLOUT : POLLIN;
    if (res == -EOPNOTSUPP && !event) return step::context;  // no RWF_NOWAIT for it (a tty)
    if (h.type == ASYS_SOCK_WRITE && res > 0) {
        r->moved += static_cast<uint32_t>(res);
        // A blocking write(2) of a stream writes it all: so does this one,
        // in parts, as room comes.
        if (r->moved < h.len) res = -EAGAIN;
    }
    if (res == -EAGAIN) {
        // A nonblocking fd of the client's answers at once, as read(2) would.
        const long fl = event ? 0 : ::fcntl(fd, F_GETFL);
        if (fl < 0 || !(fl & O_NONBLOCK)) return step::wait;
    }
    // A write that wrote part: finish() reports the bytes moved (a later
    // error or a nonblocking fd's EAGAIN is not reported, as write(2)).
    if (h.type == ASYS_SOCK_WRITE && r->moved) res = 0;
    r->res = res;
    return step::done;
}

sock_server::step sock_server::advance(request *r) noexcept {
    const step st = try_now(r);
    switch (st) {
        case step::done: finish(r); break;
        case step::wait: parked_.push_back(r); break;
        case step::context: {
            asys_op op{};
            context_op_of(r, r->wait_fd, &op);
            // A stream's read or write may wait for its peer for ever: the
            // net class, which never borrows workers beyond its budget
            // (docs/scheduling.md).
            op.flags |= ASYS_F_CLASS(ASYS_CLASS_NET);
            run_in_context(r, op);
            break;
        }
    }
    return st;
}

void sock_server::retry_ready() noexcept {
    // Take the ready ones out first: finishing one may lose the client,
    // which drops whatever is still parked.
    std::vector<request *> ready;
    size_t keep = 0;
    for (size_t i = 0; i < parked_.size(); ++i) {
        if (pfds_[2 + i].revents) ready.push_back(parked_[i]);
        else parked_[keep++] = parked_[i];
    }
    parked_.resize(keep);
    bool progress = false;
    for (request *r : ready) {
        if (gone_) {  // lost meanwhile: dropped like the rest
            if (r->handle != UINT32_MAX) --handles_[r->handle].refs;
            delete r;
            continue;
        }
        const uint32_t moved = r->moved;
        // (r is alive after advance only if it waits again)
        if (advance(r) != step::wait || r->moved != moved) progress = true;
    }
    parked_spurious_ = !ready.empty() && !progress;
}

void sock_server::finish(request *r) noexcept {
    if (r->handle != UINT32_MAX) --handles_[r->handle].refs;
    long res = r->res;
    // A stream write that wrote part before it ran in the context.
    if (r->h.type == ASYS_SOCK_WRITE && r->moved) res = res >= 0 ? r->moved + res : r->moved;
    const void *payload = nullptr;
    size_t len = 0;
    if (r->h.type == ASYS_SOCK_READ && res > 0) {
        payload = r->buf.get();
        len = static_cast<size_t>(res);
    }
    if (r->h.type == ASYS_SOCK_TIMER) res = res == 8 ? 0 : res;
    if (r->h.type == ASYS_SOCK_SIGNAL && res == static_cast<long>(sizeof(signalfd_siginfo))) {
        payload = r->buf.get();
        len = sizeof(signalfd_siginfo);
        res = r->h.res;
    }
    if (r->event_fd >= 0) {  // done with it, even if the reply has to wait
        ::close(r->event_fd);
        r->event_fd = -1;
    }
    reply(r->h, res, payload, len, r);
}

void sock_server::drain_done() noexcept {
    request *list;
    {
        std::lock_guard lk(mu_);
        list = done_;
        done_ = nullptr;
        has_done_.store(false, std::memory_order_relaxed);
    }
    while (list) {
        request *r = list;
        list = r->next;
        inflight_.erase(r);
        finish(r);
    }
    submit_queued();  // room in the client's share
}

namespace {
/// Whether fd (fstat'ed into st) is a signalfd: an anonymous inode (no file
/// type bits) whose link in /proc/self/fd says so.
bool is_signalfd(int fd, const struct stat &st) noexcept {
    if ((st.st_mode & S_IFMT) != 0) return false;
    char path[64], target[64];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    const ssize_t n = ::readlink(path, target, sizeof target - 1);
    if (n <= 0) return true;  // cannot tell: refused, to be safe
    target[n] = 0;
    return std::strcmp(target, "anon_inode:[signalfd]") == 0;
}
}  // namespace

void sock_server::handle_message(size_t n, int *fds, unsigned nfds, bool truncated) noexcept {
    sock_request q;
    int rc = truncated ? -EMSGSIZE : parse_request(rx_.get(), n, nfds, &q);
    if (truncated && n >= sizeof q.h) std::memcpy(&q.h, rx_.get(), sizeof q.h);  // echo the cookie
    const asys_sock_msg &h = q.h;
    if (rc == 0 && h.type == ASYS_SOCK_REGISTER) {
        uint32_t slot = 0;
        while (slot < handles_.size() && handles_[slot].fd >= 0) ++slot;
        if (slot == ASYS_SOCK_MAX_HANDLES) {
            rc = -EMFILE;
        } else {
            struct stat st;
            const bool stat_ok = ::fstat(fds[0], &st) == 0;
            // asysd: a signalfd reads the signals of the process that reads
            // it, the daemon's (its SIGTERM): refused, like SIGNAL.
            if (no_signals_ && stat_ok && is_signalfd(fds[0], st)) {
                ::close(fds[0]);
                return reply(h, -EPERM);
            }
            if (slot == handles_.size()) handles_.emplace_back();
            const bool file = stat_ok && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode) || S_ISDIR(st.st_mode));
            handles_[slot] = registered{fds[0], 0, !file};
            nfds = 0;  // kept
            reply(h, slot);
            return;
        }
    }
    for (unsigned i = 0; i < nfds; ++i) ::close(fds[i]);  // not kept
    if (rc) return reply(h, rc);
    // asysd: a client must not take the daemon's own signals (its SIGTERM).
    if (h.type == ASYS_SOCK_SIGNAL && no_signals_) return reply(h, -EPERM);

    if (h.type == ASYS_SOCK_CANCEL) {
        const uint64_t cookie = static_cast<uint64_t>(h.offset);
        for (request *r : inflight_)
            if (r->h.cookie == cookie) return reply(h, asys_cancel(ctx_, reinterpret_cast<uint64_t>(r)));
        if (cancel_waiting(h, cookie)) return;
        return reply(h, -ENOENT);
    }
    if (h.type == ASYS_SOCK_METRICS) return reply_metrics(h);
    if (h.type == ASYS_SOCK_UNREGISTER) {
        const int fd = handle_fd(h.handle);
        if (fd < 0) return reply(h, -EBADF);
        if (handles_[h.handle].refs) return reply(h, -EBUSY);  // requests in flight use it
        ::close(fd);
        handles_[h.handle] = registered{};
        return reply(h, 0);
    }
    if (inflight_.size() + parked_.size() + queue_.size() >= ASYS_SOCK_MAX_INFLIGHT) return reply(h, -EAGAIN);

    std::unique_ptr<request> r(new (std::nothrow) request);
    if (!r) return reply(h, -ENOMEM);
    r->srv = this;
    r->h = h;
    asys_op op{};
    if (h.type == ASYS_SOCK_TIMER || h.type == ASYS_SOCK_SIGNAL) {
        // The event's own fd (timerfd, signalfd), which this thread polls
        // and then reads without blocking: no worker waits for it.
        size_t size = 8;
        if (h.type == ASYS_SOCK_TIMER) {
            r->event_fd = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        } else {
            sigset_t set;
            sigemptyset(&set);
            sigaddset(&set, static_cast<int>(h.res));
            r->event_fd = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
            size = sizeof(signalfd_siginfo);
        }
        if (r->event_fd < 0) return reply(h, -errno);
        r->buf.reset(new (std::nothrow) uint8_t[size]);
        if (!r->buf) return reply(h, -ENOMEM);
        if (h.type == ASYS_SOCK_TIMER) {
            const int64_t ns = h.res > 0 ? h.res : 1;  // 0 would disarm the timer
            struct itimerspec its {};
            its.it_value.tv_sec = ns / 1000000000;
            its.it_value.tv_nsec = ns % 1000000000;
            ::timerfd_settime(r->event_fd, 0, &its, nullptr);
        }
        r->wait_fd = r->event_fd;
        r->wait_events = POLLIN;
        parked_.push_back(r.release());  // read once poll says it fired
        return;
    }
    const int fd = handle_fd(h.handle);
    if (fd < 0) return reply(h, -EBADF);
    const bool stream = handles_[h.handle].stream;
    switch (h.type) {
        case ASYS_SOCK_READ:
        case ASYS_SOCK_WRITE:
            r->buf.reset(new (std::nothrow) uint8_t[h.len ? h.len : 1]);
            if (!r->buf) return reply(h, -ENOMEM);
            if (h.type == ASYS_SOCK_WRITE) std::memcpy(r->buf.get(), q.payload, q.payload_len);
            r->handle = h.handle;
            ++handles_[h.handle].refs;
            // A stream's read or write may wait for ever: tried here
            // without blocking, then parked until poll says it may go on.
            if (stream) {
                (void)advance(r.release());
                return;
            }
            context_op_of(r.get(), fd, &op);
            break;
        case ASYS_SOCK_FSYNC: asys_prep_fsync(&op, fd); break;
        default: asys_prep_fdatasync(&op, fd); break;
    }
    if (r->handle == UINT32_MAX) {
        r->handle = h.handle;
        ++handles_[h.handle].refs;
    }
    run_in_context(r.release(), op);
}

bool sock_server::receive_one() noexcept {
    alignas(struct cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFdsPerMsg)];
    struct iovec iov{rx_.get(), sizeof(asys_sock_msg) + ASYS_SOCK_MAX_IO};
    struct msghdr mh {};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf;
    mh.msg_controllen = sizeof cbuf;
    // recv_record: a client's last request before it shuts its writes is
    // read, not taken for the end (a half-closed client is answered).
    const ssize_t n = recv_record(fd_, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return false;
    if (n < 0) {  // ECONNRESET (it left with replies unread) or worse
        lose_client();
        return true;
    }
    int fds[kMaxFdsPerMsg + 1];
    unsigned nfds = 0;
    for (cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        const size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; ++i) {
            int f;
            std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
            if (nfds < kMaxFdsPerMsg) fds[nfds++] = f;
            else ::close(f);
        }
    }
    if (n == 0) {
        for (unsigned i = 0; i < nfds; ++i) ::close(fds[i]);
        // An empty record reads as 0 bytes, like the end of the stream:
        // only a hang-up tells them apart.
        struct pollfd h{fd_, POLLRDHUP, 0};
        if (::poll(&h, 1, 0) == 0 || !(h.revents & (POLLRDHUP | POLLHUP))) {
            sock_request none;
            reply(none.h, -EBADMSG);
        } else if (h.revents & (POLLHUP | POLLERR)) {
            lose_client();  // closed (or shut both ways): cancel what is in flight
        } else {
            // Half-closed: it sends no more but still reads. Answer what is
            // in flight, then end; a full hang-up meanwhile cancels it.
            reading_ = false;
        }
        return true;
    }
    if (mh.msg_flags & MSG_CTRUNC) {  // more fds than any request may carry, or no room for them here
        for (unsigned i = 0; i < nfds; ++i) ::close(fds[i]);
        sock_request q;
        (void)parse_request(rx_.get(), static_cast<size_t>(n), 0, &q);
        // A REGISTER whose one fd the kernel could not install: this process
        // is out of descriptors.
        const bool out_of_fds = nfds == 0 && q.h.type == ASYS_SOCK_REGISTER;
        reply(q.h, out_of_fds ? -EMFILE : -EBADMSG);
        return true;
    }
    handle_message(static_cast<size_t>(n), fds, nfds, (mh.msg_flags & MSG_TRUNC) != 0);
    return true;
}

void sock_server::run() noexcept {
    // Spin for a while after the last activity before sleeping in poll()
    // (asys_params.server_spin_us of the context): a wake-up costs far more
    // than a request (docs/benchmarks.md).
    using clock = std::chrono::steady_clock;
    const auto kSpin = std::chrono::nanoseconds(spin_ns_);
    auto last = clock::now();
    while (!done()) {
        bool progress = false;
        if (has_done_.load(std::memory_order_acquire)) {
            drain_done();
            progress = true;
        }
        if (out_head_ && flush_backlog()) progress = true;
        if (reading_ && receive_one()) progress = true;
        if (progress) {
            last = clock::now();
            continue;
        }
        if (clock::now() - last < kSpin) continue;
        // Sleep until a request completes, or the client sends, makes room
        // for the backlog, or hangs up (POLLHUP comes unasked: a client that
        // half-closed and then closes for good is noticed here).
        // Parked requests wait here too: for their timer, signal or stream.
        const short want = static_cast<short>((reading_ ? POLLIN : 0) | (out_head_ ? POLLOUT : 0));
        pfds_.clear();
        pfds_.push_back({efd_, POLLIN, 0});
        pfds_.push_back({gone_ ? -1 : fd_, want, 0});
        const bool with_parked = !parked_spurious_;
        parked_spurious_ = false;
        if (with_parked)
            for (const request *r : parked_) pfds_.push_back({r->wait_fd, r->wait_events, 0});
        if (::poll(pfds_.data(), pfds_.size(), with_parked ? -1 : 1) > 0) {
            if (pfds_[0].revents & POLLIN) {
                uint64_t v;
                (void)!::read(efd_, &v, sizeof v);  // only a wake-up: has_done_ is the truth
            }
            if (!reading_ && (pfds_[1].revents & (POLLHUP | POLLERR | POLLNVAL))) lose_client();
            if (with_parked && !gone_) retry_ready();
        }
        last = clock::now();
    }
}

void *server_main(void *arg) noexcept {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);  // process signals go elsewhere
    auto *s = static_cast<sock_server *>(arg);
    s->run();
    delete s;
    g_sock_servers.fetch_sub(1);
    g_sock_servers.notify_all();
    return nullptr;
}

}  // namespace

int start_sock_server(asys_ctx *ctx, int fd, unsigned flags) noexcept {
    const int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) {
        const int err = errno;
        ::close(fd);
        return -err;
    }
    auto *s = new (std::nothrow) sock_server(ctx, fd, efd, flags);
    if (!s) {
        ::close(efd);
        ::close(fd);
        return -ENOMEM;
    }
    if (!s->ok()) {
        delete s;  // closes fd and efd
        return -ENOMEM;
    }
    g_sock_servers.fetch_add(1);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    const int rc = pthread_create(&t, &attr, server_main, s);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        delete s;  // closes fd and efd
        g_sock_servers.fetch_sub(1);
        return -rc;
    }
    return 0;
}

}  // namespace asys::internal
