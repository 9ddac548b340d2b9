//! The norms of SPEC §1 with their dual norms and linear minimization oracles.
//!
//! For a norm `‖·‖` on `m × n` matrices (or any tensor, for the entrywise
//! norms), the dual norm is `‖G‖_* = sup_{‖D‖≤1} <G, D>` and the LMO is
//! `lmo(G) = argmin_{‖D‖≤1} <G, D>`. Every LMO here satisfies, for `G ≠ 0`,
//! `<G, lmo(G)> = −‖G‖_*` and `‖lmo(G)‖ = 1` (up to rounding), and
//! `lmo(0) = 0` (never NaN).
//!
//! Every norm carries a positive scale `s` (default 1): the scaled norm is
//! `‖X‖' = ‖X‖/s`, hence `lmo' = s·lmo` and `‖G‖'_* = s·‖G‖_*`.
//!
//! References: SPEC §1; Pethick et al., "Training deep learning models with
//! norm-constrained LMOs" (Scion, arXiv 2502.07529), Table 2; Bernstein &
//! Newhouse, "Old optimizer, new norm" (arXiv 2409.20325).

use alloc::vec::Vec;

use num_traits::{Float, Zero};

use crate::{Backend, ExactPolar, LmoError, Orthogonalizer, Scalar, Shape};

/// A norm with its dual norm and linear minimization oracle, on the tensors
/// of backend `B`.
///
/// Methods take `&mut self` so that a norm can own its workspace (column
/// norms, SVD buffers, an orthogonalizer's iterates): allocated on the first
/// call, reused afterwards. Errors leave `out` untouched.
pub trait Norm<B: Backend> {
    /// A short human-readable name (e.g. `"spectral"`).
    fn name(&self) -> &'static str;

    /// `‖x‖`.
    fn norm(&mut self, x: &B::Tensor) -> Result<B::Scalar, LmoError>;

    /// The dual norm `‖g‖_* = sup_{‖d‖≤1} <g, d>`.
    fn dual_norm(&mut self, g: &B::Tensor) -> Result<B::Scalar, LmoError>;

    /// Writes `lmo(g) = argmin_{‖d‖≤1} <g, d>` into `out` (same shape as `g`)
    /// and returns `<g, lmo(g)>`, which is `−‖g‖_*` (exactly so for every
    /// norm here, except [`Spectral`] with an inexact orthogonalizer, where
    /// it is the value attained by the approximate polar factor).
    ///
    /// Errors: [`LmoError::ShapeMismatch`] if `out` differs in shape,
    /// [`LmoError::UnsupportedRank`] for a matrix norm on a non-matrix,
    /// [`LmoError::NonFinite`] if `g` has NaN/Inf.
    fn lmo(&mut self, g: &B::Tensor, out: &mut B::Tensor) -> Result<B::Scalar, LmoError>;

    /// `Ok(())` if this norm is defined on tensors of `shape`, else the
    /// error its methods would return for one ([`LmoError::UnsupportedRank`]
    /// for a matrix norm on a tensor of rank ≠ 2). An optimizer calls it
    /// once per block at construction, so that a tensor the norm cannot
    /// take is refused before any step. The default accepts every shape
    /// (entrywise norms); a norm with a narrower domain overrides it.
    fn check_shape(&self, shape: &Shape) -> Result<(), LmoError> {
        let _ = shape;
        Ok(())
    }
}

/// Validates a norm scale: finite and `> 0`.
pub fn check_scale(s: f64) -> Result<f64, LmoError> {
    if s.is_finite() && s > 0.0 {
        Ok(s)
    } else {
        Err(LmoError::InvalidHyperParameter(
            "norm scale must be finite and > 0",
        ))
    }
}

fn check_io<B: Backend>(g: &B::Tensor, out: &B::Tensor) -> Result<Shape, LmoError> {
    let shape = B::shape(g);
    shape.check_eq(&B::shape(out))?;
    Ok(shape)
}

