#include "base/fault.hpp"

namespace asys::internal::fault {
std::atomic<int> thread_create_failures{0};
std::atomic<int> thread_create_successes{0};
std::atomic<int> uring_setup_failures{0};
std::atomic<int> syscall_failures{0};
std::atomic<int> syscall_errno{0};
std::atomic<int> cancel_signal_drops{0};
std::atomic<int> probe_failures{0};
std::atomic<int> probe_errno{0};
std::atomic<int> ring_failures{0};
std::atomic<int> ring_errno{0};
std::atomic<int> false_ends{0};
}  // namespace asys::internal::fault
