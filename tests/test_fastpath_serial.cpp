// Opens whose path lookup is not in the dentry cache are punted. This test
// drops the kernel's dentry and inode caches for the whole machine, so ctest
// runs it alone (RUN_SERIAL): it would evict pages other tests rely on.
#include <fstream>

#include "helpers.hpp"

using namespace asys_test;

namespace {

class FastPathSerial : public ::testing::Test {
protected:
    asys_params p_ = params(4);
    ctx_guard ctx_{&p_};
    temp_dir dir_;
};

TEST_F(FastPathSerial, UncachedLookupIsPunted) {
    std::string path = dir_.file("cold");
    close(make_file(path, 10));
    sync();
    std::ofstream dc("/proc/sys/vm/drop_caches");
    if (!(dc << "2" << std::flush)) GTEST_SKIP() << "cannot drop dentry caches (not root?)";
    long fd = -1;
    asys_op op;
    asys_prep_openat(&op, AT_FDCWD, path.c_str(), O_RDONLY | O_CLOEXEC, 0);
    uint32_t where = 0;
    fd = run(ctx_, op, &where);
    ASSERT_GE(fd, 0);
    close(static_cast<int>(fd));
    if (where == ASYS_PATH_INLINE) GTEST_SKIP() << "dentries survived drop_caches";
    EXPECT_EQ(stats(ctx_).punted_probe, 1u);
}

}  // namespace