fn checked_input<B: Backend>(x: &B::Tensor) -> Result<Shape, LmoError> {
    B::check_finite(x)?;
    Ok(B::shape(x))
}

/// `out = −s·g/‖g‖₂`, returning `<g, out> = −s·‖g‖₂` (0 and a zero output
/// for `g = 0`): the LMO of the Euclidean ball of radius `s`, shared by
/// [`Frobenius`] and [`VectorRms`].
///
/// One pass `out = (−s/‖g‖₂)·g` when that multiplier is finite and
/// `‖g‖₂` is normal; otherwise two steps that never form an overflowing
/// multiplier: a subnormal `g` is first lifted by the exact power of two
/// [`Scalar::subnormal_lift`] (and its norm recomputed there, at full
/// precision), and where `s/‖g‖₂` would overflow, `g/‖g‖₂` is formed
/// before the factor `−s`.
fn scaled_euclidean_lmo<B: Backend>(g: &B::Tensor, out: &mut B::Tensor, s: f64) -> B::Scalar {
    let s = B::Scalar::of(s);
    let n = B::norm2(g);
    if n == B::Scalar::zero() {
        B::fill(out, B::Scalar::zero());
        return B::Scalar::zero();
    }
    let lifted = n < B::Scalar::min_positive_value();
    let nn = if lifted {
        B::scale(B::Scalar::subnormal_lift(), g, out);
        B::norm2(out)
    } else {
        n
    };
    let r = -s / nn;
    match (lifted, r.is_finite()) {
        (false, true) => B::scale(r, g, out),
        (true, true) => B::scale_mut(r, out),
        (false, false) => {
            B::scale(nn.recip(), g, out);
            B::scale_mut(-s, out);
        }
        (true, false) => {
            B::scale_mut(nn.recip(), out);
            B::scale_mut(-s, out);
        }
    }
    -s * n
}

macro_rules! scale_builder {
    () => {
        /// Sets the scale `s > 0` (`‖X‖' = ‖X‖/s`, `lmo' = s·lmo`,
        /// `‖G‖'_* = s·‖G‖_*`); a non-finite or non-positive `s` gives
        /// [`LmoError::InvalidHyperParameter`].
        pub fn with_scale(mut self, s: f64) -> Result<Self, LmoError> {
            self.scale = check_scale(s)?;
            Ok(self)
        }

        /// The scale `s`.
        pub fn scale(&self) -> f64 {
            self.scale
        }
    };
}

/// Frobenius (Euclidean) norm `‖X‖_F = √(Σ X_jk²)`, self-dual:
/// `‖G‖_* = ‖G‖_F`, `lmo(G) = −G/‖G‖_F`. Any rank. Used by normalized SGD
/// and BPM (SPEC §1, row 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Frobenius {
    scale: f64,
}

impl Default for Frobenius {
    fn default() -> Self {
        Self { scale: 1.0 }
    }
}

impl Frobenius {
    /// The unscaled Frobenius norm.
    pub fn new() -> Self {
        Self::default()
    }
    scale_builder!();
}

impl<B: Backend> Norm<B> for Frobenius {
    fn name(&self) -> &'static str {
        "frobenius"
    }
    fn norm(&mut self, x: &B::Tensor) -> Result<B::Scalar, LmoError> {
        checked_input::<B>(x)?;
        Ok(B::norm2(x) / B::Scalar::of(self.scale))
    }
    fn dual_norm(&mut self, g: &B::Tensor) -> Result<B::Scalar, LmoError> {
        checked_input::<B>(g)?;
        Ok(B::norm2(g) * B::Scalar::of(self.scale))
    }
    fn lmo(&mut self, g: &B::Tensor, out: &mut B::Tensor) -> Result<B::Scalar, LmoError> {
        check_io::<B>(g, out)?;
        B::check_finite(g)?;
        Ok(scaled_euclidean_lmo::<B>(g, out, self.scale))
    }
}

