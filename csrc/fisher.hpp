// Per-sample importance accumulation for EWC (Kirkpatrick et al., PNAS 2017)
// and MAS (Aljundi et al., ECCV 2018).
//
// For a linear layer z_b = W a_b + bias, sample b's gradient of its own loss is
// the outer product delta_b a_b^T (delta_b = dloss_b / dz_b), so for an
// element-wise op with op(x y) = op(x) op(y) (square: the EWC Fisher; abs: MAS)
//     sum_b op(dW_b) = sum_b op(delta_b) op(a_b)^T = op(D)^T op(A),
// a matrix product over the batch. accumulate_outer adds it to C without
// materialising op(D) or op(A): the op is applied while the operands are packed
// into cache-sized panels, and a register-tiled micro-kernel does the product.
// accumulate_rows adds sum_b op(X_b) (biases, and per-sample gradients of any
// other layer).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "simd.hpp"

namespace skcl {

enum class ElementOp { Square, Abs };

namespace fisher_detail {

// Micro-tile: kMR rows of C (broadcast operand) by kNR columns (two vectors).
constexpr int kNV = 2;
constexpr int kNR = kNV * kVF;
constexpr int kMR = kVF >= 16 ? 12 : 6;
// Cache blocking: a kKC x kNR panel of op(A) stays in L1, kKC x kMC of op(D) in L2.
constexpr int64_t kKC = 256;
constexpr int64_t kMC = 4 * kMR;
constexpr int64_t kNC = 8 * kNR;

template <ElementOp op>
inline float apply(float x) {
    if constexpr (op == ElementOp::Square) {
        return x * x;
    } else {
        return std::fabs(x);
    }
}

// dst[k * width + x] = op(src[(k0 + k) * ld + x0 + x]), zero past n_valid columns.
template <ElementOp op>
void pack(const float* src, int64_t ld, int64_t k0, int64_t kc, int64_t x0, int64_t n_valid,
          int width, float* dst) {
    for (int64_t k = 0; k < kc; ++k) {
        const float* s = src + (k0 + k) * ld + x0;
        float* d = dst + k * width;
        int64_t x = 0;
        for (; x < n_valid; ++x) d[x] = apply<op>(s[x]);
        for (; x < width; ++x) d[x] = 0.0f;
    }
}

// C[r][x] += sum_k Dp[k][r] * Ap[k][x] for r < rows, x < cols.
inline void micro_kernel(const float* Dp, const float* Ap, int64_t kc, float* C, int64_t ldc,
                         int rows, int cols) {
    vfloat acc[kMR][kNV] = {};
    for (int64_t k = 0; k < kc; ++k) {
        const vfloat a0 = vload(Ap + k * kNR);
        const vfloat a1 = vload(Ap + k * kNR + kVF);
        const float* d = Dp + k * kMR;
        for (int r = 0; r < kMR; ++r) {
            const vfloat dr = vbroadcast(d[r]);
            acc[r][0] += dr * a0;
            acc[r][1] += dr * a1;
        }
    }
    if (rows == kMR && cols == kNR) {
        for (int r = 0; r < kMR; ++r) {
            float* c = C + r * ldc;
            vstore(c, vload(c) + acc[r][0]);
            vstore(c + kVF, vload(c + kVF) + acc[r][1]);
        }
        return;
    }
    float tile[kMR][kNR];
    for (int r = 0; r < kMR; ++r) {
        vstore(tile[r], acc[r][0]);
        vstore(tile[r] + kVF, acc[r][1]);
    }
    for (int r = 0; r < rows; ++r)
        for (int x = 0; x < cols; ++x) C[r * ldc + x] += tile[r][x];
}

template <ElementOp op>
void accumulate_outer(const float* D, const float* A, int64_t B, int64_t O, int64_t I, float* C) {
    const int64_t m_blocks = (O + kMC - 1) / kMC;
    const int64_t n_blocks = (I + kNC - 1) / kNC;
    // Packing buffers of every thread, allocated before the parallel region so
    // that no allocation (nor its exception) happens inside it.
    const bool parallel = B * O * I >= kParallelWork;
    const int64_t per_thread = kKC * kMC + kKC * kNC;
    std::vector<float> buffers(static_cast<size_t>(per_thread) * (parallel ? num_threads() : 1));
#pragma omp parallel if (parallel)
    {
        float* Dp = buffers.data() + static_cast<size_t>(per_thread) * thread_id();
        float* Ap = Dp + kKC * kMC;
#pragma omp for collapse(2) schedule(dynamic)
        for (int64_t mb = 0; mb < m_blocks; ++mb) {
            for (int64_t nb = 0; nb < n_blocks; ++nb) {
                const int64_t o0 = mb * kMC, mc = std::min(kMC, O - o0);
                const int64_t i0 = nb * kNC, nc = std::min(kNC, I - i0);
                for (int64_t k0 = 0; k0 < B; k0 += kKC) {
                    const int64_t kc = std::min(kKC, B - k0);
                    for (int64_t r0 = 0; r0 < mc; r0 += kMR)
                        pack<op>(D, O, k0, kc, o0 + r0, std::min<int64_t>(kMR, mc - r0), kMR,
                                 Dp + r0 * kKC);
                    for (int64_t x0 = 0; x0 < nc; x0 += kNR)
                        pack<op>(A, I, k0, kc, i0 + x0, std::min<int64_t>(kNR, nc - x0), kNR,
                                 Ap + x0 * kKC);
                    for (int64_t x0 = 0; x0 < nc; x0 += kNR) {
                        const int cols = static_cast<int>(std::min<int64_t>(kNR, nc - x0));
                        for (int64_t r0 = 0; r0 < mc; r0 += kMR) {
                            const int rows = static_cast<int>(std::min<int64_t>(kMR, mc - r0));
                            micro_kernel(Dp + r0 * kKC, Ap + x0 * kKC, kc,
                                         C + (o0 + r0) * I + i0 + x0, I, rows, cols);
                        }
                    }
                }
            }
        }
    }
}

template <ElementOp op>
void accumulate_rows(const float* X, int64_t B, int64_t K, float* out) {
    const int64_t chunk = 4096;
#pragma omp parallel for schedule(dynamic) if (B * K >= kParallelWork)
    for (int64_t c0 = 0; c0 < K; c0 += chunk) {
        const int64_t c1 = std::min(K, c0 + chunk);
        for (int64_t b = 0; b < B; ++b) {
            const float* x = X + b * K;
            for (int64_t c = c0; c < c1; ++c) out[c] += apply<op>(x[c]);
        }
    }
}

}  // namespace fisher_detail

// C (O x I) += op(D)^T op(A) with D (B x O), A (B x I), all row-major float32.
inline void accumulate_outer(ElementOp op, const float* D, const float* A, int64_t B, int64_t O,
                             int64_t I, float* C) {
    if (B == 0 || O == 0 || I == 0) return;
    if (op == ElementOp::Square) {
        fisher_detail::accumulate_outer<ElementOp::Square>(D, A, B, O, I, C);
    } else {
        fisher_detail::accumulate_outer<ElementOp::Abs>(D, A, B, O, I, C);
    }
}

// out (K) += sum_b op(X[b]) with X (B x K) row-major float32.
inline void accumulate_rows(ElementOp op, const float* X, int64_t B, int64_t K, float* out) {
    if (op == ElementOp::Square) {
        fisher_detail::accumulate_rows<ElementOp::Square>(X, B, K, out);
    } else {
        fisher_detail::accumulate_rows<ElementOp::Abs>(X, B, K, out);
    }
}

}  // namespace skcl
