//! # lmo-ndarray
//!
//! The [`Backend`] of `lmo-core` for [`ndarray`] arrays on the CPU, in `f32`
//! and `f64`. Tensors are [`ndarray::ArrayD`] (any rank up to 4; build them
//! with `.into_dyn()`). GEMMs go through faer's tuned kernels (AVX2/FMA, and
//! AVX-512 when the CPU has it, chosen at run time), parallel over the
//! current rayon pool, on the arrays in place (any strides, no copies);
//! [`Backend::syrk`] computes one triangle (recursive blocking) and mirrors
//! it. No operation allocates except [`Backend::zeros_like`] and
//! [`Backend::zeros`].
//!
//! ```
//! use lmo_core::{Norm, SignInf};
//! use lmo_ndarray::Nd64;
//! use ndarray::array;
//!
//! let g = array![[1.0, -2.0], [0.0, 3.0]].into_dyn();
//! let mut d = g.clone();
//! let ip = <SignInf as Norm<Nd64>>::lmo(&mut SignInf::new(), &g, &mut d).unwrap();
//! assert_eq!(ip, -6.0); // <g, lmo(g)> = −Σ|g|
//! assert_eq!(d, array![[-1.0, 1.0], [0.0, -1.0]].into_dyn());
//! ```
#![warn(missing_docs)]

use core::marker::PhantomData;

mod bf16;
pub mod native;
mod slices;
pub use bf16::{Bf16Kernel, NdBf16, bf16_kernel, round_bf16};

use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, MatMut, MatRef, Par};
use lmo_core::{AdamWStep, Backend, Scalar, Shape, Trans};
use ndarray::{ArrayD, ArrayView2, ArrayViewMut2, Ix2, IxDyn, LinalgScalar, Zip};
use rayon::prelude::*;

/// The ndarray backend for scalar `S` (`f32` or `f64`); a zero-sized marker.
#[derive(Clone, Copy, Debug, Default)]
pub struct NdBackend<S>(PhantomData<S>);

/// The ndarray backend in `f32`.
pub type Nd32 = NdBackend<f32>;
/// The ndarray backend in `f64`.
pub type Nd64 = NdBackend<f64>;

/// A scalar the ndarray backend supports: `f32` and `f64`.
pub trait NdScalar: Scalar + LinalgScalar + faer::traits::RealField {
    /// `c = α·x·xᵀ + β·c` (both triangles) on a native kernel of
    /// [`native`] where this scalar has one on this CPU (f32 with
    /// AVX-512); `false`, with nothing done, where it has none (f64, or no
    /// AVX-512) or the layout does not suit it. Shapes are checked by the
    /// caller.
    fn native_syrk(_alpha: Self, _x: &ArrayD<Self>, _beta: Self, _c: &mut ArrayD<Self>) -> bool {
        false
    }
    /// `c = α·a·bᵀ + β·src` (both triangles; the caller knows it is
    /// symmetric) on a native kernel, as [`NdScalar::native_syrk`].
    fn native_sym(
        _alpha: Self,
        _a: &ArrayD<Self>,
        _b: &ArrayD<Self>,
        _beta: Self,
        _src: &ArrayD<Self>,
        _c: &mut ArrayD<Self>,
    ) -> bool {
        false
    }
    /// `√Σ x_i²` of a contiguous slice without overflow or underflow
    /// (f32: one pass summed in f64; f64: BLAS `nrm2`'s two scaled passes).
    fn nrm2_slice(x: &[Self]) -> Self;
}
impl NdScalar for f32 {
    fn nrm2_slice(x: &[f32]) -> f32 {
        slices::nrm2_f32(x)
    }
    fn native_syrk(alpha: f32, x: &ArrayD<f32>, beta: f32, c: &mut ArrayD<f32>) -> bool {
        native::available(native::Kind::F32) && native_syrk(native::Kind::F32, alpha, x, beta, c)
    }
    fn native_sym(
        alpha: f32,
        a: &ArrayD<f32>,
        b: &ArrayD<f32>,
        beta: f32,
        src: &ArrayD<f32>,
        c: &mut ArrayD<f32>,
    ) -> bool {
        native::available(native::Kind::F32)
            && native_lower(native::Kind::F32, alpha, a, b, beta, Some(src), c)
    }
}
impl NdScalar for f64 {
    fn nrm2_slice(x: &[f64]) -> f64 {
        slices::nrm2_scaled(x)
    }
}

