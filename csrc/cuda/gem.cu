// GEM's two passes over the memory gradients (Lopez-Paz & Ranzato, NeurIPS 2017)
// on the device; the t x t dual QP between them is solved on the host
// (csrc/gem.hpp) from the (t+1) x (t+1) Gram matrix, one small copy each way.
//
// gram_kernel: the rows [G; g] are staged chunk by chunk in shared memory; the
// upper triangle of their Gram matrix is cut into 4 x 4 tiles of row blocks,
// one tile per warp (blockIdx.y picks a group of tiles when there are more
// tiles than warps). Lanes take columns and accumulate in float32 over at most
// kChunksPerBlock chunks (a few hundred products per lane); the lane sums are
// added in float64 and go to the global Gram matrix by atomicAdd.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels.cuh"

namespace skcl::cuda {
namespace {

constexpr int kRowBlock = 4;
constexpr int kMaxWarps = 32;
constexpr int kChunksPerBlock = 16;

__device__ inline double warp_sum(double x) {
    for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
    return x;
}

// Tile `id` of the upper triangle of an nb x nb grid of row blocks, row by row.
__device__ inline void tile_coords(int id, int nb, int* bi, int* bj) {
    int b = 0;
    while (id >= nb - b) {
        id -= nb - b;
        ++b;
    }
    *bi = b;
    *bj = b + id;
}

__global__ void __launch_bounds__(kMaxWarps * 32)
    gram_kernel(const float* G, const float* g, int64_t t, int64_t P, int rows_pad, int n_tiles,
                int chunk, double* gram) {
    extern __shared__ float rows[];  // rows_pad x chunk
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int tile = blockIdx.y * (blockDim.x / 32) + warp;
    const bool active = tile < n_tiles;
    int bi = 0, bj = 0;
    if (active) tile_coords(tile, rows_pad / kRowBlock, &bi, &bj);
    const int64_t r = t + 1;
    float acc[kRowBlock][kRowBlock] = {};
    for (int64_t c0 = static_cast<int64_t>(blockIdx.x) * chunk; c0 < P;
         c0 += static_cast<int64_t>(gridDim.x) * chunk) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < rows_pad * chunk; idx += blockDim.x) {
            const int row = idx / chunk;
            const int64_t col = c0 + idx % chunk;
            float v = 0.0f;
            if (col < P && row < r) v = row < t ? G[row * P + col] : g[col];
            rows[idx] = v;
        }
        __syncthreads();
        if (!active) continue;
        const float* x = rows + bi * kRowBlock * chunk;
        const float* y = rows + bj * kRowBlock * chunk;
        for (int c = lane; c < chunk; c += 32) {
            float a[kRowBlock], b[kRowBlock];
#pragma unroll
            for (int q = 0; q < kRowBlock; ++q) {
                a[q] = x[q * chunk + c];
                b[q] = y[q * chunk + c];
            }
#pragma unroll
            for (int p = 0; p < kRowBlock; ++p)
#pragma unroll
                for (int q = 0; q < kRowBlock; ++q) acc[p][q] = fmaf(a[p], b[q], acc[p][q]);
        }
    }
    if (!active) return;
#pragma unroll
    for (int p = 0; p < kRowBlock; ++p) {
#pragma unroll
        for (int q = 0; q < kRowBlock; ++q) {
            const double s = warp_sum(static_cast<double>(acc[p][q]));
            const int64_t i = bi * kRowBlock + p, j = bj * kRowBlock + q;
            if (lane == 0 && i < r && j < r && (bi < bj || p <= q)) atomicAdd(gram + i * r + j, s);
        }
    }
}

__global__ void apply_kernel(const float* G, const float* g, const double* v, int64_t t, int64_t P,
                             float* out) {
    extern __shared__ float v32[];  // t
    for (int64_t k = threadIdx.x; k < t; k += blockDim.x) v32[k] = static_cast<float>(v[k]);
    __syncthreads();
    for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < P;
         c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        float s = g[c];
        for (int64_t k = 0; k < t; ++k) s = fmaf(v32[k], G[k * P + c], s);
        out[c] = s;
    }
}

struct DeviceLimits {
    int sms = 1;
    int smem_default = 48 * 1024;
    int smem_optin = 48 * 1024;
};

DeviceLimits device_limits() {
    DeviceLimits lim;
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return lim;
    cudaDeviceGetAttribute(&lim.sms, cudaDevAttrMultiProcessorCount, device);
    cudaDeviceGetAttribute(&lim.smem_default, cudaDevAttrMaxSharedMemoryPerBlock, device);
    cudaDeviceGetAttribute(&lim.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    if (lim.sms < 1) lim.sms = 1;
    if (lim.smem_optin < lim.smem_default) lim.smem_optin = lim.smem_default;
    return lim;
}

}  // namespace

cudaError_t gem_gram(const float* G, const float* g, int64_t t, int64_t P, double* gram,
                     cudaStream_t stream) {
    if (P == 0) return cudaSuccess;
    const DeviceLimits lim = device_limits();
    const int64_t r = t + 1;
    const int64_t rows_pad = (r + kRowBlock - 1) / kRowBlock * kRowBlock;
    const int64_t nb = rows_pad / kRowBlock;
    const int64_t n_tiles = nb * (nb + 1) / 2;
    int chunk = 256;
    while (chunk > 32 && rows_pad * chunk * 4 > lim.smem_default) chunk /= 2;
    const size_t smem = static_cast<size_t>(rows_pad) * chunk * sizeof(float);
    if (smem > static_cast<size_t>(lim.smem_optin) || n_tiles > (1 << 30)) {
        return cudaErrorInvalidValue;
    }
    if (smem > static_cast<size_t>(lim.smem_default)) {
        const cudaError_t err = cudaFuncSetAttribute(
            gram_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
        if (err != cudaSuccess) return err;
    }
    const int warps = static_cast<int>(n_tiles < kMaxWarps ? n_tiles : kMaxWarps);
    const int64_t groups = (n_tiles + warps - 1) / warps;
    if (groups > 65535) return cudaErrorInvalidValue;
    const int64_t chunks = (P + chunk - 1) / chunk;
    int64_t slices = (4 * static_cast<int64_t>(lim.sms) + groups - 1) / groups;
    const int64_t min_slices = (chunks + kChunksPerBlock - 1) / kChunksPerBlock;
    if (slices < min_slices) slices = min_slices;
    if (slices > chunks) slices = chunks;
    if (slices > 2147483647) return cudaErrorInvalidValue;
    const dim3 grid(static_cast<unsigned int>(slices), static_cast<unsigned int>(groups));
    gram_kernel<<<grid, warps * 32, smem, stream>>>(G, g, t, P, static_cast<int>(rows_pad),
                                                    static_cast<int>(n_tiles), chunk, gram);
    return cudaGetLastError();
}

cudaError_t gem_apply(const float* G, const float* g, const double* v, int64_t t, int64_t P,
                      float* out, cudaStream_t stream) {
    if (P == 0) return cudaSuccess;
    const DeviceLimits lim = device_limits();
    const size_t smem = static_cast<size_t>(t) * sizeof(float);
    if (smem > static_cast<size_t>(lim.smem_default)) return cudaErrorInvalidValue;
    const int threads = 256;
    int64_t blocks = (P + threads - 1) / threads;
    if (blocks > 8 * static_cast<int64_t>(lim.sms)) blocks = 8 * static_cast<int64_t>(lim.sms);
    apply_kernel<<<static_cast<unsigned int>(blocks), threads, smem, stream>>>(G, g, v, t, P, out);
    return cudaGetLastError();
}

}  // namespace skcl::cuda
