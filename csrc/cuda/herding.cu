// Herding exemplar selection of iCaRL (Rebuffi et al., CVPR 2017) on the device.
//
// Same rule and bookkeeping as csrc/herding.hpp: rows are ranked by
//   score_i = ||f_i||^2 - 2 k (mu . f_i) + 2 (S . f_i),
// with ||f_i||^2 and mu . f_i computed once and S . f_i updated by one product
// F f_j per pick, all in float64 from exact products of the float32 inputs.
// A pick is one kernel launch: every block ranks its rows, and the last block to
// finish reduces the blocks' winners (lowest index on ties) and records the
// pick on the device, so the m picks run without a host round trip.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels.cuh"

namespace skcl::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxBlocks = 1024;
constexpr int kMeanSlices = 64;

struct Workspace {
    double* mu_part;          // kMeanSlices x d partial column sums
    double* mu;               // d
    double* norm2;            // n
    double* f_mu;             // n
    double* s_f;              // n
    double* part_score;       // kMaxBlocks
    long long* part_index;    // kMaxBlocks
    unsigned char* taken;     // n
    unsigned int* counter;    // blocks done with the current pick
    int* nonfinite;           // set when F holds NaN or infinity
};

// Carves `base` into the workspace (base may be null to measure); returns its size.
size_t layout(void* base, int64_t n, int64_t d, Workspace* ws) {
    char* p = static_cast<char*>(base);
    size_t off = 0;
    auto take = [&](size_t bytes) {
        void* q = p != nullptr ? p + off : nullptr;
        off += (bytes + 255) / 256 * 256;
        return q;
    };
    const size_t nn = static_cast<size_t>(n), dd = static_cast<size_t>(d);
    ws->mu_part = static_cast<double*>(take(sizeof(double) * kMeanSlices * dd));
    ws->mu = static_cast<double*>(take(sizeof(double) * dd));
    ws->norm2 = static_cast<double*>(take(sizeof(double) * nn));
    ws->f_mu = static_cast<double*>(take(sizeof(double) * nn));
    ws->s_f = static_cast<double*>(take(sizeof(double) * nn));
    ws->part_score = static_cast<double*>(take(sizeof(double) * kMaxBlocks));
    ws->part_index = static_cast<long long*>(take(sizeof(long long) * kMaxBlocks));
    ws->taken = static_cast<unsigned char*>(take(nn));
    ws->counter = static_cast<unsigned int*>(take(sizeof(unsigned int)));
    ws->nonfinite = static_cast<int*>(take(sizeof(int)));
    return off;
}

__device__ inline double warp_sum(double x) {
    for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
    return x;
}

// Whether candidate (s, i) ranks before (s2, i2); index -1 is "no candidate".
__device__ inline bool better(double s, long long i, double s2, long long i2) {
    if (i < 0) return false;
    if (i2 < 0) return true;
    return s < s2 || (s == s2 && i < i2);
}

__device__ inline void warp_argmin(double& s, long long& i) {
    for (int off = 16; off > 0; off >>= 1) {
        const double s2 = __shfl_down_sync(0xffffffffu, s, off);
        const long long i2 = __shfl_down_sync(0xffffffffu, i, off);
        if (better(s2, i2, s, i)) {
            s = s2;
            i = i2;
        }
    }
}

// Partial column sums over slice blockIdx.y of the rows.
__global__ void column_partials(const float* F, int64_t n, int64_t d, int64_t rows_per_slice,
                                double* mu_part) {
    const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    if (c >= d) return;
    const int64_t r0 = blockIdx.y * rows_per_slice;
    const int64_t r1 = r0 + rows_per_slice < n ? r0 + rows_per_slice : n;
    double s = 0.0;
    for (int64_t r = r0; r < r1; ++r) s += F[r * d + c];
    mu_part[blockIdx.y * d + c] = s;
}

// mu = (sum of the slices, in order) / n: deterministic.
__global__ void column_means(const double* mu_part, int64_t n, int64_t d, int slices, double* mu) {
    const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    if (c >= d) return;
    double s = 0.0;
    for (int y = 0; y < slices; ++y) s += mu_part[y * d + c];
    mu[c] = s / static_cast<double>(n);
}

// One warp per row: ||f_i||^2 and f_i . mu; resets the running state.
__global__ void row_stats(const float* F, int64_t n, int64_t d, Workspace ws) {
    const int lane = threadIdx.x % 32;
    const int64_t n_warps = static_cast<int64_t>(gridDim.x) * blockDim.x / 32;
    for (int64_t i = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; i < n;
         i += n_warps) {
        double nn = 0.0, fm = 0.0;
        for (int64_t c = lane; c < d; c += 32) {
            const double f = F[i * d + c];
            nn += f * f;
            fm += f * ws.mu[c];
        }
        nn = warp_sum(nn);
        fm = warp_sum(fm);
        if (lane == 0) {
            ws.norm2[i] = nn;
            ws.f_mu[i] = fm;
            ws.s_f[i] = 0.0;
            ws.taken[i] = 0;
            if (!isfinite(nn) || !isfinite(fm)) *ws.nonfinite = 1;
        }
    }
}

