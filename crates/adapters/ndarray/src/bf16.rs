//! bf16 storage with f32 accumulation.

use half::bf16;
use lmo_core::{AdamWStep, Backend, Shape, Trans};
use ndarray::ArrayD;

use crate::Nd32;

/// The ndarray backend with **bf16 storage and f32 accumulation**, the
/// numerics of PyTorch's Muon on GPUs: every tensor an operation writes is
/// rounded to bf16 (round to nearest even), while reductions, GEMM and syrk
/// accumulate in f32. Tensors are `ArrayD<f32>` holding bf16-representable
/// values; scalars are f32.
///
/// Kernel: the f32 kernels of [`Nd32`] followed by rounding (there is no
/// native bf16 GEMM in this backend yet), so it measures bf16 *accuracy*
/// exactly, not bf16 speed. [`round_bf16`] rounds a user tensor on entry.
#[derive(Clone, Copy, Debug, Default)]
pub struct NdBf16;

/// Rounds every entry of `x` to the nearest bf16 (ties to even), in place.
pub fn round_bf16(x: &mut ArrayD<f32>) {
    x.map_inplace(|v| *v = bf16::from_f32(*v).to_f32());
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
    fn gemm(
        alpha: f32,
        a: &ArrayD<f32>,
        ta: Trans,
        b: &ArrayD<f32>,
        tb: Trans,
        beta: f32,
        c: &mut ArrayD<f32>,
    ) {
        Nd32::gemm(alpha, a, ta, b, tb, beta, c);
        round_bf16(c);
    }
    fn syrk(alpha: f32, x: &ArrayD<f32>, beta: f32, c: &mut ArrayD<f32>) {
        Nd32::syrk(alpha, x, beta, c);
        round_bf16(c);
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