/// Views a rank-2 tensor as a matrix; panics on other ranks (callers check
/// ranks through [`Shape::as_matrix`] first).
fn mat<S>(x: &ArrayD<S>) -> ArrayView2<'_, S> {
    x.view()
        .into_dimensionality::<Ix2>()
        .expect("rank-2 tensor required")
}

fn mat_mut<S>(x: &mut ArrayD<S>) -> ArrayViewMut2<'_, S> {
    x.view_mut()
        .into_dimensionality::<Ix2>()
        .expect("rank-2 tensor required")
}

/// A faer view of a 2-D ndarray view (same memory, any strides).
fn fview<'a, S: NdScalar>(x: ArrayView2<'a, S>) -> MatRef<'a, S> {
    let (m, n) = x.dim();
    let st = x.strides();
    // SAFETY: the view covers m×n elements at these element strides and
    // lives for 'a; faer reads exactly those elements.
    unsafe { MatRef::from_raw_parts(x.as_ptr(), m, n, st[0], st[1]) }
}

fn fview_mut<'a, S: NdScalar>(mut x: ArrayViewMut2<'a, S>) -> MatMut<'a, S> {
    let (m, n) = x.dim();
    let (rs, cs) = (x.strides()[0], x.strides()[1]);
    // SAFETY: as in `fview`, and the view is unique.
    unsafe { MatMut::from_raw_parts_mut(x.as_mut_ptr(), m, n, rs, cs) }
}

/// Products below this many multiply-adds run on one thread: spreading
/// them over the pool costs more than it saves.
const PAR_MIN_WORK: usize = 96 * 96 * 96;

fn par(work: usize) -> Par {
    if work < PAR_MIN_WORK {
        Par::Seq
    } else {
        Par::rayon(0)
    }
}

/// Leaf size of the recursive lower-triangular `x·xᵀ`: below it faer's
/// triangular product runs directly.
const SYRK_LEAF: usize = 256;

/// `lower(c) (+)= α·a·bᵀ` (`a`, `b` both `k × l`), recursing on row
/// halves so that most of the work is full GEMM blocks `c21 = α·a2·b1ᵀ`
/// (≈ half the flops of a full GEMM). `b = a` is syrk's `x·xᵀ`.
fn lower_product<S: NdScalar>(
    c: MatMut<'_, S>,
    a: MatRef<'_, S>,
    b: MatRef<'_, S>,
    alpha: S,
    acc: Accum,
) {
    let k = c.nrows();
    if k <= SYRK_LEAF {
        triangular::matmul(
            c,
            BlockStructure::TriangularLower,
            acc,
            a,
            BlockStructure::Rectangular,
            b.transpose(),
            BlockStructure::Rectangular,
            alpha,
            par(k * k * a.ncols() / 2),
        );
        return;
    }
    let h = (k / 2).div_ceil(64) * 64;
    let (a1, a2) = a.split_at_row(h);
    let (b1, b2) = b.split_at_row(h);
    let (c11, _c12, c21, c22) = c.split_at_mut(h, h);
    lower_product(c11, a1, b1, alpha, acc);
    let work = c21.nrows() * c21.ncols() * a.ncols();
    faer::linalg::matmul::matmul(c21, acc, a2, b1.transpose(), alpha, par(work));
    lower_product(c22, a2, b2, alpha, acc);
}

/// Copies the strict lower triangle onto the upper one. Contiguous fast
/// path: each 32×32 tile is read row by row into a local buffer and written
/// back transposed row by row, so no access strides down a column (with a
/// power-of-two leading dimension a column walk thrashes one cache set);
/// tile rows of the upper triangle are filled in parallel (rayon).
fn mirror_lower<S: NdScalar>(c: &mut ArrayViewMut2<'_, S>) {
    const B: usize = 32;
    let k = c.nrows();
    if let Some(s) = c.as_slice_mut() {
        // Upper-triangle tile row jb (rows jb..jb+B) is written from the
        // lower-triangle tile column jb (rows ≥ jb): split the matrix at
        // row jb+B into the tile row (written) and the rows below (read).
        let ptr = SyncPtr(s.as_mut_ptr());
        let tiles = k.div_ceil(B);
        let task = |t: usize| {
            let p = &ptr;
            let jb = t * B;
            let jend = (jb + B).min(k);
            let mut tile = [S::zero(); B * B];
            for ib in (jb..k).step_by(B) {
                let iend = (ib + B).min(k);
                // tile[(j-jb)*B + (i-ib)] = s[i][j] for j < i.
                for i in ib..iend {
                    for j in jb..jend.min(i) {
                        // SAFETY: reads s[i][j] with i > j, in the strict lower
                        // triangle, which no task writes.
                        tile[(j - jb) * B + (i - ib)] = unsafe { *p.0.add(i * k + j) };
                    }
                }
                for j in jb..jend {
                    let lo = ib.max(j + 1);
                    for i in lo..iend {
                        // SAFETY: writes s[j][i] with i > j, in the strict
                        // upper triangle of tile row t, owned by this task.
                        unsafe { *p.0.add(j * k + i) = tile[(j - jb) * B + (i - ib)] };
                    }
                }
            }
        };
        if k >= 512 {
            (0..tiles).into_par_iter().for_each(task);
        } else {
            (0..tiles).for_each(task);
        }
        return;
    }
    for i in 0..k {
        for j in 0..i {
            c[[j, i]] = c[[i, j]];
        }
    }
}

