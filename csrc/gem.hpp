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

// Largest t gem_gram and gem_solve_dual accept: the Gram matrix is then at most
// 128 MiB, the solver's two t x t matrices 256 MiB, and a solve at most O(t^3)
// operations (seconds). The bindings reject larger t with a ValueError.
constexpr int64_t kGemMaxTasks = 4096;
// Bytes of per-run partial Gram matrices gem_gram may allocate besides its output;
// past this the runs are fewer (run 0 sums straight into the output).
constexpr int64_t kGemScratchBytes = int64_t{256} << 20;

// gram ((t+1) x (t+1), row-major, float64) receives the full symmetric Gram
// matrix of the rows G_0 .. G_{t-1}, g: gram[k][t] = (G g)_k, gram[t][t] = g . g.
// Each column is read once; only the upper triangle is computed. Requires
// t <= kGemMaxTasks; scratch memory stays within kGemScratchBytes.
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
    // Run 0 sums into gram itself; the others into partial matrices, at most
    // kGemScratchBytes of them. Allocated here, before the parallel region.
    const int64_t max_partial = kGemScratchBytes / static_cast<int64_t>(sizeof(double) * r * r);
    const int64_t n_runs = std::max<int64_t>(
        1, std::min({n_chunks, parallel ? 8 * int64_t{num_threads()} : 1, 1 + max_partial}));
    std::fill(gram, gram + r * r, 0.0);
    std::vector<double> partial(static_cast<size_t>(n_runs - 1) * r * r, 0.0);
