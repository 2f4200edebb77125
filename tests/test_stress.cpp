// 1,000,000 ops from 4 submitting threads over every completion channel;
// every op must complete exactly once with its own result.
#include <atomic>
#include <memory>
#include <thread>

#include "helpers.hpp"

using namespace asys_test;

namespace {

constexpr unsigned kThreads = 4;
constexpr unsigned kPerThread = 250000;
constexpr unsigned kTotal = kThreads * kPerThread;

struct shared_state {
    std::unique_ptr<std::atomic<uint8_t>[]> seen{new std::atomic<uint8_t>[kTotal]};
    std::unique_ptr<long[]> res{new long[kTotal]};
    std::atomic<unsigned> cqes_expected{0};
    std::atomic<unsigned> submitted{0};
    std::atomic<bool> submitting_done{false};
    std::atomic<unsigned> doubled{0};

    void mark(uint64_t id) {
        if (seen[id].fetch_add(1, std::memory_order_relaxed) != 0) doubled.fetch_add(1);
    }
};

TEST(Stress, MillionOpsExactlyOnce) {
    asys_params p = params(4, 65536, ASYS_CTX_BLOCK_WHEN_FULL);
    ctx_guard ctx(&p);
    shared_state st;
    for (unsigned i = 0; i < kTotal; ++i) {
        st.seen[i].store(0, std::memory_order_relaxed);
        st.res[i] = -1;
    }
    auto cb = [](const asys_cqe *cqe, void *arg) {
        static_cast<shared_state *>(arg)->mark(cqe->user_data);
    };

    std::vector<std::thread> subs;
    for (unsigned t = 0; t < kThreads; ++t) {
        subs.emplace_back([&, t] {
            for (unsigned i = 0; i < kPerThread; ++i) {
                const uint64_t id = uint64_t{t} * kPerThread + i;
                asys_op op;
                asys_prep_nop(&op, static_cast<long>(id));
                op.user_data = id;
                op.ret_ptr = &st.res[id];
                bool want_cqe = false;
                switch (id % 4) {
                    case 0: break;                                    // inline, ret_ptr only
                    case 1: op.flags = ASYS_F_ASYNC; want_cqe = true; break;  // pool + cqe
                    case 2: op.flags = ASYS_F_ASYNC; op.callback = cb; op.cb_arg = &st; break;
                    case 3: op.flags = ASYS_F_CQE_ALWAYS; want_cqe = true; break;  // inline + cqe
                }
                if (want_cqe) st.cqes_expected.fetch_add(1, std::memory_order_relaxed);
                int rc = asys_submit(ctx, &op);
                if (rc < 0) {
                    ADD_FAILURE() << "submit " << rc;
                    return;
                }
                if (rc == ASYS_DONE && !want_cqe) st.mark(id);
                st.submitted.fetch_add(1, std::memory_order_relaxed);
            }
        });
    }
    std::thread reaper([&] {
        asys_cqe cqes[256];
        unsigned got = 0;
        for (;;) {
            if (st.submitting_done.load() && got == st.cqes_expected.load()) break;
            struct timespec ts{0, 50 * 1000 * 1000};
            int n = asys_wait(ctx, 1, &ts, cqes, 256);
            if (n == -ETIME) continue;
            if (n < 0) {
                ADD_FAILURE() << "wait " << n;
                return;
            }
            for (int i = 0; i < n; ++i) {
                EXPECT_EQ(cqes[i].res, static_cast<long>(cqes[i].user_data));
                st.mark(cqes[i].user_data);
            }
            got += static_cast<unsigned>(n);
        }
    });
    for (auto &t : subs) t.join();
    st.submitting_done = true;
    reaper.join();
    asys_ctx *c = ctx.release();
    ASSERT_EQ(asys_ctx_destroy(c, ASYS_DESTROY_DRAIN), 0);  // all callbacks ran

    EXPECT_EQ(st.submitted.load(), kTotal);
    EXPECT_EQ(st.doubled.load(), 0u);
    unsigned lost = 0, wrong = 0;
    for (unsigned i = 0; i < kTotal; ++i) {
        if (st.seen[i].load() != 1) ++lost;
        if (st.res[i] != static_cast<long>(i)) ++wrong;
    }
    EXPECT_EQ(lost, 0u) << "ops not completed exactly once";
    EXPECT_EQ(wrong, 0u) << "ret_ptr not written with the op's result";
}

}  // namespace