/// `c = α·x·xᵀ + β·c` (both triangles; rounded to bf16 for
/// [`native::Kind::Bf16`]) on the native kernel of `kind`, which the caller
/// has checked is available; `false` (nothing done) when `x` is empty or
/// `c` is not a contiguous `m × m` array.
pub(crate) fn native_syrk(
    kind: native::Kind,
    alpha: f32,
    x: &ArrayD<f32>,
    beta: f32,
    c: &mut ArrayD<f32>,
) -> bool {
    native_lower(kind, alpha, x, x, beta, None, c)
}

/// `c = α·a·bᵀ + β·src` (`src = None`: `β·c`) for `m × k` matrices `a`,
/// `b` whose product the caller knows to be symmetric (and `src`, or `c`,
/// symmetric): the lower triangle on the native kernel of `kind` (which
/// the caller has checked is available), mirrored onto the upper one;
/// rounded to bf16 for [`native::Kind::Bf16`]. `false` (nothing done) when
/// the operands are empty, their shapes disagree, or `c` (or `src`) is not
/// a contiguous `m × m` array.
pub(crate) fn native_lower(
    kind: native::Kind,
    alpha: f32,
    a: &ArrayD<f32>,
    b: &ArrayD<f32>,
    beta: f32,
    src: Option<&ArrayD<f32>>,
    c: &mut ArrayD<f32>,
) -> bool {
    let (av, bv) = (mat(a), mat(b));
    let (m, k) = av.dim();
    let src_ok = src.is_none_or(|s| s.shape() == [m, m] && s.is_standard_layout());
    if k == 0 || bv.dim() != (m, k) || c.shape() != [m, m] || !c.is_standard_layout() || !src_ok {
        return false;
    }
    let (ao, bo) = (
        native::Operand::of_view(&av, false),
        native::Operand::of_view(&bv, false),
    );
    let sp = src.map(|s| (s.as_ptr(), m));
    let cp = c.as_mut_ptr();
    let round = kind == native::Kind::Bf16;
    // SAFETY: the kernel is available (caller); `a`, `b` are m × k, `src`
    // and `c` contiguous m × m arrays, `c` distinct from the others (they
    // are borrowed shared, `c` mutably).
    unsafe { native::gemm(kind, m, m, k, alpha, ao, bo, beta, sp, cp, m, true, round) };
    mirror_lower(&mut mat_mut(c));
    true
}

/// `op(x)` as a matrix view: `x` or its transpose.
pub(crate) fn op_view<S>(x: &ArrayD<S>, t: Trans) -> ArrayView2<'_, S> {
    let v = mat(x);
    if t == Trans::Yes {
        v.reversed_axes()
    } else {
        v
    }
}

/// A raw pointer shared by the mirror's tasks, which touch disjoint entries.
struct SyncPtr<T>(*mut T);
// SAFETY: used only by `mirror_lower`, whose tasks write disjoint entries
// and read entries no task writes.
unsafe impl<T> Sync for SyncPtr<T> {}

/// Applies `c ← β·c` and returns how the product is to be accumulated into
/// `c`; `None` when the inner dimension is 0 (the product is zero, and `c`
/// has been finalized).
fn prepare_accumulator<S: NdScalar>(beta: S, inner: usize, c: &mut ArrayD<S>) -> Option<Accum> {
    let acc = if beta == S::zero() {
        Accum::Replace
    } else {
        if beta != S::one() {
            c.map_inplace(|v| *v = beta * *v);
        }
        Accum::Add
    };
    if inner == 0 {
        if acc == Accum::Replace {
            c.fill(S::zero());
        }
        return None;
    }
    Some(acc)
}

