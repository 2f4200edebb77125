// A short sequence of ops submitted to io_uring as linked SQEs on behalf of
// one op slot (today: the asynchronous part of a syslet chain that is a
// plain sequence of ring-supported calls). The backend fills in each
// entry's result and completes the slot once every entry has its CQE; the
// layer that built the sequence interprets the results.
#pragma once
#include <atomic>
#include <cstdint>

#include "base/op_slot.hpp"

namespace asys::internal {

struct linked_ops;

struct alignas(8) linked_entry {
    /// Stored (release) by the submitter after the whole sequence is
    /// filled in; the reaper loads it (acquire) from the CQE's entry. The
    /// kernel already orders SQE before CQE; this makes that visible to
    /// TSan, which cannot see through io_uring's shared rings.
    std::atomic<linked_ops *> owner;
    uint32_t opcode;    ///< asys opcode (ring-supported)
    uint64_t args[6];   ///< read when the sequence is built
    long res;           ///< the entry's CQE result
    void *tag;          ///< the builder's (the syslet atom)
};

struct linked_ops {
    static constexpr unsigned kMax = 16;
    op_slot *slot = nullptr;
    unsigned n = 0;
    unsigned done = 0;  ///< CQEs seen (under the backend's CQ lock)
    /// The backend's list of sequences in flight (its own lock).
    linked_ops *prev = nullptr, *next = nullptr;
    linked_entry e[kMax];
};

}  // namespace asys::internal