/// Entrywise ℓ∞ norm `max |X_jk|` (the ℓ1→ℓ∞ operator norm), dual
/// `‖G‖_* = Σ |G_jk|`, `lmo(G) = −sign(G)` with `sign(0) = 0`. Any rank.
/// signSGD and Scion's "Sign" (which rescales by `1/d_in`: use
/// [`SignInf::with_scale`]) (SPEC §1, row 4).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SignInf {
    scale: f64,
}

impl Default for SignInf {
    fn default() -> Self {
        Self { scale: 1.0 }
    }
}

impl SignInf {
    /// The unscaled ℓ∞ norm.
    pub fn new() -> Self {
        Self::default()
    }
    scale_builder!();
}

impl<B: Backend> Norm<B> for SignInf {
    fn name(&self) -> &'static str {
        "linf-sign"
    }
    fn norm(&mut self, x: &B::Tensor) -> Result<B::Scalar, LmoError> {
        checked_input::<B>(x)?;
        Ok(B::argmax_abs(x).1.abs() / B::Scalar::of(self.scale))
    }
    fn dual_norm(&mut self, g: &B::Tensor) -> Result<B::Scalar, LmoError> {
        checked_input::<B>(g)?;
        Ok(B::sum_abs(g) * B::Scalar::of(self.scale))
    }
    fn lmo(&mut self, g: &B::Tensor, out: &mut B::Tensor) -> Result<B::Scalar, LmoError> {
        check_io::<B>(g, out)?;
        B::check_finite(g)?;
        let s = B::Scalar::of(self.scale);
        B::sign(-s, g, out);
        Ok(-s * B::sum_abs(g))
    }
}

/// Entrywise ℓ1 norm `Σ |X_jk|`, dual `‖G‖_* = max |G_jk|`,
/// `lmo(G) = −sign(G_jk)·e_jk` at the first entry of largest magnitude
/// (a sparse, one-entry update). Any rank (SPEC §1, row 5).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct L1 {
    scale: f64,
}

impl Default for L1 {
    fn default() -> Self {
        Self { scale: 1.0 }
    }
}

impl L1 {
    /// The unscaled ℓ1 norm.
    pub fn new() -> Self {
        Self::default()
    }
    scale_builder!();
}

impl<B: Backend> Norm<B> for L1 {
    fn name(&self) -> &'static str {
        "l1"
    }
    fn norm(&mut self, x: &B::Tensor) -> Result<B::Scalar, LmoError> {
        checked_input::<B>(x)?;
        Ok(B::sum_abs(x) / B::Scalar::of(self.scale))
    }
    fn dual_norm(&mut self, g: &B::Tensor) -> Result<B::Scalar, LmoError> {
        checked_input::<B>(g)?;
        Ok(B::argmax_abs(g).1.abs() * B::Scalar::of(self.scale))
    }
    fn lmo(&mut self, g: &B::Tensor, out: &mut B::Tensor) -> Result<B::Scalar, LmoError> {
        check_io::<B>(g, out)?;
        B::check_finite(g)?;
        let s = B::Scalar::of(self.scale);
        let (k, v) = B::argmax_abs(g);
        B::fill(out, B::Scalar::zero());
        if v == B::Scalar::zero() {
            return Ok(B::Scalar::zero());
        }
        B::set(out, k, -s * v.signum());
        Ok(-s * v.abs())
    }
}

/// Vector RMS norm `‖b‖_RMS = ‖b‖₂/√d` (`d` = number of entries, any
/// rank), dual `‖g‖_* = √d·‖g‖₂`, `lmo(g) = −√d·g/‖g‖₂`. Scion's "BiasRMS"
/// for biases and gains (SPEC §1, row 8). An empty tensor has norm 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VectorRms {
    scale: f64,
}

impl Default for VectorRms {
    fn default() -> Self {
        Self { scale: 1.0 }
    }
}

impl VectorRms {
    /// The unscaled RMS norm.
    pub fn new() -> Self {
        Self::default()
    }
    scale_builder!();
}

