// Per-sample importance accumulation (EWC Fisher, MAS) on the device; the
// device twin of csrc/fisher.hpp.
//
// outer_kernel: C (O x I) += op(D)^T op(A) over the batch, a tiled product
// whose operands are raised by op (square or abs) as they are staged into
// shared memory, so no squared copy is ever written. Each 256-thread block owns
// a 64 x 64 tile of C and walks the whole batch, each thread a 4 x 4 sub-tile.
// rows_kernel: out (K) += sum_b op(X[b]), one thread per column.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels.cuh"

namespace skcl::cuda {
namespace {

constexpr int kTile = 64;
constexpr int kDepth = 16;
constexpr int kSub = 4;
constexpr int kThreads = (kTile / kSub) * (kTile / kSub);

template <int Op>
__device__ inline float apply(float x) {
    return Op == 0 ? x * x : fabsf(x);
}

template <int Op>
__global__ void __launch_bounds__(kThreads) outer_kernel(const float* D, const float* A, int64_t B,
                                                         int64_t O, int64_t I, float* C) {
    __shared__ float Ds[kDepth][kTile];
    __shared__ float As[kDepth][kTile];
    const int tx = threadIdx.x % (kTile / kSub), ty = threadIdx.x / (kTile / kSub);
    const int64_t o0 = static_cast<int64_t>(blockIdx.y) * kTile;
    const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kTile;
    float acc[kSub][kSub] = {};
    for (int64_t k0 = 0; k0 < B; k0 += kDepth) {
        for (int idx = threadIdx.x; idx < kDepth * kTile; idx += kThreads) {
            const int kk = idx / kTile, x = idx % kTile;
            const int64_t b = k0 + kk;
            Ds[kk][x] = (b < B && o0 + x < O) ? apply<Op>(D[b * O + o0 + x]) : 0.0f;
            As[kk][x] = (b < B && i0 + x < I) ? apply<Op>(A[b * I + i0 + x]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < kDepth; ++kk) {
            float d[kSub], a[kSub];
#pragma unroll
            for (int s = 0; s < kSub; ++s) {
                d[s] = Ds[kk][ty * kSub + s];
                a[s] = As[kk][tx * kSub + s];
            }
#pragma unroll
            for (int p = 0; p < kSub; ++p)
#pragma unroll
                for (int q = 0; q < kSub; ++q) acc[p][q] = fmaf(d[p], a[q], acc[p][q]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int p = 0; p < kSub; ++p) {
        const int64_t o = o0 + ty * kSub + p;
        if (o >= O) continue;
#pragma unroll
        for (int q = 0; q < kSub; ++q) {
            const int64_t i = i0 + tx * kSub + q;
            if (i < I) C[o * I + i] += acc[p][q];
        }
    }
}

template <int Op>
__global__ void rows_kernel(const float* X, int64_t B, int64_t K, float* out) {
    for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < K;
         c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        float s = 0.0f;
        for (int64_t b = 0; b < B; ++b) s += apply<Op>(X[b * K + c]);
        out[c] += s;
    }
}

}  // namespace

cudaError_t accumulate_outer(const float* D, const float* A, int64_t B, int64_t O, int64_t I,
                             float* C, int op, cudaStream_t stream) {
    if (B == 0 || O == 0 || I == 0) return cudaSuccess;
    const int64_t gx = (I + kTile - 1) / kTile, gy = (O + kTile - 1) / kTile;
    if (gx > 2147483647 || gy > 65535) return cudaErrorInvalidValue;
    const dim3 grid(static_cast<unsigned int>(gx), static_cast<unsigned int>(gy));
    if (op == 0) {
        outer_kernel<0><<<grid, kThreads, 0, stream>>>(D, A, B, O, I, C);
    } else {
        outer_kernel<1><<<grid, kThreads, 0, stream>>>(D, A, B, O, I, C);
    }
    return cudaGetLastError();
}

cudaError_t accumulate_rows(const float* X, int64_t B, int64_t K, float* out, int op,
                            cudaStream_t stream) {
    if (K == 0) return cudaSuccess;
    const int threads = 256;
    int64_t blocks = (K + threads - 1) / threads;
    if (blocks > 65535) blocks = 65535;
    if (op == 0) {
        rows_kernel<0><<<static_cast<unsigned int>(blocks), threads, 0, stream>>>(X, B, K, out);
    } else {
        rows_kernel<1><<<static_cast<unsigned int>(blocks), threads, 0, stream>>>(X, B, K, out);
    }
    return cudaGetLastError();
}

}  // namespace skcl::cuda
