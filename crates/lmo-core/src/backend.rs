//! The backend traits: the seam through which all optimizer logic is written
//! once and run on ndarray, libtorch or CUDA tensors.
//!
//! A backend supplies a tensor type and the handful of operations the LMOs of
//! SPEC §1 need. All operations are associated functions (no backend value):
//! device or stream context, if any, lives in the tensor handle.
//!
//! A backend implements each operation natively (BLAS, libtorch, a CUDA
//! kernel); the LMOs in [`crate::norms`] are composed of these operations, so
//! a backend that makes an operation faster makes every LMO using it faster.
//! The polar factor (spectral LMO) is pluggable separately through
//! [`crate::Orthogonalizer`].

use crate::{LmoError, Scalar, Shape};
use num_traits::Float;

/// Transposition flag of a [`Backend::gemm`] operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trans {
    /// Use the operand as it is.
    No,
    /// Use the transpose of the operand.
    Yes,
}

/// Hyper-parameters of one fused AdamW update ([`Backend::adamw`]), with
/// the bias corrections already folded in by the caller.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep<S> {
    /// Learning rate η (schedule applied).
    pub lr: S,
    /// First-moment decay β₁.
    pub beta1: S,
    /// Second-moment decay β₂.
    pub beta2: S,
    /// ε added to `√v̂`.
    pub eps: S,
    /// Decoupled weight decay λ (the update multiplies `p` by `1 − η·λ`).
    pub weight_decay: S,
    /// `1 − β₁^k` (bias correction of the first moment at step k ≥ 1).
    pub bias1: S,
    /// `1 − β₂^k`.
    pub bias2: S,
}