impl<B: Backend> Norm<B> for VectorRms {
    fn name(&self) -> &'static str {
        "vector-rms"
    }
    fn norm(&mut self, x: &B::Tensor) -> Result<B::Scalar, LmoError> {
        let d = checked_input::<B>(x)?.numel();
        if d == 0 {
            return Ok(B::Scalar::zero());
        }
        Ok(B::norm2(x) / (B::Scalar::of(d as f64).sqrt() * B::Scalar::of(self.scale)))
    }
    fn dual_norm(&mut self, g: &B::Tensor) -> Result<B::Scalar, LmoError> {
        let d = checked_input::<B>(g)?.numel();
        Ok(B::norm2(g) * B::Scalar::of((d as f64).sqrt() * self.scale))
    }
    fn lmo(&mut self, g: &B::Tensor, out: &mut B::Tensor) -> Result<B::Scalar, LmoError> {
        let d = check_io::<B>(g, out)?.numel();
        B::check_finite(g)?;
        Ok(scaled_euclidean_lmo::<B>(
            g,
            out,
            (d as f64).sqrt() * self.scale,
        ))
    }
}

/// Max-column (`ROWS = false`) or max-row (`ROWS = true`) ℓ2 norm of a
/// matrix (rank 2 only); use the aliases [`ColNorm`] and [`RowNorm`].
///
/// The LMO scales each column (row) by `−s/‖G_:k‖₂` in one pass; a column
/// whose norm is subnormal (where that multiplier overflows) is scaled in
/// two steps, by the exact power of two [`Scalar::subnormal_lift`] and
/// then by `−s` over its recomputed norm ([`Backend::scale_cols_mut`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ColRowNorm<S, const ROWS: bool> {
    scale: f64,
    buf: Vec<S>,
    aux: Vec<S>,
}

/// Max column ℓ2 norm `max_k ‖X_:k‖₂` (the ℓ1→ℓ2 operator norm), dual
/// `‖G‖_* = Σ_k ‖G_:k‖₂`, `lmo(G)_:k = −G_:k/‖G_:k‖₂` (zero columns map to
/// zero). Scion's "ColNorm" (SPEC §1, row 6).
pub type ColNorm<S> = ColRowNorm<S, false>;
/// Max row ℓ2 norm `max_j ‖X_j:‖₂` (the ℓ2→ℓ∞ operator norm), dual
/// `‖G‖_* = Σ_j ‖G_j:‖₂`, `lmo(G)_j: = −G_j:/‖G_j:‖₂` (zero rows map to
/// zero). Scion's "RowNorm" (SPEC §1, row 7).
pub type RowNorm<S> = ColRowNorm<S, true>;

impl<S: Scalar, const ROWS: bool> Default for ColRowNorm<S, ROWS> {
    fn default() -> Self {
        Self {
            scale: 1.0,
            buf: Vec::new(),
            aux: Vec::new(),
        }
    }
}

impl<S: Scalar, const ROWS: bool> ColRowNorm<S, ROWS> {
    /// The unscaled norm.
    pub fn new() -> Self {
        Self::default()
    }
    scale_builder!();

    /// Computes the column (or row) ℓ2 norms of `x` into `self.buf`.
    fn group_norms<B: Backend<Scalar = S>>(&mut self, x: &B::Tensor) -> Result<(), LmoError> {
        Self::norms_into::<B>(x, &mut self.buf)
    }

    /// Computes the column (or row) ℓ2 norms of `x` into `buf` (resized;
    /// no allocation once it has reached the size).
    fn norms_into<B: Backend<Scalar = S>>(x: &B::Tensor, buf: &mut Vec<S>) -> Result<(), LmoError> {
        let (m, n) = B::shape(x).as_matrix()?;
        buf.clear();
        buf.resize(if ROWS { m } else { n }, S::zero());
        if ROWS {
            B::row_norms(x, buf)
        } else {
            B::col_norms(x, buf)
        }
        Ok(())
    }

    fn scale_groups<B: Backend<Scalar = S>>(x: &B::Tensor, f: &[S], out: &mut B::Tensor) {
        if ROWS {
            B::scale_rows(x, f, out)
        } else {
            B::scale_cols(x, f, out)
        }
    }
}

