// CUDA runtime queries for skcl._C_cuda's build report.
#include <cuda_runtime.h>

#include "runtime.cuh"

namespace skcl::cuda {

int runtime_version() {
    int version = 0;
    if (cudaRuntimeGetVersion(&version) != cudaSuccess) return -1;
    return version;
}

int driver_version() {
    int version = 0;
    if (cudaDriverGetVersion(&version) != cudaSuccess) return -1;
    return version;
}

int device_count() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return count;
}

}  // namespace skcl::cuda
