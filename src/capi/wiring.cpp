// The top of the library wires the layers together: which execution
// backends exist (the context picks from this list and names none of
// them), and which feature implements each opcode above the core (the
// router calls it and names none of them). Adding a backend or a feature
// opcode is one row here.
#include "base/backend.hpp"
#include "pool/worker_pool.hpp"
#include "router/router.hpp"
#include "syslet/chain_op.hpp"
#include "threadlet/threadlet.hpp"
#include "uring/uring_backend.hpp"

namespace asys::internal {

const backend_entry kBackends[] = {
    // preferred: tried first for the ops it accepts
    {"io_uring", ASYS_BACKEND_URING, false, &uring_backend::make},
    // general: runs any system call, takes everything else
    {"pool", ASYS_BACKEND_POOL, true, &worker_pool::make},
};
const unsigned kBackendCount = sizeof kBackends / sizeof kBackends[0];

const feature_ops *feature_for(uint32_t opcode) noexcept {
    static constexpr feature_ops kChain{&validate_chain_op, &route_chain};
    static constexpr feature_ops kThreadlet{&validate_threadlet_op, &route_threadlet};
    switch (opcode) {
        case ASYS_OP_CHAIN: return &kChain;
        case ASYS_OP_THREADLET: return &kThreadlet;
        default: return nullptr;
    }
}

}  // namespace asys::internal
