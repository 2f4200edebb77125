// Fixed-size slab of op slots with a lock-free free list (Treiber stack with
// an ABA tag). Capacity is set once; alloc() fails with nullptr when empty.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>

#include "base/op_slot.hpp"

namespace asys::internal {

class op_slab {
public:
    int init(unsigned capacity) noexcept {
        slots_.reset(new (std::nothrow) op_slot[capacity]);
        next_.reset(new (std::nothrow) std::atomic<uint32_t>[capacity]);
        if (!slots_ || !next_) return -ENOMEM;
        cap_ = capacity;
        for (unsigned i = 0; i < capacity; ++i)  // cap_ ends the list
            next_[i].store(i + 1, std::memory_order_relaxed);
        head_.store(pack(0, 0), std::memory_order_relaxed);
        return 0;
    }
    void release() noexcept {
        slots_.reset();
        next_.reset();
        cap_ = 0;
    }

    op_slot *alloc() noexcept {
        // acquire: the winner must see next_[idx] written by the free() that
        // pushed idx (its release CAS).
        uint64_t h = head_.load(std::memory_order_acquire);
        for (;;) {
            uint32_t idx = index(h);
            if (idx >= cap_) return nullptr;
            // A stale idx (popped meanwhile) reads a stale next; the tag makes
            // the CAS fail, so the value is never used.
            uint64_t nh = pack(next_[idx].load(std::memory_order_relaxed), tag(h) + 1);
            if (head_.compare_exchange_weak(h, nh, std::memory_order_acquire,
                                            std::memory_order_acquire))
                return &slots_[idx];
        }
    }

    /// Up to n slots with one CAS (fewer only if the list is shorter):
    /// how many, in out[].
    unsigned alloc_many(op_slot **out, unsigned n) noexcept {
        // acquire: as in alloc(); every push is a release RMW of head_, so
        // the whole chain's next_ links are visible. A link read while
        // another thread pops or pushes may be stale: the tag then makes
        // the CAS fail, as in alloc().
        op_slot *const slots = slots_.get();  // (locals: out[] may alias the members)
        std::atomic<uint32_t> *const next = next_.get();
        const unsigned cap = cap_;
        uint64_t h = head_.load(std::memory_order_acquire);
        for (;;) {
            unsigned got = 0;
            uint32_t idx = index(h);
            while (got < n && idx < cap) {
                out[got++] = &slots[idx];
                idx = next[idx].load(std::memory_order_relaxed);
            }
            if (got == 0) return 0;
            if (head_.compare_exchange_weak(h, pack(idx, tag(h) + 1), std::memory_order_acquire,
                                            std::memory_order_acquire))
                return got;
        }
    }

    void free(op_slot *s) noexcept {
        const uint32_t idx = index_of(s);
        push_chain(idx, idx);
    }

    /// free() of n slots with one CAS: they are linked to each other first.
    void free_many(op_slot *const *s, unsigned n) noexcept {
        if (n == 0) return;
        const op_slot *const slots = slots_.get();
        std::atomic<uint32_t> *const next = next_.get();
        const uint32_t first = static_cast<uint32_t>(s[0] - slots);
        uint32_t last = first;
        for (unsigned k = 1; k < n; ++k) {
            const auto idx = static_cast<uint32_t>(s[k] - slots);
            next[last].store(idx, std::memory_order_relaxed);
            last = idx;
        }
        push_chain(first, last);
    }

    op_slot *begin() noexcept { return slots_.get(); }
    op_slot *end() noexcept { return slots_.get() + cap_; }

private:
    /// Pushes the chain first..last (linked through next_) on the free list.
    void push_chain(uint32_t first, uint32_t last) noexcept {
        uint64_t h = head_.load(std::memory_order_relaxed);
        for (;;) {
            next_[last].store(index(h), std::memory_order_relaxed);
            // release: publishes the chain's next_ and everything written to
            // its slots before they were freed to the next alloc().
            if (head_.compare_exchange_weak(h, pack(first, tag(h) + 1), std::memory_order_release,
                                            std::memory_order_relaxed))
                return;
        }
    }
    uint32_t index_of(const op_slot *s) const noexcept { return static_cast<uint32_t>(s - slots_.get()); }
    static uint64_t pack(uint32_t idx, uint32_t tag) { return (uint64_t{tag} << 32) | idx; }
    static uint32_t index(uint64_t h) { return static_cast<uint32_t>(h); }
    static uint32_t tag(uint64_t h) { return static_cast<uint32_t>(h >> 32); }

    std::unique_ptr<op_slot[]> slots_;
    std::unique_ptr<std::atomic<uint32_t>[]> next_;
    unsigned cap_ = 0;
    alignas(64) std::atomic<uint64_t> head_{0};
};

}  // namespace asys::internal
