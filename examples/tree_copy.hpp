// tree_copy: the engine of asys-cp — copies a tree like `cp -a` for regular
// files, directories and symbolic links (contents, mode, access and
// modification times; owner and group when run as root). Other file types
// are skipped and counted.
//
// `workers` coroutines take jobs (one file, link or directory each) from a
// shared queue, so up to `workers` files are in progress at once. A file is
// two ops: a statx, and one asys::chain that opens both files, copies the
// data, sets owner, mode and times and closes both — it runs inline until an
// atom would block (the create, at the latest) and then on a pool worker, so
// a file costs two suspensions. Directories get their mode and times last
// (making entries in them changes their times). Everything runs on the
// thread that drives the context; the queue needs no lock.
#pragma once
#include <asys/asys.hpp>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <coroutine>
#include <cstdio>
#include <cstring>
#include <deque>
#include <optional>
#include <string>
#include <vector>

namespace tree_copy {

struct counts {
    unsigned long files = 0, dirs = 0, symlinks = 0, skipped = 0, bytes = 0, errors = 0;
};

class copier {
public:
    explicit copier(asys::context &ctx, unsigned workers = 64, size_t buffer = 128 * 1024)
        : ctx_(ctx), workers_(workers ? workers : 1), buffer_(buffer) {}

    /// Copies `src` to `dst` (which must not exist), as `cp -a src dst`.
    asys::task<void> copy(std::string src, std::string dst) {
        queue_.push_back({std::move(src), std::move(dst), DT_UNKNOWN});
        std::vector<asys::task<void>> ws;
        for (unsigned i = 0; i < workers_; ++i) ws.push_back(worker());
        co_await asys::when_all(std::move(ws));
        std::vector<asys::task<void>> finish;
        for (auto &d : dirs_) finish.push_back(set_attributes(d.path.c_str(), d.st));
        co_await asys::when_all(std::move(finish));
    }

    const counts &totals() const noexcept { return n_; }

private:
    struct job {
        std::string src, dst;
        unsigned char type;  // DT_*
    };
    struct dir_done {
        std::string path;
        struct statx st;
    };

    /// Suspends a worker until a job is queued or the copy is over.
    struct job_wait {
        copier &c;
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<> h) { c.idle_.push_back(h); }
        void await_resume() const noexcept {}
    };

    void push(job j) {
        queue_.push_back(std::move(j));
        if (!idle_.empty()) {
            auto h = idle_.back();
            idle_.pop_back();
            h.resume();  // runs until its first op that suspends, then back here
        }
    }
    void wake_all() {
        while (!idle_.empty()) {
            auto h = idle_.back();
            idle_.pop_back();
            h.resume();
        }
    }

    asys::task<void> worker() {
        std::vector<char> buf(buffer_);
        for (;;) {
            while (queue_.empty()) {
                if (busy_ == 0) {  // nothing queued, nobody can queue more
                    wake_all();
                    co_return;
                }
                co_await job_wait{*this};
            }
            job j = std::move(queue_.front());
            queue_.pop_front();
            ++busy_;
            co_await run(j, buf);
            --busy_;
        }
    }

    void fail(const char *what, const std::string &path, int err) {
        std::fprintf(stderr, "asys-cp: %s %s: %s\n", what, path.c_str(), std::strerror(err));
        ++n_.errors;
    }

    asys::task<void> run(const job &j, std::vector<char> &buf) {
        struct statx st {};
        auto s = co_await ctx_.statx(AT_FDCWD, j.src.c_str(), AT_SYMLINK_NOFOLLOW,
                                     STATX_TYPE | STATX_MODE | STATX_UID | STATX_GID | STATX_ATIME | STATX_MTIME |
                                         STATX_SIZE,
                                     &st);
        if (!s) co_return fail("stat", j.src, s.error());
        switch (st.stx_mode & S_IFMT) {
        case S_IFREG: co_await copy_file(j, st, buf); break;
        case S_IFDIR: co_await copy_dir(j, st, buf); break;
        case S_IFLNK: co_await copy_link(j, st, buf); break;
        default: ++n_.skipped; break;
        }
    }

    /// Owner (when root), mode (not for links), then the times of `path`
    /// itself (not a link's target).
    asys::task<void> set_attributes(const char *path, const struct statx &st) {
        if (needs_chown(st)) {
            auto r = co_await ctx_.syscall(SYS_fchownat, AT_FDCWD, path, st.stx_uid, st.stx_gid, AT_SYMLINK_NOFOLLOW);
            if (!r) fail("chown", path, r.error());
        }
        if ((st.stx_mode & S_IFMT) != S_IFLNK) {
            auto r = co_await ctx_.syscall(SYS_fchmodat, AT_FDCWD, path, st.stx_mode & 07777);
            if (!r) fail("chmod", path, r.error());
        }
        const timespec times[2] = {{st.stx_atime.tv_sec, st.stx_atime.tv_nsec},
                                   {st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec}};
        auto r = co_await ctx_.syscall(SYS_utimensat, AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW);
        if (!r) fail("utimensat", path, r.error());
    }