/// `f(o_k, x_k)` over two tensors of equal length, in logical row-major
/// order: ndarray's `Zip` where the dimensions agree (always for rank ≤ 4,
/// where callers compared [`Shape`]s), else flat iterators — tensors of
/// rank above 4 share one flat [`Shape`] per length ([`Backend::shape`]),
/// so their dimensions may differ, and `Zip` would panic.
#[inline]
fn zip2<S: NdScalar>(o: &mut ArrayD<S>, x: &ArrayD<S>, f: impl Fn(&mut S, S) + Sync + Send) {
    if o.shape() == x.shape()
        && let (Some(x), Some(o)) = (x.as_slice(), o.as_slice_mut())
    {
        slices::map2(o, x, f);
    } else if o.shape() == x.shape() {
        Zip::from(o).and(x).for_each(|o, &v| f(o, v));
    } else {
        o.iter_mut().zip(x.iter()).for_each(|(o, &v)| f(o, v));
    }
}

/// Overflow- and underflow-safe Euclidean norm of a sequence (two passes,
/// scaled by the largest magnitude as BLAS `nrm2` does).
/// NaN for any NaN entry (`max` alone would skip it), +∞ for an infinite
/// one.
fn nrm2<'a, S: NdScalar>(it: impl Iterator<Item = &'a S> + Clone) -> S {
    let amax = it.clone().fold(S::zero(), |a, &x| {
        if a.is_nan() || x.is_nan() {
            S::nan()
        } else {
            a.max(x.abs())
        }
    });
    if amax == S::zero() || !amax.is_finite() {
        return amax;
    }
    let inv = S::one() / amax;
    let ss: S = if inv.is_finite() {
        it.map(|&x| {
            let y = x * inv;
            y * y
        })
        .sum()
    } else {
        it.map(|&x| {
            let y = x / amax;
            y * y
        })
        .sum()
    };
    amax * ss.sqrt()
}

impl<S: NdScalar> Backend for NdBackend<S> {
    type Scalar = S;
    type Tensor = ArrayD<S>;

    fn shape(t: &ArrayD<S>) -> Shape {
        // Ranks above 4 are reported as the flat rank-4 shape [len, 1, 1, 1]:
        // matrix norms refuse it (UnsupportedRank(4)), entrywise norms treat
        // the tensor as flat, and the elementwise operations work in logical
        // row-major order when two such tensors differ in dimensions (zip2).
        Shape::new(t.shape()).unwrap_or_else(|_| Shape::new(&[t.len(), 1, 1, 1]).expect("rank 4"))
    }

    fn zeros_like(t: &ArrayD<S>) -> ArrayD<S> {
        ArrayD::zeros(t.raw_dim())
    }

    fn all_finite(t: &ArrayD<S>) -> bool {
        match t.as_slice_memory_order() {
            Some(s) => slices::all_finite(s),
            None => t.iter().all(|x| x.is_finite()),
        }
    }

    fn max_abs(t: &ArrayD<S>) -> S {
        match t.as_slice_memory_order() {
            Some(s) => slices::max_abs(s),
            None => t.iter().fold(S::zero(), |m, &v| {
                if m.is_nan() || v.is_nan() {
                    S::nan()
                } else {
                    m.max(v.abs())
                }
            }),
        }
    }

    fn dot(x: &ArrayD<S>, y: &ArrayD<S>) -> S {
        // Standard layout: the slices are the logical row-major order, so
        // equal lengths suffice (tensors of rank > 4 with other dimensions).
        if let (Some(a), Some(b)) = (x.as_slice(), y.as_slice())
            && a.len() == b.len()
        {
            slices::dot(a, b)
        } else if x.shape() == y.shape() {
            Zip::from(x)
                .and(y)
                .fold(S::zero(), |acc, &a, &b| acc + a * b)
        } else {
            x.iter()
                .zip(y.iter())
                .fold(S::zero(), |acc, (&a, &b)| acc + a * b)
        }
    }

