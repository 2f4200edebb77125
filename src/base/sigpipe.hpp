// A write to a pipe or stream socket whose reader is gone raises SIGPIPE for
// the thread that made the call. On a library thread (a pool worker, a
// socket server), which blocks every signal, it would stay pending on that
// thread for good and the application would never see it: it is taken off
// the thread and sent to the process (a thread that does not block it
// handles it): its default action ends the process, as the plain call's
// would.
#pragma once
#include <signal.h>
#include <unistd.h>

#include <ctime>

namespace asys::internal {

inline void forward_sigpipe() noexcept {
    sigset_t pipe_only;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    const struct timespec now{0, 0};
    if (sigtimedwait(&pipe_only, nullptr, &now) == SIGPIPE) kill(getpid(), SIGPIPE);
}

}  // namespace asys::internal