    /// One file as one chain (one op): open both, read and write until EOF,
    /// owner, mode, times, close both. It runs on this thread until an atom
    /// would block (the create, at the latest), then on a pool worker.
    asys::task<void> copy_file(const job &j, const struct statx &st, std::vector<char> &buf) {
        const timespec times[2] = {{st.stx_atime.tv_sec, st.stx_atime.tv_nsec},
                                   {st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec}};
        const unsigned long mode = st.stx_mode & 07777;
        asys::chain c;
        auto in = c.openat(AT_FDCWD, j.src.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        auto out = c.openat(AT_FDCWD, j.dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        auto off = c.var<int64_t>(0);
        // EOF or a read error ends the loop at the atom placed after the read.
        auto n = c.pread(in, buf.data(), buf.size(), off, SYSLET_STOP_ON_NON_POSITIVE | SYSLET_SKIP_TO_NEXT_ON_STOP);
        std::optional<asys::chain_step<long>> chown;
        if (needs_chown(st)) chown = c.call(SYS_fchown, {out, st.stx_uid, st.stx_gid}, 0);
        auto chmod = c.call(SYS_fchmod, {out, mode}, 0);
        auto utimes = c.call(SYS_utimensat, {out, nullptr, times, 0}, 0);
        auto close_in = c.close(in, 0);
        auto close_out = c.close(out, 0);
        c.end_after(close_out);
        auto wr = c.pwrite(out, buf.data(), n, off);  // a failed write stops the chain
        auto adv = c.umem_add(off, n);
        c.jump(n, wr);
        c.jump(adv, n);

        auto r = co_await ctx_.chain(c);
        if (!r && !in.ran()) fail("copy", j.src, r.error());  // the op itself was refused
        if (in.ran() && !in.get()) fail("open", j.src, in.get().error());
        if (out.ran() && !out.get()) fail("create", j.dst, out.get().error());
        if (n.ran() && !n.get()) fail("read", j.src, n.get().error());
        if (wr.ran() && !wr.get()) fail("write", j.dst, wr.get().error());
        if (chown && chown->ran() && !chown->get()) fail("chown", j.dst, chown->get().error());
        if (chmod.ran() && !chmod.get()) fail("chmod", j.dst, chmod.get().error());
        if (utimes.ran() && !utimes.get()) fail("utimensat", j.dst, utimes.get().error());
        if (close_out.ran() && !close_out.get()) fail("close", j.dst, close_out.get().error());
        // A chain that stopped early left its descriptors open.
        if (in.get() && !close_in.ran()) (void)co_await ctx_.close(*in.get());
        if (out.get() && !close_out.ran()) (void)co_await ctx_.close(*out.get());
        if (close_out.ran()) {
            ++n_.files;
            n_.bytes += static_cast<unsigned long>(off.get());
        }
    }

    static bool needs_chown(const struct statx &st) {
        return geteuid() == 0 && (st.stx_uid != geteuid() || st.stx_gid != getegid());
    }

    asys::task<void> copy_link(const job &j, const struct statx &st, std::vector<char> &buf) {
        auto len = co_await ctx_.syscall(SYS_readlinkat, AT_FDCWD, j.src.c_str(), buf.data(), buf.size() - 1);
        if (!len) co_return fail("readlink", j.src, len.error());
        buf[static_cast<size_t>(*len)] = '\0';
        auto r = co_await ctx_.syscall(SYS_symlinkat, buf.data(), AT_FDCWD, j.dst.c_str());
        if (!r) co_return fail("symlink", j.dst, r.error());
        co_await set_attributes(j.dst.c_str(), st);
        ++n_.symlinks;
    }

    asys::task<void> copy_dir(const job &j, const struct statx &st, std::vector<char> &buf) {
        auto mk = co_await ctx_.mkdirat(AT_FDCWD, j.dst.c_str(), 0700);  // its own mode comes last
        if (!mk) co_return fail("mkdir", j.dst, mk.error());
        dirs_.push_back({j.dst, st});
        ++n_.dirs;
        auto fd = co_await ctx_.openat(AT_FDCWD, j.src.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (!fd) co_return fail("open", j.src, fd.error());
        for (;;) {
            auto got = co_await ctx_.syscall(SYS_getdents64, *fd, buf.data(), buf.size());
            if (!got) fail("getdents", j.src, got.error());
            if (!got || *got == 0) break;
            for (long pos = 0; pos < *got;) {
                const char *rec = buf.data() + pos;
                unsigned short reclen;
                std::memcpy(&reclen, rec + offsetof(dirent64, d_reclen), sizeof reclen);
                const unsigned char type = static_cast<unsigned char>(rec[offsetof(dirent64, d_type)]);
                const char *name = rec + offsetof(dirent64, d_name);
                pos += reclen;
                if (std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0) continue;
                push({j.src + "/" + name, j.dst + "/" + name, type});
            }
        }
        (void)co_await ctx_.close(*fd);
    }

    asys::context &ctx_;
    unsigned workers_;
    size_t buffer_;
    std::deque<job> queue_;
    std::vector<std::coroutine_handle<>> idle_;
    unsigned busy_ = 0;
    std::vector<dir_done> dirs_;
    counts n_;
};

}  // namespace tree_copy
