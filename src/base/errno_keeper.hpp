// The C ABI never changes errno: every exported function that may reach a
// libc call (thread creation, allocation, sysconf, sockets) holds one of
// these, which puts errno back as the caller left it.
#pragma once
#include <cerrno>

namespace asys::internal {

class errno_keeper {
public:
    errno_keeper() noexcept : saved_(errno) {}
    ~errno_keeper() { errno = saved_; }
    errno_keeper(const errno_keeper &) = delete;
    errno_keeper &operator=(const errno_keeper &) = delete;

private:
    int saved_;
};

}  // namespace asys::internal
