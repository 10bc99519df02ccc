// Build report of skcl._C: which compiler, flags and OpenMP the kernels were built with.
#pragma once

#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef SKCL_CXX_FLAGS
#define SKCL_CXX_FLAGS ""
#endif

namespace skcl {

struct BuildInfo {
    std::string compiler;
    long cxx_standard;
    bool openmp;
    int openmp_version;
    int max_threads;
    std::string flags;
    std::string simd;
};

inline BuildInfo build_info() {
    BuildInfo info;
#if defined(__clang__)
    info.compiler = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    info.compiler = "gcc " + std::to_string(__GNUC__) + "." + std::to_string(__GNUC_MINOR__) +
                    "." + std::to_string(__GNUC_PATCHLEVEL__);
#elif defined(_MSC_VER)
    info.compiler = "msvc " + std::to_string(_MSC_VER);
#else
    info.compiler = "unknown";
#endif
    info.cxx_standard = __cplusplus;
#ifdef _OPENMP
    info.openmp = true;
    info.openmp_version = _OPENMP;
    info.max_threads = omp_get_max_threads();
#else
    info.openmp = false;
    info.openmp_version = 0;
    info.max_threads = 1;
#endif
    info.flags = SKCL_CXX_FLAGS;
#if defined(__AVX512F__)
    info.simd = "avx512f";
#elif defined(__AVX2__)
    info.simd = "avx2";
#elif defined(__AVX__)
    info.simd = "avx";
#elif defined(__SSE2__)
    info.simd = "sse2";
#elif defined(__ARM_NEON)
    info.simd = "neon";
#else
    info.simd = "none";
#endif
    return info;
}

}  // namespace skcl
