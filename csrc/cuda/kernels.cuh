// Host-side launchers of skcl's CUDA kernels (herding.cu, gem.cu, fisher.cu).
// Every pointer is a device pointer; every launcher enqueues on `stream` and
// returns the first CUDA error it met (cudaSuccess otherwise).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace skcl::cuda {

// Bytes of scratch memory herding needs for an n x d feature matrix.
size_t herding_workspace_bytes(int64_t n, int64_t d);

// Herding picks (iCaRL) of the rows of F (n x d, float32) into out (m, int64).
// Synchronises the stream once at the end; *finite is false when F holds NaN
// or infinity (out is then unspecified).
cudaError_t herding(const float* F, int64_t n, int64_t d, int64_t m, int64_t* out,
                    void* workspace, size_t workspace_bytes, bool* finite, cudaStream_t stream);

// gram ((t+1) x (t+1), float64, zeroed by the caller) += the upper triangle of
// the Gram matrix of the rows [G; g] (G: t x P, g: P, float32), one pass over G.
cudaError_t gem_gram(const float* G, const float* g, int64_t t, int64_t P, double* gram,
                     cudaStream_t stream);

// out = g + G^T v (v: t, float64), one pass over G.
cudaError_t gem_apply(const float* G, const float* g, const double* v, int64_t t, int64_t P,
                      float* out, cudaStream_t stream);

// C (O x I) += op(D)^T op(A), D: B x O, A: B x I; op 0 = square, 1 = abs.
cudaError_t accumulate_outer(const float* D, const float* A, int64_t B, int64_t O, int64_t I,
                             float* C, int op, cudaStream_t stream);

// out (K) += sum_b op(X[b]), X: B x K; op 0 = square, 1 = abs.
cudaError_t accumulate_rows(const float* X, int64_t B, int64_t K, float* out, int op,
                            cudaStream_t stream);

}  // namespace skcl::cuda
