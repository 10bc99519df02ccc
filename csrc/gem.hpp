// Gradient projection of GEM (Lopez-Paz & Ranzato, NeurIPS 2017, Sec. 3).
//
// With G (t x P) holding one memory gradient per previous task and g the
// current gradient, GEM solves the dual quadratic program
//     min_v  1/2 v^T (G G^T + eps I) v + (G g)^T v   subject to  v >= margin
// and updates with g' = G^T v + g. Three steps:
//   gem_gram     one pass over G and g gives the upper triangle of the Gram
//                matrix of the t + 1 rows [G; g], i.e. G G^T, G g and g . g;
//   gem_solve_dual  the t x t program, solved by an active-set method;
//   gem_apply    one pass over G gives g' = g + G^T v.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "simd.hpp"

namespace skcl {

namespace gem_detail {

constexpr int kRowBlock = 4;

// acc[a][b] += <x_a, y_b> over columns [c0, c1), c1 - c0 a multiple of kVF;
// float32 lanes within the range, float64 across ranges.
template <int A, int B>
void gram_tile(const float* const* x, const float* const* y, int64_t c0, int64_t c1,
               double* acc, int64_t ld) {
    vfloat s[A][B] = {};
    for (int64_t c = c0; c < c1; c += kVF) {
        vfloat xv[A], yv[B];
        for (int a = 0; a < A; ++a) {
            xv[a] = vload(x[a] + c);
            pin_register(xv[a]);
        }
        for (int b = 0; b < B; ++b) {
            yv[b] = vload(y[b] + c);
            pin_register(yv[b]);
        }
        for (int a = 0; a < A; ++a)
            for (int b = 0; b < B; ++b) s[a][b] += xv[a] * yv[b];
    }
    for (int a = 0; a < A; ++a)
        for (int b = 0; b < B; ++b) acc[a * ld + b] += hsum_double(s[a][b]);
}

// The upper triangle (a <= b) of a diagonal tile: x's rows with themselves.
template <int A>
void gram_diag(const float* const* x, int64_t c0, int64_t c1, int64_t ahead, double* acc,
               int64_t ld) {
    vfloat s[A][A] = {};
    for (int64_t c = c0; c < c1; c += kVF) {
        if (c - c0 < ahead) {
            for (int a = 0; a < A; ++a) __builtin_prefetch(x[a] + c + (c1 - c0), 0, 2);
        }
        vfloat xv[A];
        for (int a = 0; a < A; ++a) {
            xv[a] = vload(x[a] + c);
            pin_register(xv[a]);
        }
        for (int a = 0; a < A; ++a)
            for (int b = a; b < A; ++b) s[a][b] += xv[a] * xv[b];
    }
    for (int a = 0; a < A; ++a)
        for (int b = a; b < A; ++b) acc[a * ld + b] += hsum_double(s[a][b]);
}

// A diagonal tile also prefetches its rows' next `ahead` columns, so every row
// of the next chunk is on its way to cache while this chunk is computed.
inline void gram_diag_any(int rows, const float* const* x, int64_t c0, int64_t c1, int64_t ahead,
                          double* acc, int64_t ld) {
    switch (rows) {
        case 1: gram_diag<1>(x, c0, c1, ahead, acc, ld); break;
        case 2: gram_diag<2>(x, c0, c1, ahead, acc, ld); break;
        case 3: gram_diag<3>(x, c0, c1, ahead, acc, ld); break;
        default: gram_diag<4>(x, c0, c1, ahead, acc, ld); break;
    }
}

// Off-diagonal tiles: the first row block is always full.
inline void gram_tile_any(int b_rows, const float* const* x, const float* const* y, int64_t c0,
                          int64_t c1, double* acc, int64_t ld) {
    switch (b_rows) {
        case 1: gram_tile<4, 1>(x, y, c0, c1, acc, ld); break;
        case 2: gram_tile<4, 2>(x, y, c0, c1, acc, ld); break;
        case 3: gram_tile<4, 3>(x, y, c0, c1, acc, ld); break;
        default: gram_tile<4, 4>(x, y, c0, c1, acc, ld); break;
    }
}

}  // namespace gem_detail

// gram ((t+1) x (t+1), row-major, float64) receives the full symmetric Gram
// matrix of the rows G_0 .. G_{t-1}, g: gram[k][t] = (G g)_k, gram[t][t] = g . g.
// Each column is read once; only the upper triangle is computed.
inline void gem_gram(const float* G, const float* g, int64_t t, int64_t P, double* gram) {
    using namespace gem_detail;
    const int64_t r = t + 1;
    std::vector<const float*> rows(r);
    for (int64_t k = 0; k < t; ++k) rows[k] = G + k * P;
    rows[t] = g;
    const int64_t n_blocks = (r + kRowBlock - 1) / kRowBlock;
    // Columns per chunk: the chunk of all r rows stays in L2 while every tile reads it.
    int64_t chunk = (512 * 1024) / (4 * r);
    chunk = std::max<int64_t>(8 * kVF, std::min<int64_t>(8192, chunk)) / kVF * kVF;
    const int64_t P_vec = P / kVF * kVF;

    // Chunks are grouped into runs handed to threads on demand (a thread that
    // gets descheduled does not hold up the others), each run summing into its
    // own partial Gram matrix; the runs are added in order, so the result does
    // not depend on which thread took which run.
    const int64_t n_chunks = (P_vec + chunk - 1) / chunk;
    const bool parallel = r * r * P >= 2 * kParallelWork && num_threads() > 1;
    const int64_t n_runs =
        std::max<int64_t>(1, std::min<int64_t>(n_chunks, parallel ? 8 * num_threads() : 1));
    std::vector<double> partial(static_cast<size_t>(n_runs) * r * r, 0.0);
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
    for (int64_t run = 0; run < n_runs; ++run) {
        double* acc = partial.data() + static_cast<size_t>(run) * r * r;
        const int64_t k1 = n_chunks * (run + 1) / n_runs;
        for (int64_t k = n_chunks * run / n_runs; k < k1; ++k) {
            const int64_t c0 = k * chunk, c1 = std::min(P_vec, c0 + chunk);
            // Columns of the run's next chunk, prefetched while this one is computed.
            const int64_t ahead = k + 1 < k1 ? std::min(chunk, P_vec - c1) : 0;
            for (int64_t bi = 0; bi < n_blocks; ++bi) {
                const int64_t i0 = bi * kRowBlock;
                const int a_rows = static_cast<int>(std::min<int64_t>(kRowBlock, r - i0));
                gram_diag_any(a_rows, rows.data() + i0, c0, c1, ahead, acc + i0 * r + i0, r);
                for (int64_t bj = bi + 1; bj < n_blocks; ++bj) {
                    const int64_t j0 = bj * kRowBlock;
                    const int b_rows = static_cast<int>(std::min<int64_t>(kRowBlock, r - j0));
                    gram_tile_any(b_rows, rows.data() + i0, rows.data() + j0, c0, c1,
                                  acc + i0 * r + j0, r);
                }
            }
        }
    }
    std::fill(gram, gram + r * r, 0.0);
    for (int64_t run = 0; run < n_runs; ++run) {
        const double* acc = partial.data() + static_cast<size_t>(run) * r * r;
        for (int64_t i = 0; i < r * r; ++i) gram[i] += acc[i];
    }
    for (int64_t i = 0; i < r; ++i) {
        for (int64_t j = i; j < r; ++j) {
            double s = gram[i * r + j];
            for (int64_t c = P_vec; c < P; ++c) s += static_cast<double>(rows[i][c]) * rows[j][c];
            gram[i * r + j] = s;
            gram[j * r + i] = s;
        }
    }
}

// out = g + G^T v, one pass over G: a chunk of out stays in L1 while G's rows
// are added into it four at a time.
inline void gem_apply(const float* G, const float* g, const double* v, int64_t t, int64_t P,
                      float* out) {
    constexpr int64_t chunk = 2048;
    std::vector<float> v32(v, v + t);
    const int64_t P_vec = P / kVF * kVF;
#pragma omp parallel for schedule(dynamic, 8) if ((t + 1) * P >= kParallelWork)
    for (int64_t c0 = 0; c0 < P_vec; c0 += chunk) {
        const int64_t c1 = std::min(P_vec, c0 + chunk);
        std::copy(g + c0, g + c1, out + c0);
        int64_t k = 0;
        for (; k + 4 <= t; k += 4) {
            const float* r0 = G + k * P;
            const vfloat v0 = vbroadcast(v32[k]), v1 = vbroadcast(v32[k + 1]);
            const vfloat v2 = vbroadcast(v32[k + 2]), v3 = vbroadcast(v32[k + 3]);
            for (int64_t c = c0; c < c1; c += kVF) {
                vstore(out + c, vload(out + c) + v0 * vload(r0 + c) + v1 * vload(r0 + P + c) +
                                    v2 * vload(r0 + 2 * P + c) + v3 * vload(r0 + 3 * P + c));
            }
        }
        for (; k < t; ++k) {
            const float* r0 = G + k * P;
            const vfloat v0 = vbroadcast(v32[k]);
            for (int64_t c = c0; c < c1; c += kVF) {
                vstore(out + c, vload(out + c) + v0 * vload(r0 + c));
            }
        }
    }
    for (int64_t c = P_vec; c < P; ++c) {
        float s = g[c];
        for (int64_t k = 0; k < t; ++k) s += v32[k] * G[k * P + c];
        out[c] = s;
    }
}

// Solves min_v 1/2 v^T (Q + eps I) v + p^T v  s.t.  v >= margin, Q = G G^T and
// p = G g read from the (t+1) x (t+1) Gram matrix of gem_gram. With v = margin + u
// it is the non-negative problem min_u 1/2 u^T H u + c^T u, u >= 0, H = Q + eps I,
// c = p + margin H 1, solved by the Lawson-Hanson active-set method: free
// variables are added one at a time by largest descent, the free subproblem
// H_FF u_F = -c_F is solved through a Cholesky factor grown by one row per
// addition, and a step that would leave the feasible set stops at its boundary
// and frees the variable there. Throws std::domain_error when H is not
// positive definite on the free set and std::runtime_error when the iteration
// limit is hit.
inline std::vector<double> gem_solve_dual(const double* gram, int64_t t, double margin,
                                          double eps) {
    const int64_t r = t + 1;
    std::vector<double> H(t * t), c(t);
    double scale = 0.0;
    for (int64_t i = 0; i < t; ++i) {
        for (int64_t j = 0; j < t; ++j) H[i * t + j] = gram[i * r + j] + (i == j ? eps : 0.0);
        scale = std::max(scale, H[i * t + i]);
    }
    for (int64_t i = 0; i < t; ++i) {
        double s = gram[i * r + t];
        for (int64_t j = 0; j < t; ++j) s += margin * H[i * t + j];
        c[i] = s;
        scale = std::max(scale, std::abs(s));
    }
    const double tol = 1e-13 * static_cast<double>(std::max<int64_t>(t, 1)) * scale;

    std::vector<double> u(t, 0.0), z(t), w(t), L, y;
    std::vector<int64_t> F;
    std::vector<char> is_free(t, 0), blocked(t, 0);

    // Cholesky factor of H_FF (F in order), lower triangle, row stride t.
    L.assign(t * t, 0.0);
    auto append = [&](int64_t j) -> bool {
        const int64_t f = static_cast<int64_t>(F.size());
        double d = H[j * t + j];
        for (int64_t a = 0; a < f; ++a) {
            double s = H[F[a] * t + j];
            for (int64_t b = 0; b < a; ++b) s -= L[a * t + b] * L[f * t + b];
            L[f * t + a] = s / L[a * t + a];
            d -= L[f * t + a] * L[f * t + a];
        }
        if (!(d > 1e-12 * H[j * t + j]) || !(d > 0.0)) return false;
        L[f * t + f] = std::sqrt(d);
        F.push_back(j);
        is_free[j] = 1;
        return true;
    };
    // Drops the bound variables from F: rows of L before the first dropped one
    // stay valid, the free variables after it are appended again.
    auto refactor = [&]() {
        size_t p = 0;
        while (p < F.size() && is_free[F[p]]) ++p;
        std::vector<int64_t> keep;
        for (size_t q = p; q < F.size(); ++q)
            if (is_free[F[q]]) keep.push_back(F[q]);
        F.resize(p);
        for (int64_t j : keep) {
            is_free[j] = 0;
            if (!append(j)) throw std::domain_error("GEM dual: G G^T + eps I is singular");
        }
    };
    // z_F = -H_FF^{-1} c_F, z = 0 elsewhere.
    auto solve_free = [&]() {
        const int64_t f = static_cast<int64_t>(F.size());
        y.assign(f, 0.0);
        for (int64_t a = 0; a < f; ++a) {
            double s = -c[F[a]];
            for (int64_t b = 0; b < a; ++b) s -= L[a * t + b] * y[b];
            y[a] = s / L[a * t + a];
        }
        for (int64_t a = f - 1; a >= 0; --a) {
            double s = y[a];
            for (int64_t b = a + 1; b < f; ++b) s -= L[b * t + a] * y[b];
            y[a] = s / L[a * t + a];
        }
        std::fill(z.begin(), z.end(), 0.0);
        for (int64_t a = 0; a < f; ++a) z[F[a]] = y[a];
    };

    const int64_t max_iter = 10 * t + 100;
    int64_t iter = 0;
    std::fill(blocked.begin(), blocked.end(), 0);
    while (true) {
        // w = -(H u + c): the descent direction of the objective.
        for (int64_t i = 0; i < t; ++i) {
            double s = c[i];
            for (int64_t j : F) s += H[i * t + j] * u[j];
            w[i] = -s;
        }
        int64_t enter = -1;
        for (int64_t i = 0; i < t; ++i) {
            if (is_free[i] || blocked[i] || !(w[i] > tol)) continue;
            if (enter < 0 || w[i] > w[enter]) enter = i;
        }
        if (enter < 0) break;
        if (++iter > max_iter) throw std::runtime_error("GEM dual: active-set iteration limit hit");
        if (!append(enter)) {
            blocked[enter] = 1;
            continue;
        }
        while (true) {
            solve_free();
            if (z[enter] <= 0.0 && u[enter] == 0.0 && F.back() == enter) {
                // Rounding made the entering direction useless: keep it bound.
                F.pop_back();
                is_free[enter] = 0;
                blocked[enter] = 1;
                break;
            }
            double alpha = 1.0;
            int64_t j_hit = -1;
            for (int64_t j : F) {
                if (z[j] > 0.0) continue;
                const double a = u[j] / (u[j] - z[j]);
                if (j_hit < 0 || a < alpha) {
                    alpha = a;
                    j_hit = j;
                }
            }
            if (j_hit < 0) {
                for (int64_t j : F) u[j] = z[j];
                std::fill(blocked.begin(), blocked.end(), 0);
                break;
            }
            // Step to the boundary of u >= 0 and bind the variables that reach it.
            double u_max = 0.0;
            for (int64_t j : F) {
                u[j] += alpha * (z[j] - u[j]);
                u_max = std::max(u_max, u[j]);
            }
            u[j_hit] = 0.0;
            for (int64_t j : F) {
                if (u[j] <= 1e-15 * u_max) {
                    u[j] = 0.0;
                    is_free[j] = 0;
                }
            }
            refactor();
            if (F.empty()) break;
            if (++iter > max_iter)
                throw std::runtime_error("GEM dual: active-set iteration limit hit");
        }
    }
    std::vector<double> v(t);
    for (int64_t i = 0; i < t; ++i) v[i] = margin + (is_free[i] ? u[i] : 0.0);
    return v;
}

}  // namespace skcl
