// Elementwise and reduction kernels of the CUDA backend (compiled at run
// time by NVRTC; no CUDA headers needed). Every kernel exists for f32
// storage (suffix _f32) and bf16 storage (suffix _bf16, stored as raw
// 16-bit patterns, computed in f32, rounded to nearest even on store).
// Reductions accumulate in f64 through atomics on an f64 scratch buffer.

typedef unsigned short bf16_t;

__device__ __forceinline__ float ld(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float ld(const bf16_t* p, long long i) {
    return __uint_as_float(((unsigned int)p[i]) << 16);
}
__device__ __forceinline__ void st(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void st(bf16_t* p, long long i, float v) {
    unsigned int u = __float_as_uint(v);
    if ((u & 0x7f800000u) == 0x7f800000u) {
        // Inf stays Inf; NaN stays a (quiet) NaN.
        p[i] = (bf16_t)((u >> 16) | ((u & 0xffffu) ? 0x40u : 0u));
        return;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    p[i] = (bf16_t)(u >> 16);
}

// 1/(f·(1+δ)+ε) for f = √ss (the Frobenius normalization of SPEC §2), 0 for a zero matrix;
// at most FLT_MAX (with ε = 0 and f < 1/FLT_MAX the float would be +Inf and 0·Inf = NaN:
// the clamped scale leaves every entry ≤ 1, finite, merely not normalized to 1).
__device__ __forceinline__ float inv_scale(double ss, float delta, float eps) {
    double f = sqrt(ss);
    return f == 0.0 ? 0.0f : (float)fmin(1.0 / (f * (1.0 + (double)delta) + (double)eps), 3.4028234663852886e38);
}

__device__ __forceinline__ long long gid() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long gstride() {
    return (long long)gridDim.x * blockDim.x;
}

// Block-wide sum of one double per thread; thread 0 adds it to *out.
__device__ void block_add(double v, double* out) {
    __shared__ double sh[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        int nw = (blockDim.x + 31) >> 5;
        v = lane < nw ? sh[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
        if (lane == 0) atomicAdd(out, v);
    }
}

// Batched normalization (SPEC §2's X = G/(‖G‖_F(1+δ)+ε)) from storage TI
// to storage TO; matrix b of a stack starts at b·per, blockIdx.y (.z) is b.
template <typename TI, typename TO>
__device__ void normalize_impl(const TI* x, const double* acc, TO* out, long long per,
                               float delta, float eps, int norm) {
    float c = norm ? inv_scale(acc[blockIdx.y], delta, eps) : 1.0f;
    long long o = (long long)blockIdx.y * per;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < per;
         i += (long long)gridDim.x * blockDim.x)
        st(out, o + i, c * ld(x, o + i));
}

// The same, transposed: x_b is m×n, out_b is n×m (grid n/32 × m/32 × batch).
template <typename TI, typename TO>
__device__ void normalize_t_impl(const TI* x, const double* acc, TO* out, long long m,
                                 long long n, float delta, float eps, int norm) {
    __shared__ float tile[32][33];
    float c = norm ? inv_scale(acc[blockIdx.z], delta, eps) : 1.0f;
    long long o = (long long)blockIdx.z * m * n;
    long long bx = (long long)blockIdx.x * 32, by = (long long)blockIdx.y * 32;
    for (int k = threadIdx.y; k < 32; k += blockDim.y) {
        long long r = by + k, cc = bx + threadIdx.x;
        if (r < m && cc < n) tile[k][threadIdx.x] = ld(x, o + r * n + cc);
    }
    __syncthreads();
    for (int k = threadIdx.y; k < 32; k += blockDim.y) {
        long long r = bx + k, cc = by + threadIdx.x;
        if (r < n && cc < m) st(out, o + r * m + cc, c * tile[threadIdx.x][k]);
    }
}

#define KERNELS(T, S)                                                                        \
extern "C" __global__ void fill_##S(T* x, float v, long long n) {                           \
    for (long long i = gid(); i < n; i += gstride()) st(x, i, v);                            \
}                                                                                            \
extern "C" __global__ void scale_##S(float a, const T* x, T* out, long long n) {            \
    for (long long i = gid(); i < n; i += gstride()) st(out, i, a * ld(x, i));               \
}                                                                                            \
extern "C" __global__ void sign_##S(float a, const T* x, T* out, long long n) {             \
    for (long long i = gid(); i < n; i += gstride()) {                                       \
        float v = ld(x, i);                                                                  \
        st(out, i, v > 0.0f ? a : (v < 0.0f ? -a : 0.0f));                                   \
    }                                                                                        \
}                                                                                            \
extern "C" __global__ void axpby_##S(float a, const T* x, float b, T* y, long long n) {     \
    for (long long i = gid(); i < n; i += gstride())                                         \
        st(y, i, b == 0.0f ? a * ld(x, i) : a * ld(x, i) + b * ld(y, i));                    \
}                                                                                            \
extern "C" __global__ void scale_cols_##S(const T* x, const float* s, T* out,               \
                                          long long m, long long n) {                       \
    for (long long i = gid(); i < m * n; i += gstride()) st(out, i, s[i % n] * ld(x, i));   \
}                                                                                            \
extern "C" __global__ void scale_rows_##S(const T* x, const float* s, T* out,               \
                                          long long m, long long n) {                       \
    for (long long i = gid(); i < m * n; i += gstride()) st(out, i, s[i / n] * ld(x, i));   \
}                                                                                            \
extern "C" __global__ void transpose_##S(float a, const T* x, T* out, long long m,          \
                                         long long n) {                                     \
    __shared__ float tile[32][33];                                                           \
    long long bx = (long long)blockIdx.x * 32, by = (long long)blockIdx.y * 32;              \
    for (int k = threadIdx.y; k < 32; k += blockDim.y) {                                     \
        long long r = by + k, c = bx + threadIdx.x;                                          \
        if (r < m && c < n) tile[k][threadIdx.x] = ld(x, r * n + c);                         \
    }                                                                                        \
    __syncthreads();                                                                         \
    for (int k = threadIdx.y; k < 32; k += blockDim.y) {                                     \
        long long r = bx + k, c = by + threadIdx.x;                                          \
        if (r < n && c < m) st(out, r * m + c, a * tile[threadIdx.x][k]);                    \
    }                                                                                        \
}                                                                                            \
extern "C" __global__ void mirror_##S(T* c, long long k) {                                  \
    for (long long t = gid(); t < k * k; t += gstride()) {                                   \
        long long i = t / k, j = t % k;                                                      \
        if (i > j) st(c, i * k + j, ld(c, j * k + i));                                       \
    }                                                                                        \
}                                                                                            \
extern "C" __global__ void adamw_##S(T* p, const T* g, T* m, T* v, float lr, float b1,      \
                                     float b2, float eps, float wd, float bias1,            \
                                     float bias2, long long n) {                            \
    for (long long i = gid(); i < n; i += gstride()) {                                       \
        float gi = ld(g, i);                                                                 \
        float mi = b1 * ld(m, i) + (1.0f - b1) * gi;                                         \
        float vi = b2 * ld(v, i) + (1.0f - b2) * gi * gi;                                    \
        st(m, i, mi);                                                                        \
        st(v, i, vi);                                                                        \
        float upd = (mi / bias1) / (sqrtf(vi / bias2) + eps);                                \
        st(p, i, (1.0f - lr * wd) * ld(p, i) - lr * upd);                                    \
    }                                                                                        \
}                                                                                            \
extern "C" __global__ void dot_##S(const T* x, const T* y, double* out, long long n) {      \
    double acc = 0.0;                                                                        \
    for (long long i = gid(); i < n; i += gstride()) acc += (double)ld(x, i) * ld(y, i);     \
    block_add(acc, out);                                                                     \
}                                                                                            \
extern "C" __global__ void sumsq_##S(const T* x, double* out, long long n) {                \
    double acc = 0.0;                                                                        \
    for (long long i = gid(); i < n; i += gstride()) {                                       \
        double v = ld(x, i);                                                                 \
        acc += v * v;                                                                        \
    }                                                                                        \
    block_add(acc, out);                                                                     \
}                                                                                            \
extern "C" __global__ void sumabs_##S(const T* x, double* out, long long n) {               \
    double acc = 0.0;                                                                        \
    for (long long i = gid(); i < n; i += gstride()) acc += fabs((double)ld(x, i));          \
    block_add(acc, out);                                                                     \
}                                                                                            \
extern "C" __global__ void nonfinite_##S(const T* x, double* out, long long n) {            \
    double acc = 0.0;                                                                        \
    for (long long i = gid(); i < n; i += gstride()) acc += isfinite(ld(x, i)) ? 0.0 : 1.0;  \
    block_add(acc, out);                                                                     \
}                                                                                            \
/* max |x| as the bit pattern of a non-negative float (monotone as unsigned int) */          \
extern "C" __global__ void amax_##S(const T* x, unsigned int* out, long long n) {           \
    unsigned int best = 0u;                                                                  \
    for (long long i = gid(); i < n; i += gstride()) {                                       \
        unsigned int b = __float_as_uint(fabsf(ld(x, i)));                                   \
        best = b > best ? b : best;                                                          \
    }                                                                                        \
    atomicMax(out, best);                                                                    \
}                                                                                            \
/* the first index whose |x| has the bit pattern *target */                                  \
extern "C" __global__ void first_index_##S(const T* x, const unsigned int* target,          \
                                           unsigned long long* out, long long n) {          \
    for (long long i = gid(); i < n; i += gstride())                                         \
        if (__float_as_uint(fabsf(ld(x, i))) == *target)                                     \
            atomicMin(out, (unsigned long long)i);                                           \
}                                                                                            \
/* squared Euclidean norms of the columns (one thread per column) */                 \
extern "C" __global__ void col_norms_##S(const T* x, double* out, long long m,              \
                                         long long n) {                                     \
    for (long long j = gid(); j < n; j += gstride()) {                                       \
        double acc = 0.0;                                                                    \
        for (long long i = 0; i < m; i++) {                                                  \
            double v = ld(x, i * n + j);                                                     \
            acc += v * v;                                                                    \
        }                                                                                    \
        out[j] = acc;                                                                        \
    }                                                                                        \
}                                                                                            \
/* squared Euclidean norms of the rows (one block per row; out zeroed) */                                        \
extern "C" __global__ void row_norms_##S(const T* x, double* out, long long m,              \
                                         long long n) {                                     \
    for (long long r = blockIdx.x; r < m; r += gridDim.x) {                                  \
        double acc = 0.0;                                                                    \
        for (long long j = threadIdx.x; j < n; j += blockDim.x) {                            \
            double v = ld(x, r * n + j);                                                     \
            acc += v * v;                                                                    \
        }                                                                                    \
        block_add(acc, out + r);                                                             \
        __syncthreads();                                                                     \
    }                                                                                        \
}                                                                                            \
/* Batched kernels: matrix b of a stack starts at b·per; blockIdx.y (or .z) is b. */         \
/* acc[b] += Σ x_b² (acc zeroed) */                                                          \
extern "C" __global__ void batch_sumsq_##S(const T* x, double* acc, long long per) {        \
    const T* xb = x + (long long)blockIdx.y * per;                                           \
    double s = 0.0;                                                                          \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < per;            \
         i += (long long)gridDim.x * blockDim.x) {                                           \
        double v = ld(xb, i);                                                                \
        s += v * v;                                                                          \
    }                                                                                        \
    block_add(s, acc + blockIdx.y);                                                          \
}                                                                                            \
/* acc[b] += <x_b, y_b> (acc zeroed) */                                                      \
extern "C" __global__ void batch_dot_##S(const T* x, const T* y, double* acc,               \
                                         long long per) {                                   \
    long long o = (long long)blockIdx.y * per;                                               \
    double s = 0.0;                                                                          \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < per;            \
         i += (long long)gridDim.x * blockDim.x)                                             \
        s += (double)ld(x, o + i) * ld(y, o + i);                                            \
    block_add(s, acc + blockIdx.y);                                                          \
}                                                                                            \
/* m ← β·m + (1−β)·g; if nesterov: u ← β·m + (1−β)·g (the LMO's input) */                 \
extern "C" __global__ void momentum_##S(const T* g, T* m, T* u, float beta, int nesterov,   \
                                        long long n) {                                      \
    for (long long i = gid(); i < n; i += gstride()) {                                       \
        float gi = ld(g, i);                                                                 \
        st(m, i, (1.0f - beta) * gi + beta * ld(m, i));                                      \
        if (nesterov) st(u, i, beta * ld(m, i) + (1.0f - beta) * gi);                        \
    }                                                                                        \
}                                                                                            \
/* Phase 4 of the LMO step of one block with D = −s·o (o the polar factor), for a           \
   radius t computed by the caller (the optimizer's radius rule, on the host):              \
   p ← (1 − t·wd)·p; then p ← p + t·D (unconstrained) or p ← (1−γ)·p + γ·ρ·D,               \
   γ = clamp(t, 0, 1) (constrained). */                                                      \
