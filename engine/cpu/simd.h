/*
 * simd.h -- RN_CLONES compiles a hot function for x86-64-v4 (AVX-512),
 * x86-64-v3 (AVX2 + FMA) and the baseline; the loader picks one at start
 * (GCC/clang target_clones), so one binary runs on any x86-64 at full width.
 */
#ifndef RN_CPU_SIMD_H
#define RN_CPU_SIMD_H

#if defined(__x86_64__) && !defined(RN_NO_CLONES)
#define RN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RN_CLONES
#endif

#endif