impl<S: Scalar, B: Backend<Scalar = S>, const ROWS: bool> Norm<B> for ColRowNorm<S, ROWS> {
    fn name(&self) -> &'static str {
        if ROWS { "row-norm" } else { "col-norm" }
    }
    fn check_shape(&self, shape: &Shape) -> Result<(), LmoError> {
        shape.as_matrix().map(|_| ())
    }
    fn norm(&mut self, x: &B::Tensor) -> Result<S, LmoError> {
        B::shape(x).as_matrix()?;
        B::check_finite(x)?;
        self.group_norms::<B>(x)?;
        let max = self.buf.iter().fold(S::zero(), |a, &b| a.max(b));
        Ok(max / S::of(self.scale))
    }
    fn dual_norm(&mut self, g: &B::Tensor) -> Result<S, LmoError> {
        B::shape(g).as_matrix()?;
        B::check_finite(g)?;
        self.group_norms::<B>(g)?;
        Ok(self.buf.iter().copied().sum::<S>() * S::of(self.scale))
    }
    fn lmo(&mut self, g: &B::Tensor, out: &mut B::Tensor) -> Result<S, LmoError> {
        check_io::<B>(g, out)?.as_matrix()?;
        B::check_finite(g)?;
        self.group_norms::<B>(g)?;
        let s = S::of(self.scale);
        let dual = self.buf.iter().copied().sum::<S>();
        let min = S::min_positive_value();
        // A group needs two steps where one multiplier −s/c would overflow:
        // c subnormal (lift first), or s/c too large (normalize first).
        let one_step = |c: S| c == S::zero() || (c >= min && (s / c).is_finite());
        if self.buf.iter().all(|&c| one_step(c)) {
            for c in self.buf.iter_mut() {
                *c = if *c > S::zero() { -s / *c } else { S::zero() };
            }
            Self::scale_groups::<B>(g, &self.buf, out);
            return Ok(-s * dual);
        }
        // Step 1 into `out`: the final −s/c, the lift of a subnormal group,
        // or 1/c where −s/c overflows. `buf` keeps the norms c.
        let lift = S::subnormal_lift();
        self.aux.clear();
        self.aux.extend(self.buf.iter().map(|&c| {
            if one_step(c) {
                if c > S::zero() { -s / c } else { S::zero() }
            } else if c < min {
                lift
            } else {
                c.recip()
            }
        }));
        Self::scale_groups::<B>(g, &self.aux, out);
        // Step 2 in place: −s over the lifted group's recomputed norm
        // (normal range, full precision), −s after 1/c, else 1.
        Self::norms_into::<B>(out, &mut self.aux)?;
        for (c, lifted_norm) in self.buf.iter_mut().zip(&self.aux) {
            *c = if one_step(*c) {
                S::one()
            } else if *c < min {
                -s / *lifted_norm
            } else {
                -s
            };
        }
        if ROWS {
            B::scale_rows_mut(out, &self.buf)
        } else {
            B::scale_cols_mut(out, &self.buf)
        }
        Ok(-s * dual)
    }
}

/// Spectral norm `σ_max(X)` (ℓ2→ℓ2 operator norm), dual the nuclear norm
/// `‖G‖_* = Σ_j σ_j(G)`, `lmo(G) = −U·Vᵀ` for the reduced SVD
/// `G = U·Σ·Vᵀ` (the polar factor; Muon and Gluon hidden layers), or its
/// RMS→RMS variant ([`Spectral::rms_to_rms`]): `‖X‖ = √(n/m)·σ_max(X)`,
/// dual `√(m/n)·Σσ_j`, `lmo = −√(m/n)·U·Vᵀ` for `X` of shape
/// `d_out × d_in = m × n` (Scion's "Spectral"). SPEC §1, rows 2–3.
///
/// The polar factor comes from the orthogonalizer `O` (default: the exact
/// [`ExactPolar`]; the `orthogonalize` crate's Newton–Schulz iterations plug
/// in here). `norm` and `dual_norm` are always exact (Jacobi SVD).
pub struct Spectral<B: Backend, O = ExactPolar<B>> {
    scale: f64,
    rms: bool,
    orth: O,
    exact: ExactPolar<B>,
}

