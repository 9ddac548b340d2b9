//! bf16 storage with f32 accumulation.

use half::bf16;
use lmo_core::{AdamWStep, Backend, Shape, Trans};
use ndarray::ArrayD;

use crate::native::{self, Kind};
use crate::{Nd32, native_lower, native_syrk, op_view};

/// Which kernel [`NdBf16`]'s products run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// Native bf16 dot products (`vdpbf16ps`, AVX-512 BF16) with f32
    /// accumulators: [`crate::native`].
    Avx512Bf16,
    /// The f32 kernels on bf16-representable values, rounded after each
    /// product: exact bf16-storage numerics at f32 speed.
    F32Emulated,
}

impl core::fmt::Display for Bf16Kernel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Bf16Kernel::Avx512Bf16 => "avx512_bf16 (vdpbf16ps, f32 accumulation)",
            Bf16Kernel::F32Emulated => "f32 kernels + bf16 rounding (no avx512_bf16 on this CPU)",
        })
    }
}

/// The kernel [`NdBf16`] uses on this CPU, detected once at run time:
/// [`Bf16Kernel::Avx512Bf16`] where [`native::available`], else
/// [`Bf16Kernel::F32Emulated`]. The environment variable
/// `LMO_BF16_KERNEL=emulated` forces the emulated kernel (for side-by-side
/// benchmarks and tests).
pub fn bf16_kernel() -> Bf16Kernel {
    static KERNEL: std::sync::OnceLock<Bf16Kernel> = std::sync::OnceLock::new();
    *KERNEL.get_or_init(|| {
        let forced = std::env::var("LMO_BF16_KERNEL").is_ok_and(|v| v == "emulated");
        if native::available(Kind::Bf16) && !forced {
            Bf16Kernel::Avx512Bf16
        } else {
            Bf16Kernel::F32Emulated
        }
    })
}

/// `c = α·op(a)·op(b) + β·(src or c)` on the native bf16 kernel, rounded
/// to bf16; `false` (nothing done) where the kernel is unavailable or the
/// layout is not one it takes.
#[allow(clippy::too_many_arguments)]
fn native_gemm(
    alpha: f32,
    a: &ArrayD<f32>,
    ta: Trans,
    b: &ArrayD<f32>,
    tb: Trans,
    beta: f32,
    src: Option<&ArrayD<f32>>,
    c: &mut ArrayD<f32>,
) -> bool {
    let (av, bv) = (op_view(a, ta), op_view(b, tb));
    let (m, k, n) = (av.nrows(), av.ncols(), bv.ncols());
    let src_ok = src.is_none_or(|s| s.shape() == [m, n] && s.is_standard_layout());
    if bf16_kernel() != Bf16Kernel::Avx512Bf16
        || k == 0
        || bv.nrows() != k
        || c.shape() != [m, n]
        || !c.is_standard_layout()
        || !src_ok
    {
        return false;
    }
    let (ao, bo) = (
        native::Operand::of_view(&av, false),
        native::Operand::of_view(&bv, true),
    );
    let sp = src.map(|s| (s.as_ptr(), n));
    let cp = c.as_mut_ptr();
    // SAFETY: the kernel is available; shapes checked above; `c` is a
    // contiguous m × n array distinct from `a`, `b` and `src` (borrowck:
    // they are shared borrows, `c` a unique one).
    unsafe {
        native::gemm(
            Kind::Bf16,
            m,
            n,
            k,
            alpha,
            ao,
            bo,
            beta,
            sp,
            cp,
            n,
            false,
            true,
        )
    };
    true
}

/// The ndarray backend with **bf16 storage and f32 accumulation**, the
/// numerics of PyTorch's Muon on GPUs: every tensor an operation writes is
/// rounded to bf16 (round to nearest even), while reductions, GEMM and syrk
/// accumulate in f32. Tensors are `ArrayD<f32>` holding bf16-representable
/// values; scalars are f32.
///
/// Kernels ([`bf16_kernel`] says which one runs): on CPUs with AVX-512 BF16
/// the products (`gemm`, `syrk`) run natively in bf16 with f32
/// accumulation ([`crate::native`], `vdpbf16ps`, twice the f32 FMA
/// rate); elsewhere they run on the f32 kernels of [`Nd32`] and are rounded
/// afterwards, with the same numerics up to f32 summation order.
/// Elementwise operations always compute in f32 and round.
/// [`round_bf16`] rounds a user tensor on entry.
#[derive(Clone, Copy, Debug, Default)]
pub struct NdBf16;

