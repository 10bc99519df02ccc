// Host-side declarations of the CUDA runtime queries (runtime.cu).
#pragma once

namespace skcl::cuda {

int runtime_version();
int driver_version();
int device_count();

}  // namespace skcl::cuda
