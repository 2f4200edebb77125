// Shared by the syslet tests: building atoms.
#pragma once
#include "asys/syslet.h"

namespace asys_test {

#define UL(p) reinterpret_cast<unsigned long *>(p)

/// An atom with its call number, flags and result pointer; no arguments.
inline syslet_uatom atom(unsigned long nr, unsigned long flags = 0, long *ret = nullptr) {
    syslet_uatom a{};
    a.nr = nr;
    a.flags = flags;
    a.ret_ptr = ret;
    return a;
}

}  // namespace asys_test
