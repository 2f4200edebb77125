#include "socket/sock_server.hpp"

#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <unordered_set>
#include <vector>

#include "asys/socket.h"
#include "base/library_fds.hpp"
#include "core/context.hpp"
#include "socket/sock_protocol.hpp"

namespace asys::internal {

std::atomic<int> g_sock_servers{0};

namespace {

constexpr unsigned kMaxFdsPerMsg = 8;  // more are received (and closed) but refused

class sock_server;

/// One request in flight: its header, its buffer (READ data, WRITE data,
/// the timer's 8 bytes) and the op's result.
struct request {
    sock_server *srv = nullptr;
    asys_sock_msg h{};
    long res = 0;
    int event_fd = -1;  ///< TIMER: its timerfd; SIGNAL: its signalfd (closed with it)
    uint32_t handle = UINT32_MAX;  ///< a registered fd it uses (refcounted)
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
        library_fds::add(fd_);  // out of reach of the ops this server submits
        library_fds::add(efd_);
    }
    ~sock_server() {
        drop_backlog();
        for (int fd : handles_)
            if (fd >= 0) ::close(fd);
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
        return h < handles_.size() ? handles_[h] : -1;
    }
    bool done() const noexcept {
        return inflight_.empty() && (gone_ || (!reading_ && !out_head_));
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
    std::vector<int> handles_;        ///< handle -> fd (-1: free)
    std::vector<unsigned> refs_;      ///< handle -> requests in flight using it
    std::unordered_set<request *> inflight_;  ///< server thread only

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
    for (request *r : inflight_) asys_cancel(ctx_, reinterpret_cast<uint64_t>(r));
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
        if (r->handle != UINT32_MAX) ++refs_[r->handle];
        return;
    }
    if (rc != ASYS_DONE) r->res = rc;  // refused (-EAGAIN, -EBADF after destroy, ...)
    r->handle = UINT32_MAX;
    finish(r);
}

void sock_server::finish(request *r) noexcept {
    long res = r->res;
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
        if (r->handle != UINT32_MAX) --refs_[r->handle];
        finish(r);
    }
}

void sock_server::handle_message(size_t n, int *fds, unsigned nfds, bool truncated) noexcept {
    sock_request q;
    int rc = truncated ? -EMSGSIZE : parse_request(rx_.get(), n, nfds, &q);
    if (truncated && n >= sizeof q.h) std::memcpy(&q.h, rx_.get(), sizeof q.h);  // echo the cookie
    const asys_sock_msg &h = q.h;
    if (rc == 0 && h.type == ASYS_SOCK_REGISTER) {
        uint32_t slot = 0;
        while (slot < handles_.size() && handles_[slot] >= 0) ++slot;
        if (slot == ASYS_SOCK_MAX_HANDLES) {
            rc = -EMFILE;
        } else {
            if (slot == handles_.size()) {
                handles_.push_back(-1);
                refs_.push_back(0);
            }
            handles_[slot] = fds[0];
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
        return reply(h, -ENOENT);
    }
    if (h.type == ASYS_SOCK_METRICS) return reply_metrics(h);
    if (h.type == ASYS_SOCK_UNREGISTER) {
        const int fd = handle_fd(h.handle);
        if (fd < 0) return reply(h, -EBADF);
        if (refs_[h.handle]) return reply(h, -EBUSY);  // requests in flight use it
        ::close(fd);
        handles_[h.handle] = -1;
        return reply(h, 0);
    }
    if (inflight_.size() >= ASYS_SOCK_MAX_INFLIGHT) return reply(h, -EAGAIN);

    std::unique_ptr<request> r(new (std::nothrow) request);
    if (!r) return reply(h, -ENOMEM);
    r->srv = this;
    r->h = h;
    asys_op op{};
    if (h.type == ASYS_SOCK_TIMER || h.type == ASYS_SOCK_SIGNAL) {
        // A read of the event's own fd (timerfd, signalfd): no thread waits.
        size_t size = 8;
        if (h.type == ASYS_SOCK_TIMER) {
            r->event_fd = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
        } else {
            sigset_t set;
            sigemptyset(&set);
            sigaddset(&set, static_cast<int>(h.res));
            r->event_fd = ::signalfd(-1, &set, SFD_CLOEXEC);
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
        asys_prep_read(&op, r->event_fd, r->buf.get(), size);
        return submit(r.release(), op);
    }
    const int fd = handle_fd(h.handle);
    if (fd < 0) return reply(h, -EBADF);
    r->handle = h.handle;
    switch (h.type) {
        case ASYS_SOCK_READ:
        case ASYS_SOCK_WRITE:
            r->buf.reset(new (std::nothrow) uint8_t[h.len ? h.len : 1]);
            if (!r->buf) return reply(h, -ENOMEM);
            if (h.type == ASYS_SOCK_READ) {
                if (h.offset >= 0) asys_prep_pread(&op, fd, r->buf.get(), h.len, h.offset);
                else asys_prep_read(&op, fd, r->buf.get(), h.len);
            } else {
                std::memcpy(r->buf.get(), q.payload, q.payload_len);
                if (h.offset >= 0) asys_prep_pwrite(&op, fd, r->buf.get(), h.len, h.offset);
                else asys_prep_write(&op, fd, r->buf.get(), h.len);
            }
            break;
        case ASYS_SOCK_FSYNC: asys_prep_fsync(&op, fd); break;
        default: asys_prep_fdatasync(&op, fd); break;
    }
    submit(r.release(), op);
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
    if (mh.msg_flags & MSG_CTRUNC) {  // more fds than any request may carry
        for (unsigned i = 0; i < nfds; ++i) ::close(fds[i]);
        sock_request q;
        (void)parse_request(rx_.get(), static_cast<size_t>(n), 0, &q);
        reply(q.h, -EBADMSG);
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
        const short want = static_cast<short>((reading_ ? POLLIN : 0) | (out_head_ ? POLLOUT : 0));
        struct pollfd p[2] = {{efd_, POLLIN, 0}, {gone_ ? -1 : fd_, want, 0}};
        if (::poll(p, 2, -1) > 0) {
            if (p[0].revents & POLLIN) {
                uint64_t v;
                (void)!::read(efd_, &v, sizeof v);  // only a wake-up: has_done_ is the truth
            }
            if (!reading_ && (p[1].revents & (POLLHUP | POLLERR | POLLNVAL))) lose_client();
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