/// Rounds every entry of `x` to the nearest bf16 (ties to even), in place.
///
/// Same result as `half::bf16::from_f32(v).to_f32()` for every input (NaN
/// stays NaN, quieted), written as branch-free bit arithmetic so that the
/// loop vectorizes.
pub fn round_bf16(x: &mut ArrayD<f32>) {
    match x.as_slice_memory_order_mut() {
        Some(s) => crate::slices::map_mut(s, |v| *v = rne(*v)),
        None => x.map_inplace(|v| *v = rne(*v)),
    }
}

/// The nearest bf16 of `v` (ties to even) as an f32, in bit arithmetic.
#[inline(always)]
fn rne(v: f32) -> f32 {
    let b = v.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000;
    let nan = (b | 0x0040_0000) & 0xffff_0000;
    f32::from_bits(if v.is_nan() { nan } else { rounded })
}

impl Backend for NdBf16 {
    type Scalar = f32;
    type Tensor = ArrayD<f32>;

    fn shape(t: &ArrayD<f32>) -> Shape {
        Nd32::shape(t)
    }
    fn zeros_like(t: &ArrayD<f32>) -> ArrayD<f32> {
        Nd32::zeros_like(t)
    }
    fn zeros(like: &ArrayD<f32>, shape: Shape) -> ArrayD<f32> {
        Nd32::zeros(like, shape)
    }
    fn all_finite(t: &ArrayD<f32>) -> bool {
        Nd32::all_finite(t)
    }
    fn dot(x: &ArrayD<f32>, y: &ArrayD<f32>) -> f32 {
        Nd32::dot(x, y)
    }
    fn argmax_abs(x: &ArrayD<f32>) -> (usize, f32) {
        Nd32::argmax_abs(x)
    }
    fn max_abs(x: &ArrayD<f32>) -> f32 {
        Nd32::max_abs(x)
    }
    fn sum_abs(x: &ArrayD<f32>) -> f32 {
        Nd32::sum_abs(x)
    }
    fn norm2(x: &ArrayD<f32>) -> f32 {
        Nd32::norm2(x)
    }
    fn col_norms(x: &ArrayD<f32>, out: &mut [f32]) {
        Nd32::col_norms(x, out)
    }
    fn row_norms(x: &ArrayD<f32>, out: &mut [f32]) {
        Nd32::row_norms(x, out)
    }
    fn fill(x: &mut ArrayD<f32>, v: f32) {
        Nd32::fill(x, bf16::from_f32(v).to_f32())
    }
    fn set(x: &mut ArrayD<f32>, k: usize, v: f32) {
        Nd32::set(x, k, bf16::from_f32(v).to_f32())
    }
    fn scale(a: f32, x: &ArrayD<f32>, out: &mut ArrayD<f32>) {
        Nd32::scale(a, x, out);
        round_bf16(out);
    }
    fn sign(a: f32, x: &ArrayD<f32>, out: &mut ArrayD<f32>) {
        Nd32::sign(bf16::from_f32(a).to_f32(), x, out);
    }
    fn scale_mut(a: f32, x: &mut ArrayD<f32>) {
        Nd32::scale_mut(a, x);
        round_bf16(x);
    }
    fn axpby(a: f32, x: &ArrayD<f32>, b: f32, y: &mut ArrayD<f32>) {
        Nd32::axpby(a, x, b, y);
        round_bf16(y);
    }
    fn scale_cols(x: &ArrayD<f32>, s: &[f32], out: &mut ArrayD<f32>) {
        Nd32::scale_cols(x, s, out);
        round_bf16(out);
    }
    fn scale_rows(x: &ArrayD<f32>, s: &[f32], out: &mut ArrayD<f32>) {
        Nd32::scale_rows(x, s, out);
        round_bf16(out);
    }
    fn scale_cols_mut(x: &mut ArrayD<f32>, s: &[f32]) {
        Nd32::scale_cols_mut(x, s);
        round_bf16(x);
    }
    fn scale_rows_mut(x: &mut ArrayD<f32>, s: &[f32]) {
        Nd32::scale_rows_mut(x, s);
        round_bf16(x);
    }
    fn gemm(
        alpha: f32,
        a: &ArrayD<f32>,
        ta: Trans,
        b: &ArrayD<f32>,
        tb: Trans,
        beta: f32,
        c: &mut ArrayD<f32>,
    ) {
        if !native_gemm(alpha, a, ta, b, tb, beta, None, c) {
            Nd32::gemm(alpha, a, ta, b, tb, beta, c);
            round_bf16(c);
        }
    }
    fn gemm_from(
        alpha: f32,
        a: &ArrayD<f32>,
        ta: Trans,
        b: &ArrayD<f32>,
        tb: Trans,
        beta: f32,
        src: &ArrayD<f32>,
        out: &mut ArrayD<f32>,
    ) {
        if !native_gemm(alpha, a, ta, b, tb, beta, Some(src), out) {
            Nd32::scale(beta, src, out);
            Nd32::gemm(alpha, a, ta, b, tb, 1.0, out);
            round_bf16(out);
        }
    }
    fn syrk(alpha: f32, x: &ArrayD<f32>, beta: f32, c: &mut ArrayD<f32>) {
        if bf16_kernel() != Bf16Kernel::Avx512Bf16 || !native_syrk(Kind::Bf16, alpha, x, beta, c) {
            Nd32::syrk(alpha, x, beta, c);
            round_bf16(c);
        }
    }
    fn gemm_sym_from(
        alpha: f32,
        a: &ArrayD<f32>,
        b: &ArrayD<f32>,
        beta: f32,
        src: &ArrayD<f32>,
        out: &mut ArrayD<f32>,
    ) {
        if bf16_kernel() != Bf16Kernel::Avx512Bf16
            || !native_lower(Kind::Bf16, alpha, a, b, beta, Some(src), out)
        {
            Nd32::gemm_sym_from(alpha, a, b, beta, src, out);
            round_bf16(out);
        }
    }
    fn transpose_into(a: f32, x: &ArrayD<f32>, out: &mut ArrayD<f32>) {
        Nd32::transpose_into(a, x, out);
        round_bf16(out);
    }
    fn adamw(
        p: &mut ArrayD<f32>,
        g: &ArrayD<f32>,
        m: &mut ArrayD<f32>,
        v: &mut ArrayD<f32>,
        h: &AdamWStep<f32>,
    ) {
        Nd32::adamw(p, g, m, v, h);
        round_bf16(p);
        round_bf16(m);
        round_bf16(v);
    }
    fn copy_to_slice(x: &ArrayD<f32>, out: &mut [f32]) {
        Nd32::copy_to_slice(x, out)
    }
    fn copy_from_slice(src: &[f32], out: &mut ArrayD<f32>) {
        Nd32::copy_from_slice(src, out);
        round_bf16(out);
    }
}

