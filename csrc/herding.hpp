// Herding exemplar selection of iCaRL (Rebuffi et al., CVPR 2017, Algorithm 4).
//
// Pick k (k = 1..m) takes, among the rows f_i of F not picked yet, the one that
// minimises || mu - (S + f_i) / k ||, with mu the mean of all rows and S the sum
// of the k - 1 rows already picked; ties go to the lowest row index. Since
//   k^2 || mu - (S + f_i) / k ||^2 = ||k mu - S||^2 - 2 k (mu . f_i) + 2 (S . f_i) + ||f_i||^2
// and the first term does not depend on i, the kernel ranks rows by
//   score_i = ||f_i||^2 - 2 k (mu . f_i) + 2 (S . f_i),
// keeping F mu and ||f_i||^2 (computed once, float64) and S . f_i, updated by one
// float32 product F f_j after each pick j: one pass over F per pick, no O(k d) work.
//
// Decisions are those of the rule evaluated in float64. Each row carries a
// rigorous bound on the rounding error of its float32 running S . f_i; rows
// whose score interval can reach the smallest upper bound are re-scored with
// S . f_i in float64 (exact products, S held in float64), and the pick is the
// float64 argmin among them, lowest index first.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

#include "simd.hpp"

namespace skcl {

// out[r] = x_r . y for R consecutive float32 rows x_r (stride d): float32 lanes
// (FMA, d / kVF per lane, rows interleaved so y is loaded once for R rows),
// lanes summed in float32, the tail past the last full vector in float64.
template <int R>
void dot_rows(const float* x, int64_t d, const float* y, double* out) {
    vfloat acc[R] = {};
    int64_t c = 0;
    for (; c + kVF <= d; c += kVF) {
        const vfloat yv = vload(y + c);
        for (int r = 0; r < R; ++r) acc[r] += vload(x + r * d + c) * yv;
    }
    float lane_sum[R];
#ifdef SKCL_HAVE_SHUFFLEVECTOR
    if constexpr (R == 4) {
        const vfloat sums = hsum4(acc[0], acc[1], acc[2], acc[3]);
        for (int r = 0; r < R; ++r) lane_sum[r] = sums[r];
    } else
#endif
    {
        for (int r = 0; r < R; ++r) lane_sum[r] = hsum(acc[r]);
    }
    for (int r = 0; r < R; ++r) {
        double s = lane_sum[r];
        for (int64_t cc = c; cc < d; ++cc) s += static_cast<double>(x[r * d + cc]) * y[cc];
        out[r] = s;
    }
}

// x . y with x float32 and y float64, every product and the sum in float64
// (four accumulators, so the additions do not wait on each other).
inline double dot_f32_f64(const float* x, const double* y, int64_t d) {
    vdouble acc[4] = {};
    int64_t c = 0;
    for (; c + 4 * kVD <= d; c += 4 * kVD)
        for (int q = 0; q < 4; ++q) acc[q] += vload_double(x + c + q * kVD) * vload(y + c + q * kVD);
    for (; c + kVD <= d; c += kVD) acc[0] += vload_double(x + c) * vload(y + c);
    double s = hsum((acc[0] + acc[1]) + (acc[2] + acc[3]));
    for (; c < d; ++c) s += static_cast<double>(x[c]) * y[c];
    return s;
}

inline double vabs(double x) { return std::fabs(x); }
inline vdouble vabs(vdouble x) { return x < vdouble{} ? -x : x; }

// ||x||^2 with every product and the sum in float64.
inline double norm2_f32(const float* x, int64_t d) {
    vdouble acc[4] = {};
    int64_t c = 0;
    for (; c + 4 * kVD <= d; c += 4 * kVD) {
        for (int q = 0; q < 4; ++q) {
            const vdouble xv = vload_double(x + c + q * kVD);
            acc[q] += xv * xv;
        }
    }
    for (; c + kVD <= d; c += kVD) {
        const vdouble xv = vload_double(x + c);
        acc[0] += xv * xv;
    }
    double s = hsum((acc[0] + acc[1]) + (acc[2] + acc[3]));
    for (; c < d; ++c) s += static_cast<double>(x[c]) * x[c];
    return s;
}

// Writes the m picks into out[0..m). Returns false (and picks nothing) when F
// holds a NaN or an infinity. Requires 0 <= m <= n. takeover_at > 0 forces the
// contention guard's takeover after pick takeover_at (for tests; 0: only when
// the guard finds the threads waiting more than computing).
inline bool herding_select(const float* F, int64_t n, int64_t d, int64_t m, int64_t* out,
                           int64_t takeover_at = 0) {
    if (m == 0) return true;
    std::vector<double> mu(static_cast<size_t>(d), 0.0);
    // Column sums, rows in order within each block of kCols columns, so mu does
    // not depend on the number of threads.
    constexpr int64_t kCols = 4 * kVF;
    const int64_t n_col_blocks = (d + kCols - 1) / kCols;
    const bool parallel = n * d >= kParallelWork && num_threads() > 1;
#pragma omp parallel for schedule(dynamic) if (parallel)
    for (int64_t cb = 0; cb < n_col_blocks; ++cb) {
        const int64_t c0 = cb * kCols, c1 = std::min(d, c0 + kCols);
        double sums[kCols] = {};
        if (c1 - c0 == kCols) {
            constexpr int kAcc = static_cast<int>(kCols / kVD);
            vdouble acc[kAcc] = {};
            for (int64_t i = 0; i < n; ++i) {
                const float* row = F + i * d + c0;
                for (int q = 0; q < kAcc; ++q) acc[q] += vload_double(row + q * kVD);
            }
            std::memcpy(sums, acc, sizeof(acc));
        } else {
            for (int64_t i = 0; i < n; ++i) {
                const float* row = F + i * d;
                for (int64_t c = c0; c < c1; ++c) sums[c - c0] += row[c];
            }
        }
        for (int64_t c = c0; c < c1; ++c) mu[c] = sums[c - c0] / static_cast<double>(n);
    }

    // Per row: ||f_i||^2, ||f_i||, f_i . mu, running f_i . S (float32 products),
    // its error bound, and the lower end of the current score's interval.
    // block[i] is 0 while row i may be picked and +inf once it is, so a picked
    // row's interval lies at +inf and the scoring loop needs no branch.
    std::vector<double> norm2(n), norm(n), f_mu(n), s_f(n, 0.0), err(n, 0.0), low(n);
    std::vector<double> block(n, 0.0);
    int finite = 1;
#pragma omp parallel for schedule(dynamic, 256) reduction(&& : finite) if (parallel)
    for (int64_t i = 0; i < n; ++i) {
        const float* row = F + i * d;
        const double nn = norm2_f32(row, d);
        norm2[i] = nn;
        norm[i] = std::sqrt(nn);
        f_mu[i] = dot_f32_f64(row, mu.data(), d);
        finite = finite && std::isfinite(nn) && std::isfinite(f_mu[i]);
    }
    if (!finite) return false;

    // |dot_rows(x, y) - x . y| <= gamma sum_c |x_c y_c| <= gamma ||x|| ||y||, with
    // gamma = L u / (1 - L u) for L float32 roundings on the way to any term's
    // lane sum (u = 2^-24), widened a little.
    const double u = std::ldexp(1.0, -24);
    const double lane_terms = static_cast<double>(d / kVF + kLog2VF + 1);
    const double gamma = 1.01 * lane_terms * u / (1.0 - lane_terms * u) + 1e-14;
    const double inf = std::numeric_limits<double>::infinity();
    // Rows [i0, i1): adds dots[i - i0] = f_i . f_j (none before the first pick)
    // to the running S . f_i and grows its error bound by gamma ||f_i|| ||f_j||;
    // writes the lower end of each score's interval (score_i -/+ the half-width
    // that holds its float64 value) to low and returns the smallest upper end.
    auto score_rows = [&](int64_t i0, int64_t i1, const double* dots, double norm_j,
                          double two_k) {
        const double e_step = gamma * norm_j;
        auto one = [&](auto sf, auto e, auto n2, auto fm, auto nr, auto bl, auto dot, auto& up) {
            sf += dot;
            e += e_step * nr;
            const auto sc = n2 - two_k * fm + 2.0 * sf;
            const auto half = 2.0 * e + 1e-12 * (n2 + two_k * vabs(fm) + 2.0 * vabs(sf));
            up = sc + half + bl;
            return std::make_tuple(sf, e, sc - half + bl);
        };
        vdouble high_v = vdouble{} + inf;
        int64_t i = i0;
        for (; i + kVD <= i1; i += kVD) {
            const vdouble dot = dots ? vload(dots + (i - i0)) : vdouble{};
            vdouble up;
            const auto [sf, e, lo_v] = one(vload(&s_f[i]), vload(&err[i]), vload(&norm2[i]),
                                           vload(&f_mu[i]), vload(&norm[i]), vload(&block[i]),
                                           dot, up);
            vstore(&s_f[i], sf);
            vstore(&err[i], e);
            vstore(&low[i], lo_v);
            high_v = up < high_v ? up : high_v;
        }
        double high = inf;
        for (int l = 0; l < kVD; ++l) high = std::min(high, high_v[l]);
        for (; i < i1; ++i) {
            double up;
            const auto [sf, e, lo_s] = one(s_f[i], err[i], norm2[i], f_mu[i], norm[i], block[i],
                                           dots ? dots[i - i0] : 0.0, up);
            s_f[i] = sf;
            err[i] = e;
            low[i] = lo_s;
            high = std::min(high, up);
        }
        return high;
    };

    // Picks. Each thread owns a fixed range of tiles (kTile rows, picked rows
    // included, their values unused) and its own copy of S,
    // so a pick needs one barrier: every thread scores its rows, re-scores in
    // float64 those whose interval reaches its own smallest upper bound (a
    // superset of the rows that can reach the global one), publishes its best
    // in the slot of the pick's parity, and after the barrier all threads
    // reduce the slots alike.
    // Contention guard: threads also publish how long they computed and how long
    // they then waited at the barrier. Once the waiting outweighs the computing
    // (the cores are shared with other processes, so a thread sits descheduled
    // while the others wait for it), thread 0 takes every row for the remaining
    // picks and the others leave. Every thread reaches that decision from the
    // same slots, so all agree; on takeover only thread 0 marks the pick as
    // taken, and the others leave without writing anything thread 0 reads after
    // the last barrier. Picks do not depend on the partition.
    constexpr int64_t kRows = 4;
    // Rows scored together: their products f_i . f_j stay in L1 for the vector loop.
    constexpr int64_t kTile = 64;
    static_assert(kTile % kRows == 0 && kTile % kVD == 0, "tiles hold whole row blocks");
    const int64_t n_tiles = (n + kTile - 1) / kTile;
    const int n_threads = parallel ? num_threads() : 1;
    std::vector<double> slot_score(2 * static_cast<size_t>(n_threads), inf);
    std::vector<int64_t> slot_index(2 * static_cast<size_t>(n_threads), -1);
    std::vector<double> slot_busy(2 * static_cast<size_t>(n_threads), 0.0);
    std::vector<double> slot_idle(2 * static_cast<size_t>(n_threads), 0.0);
    // Each thread's copy of S, allocated before the parallel region.
    std::vector<double> S_all(static_cast<size_t>(n_threads) * d, 0.0);
#pragma omp parallel num_threads(n_threads) if (parallel)
    {
        int team = team_size();
        const int tid = thread_id();
        int64_t t0 = n_tiles * tid / team, t1 = n_tiles * (tid + 1) / team;
        int64_t lo = std::min(n, t0 * kTile), hi = std::min(n, t1 * kTile);
        double* S = S_all.data() + static_cast<size_t>(tid) * d;
        const float* f_j = nullptr;
        double norm_j = 0.0, busy_total = 0.0, idle_total = 0.0, idle_last = 0.0;
        for (int64_t k = 1; k <= m; ++k) {
            const double start = seconds_now();
            const double two_k = 2.0 * static_cast<double>(k);
            double high = inf;
            for (int64_t tile = t0; tile < t1; ++tile) {
                const int64_t i0 = tile * kTile, i1 = std::min(n, i0 + kTile);
                double dots[kTile];
                if (f_j != nullptr) {
                    int64_t i = i0;
                    for (; i + kRows <= i1; i += kRows)
                        dot_rows<kRows>(F + i * d, d, f_j, dots + (i - i0));
                    for (; i < i1; ++i) dot_rows<1>(F + i * d, d, f_j, dots + (i - i0));
                }
                high = std::min(high, score_rows(i0, i1, f_j ? dots : nullptr, norm_j, two_k));
            }
            double best = inf;
            int64_t arg = -1;
            for (int64_t i = lo; i < hi; ++i) {
                if (block[i] != 0.0 || low[i] > high) continue;
                s_f[i] = dot_f32_f64(F + i * d, S, d);
                err[i] = 0.0;
                const double exact = norm2[i] - two_k * f_mu[i] + 2.0 * s_f[i];
                if (exact < best) {
                    best = exact;
                    arg = i;
                }
            }
            const double done = seconds_now();
            if (team == 1) {
                if (arg >= 0) {
                    out[k - 1] = arg;
                    block[arg] = inf;
                }
                f_j = F + out[k - 1] * d;
                norm_j = norm[out[k - 1]];
                for (int64_t c = 0; c < d; ++c) S[c] += f_j[c];
                continue;
            }
            const size_t slot = static_cast<size_t>(k & 1) * n_threads;
            slot_score[slot + tid] = best;
            slot_index[slot + tid] = arg;
            slot_busy[slot + tid] = done - start;
            slot_idle[slot + tid] = idle_last;
#pragma omp barrier
            idle_last = seconds_now() - done;
            double s = inf;
            int64_t j = -1;
            for (int th = 0; th < team; ++th) {
                busy_total += slot_busy[slot + th];
                idle_total += slot_idle[slot + th];
                const int64_t i = slot_index[slot + th];
                if (i < 0) continue;
                if (j < 0 || slot_score[slot + th] < s || (slot_score[slot + th] == s && i < j)) {
                    s = slot_score[slot + th];
                    j = i;
                }
            }
            const bool takeover = k == takeover_at || (k >= 4 && idle_total > busy_total);
            if (takeover && tid != 0) break;
            if (tid == 0) out[k - 1] = j;
            if (takeover || (lo <= j && j < hi)) block[j] = inf;
            f_j = F + j * d;
            norm_j = norm[j];
            for (int64_t c = 0; c < d; ++c) S[c] += f_j[c];
            if (takeover) {
                team = 1;
                t0 = 0;
                t1 = n_tiles;
                lo = 0;
                hi = n;
            }
        }
    }
    return true;
}

}  // namespace skcl