template <bool kVec4>
__device__ inline double row_dot(const float* x, const float* y, int64_t d, int lane) {
    double s = 0.0;
    if (kVec4) {
        const float4* x4 = reinterpret_cast<const float4*>(x);
        const float4* y4 = reinterpret_cast<const float4*>(y);
        for (int64_t c = lane; c < d / 4; c += 32) {
            const float4 a = x4[c], b = __ldg(y4 + c);
            s += static_cast<double>(a.x) * b.x + static_cast<double>(a.y) * b.y +
                 static_cast<double>(a.z) * b.z + static_cast<double>(a.w) * b.w;
        }
    } else {
        for (int64_t c = lane; c < d; c += 32) s += static_cast<double>(x[c]) * __ldg(y + c);
    }
    return warp_sum(s);
}

// Pick k (1-based): fold the previous pick into S . f_i, rank the rows, and let
// the last block record the winner.
template <bool kVec4>
__global__ void __launch_bounds__(kThreads) pick(const float* F, int64_t n, int64_t d, int64_t k,
                                                 int64_t* out, Workspace ws) {
    if (*ws.nonfinite) return;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const long long j = k > 1 ? out[k - 2] : -1;
    const float* f_j = j >= 0 ? F + j * d : nullptr;
    const double two_k = 2.0 * static_cast<double>(k);
    double best_s = 0.0;
    long long best_i = -1;
    const int64_t n_warps = static_cast<int64_t>(gridDim.x) * kWarps;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(kWarps) + warp; i < n; i += n_warps) {
        if (ws.taken[i]) continue;
        double s_f = ws.s_f[i];
        if (f_j != nullptr) {
            s_f += row_dot<kVec4>(F + i * d, f_j, d, lane);
            if (lane == 0) ws.s_f[i] = s_f;
        }
        const double score = ws.norm2[i] - two_k * ws.f_mu[i] + 2.0 * s_f;
        if (better(score, i, best_s, best_i)) {
            best_s = score;
            best_i = i;
        }
    }
    __shared__ double sh_s[kWarps];
    __shared__ long long sh_i[kWarps];
    __shared__ bool last;
    if (lane == 0) {
        sh_s[warp] = best_s;
        sh_i[warp] = best_i;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < kWarps; ++w) {
            if (better(sh_s[w], sh_i[w], best_s, best_i)) {
                best_s = sh_s[w];
                best_i = sh_i[w];
            }
        }
        ws.part_score[blockIdx.x] = best_s;
        ws.part_index[blockIdx.x] = best_i;
        __threadfence();
        last = atomicAdd(ws.counter, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last || warp != 0) return;
    __threadfence();
    double s = 0.0;
    long long i = -1;
    const volatile double* part_score = ws.part_score;
    const volatile long long* part_index = ws.part_index;
    for (unsigned int b = lane; b < gridDim.x; b += 32) {
        if (better(part_score[b], part_index[b], s, i)) {
            s = part_score[b];
            i = part_index[b];
        }
    }
    warp_argmin(s, i);
    if (lane == 0) {
        out[k - 1] = i;
        if (i >= 0) ws.taken[i] = 1;
        *ws.counter = 0;
    }
}

int multiprocessors() {
    int device = 0, sms = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return 1;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
        return 1;
    }
    return sms > 0 ? sms : 1;
}

}  // namespace

size_t herding_workspace_bytes(int64_t n, int64_t d) {
    Workspace ws;
    return layout(nullptr, n, d, &ws);
}

cudaError_t herding(const float* F, int64_t n, int64_t d, int64_t m, int64_t* out,
                    void* workspace, size_t workspace_bytes, bool* finite, cudaStream_t stream) {
    *finite = true;
    if (m == 0 || n == 0) return cudaSuccess;
    Workspace ws;
    if (layout(workspace, n, d, &ws) > workspace_bytes) return cudaErrorInvalidValue;
    cudaError_t err = cudaMemsetAsync(ws.counter, 0, sizeof(unsigned int), stream);
    if (err == cudaSuccess) err = cudaMemsetAsync(ws.nonfinite, 0, sizeof(int), stream);
    if (err != cudaSuccess) return err;

    if (d > 0) {
        const int slices = n < kMeanSlices ? static_cast<int>(n) : kMeanSlices;
        const int64_t rows_per_slice = (n + slices - 1) / slices;
        const dim3 grid(static_cast<unsigned int>((d + kThreads - 1) / kThreads), slices);
        column_partials<<<grid, kThreads, 0, stream>>>(F, n, d, rows_per_slice, ws.mu_part);
        column_means<<<grid.x, kThreads, 0, stream>>>(ws.mu_part, n, d, slices, ws.mu);
    }
    const int64_t row_blocks = (n + kWarps - 1) / kWarps;
    const int sms = multiprocessors();
    int64_t blocks = 4 * static_cast<int64_t>(sms);
    if (blocks > kMaxBlocks) blocks = kMaxBlocks;
    if (blocks > row_blocks) blocks = row_blocks;
    const unsigned int grid = static_cast<unsigned int>(blocks);
    row_stats<<<grid, kThreads, 0, stream>>>(F, n, d, ws);
    const bool vec4 = d % 4 == 0 && reinterpret_cast<uintptr_t>(F) % 16 == 0;
    for (int64_t k = 1; k <= m; ++k) {
        if (vec4) {
            pick<true><<<grid, kThreads, 0, stream>>>(F, n, d, k, out, ws);
        } else {
            pick<false><<<grid, kThreads, 0, stream>>>(F, n, d, k, out, ws);
        }
    }
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    int flag = 0;
    err = cudaMemcpyAsync(&flag, ws.nonfinite, sizeof(int), cudaMemcpyDeviceToHost, stream);
    if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
    *finite = flag == 0;
    return err;
}

}  // namespace skcl::cuda
