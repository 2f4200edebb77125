// Shared by the syslet tests: building atoms.
#pragma once
#include <initializer_list>

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

/// The same, with its arguments read through `args` (in order; the others
/// pass 0): atom(SYS_read, 0, &r, {&fd, &buf, &len}).
inline syslet_uatom atom(unsigned long nr, unsigned long flags, long *ret,
                         std::initializer_list<unsigned long *> args) {
    syslet_uatom a = atom(nr, flags, ret);
    unsigned i = 0;
    for (unsigned long *p : args) a.arg_ptr[i++] = p;
    return a;
}

}  // namespace asys_test
