// asys::result<T>: the outcome of a system call in C++ — a value or an errno.
//
// The C ABI returns negative errno values; the C++ layer wraps them so an
// error cannot be mistaken for a value. value() throws std::system_error
// (category: std::system_category()) when there is no value; error() gives
// the positive errno without throwing. Header-only; no allocation.
//
// Thread safety: a result is a plain value type.
#pragma once
#include <cerrno>
#include <system_error>
#include <type_traits>

namespace asys {

template <class T>
class result {
    static_assert(std::is_trivially_copyable_v<T>, "result<T> holds syscall values");

public:
    /// A value.
    constexpr result(T v) noexcept : value_(v) {}  // NOLINT: implicit by design
    /// An error; `err` is a positive errno (0 is taken as EINVAL).
    static constexpr result from_errno(int err) noexcept {
        result r{T{}};
        r.err_ = err > 0 ? err : EINVAL;
        return r;
    }
    /// From a raw system call return: negative means -errno.
    static constexpr result from_syscall(long r) noexcept {
        return r < 0 ? from_errno(static_cast<int>(-r)) : result(static_cast<T>(r));
    }

    constexpr bool has_value() const noexcept { return err_ == 0; }
    constexpr explicit operator bool() const noexcept { return has_value(); }
    /// 0, or the positive errno.
    constexpr int error() const noexcept { return err_; }
    std::error_code error_code() const noexcept { return {err_, std::system_category()}; }

    /// The value; throws std::system_error if there is none.
    constexpr T value() const {
        if (err_) throw std::system_error(err_, std::system_category());
        return value_;
    }
    constexpr T value_or(T fallback) const noexcept { return err_ ? fallback : value_; }
    /// The value; only meaningful when has_value().
    constexpr T operator*() const noexcept { return value_; }

private:
    T value_{};
    int err_ = 0;
};

/// For calls whose only information is success or an errno.
template <>
class result<void> {
public:
    constexpr result() noexcept = default;
    static constexpr result from_errno(int err) noexcept {
        result r;
        r.err_ = err > 0 ? err : EINVAL;
        return r;
    }
    static constexpr result from_syscall(long r) noexcept {
        return r < 0 ? from_errno(static_cast<int>(-r)) : result();
    }
    constexpr bool has_value() const noexcept { return err_ == 0; }
    constexpr explicit operator bool() const noexcept { return has_value(); }
    constexpr int error() const noexcept { return err_; }
    std::error_code error_code() const noexcept { return {err_, std::system_category()}; }
    /// Throws std::system_error on error.
    constexpr void value() const {
        if (err_) throw std::system_error(err_, std::system_category());
    }

private:
    int err_ = 0;
};

}  // namespace asys