/// f32 arrays offer the bf16 polar factor: the iteration runs on
/// [`NdBf16`] (the same `ArrayD<f32>` tensors), the input rounded by
/// [`round_bf16`].
impl lmo_core::Bf16Storage for Nd32 {
    type Bf16 = NdBf16;
    const OFFERS_BF16: bool = true;
    fn to_bf16(src: &ArrayD<f32>, dst: &mut ArrayD<f32>) {
        // One pass (copy and round) where both are contiguous alike.
        if src.shape() == dst.shape()
            && let (Some(s), Some(d)) = (src.as_slice(), dst.as_slice_mut())
        {
            crate::slices::map2(d, s, |d, v| *d = rne(v));
        } else {
            dst.assign(src);
            round_bf16(dst)
        }
    }
}

/// [`NdBf16`] is itself the bf16 path: its first operation rounds its
/// input, so `to_bf16` copies the tensor as it is and the bf16 polar
/// factor is plain Newton–Schulz on this backend.
impl lmo_core::Bf16Storage for NdBf16 {
    type Bf16 = NdBf16;
    const OFFERS_BF16: bool = true;
    fn to_bf16(src: &ArrayD<f32>, dst: &mut ArrayD<f32>) {
        dst.assign(src);
    }
}

/// f64 arrays offer no bf16 path (their tensors are not f32); the rounding
/// is still the exact bf16 value of each entry.
impl lmo_core::Bf16Storage for crate::Nd64 {
    type Bf16 = crate::Nd64;
    const OFFERS_BF16: bool = false;
    fn to_bf16(src: &ArrayD<f64>, dst: &mut ArrayD<f64>) {
        dst.zip_mut_with(src, |d, &s| *d = bf16::from_f64(s).to_f64());
    }
}