#pragma omp parallel for schedule(dynamic, 1) if (parallel && n_runs > 1)
    for (int64_t run = 0; run < n_runs; ++run) {
        double* acc = run == 0 ? gram : partial.data() + static_cast<size_t>(run - 1) * r * r;
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
    for (int64_t run = 1; run < n_runs; ++run) {
        const double* acc = partial.data() + static_cast<size_t>(run - 1) * r * r;
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

namespace gem_detail {

// Removes position p from the Cholesky factor L (f x f lower triangle, row
// stride ld) of H_FF: the rows below p lose row p's column by Givens rotations
// of adjacent columns, which keep L L^T and make L triangular again; O(f^2).
inline void cholesky_delete(std::vector<double>& L, int64_t ld, int64_t f, int64_t p) {
    for (int64_t row = p; row + 1 < f; ++row) {
        double* dst = L.data() + row * ld;
        const double* src = L.data() + (row + 1) * ld;
        std::copy(src, src + row + 2, dst);
    }
    for (int64_t j = p; j + 1 < f; ++j) {
        const double a = L[j * ld + j], b = L[j * ld + j + 1];
        const double h = std::hypot(a, b);
        const double c = a / h, s = b / h;
        for (int64_t row = j; row + 1 < f; ++row) {
            double* x = L.data() + row * ld;
            const double xa = x[j], xb = x[j + 1];
            x[j] = c * xa + s * xb;
            x[j + 1] = -s * xa + c * xb;
        }
        L[j * ld + j + 1] = 0.0;
    }
}

}  // namespace gem_detail

// Solves GEM's dual with a ridge relative to each row,
//     min_v 1/2 v^T (Q + eps diag(Q)) v + p^T v   s.t.   v >= margin,
// Q = G G^T and p = G g read from the (t+1) x (t+1) Gram matrix of gem_gram.
// The problem is solved in the variables w_k = n_k v_k (n_k = ||G_k||): with the
// rows normalised, H = D Q D + eps I (D = diag(1/n)) has a unit diagonal
// whatever the scale of each row, so rows whose norms span many orders of
// magnitude keep their constraints (G_k g' = lambda_k - eps n_k^2 v_k, a cosine
// violation of at most eps w_k / ||g'||). A zero row constrains nothing and
// keeps v_k = margin. With w = l + u, l_k = margin n_k, the non-negative problem
//     min_u 1/2 u^T H u + c^T u, u >= 0, c = D p + H l
// is solved by the Lawson-Hanson active-set method: free variables are added
// one at a time by largest descent, the free subproblem H_FF u_F = -c_F is
// solved through a Cholesky factor grown by one row per addition and shrunk by
// Givens rotations when a variable is bound again, so every step costs O(t^2)
// and the whole solve at most (10 t + 100) steps, O(t^3). Throws
// std::domain_error when H is not positive definite on the free set and
// std::runtime_error when the step limit is hit.
inline std::vector<double> gem_solve_dual(const double* gram, int64_t t, double margin,
                                          double eps) {
    const int64_t r = t + 1;
    std::vector<double> norm(t), v(t, margin);
    std::vector<int64_t> rows;  // the non-zero rows, solved for
    for (int64_t i = 0; i < t; ++i) {
        norm[i] = std::sqrt(std::max(gram[i * r + i], 0.0));
        if (norm[i] > 0.0) rows.push_back(i);
    }
    const int64_t n = static_cast<int64_t>(rows.size());
    std::vector<double> H(n * n), c(n), low(n);
    for (int64_t a = 0; a < n; ++a) {
        const int64_t i = rows[a];
        for (int64_t b = 0; b < n; ++b) {
            const int64_t j = rows[b];
            H[a * n + b] = (a == b ? 1.0 + eps : gram[i * r + j] / norm[i] / norm[j]);
        }
        low[a] = margin * norm[i];
    }
    double scale = 0.0;
    for (int64_t a = 0; a < n; ++a) {
        double s = gram[rows[a] * r + t] / norm[rows[a]];
        for (int64_t b = 0; b < n; ++b) s += H[a * n + b] * low[b];
        c[a] = s;
        scale = std::max(scale, std::abs(s));
    }
    const double tol = 1e-13 * static_cast<double>(std::max<int64_t>(n, 1)) * scale;

    std::vector<double> u(n, 0.0), z(n), w(n), L(n * n, 0.0), y;
    std::vector<int64_t> F;
    std::vector<char> is_free(n, 0), blocked(n, 0);

    // Cholesky factor of H_FF (F in order), lower triangle, row stride n.
    auto append = [&](int64_t j) -> bool {
        const int64_t f = static_cast<int64_t>(F.size());
        double d = H[j * n + j];
        for (int64_t a = 0; a < f; ++a) {
            double s = H[F[a] * n + j];
            for (int64_t b = 0; b < a; ++b) s -= L[a * n + b] * L[f * n + b];
            L[f * n + a] = s / L[a * n + a];
            d -= L[f * n + a] * L[f * n + a];
        }
        if (!(d > 1e-12 * H[j * n + j]) || !(d > 0.0)) return false;
        L[f * n + f] = std::sqrt(d);
        F.push_back(j);
        is_free[j] = 1;
        return true;
    };
    // Drops the bound variables from F and from the factor.
    auto drop_bound = [&]() {
        for (int64_t p = static_cast<int64_t>(F.size()) - 1; p >= 0; --p) {
            if (is_free[F[p]]) continue;
            gem_detail::cholesky_delete(L, n, static_cast<int64_t>(F.size()), p);
            F.erase(F.begin() + p);
        }
    };
    // z_F = -H_FF^{-1} c_F, z = 0 elsewhere.
    auto solve_free = [&]() {
        const int64_t f = static_cast<int64_t>(F.size());
        y.assign(f, 0.0);
        for (int64_t a = 0; a < f; ++a) {
            double s = -c[F[a]];
            for (int64_t b = 0; b < a; ++b) s -= L[a * n + b] * y[b];
            y[a] = s / L[a * n + a];
        }
        for (int64_t a = f - 1; a >= 0; --a) {
            const double ya = y[a] / L[a * n + a];
            y[a] = ya;
            for (int64_t b = 0; b < a; ++b) y[b] -= L[a * n + b] * ya;
        }
        std::fill(z.begin(), z.end(), 0.0);
        for (int64_t a = 0; a < f; ++a) z[F[a]] = y[a];
    };

    const int64_t max_iter = 10 * n + 100;
    int64_t iter = 0;
    while (true) {
        // w = -(H u + c): the descent direction of the objective.
        for (int64_t i = 0; i < n; ++i) w[i] = -c[i];
        for (int64_t j : F) {
            const double uj = u[j];
            for (int64_t i = 0; i < n; ++i) w[i] -= H[j * n + i] * uj;
        }
        int64_t enter = -1;
        for (int64_t i = 0; i < n; ++i) {
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
            drop_bound();
            if (F.empty()) break;
            if (++iter > max_iter)
                throw std::runtime_error("GEM dual: active-set iteration limit hit");
        }
    }
    for (int64_t a = 0; a < n; ++a) v[rows[a]] = (low[a] + (is_free[a] ? u[a] : 0.0)) / norm[rows[a]];
    return v;
}

}  // namespace skcl
