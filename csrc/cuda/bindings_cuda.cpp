// Python bindings of skcl._C_cuda: the CUDA twins of the CPU kernels. They take
// raw device pointers and a stream handle from skcl/kernels.py, so this module
// does not link against libtorch.
#include <pybind11/pybind11.h>

#include <cuda_runtime_api.h>

#include "runtime.cuh"

namespace py = pybind11;

#ifndef SKCL_CUDA_HOME
#define SKCL_CUDA_HOME ""
#endif

PYBIND11_MODULE(_C_cuda, m) {
    m.doc() = "skcl compiled CUDA kernels";

    m.def("build_info", []() {
        py::dict d;
        d["cuda_home"] = SKCL_CUDA_HOME;
        d["compiled_runtime_version"] = CUDART_VERSION;
        d["runtime_version"] = skcl::cuda::runtime_version();
        d["driver_version"] = skcl::cuda::driver_version();
        d["device_count"] = skcl::cuda::device_count();
        return d;
    }, "CUDA toolkit and runtime skcl._C_cuda was built with, and the devices it sees.");
}
