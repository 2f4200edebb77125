// asio_loop: a Boost.Asio io_context drives an asys context, and an Asio
// coroutine awaits asys operations.
//
// The driver waits on the context's eventfd with a posix::stream_descriptor
// and calls ctx.poll() when it is readable; poll() resumes the asys
// coroutines on the io_context's thread. async_await() lets an Asio
// coroutine (or any Asio completion token) await an asys::task: the task is
// spawned on the asys context, and its value is posted to the handler's
// executor. Exit status 0 when every message arrived in order on this thread.
#include <utility>  // before Boost 1.74's awaitable.hpp, which uses std::exchange without it

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <poll.h>

#include <chrono>
#include <cstdlib>

#include "loop_demo.hpp"

namespace net = boost::asio;

namespace {

/// Reaps the asys context whenever its eventfd is readable.
class asys_driver {
public:
    asys_driver(net::io_context &io, asys::context &ctx)
        : io_(io), ctx_(ctx), eventfd_(io, ::dup(ctx.fd().value())) {}

    void start() {
        arm();
        kick();
    }
    void stop() { eventfd_.close(); }
    /// poll() soon, from the io_context: starts newly spawned asys tasks.
    void kick() {
        net::post(io_, [this] {
            if (eventfd_.is_open()) ctx_.poll();
        });
    }

private:
    void arm() {
        eventfd_.async_wait(net::posix::stream_descriptor::wait_read, [this](boost::system::error_code ec) {
            if (ec) return;  // closed
            ctx_.poll();
            if (!eventfd_.is_open()) return;
            arm();
            // Asio's reactor is edge-triggered: an entry that arrived after
            // poll() but before the wait was armed again made no new edge.
            pollfd p{eventfd_.native_handle(), POLLIN, 0};
            if (::poll(&p, 1, 0) == 1) kick();
        });
    }

    net::io_context &io_;
    asys::context &ctx_;
    net::posix::stream_descriptor eventfd_;
};

template <class T, class Handler>
asys::task<void> complete_into(asys::task<T> t, Handler handler) {
    T value = co_await std::move(t);
    auto ex = net::get_associated_executor(handler);
    net::post(ex, [h = std::move(handler), v = std::move(value)]() mutable { std::move(h)(std::move(v)); });
}

/// An Asio asynchronous operation that runs an asys task and completes with
/// its value: `co_await async_await(ctx, driver, task, net::use_awaitable)`.
template <class T, class Token>
auto async_await(asys::context &ctx, asys_driver &driver, asys::task<T> task, Token &&token) {
    return net::async_initiate<Token, void(T)>(
        [&ctx, &driver](auto handler, asys::task<T> t) {
            asys::spawn(ctx, complete_into(std::move(t), std::move(handler)));
            driver.kick();
        },
        token, std::move(task));
}

net::awaitable<void> reader(asys::context &ctx, asys_driver &driver, demo::pipe_messages &demo) {
    for (uint32_t i = 0; i < demo.messages(); ++i) {
        uint32_t msg = 0;
        asys::result<ssize_t> got = co_await async_await(ctx, driver, demo.read_one(&msg), net::use_awaitable);
        demo.check(got, msg);
    }
}

}  // namespace

int main(int argc, char **argv) {
    const uint32_t messages = argc > 1 ? static_cast<uint32_t>(std::strtoul(argv[1], nullptr, 10)) : 1000;
    net::io_context io;
    asys::context ctx;
    demo::pipe_messages demo(ctx, messages);
    asys_driver driver(io, ctx);
    net::steady_timer deadline(io, std::chrono::seconds(10));
    bool timed_out = false;
    deadline.async_wait([&](boost::system::error_code ec) {
        if (ec) return;
        std::fprintf(stderr, "asio_loop: not done after 10 s\n");
        timed_out = true;
        io.stop();
    });
    demo.spawn(false);  // the writer; the Asio coroutine reads
    driver.start();
    net::co_spawn(io, reader(ctx, driver, demo), [&](std::exception_ptr e) {
        if (e) std::fprintf(stderr, "asio_loop: the reader failed\n");
        driver.stop();
        deadline.cancel();
    });
    io.run();
    ctx.run();  // the writer's last completion, if the reader finished first
    return timed_out ? 1 : demo.report("asio_loop");
}
