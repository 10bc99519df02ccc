// Python bindings of skcl._C: every compiled CPU kernel is exposed here and
// reached from Python only through skcl/kernels.py.
#include <pybind11/pybind11.h>

#include "build_info.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
    m.doc() = "skcl compiled CPU kernels";

    m.def("build_info", []() {
        const skcl::BuildInfo info = skcl::build_info();
        py::dict d;
        d["compiler"] = info.compiler;
        d["cxx_standard"] = info.cxx_standard;
        d["openmp"] = info.openmp;
        d["openmp_version"] = info.openmp_version;
        d["max_threads"] = info.max_threads;
        d["flags"] = info.flags;
        d["simd"] = info.simd;
        return d;
    }, "Compiler, flags, SIMD level and OpenMP support skcl._C was built with.");
}
