// Python bindings of skcl._C_cuda: the CUDA twins of the CPU kernels. They take
// raw device pointers and a stream handle from skcl/kernels.py, so this module
// does not link against libtorch.
//
// Before a launch every pointer is checked to be device memory of the named
// device (cudaPointerGetAttributes) and every size to be non-negative; the
// caller's current device is restored afterwards. Failures raise ValueError
// (bad arguments) or RuntimeError (CUDA errors); the GIL is released while
// kernels are enqueued and while herding waits for its result.
#include <pybind11/pybind11.h>

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "kernels.cuh"
#include "runtime.cuh"

namespace py = pybind11;

#ifndef SKCL_CUDA_HOME
#define SKCL_CUDA_HOME ""
#endif

namespace {

// Makes `device` current for the scope when it is not already, and then
// restores the previous device; a call on the current device changes nothing.
class DeviceGuard {
  public:
    explicit DeviceGuard(int device) {
        int current = -1;
        if (cudaGetDevice(&current) == cudaSuccess && current == device) return;
        const cudaError_t err = cudaSetDevice(device);
        if (err != cudaSuccess) {
            cudaGetLastError();
            throw py::value_error("cannot use CUDA device " + std::to_string(device) + ": " +
                                  cudaGetErrorString(err));
        }
        previous_ = current;
    }
    ~DeviceGuard() {
        if (previous_ >= 0) cudaSetDevice(previous_);
    }
    DeviceGuard(const DeviceGuard&) = delete;
    DeviceGuard& operator=(const DeviceGuard&) = delete;

  private:
    int previous_ = -1;
};

void require_size(int64_t value, const char* name) {
    if (value < 0) throw py::value_error(std::string(name) + " must be >= 0");
}

// A pointer to device memory on `device`, or null for an empty buffer.
template <typename T>
T* device_pointer(uintptr_t address, int64_t count, int device, const char* name) {
    if (count == 0) return reinterpret_cast<T*>(address);
    if (address == 0) throw py::value_error(std::string(name) + " is a null pointer");
    cudaPointerAttributes attr;
    const cudaError_t err = cudaPointerGetAttributes(&attr, reinterpret_cast<void*>(address));
    if (err != cudaSuccess) {
        cudaGetLastError();
        throw py::value_error(std::string(name) + " is not a CUDA pointer: " +
                              cudaGetErrorString(err));
    }
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) {
        throw py::value_error(std::string(name) + " is not device memory");
    }
    if (attr.device != device) {
        throw py::value_error(std::string(name) + " lives on device " +
                              std::to_string(attr.device) + ", expected " +
                              std::to_string(device));
    }
    return reinterpret_cast<T*>(address);
}

void check(cudaError_t err, const char* what) {
    if (err == cudaSuccess) return;
    cudaGetLastError();
    if (err == cudaErrorInvalidValue) {
        throw py::value_error(std::string(what) + ": the shape exceeds this device's limits");
    }
    throw std::runtime_error(std::string(what) + " failed: " + cudaGetErrorString(err));
}

int parse_op(const std::string& mode) {
    if (mode == "square") return 0;
    if (mode == "abs") return 1;
    throw py::value_error("mode must be 'square' or 'abs', got '" + mode + "'");
}