/// Tensors and the operations on them that the LMOs need.
///
/// Conventions: tensors are read in logical row-major order (flat index
/// `i·n + j` for a matrix entry `(i, j)`). Callers check shapes before
/// calling an operation; operations may panic on mismatched shapes (they are
/// internal, not user-facing). Reductions over empty tensors return zero.
pub trait Backend: 'static {
    /// The scalar the backend computes in.
    type Scalar: Scalar;
    /// The backend's tensor handle (owned).
    type Tensor;

    /// The tensor's shape.
    fn shape(t: &Self::Tensor) -> Shape;
    /// A zero tensor with the shape (and device) of `t`.
    fn zeros_like(t: &Self::Tensor) -> Self::Tensor;
    /// `true` if no entry is NaN or ±Inf.
    fn all_finite(t: &Self::Tensor) -> bool;

    /// Trace inner product `<x, y> = Σ x_k y_k`.
    fn dot(x: &Self::Tensor, y: &Self::Tensor) -> Self::Scalar;
    /// `(k, x_k)` for the first entry of largest magnitude `|x_k| = max_j |x_j|`
    /// (flat row-major index and signed value); `(0, 0)` for an empty tensor.
    fn argmax_abs(x: &Self::Tensor) -> (usize, Self::Scalar);
    /// `max_k |x_k|`, NaN when some entry is NaN, so the result is finite
    /// exactly when every entry is (+∞ for an infinite entry); 0 for an
    /// empty tensor. One pass where a backend fuses it (the finiteness
    /// check and the magnitude bound of a gradient, or the zero test of an
    /// LMO, in one read); the default makes two, [`Backend::all_finite`]
    /// then [`Backend::argmax_abs`].
    fn max_abs(x: &Self::Tensor) -> Self::Scalar {
        if Self::all_finite(x) {
            Self::argmax_abs(x).1.abs()
        } else {
            // Not finite: NaN if some entry is NaN, else +∞.
            let s = Self::sum_abs(x);
            if s.is_nan() {
                s
            } else {
                Self::Scalar::infinity()
            }
        }
    }
    /// `Σ_k |x_k|`.
    fn sum_abs(x: &Self::Tensor) -> Self::Scalar;
    /// Euclidean (Frobenius) norm `√(Σ_k x_k²)`, computed without overflow or
    /// underflow for any finite input (scaled as in BLAS `nrm2`). A NaN
    /// entry must give NaN and an infinite one a non-finite result (a
    /// `max`-based scaling must not skip NaN): Newton–Schulz checks its
    /// input for NaN/Inf only when this norm is not finite.
    fn norm2(x: &Self::Tensor) -> Self::Scalar;
    /// Euclidean norms of the columns of a matrix into `out` (`out.len() == n`).
    fn col_norms(x: &Self::Tensor, out: &mut [Self::Scalar]);
    /// Euclidean norms of the rows of a matrix into `out` (`out.len() == m`).
    fn row_norms(x: &Self::Tensor, out: &mut [Self::Scalar]);

    /// Sets every entry of `x` to `v`.
    fn fill(x: &mut Self::Tensor, v: Self::Scalar);
    /// Sets the entry at flat row-major index `k` to `v`.
    fn set(x: &mut Self::Tensor, k: usize, v: Self::Scalar);
    /// `out = a·x`.
    fn scale(a: Self::Scalar, x: &Self::Tensor, out: &mut Self::Tensor);
    /// `out = a·sign(x)` with `sign(0) = 0`.
    fn sign(a: Self::Scalar, x: &Self::Tensor, out: &mut Self::Tensor);
    /// `x = a·x` in place.
    fn scale_mut(a: Self::Scalar, x: &mut Self::Tensor);
    /// `y = a·x + b·y`.
    fn axpby(a: Self::Scalar, x: &Self::Tensor, b: Self::Scalar, y: &mut Self::Tensor);
    /// `out[:, k] = s[k]·x[:, k]` for a matrix (`s.len() == n`).
    fn scale_cols(x: &Self::Tensor, s: &[Self::Scalar], out: &mut Self::Tensor);
    /// `out[j, :] = s[j]·x[j, :]` for a matrix (`s.len() == m`).
    fn scale_rows(x: &Self::Tensor, s: &[Self::Scalar], out: &mut Self::Tensor);
    /// `x[:, k] = s[k]·x[:, k]` in place for a matrix (`s.len() == n`): the
    /// second step of a two-step column scaling (the column-norm LMO uses
    /// it only for columns whose norm is subnormal, where one multiplier
    /// `1/‖x_:k‖` would overflow). The default copies `x` into a temporary
    /// ([`Backend::zeros_like`], one allocation) and calls
    /// [`Backend::scale_cols`]; a backend overrides it to work in place.
    fn scale_cols_mut(x: &mut Self::Tensor, s: &[Self::Scalar]) {
        let mut src = Self::zeros_like(x);
        Self::scale(num_traits::One::one(), x, &mut src);
        Self::scale_cols(&src, s, x);
    }
    /// `x[j, :] = s[j]·x[j, :]` in place for a matrix (`s.len() == m`); as
    /// [`Backend::scale_cols_mut`], for rows.
    fn scale_rows_mut(x: &mut Self::Tensor, s: &[Self::Scalar]) {
        let mut src = Self::zeros_like(x);
        Self::scale(num_traits::One::one(), x, &mut src);
        Self::scale_rows(&src, s, x);
    }

    /// `c = α·op(a)·op(b) + β·c` for matrices, `op` given by the [`Trans`]
    /// flags (a GEMM through the backend's tuned library).
    fn gemm(
        alpha: Self::Scalar,
        a: &Self::Tensor,
        ta: Trans,
        b: &Self::Tensor,
        tb: Trans,
        beta: Self::Scalar,
        c: &mut Self::Tensor,
    );

    /// `out = α·op(a)·op(b) + β·src` (`src` has `out`'s shape and is not
    /// `out`): the GEMM of a Newton–Schulz step, `X ← a·X + B·X`, without a
    /// separate pass for `a·X` where the backend can fuse it. The default
    /// is [`Backend::scale`] then [`Backend::gemm`] with `β = 1`.
    #[allow(clippy::too_many_arguments)]
    fn gemm_from(
        alpha: Self::Scalar,
        a: &Self::Tensor,
        ta: Trans,
        b: &Self::Tensor,
        tb: Trans,
        beta: Self::Scalar,
        src: &Self::Tensor,
        out: &mut Self::Tensor,
    ) {
        Self::scale(beta, src, out);
        Self::gemm(alpha, a, ta, b, tb, num_traits::One::one(), out);
    }

    /// `c = α·x·xᵀ + β·c` for a `k × l` matrix `x` and a `k × k` matrix `c`
    /// (a symmetric rank-k update, BLAS `syrk`). The result is written in
    /// full (both triangles). The default is one [`Backend::gemm`]
    /// (`2k²l` flops); a backend that computes one triangle and mirrors it
    /// does `k²l`. `c` must itself be symmetric when `β ≠ 0`. Because
    /// `A·Aᵀ = A·A` for a symmetric `A`, this also squares symmetric
    /// matrices (the `A·A` of Newton–Schulz, SPEC §2).
    fn syrk(alpha: Self::Scalar, x: &Self::Tensor, beta: Self::Scalar, c: &mut Self::Tensor) {
        Self::gemm(alpha, x, Trans::No, x, Trans::Yes, beta, c);
    }

    /// `out = α·a·bᵀ + β·src` for `k × l` matrices `a`, `b` and a symmetric
    /// `k × k` matrix `src` (not `out`), where the caller knows that
    /// `a·bᵀ` is symmetric: two commuting symmetric matrices (then
    /// `a·bᵀ = a·b`), as in the Gram form of Newton–Schulz, or `b = a`. The
    /// result is written in full (both triangles). The default is
    /// [`Backend::gemm_from`] (`2k²l` flops); a backend that computes one
    /// triangle and mirrors it does `k²l`, and its result is exactly
    /// symmetric.
    fn gemm_sym_from(
        alpha: Self::Scalar,
        a: &Self::Tensor,
        b: &Self::Tensor,
        beta: Self::Scalar,
        src: &Self::Tensor,
        out: &mut Self::Tensor,
    ) {
        Self::gemm_from(alpha, a, Trans::No, b, Trans::Yes, beta, src, out);
    }

    /// `out = a·xᵀ` for a matrix `x` (`out` has the transposed shape).
    fn transpose_into(a: Self::Scalar, x: &Self::Tensor, out: &mut Self::Tensor);

    /// A zero tensor of shape `shape` on the device of `like` (workspace
    /// allocation; never called per step once workspaces are sized).
    fn zeros(like: &Self::Tensor, shape: Shape) -> Self::Tensor;

    /// One fused AdamW update (Loshchilov & Hutter 2019, "Decoupled weight
    /// decay regularization", Alg. 2), elementwise:
    /// `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
    /// `p ← (1 − η·λ)·p − η·(m/bias1) / (√(v/bias2) + ε)`.
    fn adamw(
        p: &mut Self::Tensor,
        g: &Self::Tensor,
        m: &mut Self::Tensor,
        v: &mut Self::Tensor,
        h: &AdamWStep<Self::Scalar>,
    );

    /// Copies `x` into `out` in row-major order (`out.len() == numel`). With
    /// [`Backend::copy_from_slice`] this is the fallback path for exact
    /// (host) reference computations such as the SVD.
    fn copy_to_slice(x: &Self::Tensor, out: &mut [Self::Scalar]);
    /// Overwrites `out` with the row-major data of `src` (`src.len() == numel`).
    fn copy_from_slice(src: &[Self::Scalar], out: &mut Self::Tensor);

    /// `(σ_max, Σ σ_i)` of a matrix (spectral and nuclear norms, SPEC §1)
    /// from the backend's own SVD, computed in f64, or `None` (the
    /// default) to let the caller run the exact one-sided Jacobi SVD of
    /// [`crate::ExactPolar`] on a host copy. A backend with a fast native
    /// SVD (LAPACK through libtorch, cuSOLVER) overrides this; the spectral
    /// norms' `norm` and `dual_norm` then use it.
    fn spectral_norms(_x: &Self::Tensor) -> Option<(f64, f64)> {
        None
    }

    /// Checks that `t` is finite, else [`LmoError::NonFinite`].
    fn check_finite(t: &Self::Tensor) -> Result<(), LmoError> {
        if Self::all_finite(t) {
            Ok(())
        } else {
            Err(LmoError::NonFinite)
        }
    }
}
