// What the router needs from an asynchronous backend (the worker pool today,
// io_uring next). A backend runs punted op slots and reports each one exactly
// once through the completion_sink it was started with.
#pragma once
#include <cstdint>

#include "core/op_slot.hpp"

namespace asys::internal {

class completion_sink {
public:
    /// Called exactly once per punted slot, on whichever thread finished it.
    /// After it returns the slot belongs to the sink (it is freed there).
    virtual void complete(op_slot *slot, long res, uint32_t path) noexcept = 0;

protected:
    ~completion_sink() = default;
};

class backend {
public:
    virtual ~backend() = default;
    /// Takes the slot. 0, or -EAGAIN when `atomic` and nothing is idle (the
    /// slot is then still the caller's).
    virtual int punt(op_slot *slot, bool atomic) noexcept = 0;
    /// 0: every match was queued and is completed -ECANCELED; -EALREADY: a
    /// match was running and was interrupted; -ENOENT: no match.
    virtual int cancel(uint64_t user_data) noexcept = 0;
    /// Completes all queued ops -ECANCELED and interrupts running ones.
    virtual void cancel_all() noexcept = 0;
    /// Stops the backend after every op completed.
    virtual void stop() noexcept = 0;
    /// In a forked child: drop threads/rings without touching them.
    virtual void abandon() noexcept = 0;
    virtual unsigned threads() const noexcept = 0;
};

}  // namespace asys::internal
