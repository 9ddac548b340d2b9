// A CPU model of the CUDA thread hierarchy, enough to run the kernels of
// cuda_kernels.cu unchanged as C++ (feature `cuda-emu` of orthogonalize).
//
// - One launch at a time (a global lock), blocks one after another, every
//   CUDA thread of a block a fiber on the calling thread (a register and
//   stack-pointer switch on x86-64, ucontext elsewhere): `__shared__`
//   variables become function-local statics.
// - __syncthreads yields until every thread of the block has reached it;
//   a barrier that part of a block skips (undefined on a GPU) is reported
//   as an error of the launch, a barrier never released as a deadlock.
// - __shfl_down_sync is an exchange over the 32 lanes of a warp (warp =
//   linear thread index / 32, as on the GPU); a shuffle in a block whose
//   size is not a multiple of 32 is reported (the full mask would name
//   missing lanes).
// - atomics are plain read-modify-writes (one OS thread runs the fibers).
// Arithmetic is the host's IEEE f32/f64 without contraction (-ffp-contract=off);
// NVRTC contracts a*b+c into fma by default, so device results may differ
// from these in the last bit of an f32.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
};

extern uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

void __syncthreads();
double __shfl_down_sync(unsigned int mask, double v, int delta);
double atomicAdd(double* p, double v);
unsigned int atomicMax(unsigned int* p, unsigned int v);
unsigned long long atomicMin(unsigned long long* p, unsigned long long v);

inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    std::memcpy(&u, &f, 4);
    return u;
}
using std::isfinite;
