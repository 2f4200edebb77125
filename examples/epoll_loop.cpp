// epoll_loop: an application's own epoll loop drives an asys context. The
// context's eventfd is readable (level-triggered) while completions wait;
// the loop calls ctx.poll() then, which resumes the coroutines on this
// thread. Exit status 0 when every message arrived in order on this thread.
#include <sys/epoll.h>

#include <cstdlib>

#include "loop_demo.hpp"

int main(int argc, char **argv) {
    const uint32_t messages = argc > 1 ? static_cast<uint32_t>(std::strtoul(argv[1], nullptr, 10)) : 1000;
    asys::context ctx;
    demo::pipe_messages demo(ctx, messages);

    const int ep = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = ctx.fd().value();
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ev.data.fd, &ev) != 0) {
        std::perror("epoll");
        return 1;
    }
    demo.spawn();
    ctx.poll();  // starts the spawned coroutines
    while (ctx.spawned() > 0) {
        epoll_event got[8];
        const int n = epoll_wait(ep, got, 8, 10000);  // a bound, not a pace: a stall fails
        if (n == 0) {
            std::fprintf(stderr, "epoll_loop: no completion for 10 s\n");
            break;
        }
        if (n < 0 && errno != EINTR) {
            std::perror("epoll_wait");
            break;
        }
        for (int i = 0; i < n; ++i)
            if (got[i].data.fd == ev.data.fd) ctx.poll();  // the application's other fds go here
    }
    ::close(ep);
    return demo.report("epoll_loop");
}