    fn argmax_abs(x: &ArrayD<S>) -> (usize, S) {
        if let Some(s) = x.as_slice() {
            // The largest magnitude (NaN ignored, as `>` below ignores it),
            // then its first position: two vectorized passes.
            let m = s.iter().fold(S::zero(), |m, &v| m.max(v.abs()));
            if m == S::zero() {
                return (0, S::zero());
            }
            let k = s.iter().position(|v| v.abs() == m).unwrap_or(0);
            return (k, s[k]);
        }
        let mut best = (0usize, S::zero());
        for (k, &v) in x.iter().enumerate() {
            if v.abs() > best.1.abs() {
                best = (k, v);
            }
        }
        best
    }

    fn sum_abs(x: &ArrayD<S>) -> S {
        match x.as_slice_memory_order() {
            Some(s) => slices::sum_abs(s),
            None => x.iter().fold(S::zero(), |a, &v| a + v.abs()),
        }
    }

    fn norm2(x: &ArrayD<S>) -> S {
        match x.as_slice_memory_order() {
            Some(s) => S::nrm2_slice(s),
            None => nrm2(x.iter()),
        }
    }

    fn col_norms(x: &ArrayD<S>, out: &mut [S]) {
        let x = mat(x);
        for (o, c) in out.iter_mut().zip(x.columns()) {
            *o = nrm2(c.iter());
        }
    }

    fn row_norms(x: &ArrayD<S>, out: &mut [S]) {
        let x = mat(x);
        for (o, r) in out.iter_mut().zip(x.rows()) {
            *o = nrm2(r.iter());
        }
    }

    fn fill(x: &mut ArrayD<S>, v: S) {
        x.fill(v);
    }

    fn set(x: &mut ArrayD<S>, k: usize, v: S) {
        match x.as_slice_mut() {
            Some(s) => s[k] = v,
            None => *x.iter_mut().nth(k).expect("flat index in range") = v,
        }
    }

    fn scale(a: S, x: &ArrayD<S>, out: &mut ArrayD<S>) {
        zip2(out, x, |o, v| *o = a * v);
    }

    fn sign(a: S, x: &ArrayD<S>, out: &mut ArrayD<S>) {
        zip2(out, x, |o, v| {
            *o = if v > S::zero() {
                a
            } else if v < S::zero() {
                -a
            } else {
                S::zero()
            }
        });
    }

    fn scale_mut(a: S, x: &mut ArrayD<S>) {
        match x.as_slice_memory_order_mut() {
            Some(s) => slices::map_mut(s, |v| *v = a * *v),
            None => x.map_inplace(|v| *v = a * *v),
        }
    }

    fn axpby(a: S, x: &ArrayD<S>, b: S, y: &mut ArrayD<S>) {
        zip2(y, x, |yv, xv| *yv = a * xv + b * *yv);
    }

    fn scale_cols(x: &ArrayD<S>, s: &[S], out: &mut ArrayD<S>) {
        let x = mat(x);
        let mut o = mat_mut(out);
        for (mut orow, xrow) in o.rows_mut().into_iter().zip(x.rows()) {
            Zip::from(&mut orow)
                .and(&xrow)
                .and(s)
                .for_each(|ov, &xv, &sv| *ov = sv * xv);
        }
    }

    fn scale_rows(x: &ArrayD<S>, s: &[S], out: &mut ArrayD<S>) {
        let x = mat(x);
        let mut o = mat_mut(out);
        for ((mut orow, xrow), &sv) in o.rows_mut().into_iter().zip(x.rows()).zip(s) {
            Zip::from(&mut orow)
                .and(&xrow)
                .for_each(|ov, &xv| *ov = sv * xv);
        }
    }

    fn scale_cols_mut(x: &mut ArrayD<S>, s: &[S]) {
        for mut row in mat_mut(x).rows_mut() {
            Zip::from(&mut row).and(s).for_each(|v, &sv| *v = sv * *v);
        }
    }

    fn scale_rows_mut(x: &mut ArrayD<S>, s: &[S]) {
        for (mut row, &sv) in mat_mut(x).rows_mut().into_iter().zip(s) {
            row.map_inplace(|v| *v = sv * *v);
        }
    }

    fn gemm(
        alpha: S,
        a: &ArrayD<S>,
        ta: Trans,
        b: &ArrayD<S>,
        tb: Trans,
        beta: S,
        c: &mut ArrayD<S>,
    ) {
        let (a, b) = (op_view(a, ta), op_view(b, tb));
        assert!(
            a.ncols() == b.nrows() && c.shape() == [a.nrows(), b.ncols()],
            "gemm: shape mismatch"
        );
        let Some(acc) = prepare_accumulator(beta, a.ncols(), c) else {
            return;
        };
        let work = a.nrows() * a.ncols() * b.ncols();
        faer::linalg::matmul::matmul(
            fview_mut(mat_mut(c)),
            acc,
            fview(a),
            fview(b),
            alpha,
            par(work),
        );
    }

