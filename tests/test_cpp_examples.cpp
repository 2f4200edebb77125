// examples/asys-cp against `cp -a`: a tree of 10,000+ files (sizes from 0 to
// past the copy buffer, nested and empty directories, symbolic links —
// relative, absolute and dangling —, modes from 0400 to 0755, old times) is
// copied by both; `diff -r --no-dereference` must find the copy identical to
// the source, and every entry's type, mode, size, owner, mtime and link
// target must match the cp -a copy.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "helpers.hpp"

#ifndef ASYS_CP_BIN
#error "ASYS_CP_BIN: the path of examples/asys-cp"
#endif

namespace {

/// Runs a shell command; its standard output, and its exit status in *status.
std::string run(const std::string &cmd, int *status) {
    std::string out;
    FILE *p = popen(cmd.c_str(), "r");
    if (!p) return out;
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    *status = pclose(p);
    return out;
}

/// Type, mode, size, owner, mtime and link target of every entry, sorted.
std::string listing(const std::string &dir) {
    int st = -1;
    std::string out = run("cd '" + dir + "' && find . -printf '%p %y %m %s %U %G %T@ %l\\n' | LC_ALL=C sort", &st);
    EXPECT_EQ(st, 0) << "find in " << dir;
    return out;
}

void write_file(const std::string &path, size_t size, unsigned seed, mode_t mode) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0) << path;
    std::string data(size, '\0');
    for (size_t i = 0; i < size; ++i) data[i] = static_cast<char>((i * 131 + seed * 7) % 251);
    ASSERT_EQ(::write(fd, data.data(), size), static_cast<ssize_t>(size)) << path;
    ASSERT_EQ(::fchmod(fd, mode), 0);
    ::close(fd);
}

void set_old_time(const std::string &path, long sec) {
    const timespec t[2] = {{sec, 123456789}, {sec + 60, 987654321}};
    ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), t, AT_SYMLINK_NOFOLLOW), 0) << path;
}

/// 100 directories (every tenth with a subdirectory, one empty) holding
/// 10,100 regular files and 150 symbolic links.
unsigned build_tree(const std::string &root) {
    unsigned files = 0;
    EXPECT_EQ(::mkdir(root.c_str(), 0755), 0);
    const mode_t modes[] = {0644, 0600, 0755, 0400, 0640};
    for (unsigned d = 0; d < 100; ++d) {
        std::string dir = root + "/d" + std::to_string(d);
        EXPECT_EQ(::mkdir(dir.c_str(), 0755), 0);
        if (d % 10 == 0) {
            dir += "/sub";
            EXPECT_EQ(::mkdir(dir.c_str(), 0700), 0);
        }
        for (unsigned f = 0; f < 101; ++f, ++files) {
            const unsigned k = d * 101 + f;
            const size_t size = k % 7 == 0 ? 0 : k % 997 == 1 ? 300 * 1024 + k : (k * 37) % 5000;
            const std::string path = dir + "/f" + std::to_string(f);
            write_file(path, size, k, modes[k % 5]);
            if (k % 3 == 0) set_old_time(path, 1000000000L + k);
        }
        const std::string links = root + "/d" + std::to_string(d);
        EXPECT_EQ(::symlink("f1", (links + "/rel").c_str()), 0);
        EXPECT_EQ(::symlink((root + "/d0").c_str(), (links + "/abs").c_str()), 0);
        if (d % 2 == 0) EXPECT_EQ(::symlink("no such file", (links + "/dangling").c_str()), 0);
        set_old_time(links + "/rel", 900000000L + d);
    }
    EXPECT_EQ(::mkdir((root + "/empty").c_str(), 0711), 0);
    set_old_time(root + "/empty", 800000000L);
    set_old_time(root + "/d7", 800000007L);
    return files;
}

TEST(CppExamples, AsysCpCopiesATreeOf10000FilesLikeCpA) {
    const std::string base = "cpp_examples_cp." + std::to_string(getpid());
    ASSERT_EQ(::mkdir(base.c_str(), 0700), 0);
    const std::string src = base + "/src", dst = base + "/dst", ref = base + "/ref";
    ASSERT_GE(build_tree(src), 10000u);

    int st = -1;
    const std::string out = run(std::string(ASYS_CP_BIN) + " -v '" + src + "' '" + dst + "' 2>&1", &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_NE(out.find("10100 files"), std::string::npos) << out;
    run("cp -a '" + src + "' '" + ref + "'", &st);
    ASSERT_EQ(st, 0) << "cp -a";

    const std::string diff = run("diff -r --no-dereference '" + src + "' '" + dst + "' 2>&1", &st);
    EXPECT_EQ(st, 0) << diff.substr(0, 2000);
    const std::string want = listing(ref), got = listing(dst);
    EXPECT_GT(want.size(), 100000u);
    EXPECT_TRUE(want == got) << "asys-cp and cp -a differ in types, modes, sizes, owners, times or links";
    run("rm -rf '" + base + "'", &st);
}

}  // namespace