extern "C" __global__ void lmo_update_##S(T* p, const T* o, long long n, float t, float s,   \
                                          float wd, int constrained, float rho) {           \
    float decay = 1.0f - t * wd;                                                             \
    float g = fminf(fmaxf(t, 0.0f), 1.0f);                                                   \
    for (long long i = gid(); i < n; i += gstride()) {                                       \
        float pi = decay * ld(p, i), d = -s * ld(o, i);                                      \
        st(p, i, constrained ? (1.0f - g) * pi + g * rho * d : pi + t * d);                  \
    }                                                                                        \
}

KERNELS(float, f32)
KERNELS(bf16_t, bf16)

// Normalization kernels (normalize_impl, normalize_t_impl) for each pair
// of storages: batch_normalize[_t]_<S> keep storage S; cvt_normalize[_t]_<S>
// read S and write the other one (f32 tensors, bf16 iteration).
#define NORMALIZE_KERNELS(TI, TO, FLAT, TRANS)                                               \
extern "C" __global__ void FLAT(const TI* x, const double* acc, TO* out, long long per,     \
                                float delta, float eps, int norm) {                         \
    normalize_impl(x, acc, out, per, delta, eps, norm);                                      \
}                                                                                            \
extern "C" __global__ void TRANS(const TI* x, const double* acc, TO* out, long long m,      \
                                 long long n, float delta, float eps, int norm) {           \
    normalize_t_impl(x, acc, out, m, n, delta, eps, norm);                                   \
}

NORMALIZE_KERNELS(float, float, batch_normalize_f32, batch_normalize_t_f32)
NORMALIZE_KERNELS(bf16_t, bf16_t, batch_normalize_bf16, batch_normalize_t_bf16)
NORMALIZE_KERNELS(float, bf16_t, cvt_normalize_f32, cvt_normalize_t_f32)
NORMALIZE_KERNELS(bf16_t, float, cvt_normalize_bf16, cvt_normalize_t_bf16)
