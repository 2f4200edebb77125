// The workload the event-loop examples share (epoll_loop, libuv_loop,
// asio_loop): a writer coroutine sends numbered messages through a pipe and
// a reader coroutine receives them. The reader finds the pipe empty most of
// the time, so its reads are punted and it suspends; the loop notices the
// context's eventfd, calls ctx.poll(), and the reader resumes — on the
// loop's thread, which the demo checks after every co_await.
#pragma once
#include <asys/asys.hpp>
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <thread>

namespace demo {

class pipe_messages {
public:
    pipe_messages(asys::context &ctx, uint32_t messages) : ctx_(ctx), messages_(messages) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) != 0) {
            std::perror("pipe2");
            return;
        }
        r_ = p[0];
        w_ = p[1];
    }
    ~pipe_messages() {
        ::close(r_);
        ::close(w_);
    }
    pipe_messages(const pipe_messages &) = delete;
    pipe_messages &operator=(const pipe_messages &) = delete;

    /// Spawns the writer and, unless the loop's own coroutine reads (Asio),
    /// the reader. They start in the context's next poll().
    void spawn(bool with_reader = true) {
        asys::spawn(ctx_, writer());
        if (with_reader) asys::spawn(ctx_, reader());
    }

    /// One message, read by whoever calls it (a coroutine on the loop).
    asys::task<asys::result<ssize_t>> read_one(uint32_t *out) { co_return co_await ctx_.read(r_, out, sizeof *out); }

    /// Checks one received message and the thread that received it.
    void check(asys::result<ssize_t> got, uint32_t msg) {
        if (got.value_or(-1) != static_cast<ssize_t>(sizeof msg) || msg != received_) ++errors_;
        if (std::this_thread::get_id() != loop_thread_) ++wrong_thread_;
        ++received_;
    }

    uint32_t messages() const { return messages_; }
    bool all_received() const { return received_ == messages_; }

    /// Prints the outcome; the process exit status.
    int report(const char *loop) const {
        std::printf("%s: %u of %u messages, %u wrong, %u resumed off the loop thread, %llu suspensions\n", loop,
                    received_, messages_, errors_, wrong_thread_,
                    static_cast<unsigned long long>(ctx_.suspensions()));
        const bool ok = all_received() && errors_ == 0 && wrong_thread_ == 0 && ctx_.suspensions() > 0;
        return ok ? 0 : 1;
    }

private:
    asys::task<void> writer() {
        for (uint32_t i = 0; i < messages_; ++i) {
            auto w = co_await ctx_.write(w_, &i, sizeof i);
            if (w.value_or(-1) != static_cast<ssize_t>(sizeof i)) ++errors_;
        }
    }
    asys::task<void> reader() {
        while (received_ < messages_) {
            uint32_t msg = 0;
            check(co_await ctx_.read(r_, &msg, sizeof msg), msg);
        }
    }

    asys::context &ctx_;
    uint32_t messages_;
    int r_ = -1, w_ = -1;
    uint32_t received_ = 0, errors_ = 0, wrong_thread_ = 0;
    std::thread::id loop_thread_ = std::this_thread::get_id();
};

}  // namespace demo