impl<B: Backend> Default for Spectral<B, ExactPolar<B>> {
    fn default() -> Self {
        Self::with_orthogonalizer(ExactPolar::new())
    }
}

impl<B: Backend> Spectral<B, ExactPolar<B>> {
    /// The spectral norm with the exact polar factor.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<B: Backend, O: Orthogonalizer<B>> Spectral<B, O> {
    /// The spectral norm whose LMO takes its polar factor from `orth`.
    pub fn with_orthogonalizer(orth: O) -> Self {
        Self {
            scale: 1.0,
            rms: false,
            orth,
            exact: ExactPolar::new(),
        }
    }

    /// Switches to the RMS→RMS operator norm `√(n/m)·σ_max` (effective scale
    /// `s·√(m/n)` for an `m × n` matrix).
    pub fn rms_to_rms(mut self) -> Self {
        self.rms = true;
        self
    }

    /// `true` for the RMS→RMS variant.
    pub fn is_rms_to_rms(&self) -> bool {
        self.rms
    }

    /// The orthogonalizer.
    pub fn orthogonalizer(&mut self) -> &mut O {
        &mut self.orth
    }

    /// The effective scale for an `m × n` matrix: `s`, or `s·√(m/n)` for the
    /// RMS→RMS variant.
    pub fn effective_scale(&self, m: usize, n: usize) -> f64 {
        if self.rms && n > 0 {
            self.scale * (m as f64 / n as f64).sqrt()
        } else {
            self.scale
        }
    }

    scale_builder!();
}

impl<B: Backend, O: Orthogonalizer<B>> Norm<B> for Spectral<B, O> {
    fn name(&self) -> &'static str {
        if self.rms { "rms-to-rms" } else { "spectral" }
    }
    fn check_shape(&self, shape: &Shape) -> Result<(), LmoError> {
        shape.as_matrix().map(|_| ())
    }
    fn norm(&mut self, x: &B::Tensor) -> Result<B::Scalar, LmoError> {
        let (m, n) = B::shape(x).as_matrix()?;
        B::check_finite(x)?;
        if m == 0 || n == 0 {
            // Empty: 0 (the RMS→RMS factor √(n/m) is undefined for m = 0).
            return Ok(B::Scalar::zero());
        }
        let smax = match B::spectral_norms(x) {
            Some((smax, _)) => smax,
            None => self.exact.decompose(x)?.sigma_max(),
        };
        Ok(B::Scalar::of(smax / self.effective_scale(m, n)))
    }
    fn dual_norm(&mut self, g: &B::Tensor) -> Result<B::Scalar, LmoError> {
        let (m, n) = B::shape(g).as_matrix()?;
        B::check_finite(g)?;
        if m == 0 || n == 0 {
            return Ok(B::Scalar::zero());
        }
        let nuc = match B::spectral_norms(g) {
            Some((_, nuc)) => nuc,
            None => self.exact.decompose(g)?.nuclear(),
        };
        Ok(B::Scalar::of(nuc * self.effective_scale(m, n)))
    }
    fn lmo(&mut self, g: &B::Tensor, out: &mut B::Tensor) -> Result<B::Scalar, LmoError> {
        let (m, n) = check_io::<B>(g, out)?.as_matrix()?;
        // One read for both the finiteness check and the zero test.
        let amax = B::max_abs(g);
        if !amax.is_finite() {
            return Err(LmoError::NonFinite);
        }
        let s = B::Scalar::of(self.effective_scale(m, n));
        if amax == B::Scalar::zero() {
            B::fill(out, B::Scalar::zero());
            return Ok(B::Scalar::zero());
        }
        self.orth.polar(g, out)?;
        B::scale_mut(-s, out);
        Ok(B::dot(g, out))
    }
}