cudaStream_t as_stream(uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

bool herding(uintptr_t F, int64_t n, int64_t d, int64_t m, uintptr_t out, uintptr_t workspace,
             int64_t workspace_bytes, int device, uintptr_t stream) {
    require_size(n, "n");
    require_size(d, "d");
    require_size(workspace_bytes, "workspace_bytes");
    if (m < 0 || m > n) throw py::value_error("m must satisfy 0 <= m <= n");
    if (m == 0) return true;
    DeviceGuard guard(device);
    const size_t need = skcl::cuda::herding_workspace_bytes(n, d);
    if (static_cast<size_t>(workspace_bytes) < need) {
        throw py::value_error("workspace too small: " + std::to_string(workspace_bytes) +
                              " bytes, need " + std::to_string(need));
    }
    const float* f = device_pointer<const float>(F, n * d, device, "features");
    int64_t* o = device_pointer<int64_t>(out, m, device, "out");
    void* ws = device_pointer<void>(workspace, workspace_bytes, device, "workspace");
    bool finite = true;
    cudaError_t err;
    {
        py::gil_scoped_release release;
        err = skcl::cuda::herding(f, n, d, m, o, ws, static_cast<size_t>(workspace_bytes),
                                  &finite, as_stream(stream));
    }
    check(err, "herding");
    return finite;
}

void gem_gram(uintptr_t G, uintptr_t g, int64_t t, int64_t P, uintptr_t gram, int device,
              uintptr_t stream) {
    require_size(t, "t");
    require_size(P, "P");
    DeviceGuard guard(device);
    const float* Gp = device_pointer<const float>(G, t * P, device, "G");
    const float* gp = device_pointer<const float>(g, P, device, "g");
    double* out = device_pointer<double>(gram, (t + 1) * (t + 1), device, "gram");
    cudaError_t err;
    {
        py::gil_scoped_release release;
        err = skcl::cuda::gem_gram(Gp, gp, t, P, out, as_stream(stream));
    }
    check(err, "gem_gram");
}

void gem_apply(uintptr_t G, uintptr_t g, uintptr_t v, int64_t t, int64_t P, uintptr_t out,
               int device, uintptr_t stream) {
    require_size(t, "t");
    require_size(P, "P");
    DeviceGuard guard(device);
    const float* Gp = device_pointer<const float>(G, t * P, device, "G");
    const float* gp = device_pointer<const float>(g, P, device, "g");
    const double* vp = device_pointer<const double>(v, t, device, "v");
    float* o = device_pointer<float>(out, P, device, "out");
    cudaError_t err;
    {
        py::gil_scoped_release release;
        err = skcl::cuda::gem_apply(Gp, gp, vp, t, P, o, as_stream(stream));
    }
    check(err, "gem_apply");
}

void accumulate_outer(uintptr_t D, uintptr_t A, int64_t B, int64_t O, int64_t I, uintptr_t C,
                      const std::string& mode, int device, uintptr_t stream) {
    require_size(B, "B");
    require_size(O, "O");
    require_size(I, "I");
    const int op = parse_op(mode);
    DeviceGuard guard(device);
    const float* Dp = device_pointer<const float>(D, B * O, device, "delta");
    const float* Ap = device_pointer<const float>(A, B * I, device, "activations");
    float* Cp = device_pointer<float>(C, O * I, device, "out");
    cudaError_t err;
    {
        py::gil_scoped_release release;
        err = skcl::cuda::accumulate_outer(Dp, Ap, B, O, I, Cp, op, as_stream(stream));
    }
    check(err, "accumulate_outer");
}

void accumulate_rows(uintptr_t X, int64_t B, int64_t K, uintptr_t out, const std::string& mode,
                     int device, uintptr_t stream) {
    require_size(B, "B");
    require_size(K, "K");
    const int op = parse_op(mode);
    DeviceGuard guard(device);
    const float* Xp = device_pointer<const float>(X, B * K, device, "X");
    float* o = device_pointer<float>(out, K, device, "out");
    cudaError_t err;
    {
        py::gil_scoped_release release;
        err = skcl::cuda::accumulate_rows(Xp, B, K, o, op, as_stream(stream));
    }
    check(err, "accumulate_rows");
}

}  // namespace

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

    m.def("herding_workspace_bytes", &skcl::cuda::herding_workspace_bytes, py::arg("n"),
          py::arg("d"), "Bytes of device scratch memory herding needs for n x d features.");
    m.def("herding", &herding, py::arg("features"), py::arg("n"), py::arg("d"), py::arg("m"),
          py::arg("out"), py::arg("workspace"), py::arg("workspace_bytes"), py::arg("device"),
          py::arg("stream"),
          "Herding picks into out (int64, m); returns False when features hold NaN/inf.");
    m.def("gem_gram", &gem_gram, py::arg("G"), py::arg("g"), py::arg("t"), py::arg("P"),
          py::arg("gram"), py::arg("device"), py::arg("stream"),
          "gram ((t+1)^2 float64, zeroed) += upper triangle of the Gram matrix of [G; g].");
    m.def("gem_apply", &gem_apply, py::arg("G"), py::arg("g"), py::arg("v"), py::arg("t"),
          py::arg("P"), py::arg("out"), py::arg("device"), py::arg("stream"),
          "out = g + G^T v (v float64).");
    m.def("accumulate_outer", &accumulate_outer, py::arg("delta"), py::arg("activations"),
          py::arg("B"), py::arg("O"), py::arg("I"), py::arg("out"), py::arg("mode"),
          py::arg("device"), py::arg("stream"), "out += op(delta)^T op(activations).");
    m.def("accumulate_rows", &accumulate_rows, py::arg("X"), py::arg("B"), py::arg("K"),
          py::arg("out"), py::arg("mode"), py::arg("device"), py::arg("stream"),
          "out += sum over rows of op(X).");
}
