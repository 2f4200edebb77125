// Scale: 100,000 ops in flight at once (reads on a pipe that are released
// together), with the thread count within the configured bound and the
// library's memory per op measured from the allocator (mallinfo2).
#include <malloc.h>

#include <atomic>
#include <thread>

#include "helpers.hpp"

using namespace asys_test;

namespace {

size_t heap_bytes() {
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;  // in use: small blocks + mmapped blocks
}

TEST(Scale, HundredThousandInFlight) {
    constexpr unsigned kOps = 100000, kWorkers = 8;
    const unsigned threads_before = thread_count();
    const size_t heap_before = heap_bytes();
    asys_params p = params(kWorkers, kOps);
    asys_ctx *ctx;
    ASSERT_EQ(asys_ctx_create(&p, &ctx), 0);
    asys_info info{};
    ASSERT_EQ(asys_ctx_info(ctx, &info), 0);

    pipe_pair pp;
    ASSERT_EQ(fcntl(pp.w, F_SETPIPE_SZ, 1 << 20) >= 0, true);
    std::vector<char> sink(kOps);
    std::atomic<unsigned> done{0}, bad{0};
    struct state {
        std::atomic<unsigned> *done, *bad;
    } st{&done, &bad};
    for (unsigned i = 0; i < kOps; ++i) {
        asys_op op;
        asys_prep_read(&op, pp.r, &sink[i], 1);
        op.flags = ASYS_F_ASYNC;
        op.callback = [](const asys_cqe *cqe, void *arg) {
            auto *s = static_cast<state *>(arg);
            if (cqe->res != 1) s->bad->fetch_add(1);
            s->done->fetch_add(1, std::memory_order_release);
        };
        op.cb_arg = &st;
        ASSERT_EQ(asys_submit(ctx, &op), 0) << i;
    }
    asys_stats s{};
    ASSERT_EQ(asys_ctx_stats(ctx, &s), 0);
    const size_t heap_loaded = heap_bytes();
    const unsigned threads_loaded = thread_count();
    EXPECT_EQ(s.inflight, kOps) << "all in flight at once";
    EXPECT_EQ(done.load(), 0u);

    // Release them all: one writer feeds 100,000 bytes.
    std::thread writer([&] {
        std::vector<char> data(kOps, 'z');
        size_t off = 0;
        while (off < data.size()) {
            ssize_t n = write(pp.w, data.data() + off, data.size() - off);
            ASSERT_GT(n, 0);
            off += static_cast<size_t>(n);
        }
    });
    writer.join();
    ASSERT_EQ(asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN), 0);
    EXPECT_EQ(done.load(), kOps);
    EXPECT_EQ(bad.load(), 0u);

    const double per_op = static_cast<double>(heap_loaded - heap_before) / kOps;
    const unsigned bound = threads_before + kWorkers + 1 /*reaper*/ + info.iowq_max_workers;
    printf("%u ops in flight (%s): %.1f library bytes per op, %u threads (bound %u)\n", kOps,
           info.reason, per_op, threads_loaded, bound);
    RecordProperty("bytes_per_op", static_cast<int>(per_op));
    EXPECT_LE(per_op, 256.0) << "DESIGN.md: <= 256 bytes of library memory per op";
    EXPECT_LE(threads_loaded, bound);
}

}  // namespace
