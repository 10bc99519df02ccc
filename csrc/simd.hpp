// SIMD helpers shared by skcl's CPU kernels.
//
// The kernels are written once with GCC/Clang vector extensions whose width is
// the widest vector unit the build targets (AVX-512: 16 floats, AVX: 8,
// otherwise 4); the compiler lowers the arithmetic to that ISA and contracts
// a * b + c to FMA where the target has it. Loads and stores go through memcpy,
// so no pointer needs any alignment.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace skcl {

#if defined(__AVX512F__)
inline constexpr int kVecBytes = 64;
#elif defined(__AVX__)
inline constexpr int kVecBytes = 32;
#else
inline constexpr int kVecBytes = 16;
#endif

// Floats per vector register, and its base-2 logarithm.
inline constexpr int kVF = kVecBytes / static_cast<int>(sizeof(float));
inline constexpr int kLog2VF = kVF == 16 ? 4 : (kVF == 8 ? 3 : 2);

typedef float vfloat __attribute__((vector_size(kVecBytes)));
// kVF doubles: the exact float64 image of one vfloat (two registers).
typedef double vdouble_wide __attribute__((vector_size(2 * kVecBytes)));
// One register of doubles (kVD lanes), and the half vfloat it converts from.
// Loops accumulate in vdouble: GCC keeps arrays of vdouble_wide in memory.
typedef double vdouble __attribute__((vector_size(kVecBytes)));
typedef float vfloat_half __attribute__((vector_size(kVecBytes / 2)));
inline constexpr int kVD = kVecBytes / static_cast<int>(sizeof(double));

inline vfloat vload(const float* p) {
    vfloat v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}

inline void vstore(float* p, vfloat v) { std::memcpy(p, &v, sizeof(v)); }

inline vfloat vbroadcast(float s) { return vfloat{} + s; }

// Keeps v in a register: stops the compiler from folding its load into every
// instruction that uses it, which would turn one load into many.
inline void pin_register(vfloat& v) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __asm__("" : "+v"(v));
#endif
}

inline vdouble_wide to_double(vfloat v) { return __builtin_convertvector(v, vdouble_wide); }

// p[0 .. kVD) converted to float64.
inline vdouble vload_double(const float* p) {
    vfloat_half h;
    std::memcpy(&h, p, sizeof(h));
    return __builtin_convertvector(h, vdouble);
}

inline vdouble vload(const double* p) {
    vdouble v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}

inline void vstore(double* p, vdouble v) { std::memcpy(p, &v, sizeof(v)); }

// Sum of the lanes of a vector, as a balanced tree (lane counts are powers of two),
// in the vector's own precision.
template <typename V>
inline auto hsum(V v) {
    using T = std::remove_reference_t<decltype(v[0])>;
    constexpr int lanes = static_cast<int>(sizeof(V) / sizeof(T));
    T x[lanes];
    std::memcpy(x, &v, sizeof(x));
    for (int width = lanes / 2; width > 0; width /= 2) {
        for (int l = 0; l < width; ++l) x[l] += x[l + width];
    }
    return x[0];
}

// The lane sums of four vectors as the first four lanes of one, by a tree of
// log2(kVF) vector additions (lane pairs of two vectors interleaved and added,
// then pairs of pairs, then halves folded), the depth of hsum's tree. Needs
// __builtin_shufflevector (GCC 12+, Clang); SKCL_HAVE_SHUFFLEVECTOR says so.
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define SKCL_HAVE_SHUFFLEVECTOR 1
namespace simd_detail {

// Lane 2j: a[2j] + a[2j+1]; lane 2j+1: b[2j] + b[2j+1].
template <size_t... I>
inline vfloat pair_sums(vfloat a, vfloat b, std::index_sequence<I...>) {
    return __builtin_shufflevector(a, b, static_cast<int>(I % 2 ? kVF + (I & ~size_t{1}) : I)...) +
           __builtin_shufflevector(a, b,
                                   static_cast<int>(I % 2 ? kVF + (I & ~size_t{1}) + 1 : I + 1)...);
}

// From a = pair_sums(x0, x1) and b = pair_sums(x2, x3): lane 4q + r holds a
// partial sum of x_r.
template <size_t... I>
inline vfloat quad_sums(vfloat a, vfloat b, std::index_sequence<I...>) {
    return __builtin_shufflevector(
               a, b, static_cast<int>(I % 4 < 2 ? I : kVF + I - 2)...) +
           __builtin_shufflevector(
               a, b, static_cast<int>(I % 4 < 2 ? I + 2 : kVF + I)...);
}

// Lane l < W gets s[l] + s[l + W], for W = kVF / 2 down to 4.
template <size_t W, size_t... I>
inline vfloat fold_to_four(vfloat s, std::index_sequence<I...> seq) {
    if constexpr (W < 4) {
        return s;
    } else {
        return fold_to_four<W / 2>(s + __builtin_shufflevector(s, s, static_cast<int>((I + W) % kVF)...),
                                   seq);
    }
}

}  // namespace simd_detail

inline vfloat hsum4(vfloat x0, vfloat x1, vfloat x2, vfloat x3) {
    using namespace simd_detail;
    constexpr auto seq = std::make_index_sequence<kVF>{};
    return fold_to_four<kVF / 2>(quad_sums(pair_sums(x0, x1, seq), pair_sums(x2, x3, seq), seq),
                                 seq);
}
#endif

// Sum of the lanes of a float vector, accumulated in double.
inline double hsum_double(vfloat v) { return hsum(to_double(v)); }

// Work (element operations) below which a loop runs on one thread: forking a
// team and meeting at barriers costs more than it saves there, and much more
// when the cores are shared with other processes.
inline constexpr int64_t kParallelWork = int64_t{1} << 20;

// Wall-clock seconds from a monotonic clock.
inline double seconds_now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

inline int num_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// Threads in the current team (1 outside a parallel region).
inline int team_size() {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

inline int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

}  // namespace skcl
