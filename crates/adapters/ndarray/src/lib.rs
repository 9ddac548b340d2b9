//! # lmo-ndarray
//!
//! The [`Backend`] of `lmo-core` for [`ndarray`] arrays on the CPU, in `f32`
//! and `f64`. Tensors are [`ndarray::ArrayD`] (any rank up to 4; build them
//! with `.into_dyn()`), GEMMs go through ndarray's `general_mat_mul`
//! (the `matrixmultiply` crate's tuned kernels), and no operation allocates
//! except [`Backend::zeros_like`].
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

use lmo_core::{Backend, Scalar, Shape, Trans};
use ndarray::{ArrayD, ArrayView2, ArrayViewMut2, Ix2, LinalgScalar, Zip, linalg::general_mat_mul};

/// The ndarray backend for scalar `S` (`f32` or `f64`); a zero-sized marker.
#[derive(Clone, Copy, Debug, Default)]
pub struct NdBackend<S>(PhantomData<S>);

/// The ndarray backend in `f32`.
pub type Nd32 = NdBackend<f32>;
/// The ndarray backend in `f64`.
pub type Nd64 = NdBackend<f64>;

/// A scalar the ndarray backend supports: `f32` and `f64`.
pub trait NdScalar: Scalar + LinalgScalar {}
impl NdScalar for f32 {}
impl NdScalar for f64 {}

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

/// Overflow- and underflow-safe Euclidean norm of a sequence (two passes,
/// scaled by the largest magnitude as BLAS `nrm2` does).
fn nrm2<'a, S: NdScalar>(it: impl Iterator<Item = &'a S> + Clone) -> S {
    let amax = it.clone().fold(S::zero(), |a, &x| a.max(x.abs()));
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
        // Ranks above 4 are reported as rank 4+; every norm rejects them.
        Shape::new(t.shape()).unwrap_or_else(|_| Shape::new(&[t.len(), 1, 1, 1]).expect("rank 4"))
    }

    fn zeros_like(t: &ArrayD<S>) -> ArrayD<S> {
        ArrayD::zeros(t.raw_dim())
    }

    fn all_finite(t: &ArrayD<S>) -> bool {
        t.iter().all(|x| x.is_finite())
    }

    fn dot(x: &ArrayD<S>, y: &ArrayD<S>) -> S {
        Zip::from(x)
            .and(y)
            .fold(S::zero(), |acc, &a, &b| acc + a * b)
    }

    fn argmax_abs(x: &ArrayD<S>) -> (usize, S) {
        let mut best = (0usize, S::zero());
        for (k, &v) in x.iter().enumerate() {
            if v.abs() > best.1.abs() {
                best = (k, v);
            }
        }
        best
    }

    fn sum_abs(x: &ArrayD<S>) -> S {
        x.iter().fold(S::zero(), |a, &v| a + v.abs())
    }

    fn norm2(x: &ArrayD<S>) -> S {
        nrm2(x.iter())
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
        Zip::from(out).and(x).for_each(|o, &v| *o = a * v);
    }

    fn sign(a: S, x: &ArrayD<S>, out: &mut ArrayD<S>) {
        Zip::from(out).and(x).for_each(|o, &v| {
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
        x.map_inplace(|v| *v = a * *v);
    }

    fn axpby(a: S, x: &ArrayD<S>, b: S, y: &mut ArrayD<S>) {
        Zip::from(y)
            .and(x)
            .for_each(|yv, &xv| *yv = a * xv + b * *yv);
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

    fn gemm(
        alpha: S,
        a: &ArrayD<S>,
        ta: Trans,
        b: &ArrayD<S>,
        tb: Trans,
        beta: S,
        c: &mut ArrayD<S>,
    ) {
        let a = mat(a);
        let b = mat(b);
        let a = if ta == Trans::Yes {
            a.reversed_axes()
        } else {
            a
        };
        let b = if tb == Trans::Yes {
            b.reversed_axes()
        } else {
            b
        };
        general_mat_mul(alpha, &a, &b, beta, &mut mat_mut(c));
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
