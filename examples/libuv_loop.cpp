// libuv_loop: a libuv loop drives an asys context. A uv_poll_t watches the
// context's eventfd; its callback calls ctx.poll(), which resumes the
// coroutines on the loop's thread. A 10 s timer bounds the run. Exit status
// 0 when every message arrived in order on this thread.
#include <uv.h>

#include <cstdlib>

#include "loop_demo.hpp"

namespace {

struct loop_state {
    asys::context *ctx;
    uv_poll_t eventfd_watch;
    uv_timer_t deadline;
    bool timed_out = false;
};

void stop_watching(loop_state &s) {
    uv_poll_stop(&s.eventfd_watch);
    uv_close(reinterpret_cast<uv_handle_t *>(&s.eventfd_watch), nullptr);
    uv_timer_stop(&s.deadline);
    uv_close(reinterpret_cast<uv_handle_t *>(&s.deadline), nullptr);
}

void on_completions(uv_poll_t *h, int status, int) {
    auto &s = *static_cast<loop_state *>(h->data);
    if (status == 0) s.ctx->poll();
    if (status != 0 || s.ctx->spawned() == 0) stop_watching(s);
}

void on_deadline(uv_timer_t *t) {
    auto &s = *static_cast<loop_state *>(t->data);
    std::fprintf(stderr, "libuv_loop: not done after 10 s\n");
    s.timed_out = true;
    stop_watching(s);
}

}  // namespace

int main(int argc, char **argv) {
    const uint32_t messages = argc > 1 ? static_cast<uint32_t>(std::strtoul(argv[1], nullptr, 10)) : 1000;
    asys::context ctx;
    demo::pipe_messages demo(ctx, messages);
    uv_loop_t *loop = uv_default_loop();
    loop_state s;
    s.ctx = &ctx;
    s.eventfd_watch.data = &s;
    s.deadline.data = &s;
    if (uv_poll_init(loop, &s.eventfd_watch, ctx.fd().value()) != 0 ||
        uv_poll_start(&s.eventfd_watch, UV_READABLE, on_completions) != 0) {
        std::fprintf(stderr, "libuv_loop: cannot watch the eventfd\n");
        return 1;
    }
    uv_timer_init(loop, &s.deadline);
    uv_timer_start(&s.deadline, on_deadline, 10000, 0);
    demo.spawn();
    ctx.poll();  // starts the spawned coroutines
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    return s.timed_out ? 1 : demo.report("libuv_loop");
}