    fn syrk(alpha: S, x: &ArrayD<S>, beta: S, c: &mut ArrayD<S>) {
        let xv = mat(x);
        assert!(
            c.shape() == [xv.nrows(), xv.nrows()],
            "syrk: shape mismatch"
        );
        if S::native_syrk(alpha, x, beta, c) {
            return;
        }
        let Some(acc) = prepare_accumulator(beta, xv.ncols(), c) else {
            return;
        };
        let mut cv = mat_mut(c);
        lower_product(fview_mut(cv.view_mut()), fview(xv), fview(xv), alpha, acc);
        mirror_lower(&mut cv);
    }

    fn gemm_sym_from(
        alpha: S,
        a: &ArrayD<S>,
        b: &ArrayD<S>,
        beta: S,
        src: &ArrayD<S>,
        out: &mut ArrayD<S>,
    ) {
        let (av, bv) = (mat(a), mat(b));
        let k = av.nrows();
        assert!(
            bv.dim() == av.dim() && src.shape() == [k, k] && out.shape() == [k, k],
            "gemm_sym_from: shape mismatch"
        );
        if S::native_sym(alpha, a, b, beta, src, out) {
            return;
        }
        Self::scale(beta, src, out);
        let Some(acc) = prepare_accumulator(S::one(), av.ncols(), out) else {
            return;
        };
        let mut cv = mat_mut(out);
        lower_product(fview_mut(cv.view_mut()), fview(av), fview(bv), alpha, acc);
        mirror_lower(&mut cv);
    }

    fn transpose_into(a: S, x: &ArrayD<S>, out: &mut ArrayD<S>) {
        let x = mat(x);
        let mut o = mat_mut(out);
        assert!(
            o.dim() == (x.ncols(), x.nrows()),
            "transpose_into: shape mismatch"
        );
        Zip::from(&mut o)
            .and(&x.t())
            .for_each(|ov, &xv| *ov = a * xv);
    }

    fn zeros(_like: &ArrayD<S>, shape: Shape) -> ArrayD<S> {
        ArrayD::zeros(IxDyn(shape.dims()))
    }

    fn adamw(
        p: &mut ArrayD<S>,
        g: &ArrayD<S>,
        m: &mut ArrayD<S>,
        v: &mut ArrayD<S>,
        h: &AdamWStep<S>,
    ) {
        let one = S::one();
        let decay = one - h.lr * h.weight_decay;
        let (c1, c2) = (one / h.bias1, one / h.bias2);
        let step = |p: &mut S, g: S, m: &mut S, v: &mut S| {
            *m = h.beta1 * *m + (one - h.beta1) * g;
            *v = h.beta2 * *v + (one - h.beta2) * g * g;
            *p = decay * *p - h.lr * (*m * c1) / ((*v * c2).sqrt() + h.eps);
        };
        let dims = p.shape();
        let same = g.shape() == dims && m.shape() == dims && v.shape() == dims;
        if same
            && let (Some(p), Some(g), Some(m), Some(v)) = (
                p.as_slice_mut(),
                g.as_slice(),
                m.as_slice_mut(),
                v.as_slice_mut(),
            )
        {
            slices::map4(p, g, m, v, step);
        } else if same {
            Zip::from(p)
                .and(g)
                .and(m)
                .and(v)
                .for_each(|p, &g, m, v| step(p, g, m, v));
        } else {
            // Rank > 4 tensors with one flat Shape (see `zip2`).
            let it = p
                .iter_mut()
                .zip(g.iter())
                .zip(m.iter_mut())
                .zip(v.iter_mut());
            it.for_each(|(((p, &g), m), v)| step(p, g, m, v));
        }
    }

    fn copy_to_slice(x: &ArrayD<S>, out: &mut [S]) {
        for (o, &v) in out.iter_mut().zip(x.iter()) {
            *o = v;
        }
    }

    fn copy_from_slice(src: &[S], out: &mut ArrayD<S>) {
        for (o, &v) in out.iter_mut().zip(src) {
            *o = v;
        }
    }
}
