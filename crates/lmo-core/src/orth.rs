//! The orthogonalizer seam: where the spectral LMO gets its polar factor.

use alloc::vec::Vec;
use core::marker::PhantomData;

use num_traits::Zero;

use crate::{Backend, JacobiSvd, LmoError};

/// Computes (an approximation of) the polar factor `polar(G) = U·Vᵀ` of a
/// matrix `G = U·Σ·Vᵀ` (reduced SVD) — SPEC §2.
///
/// The spectral and RMS→RMS LMOs ([`crate::Spectral`]) call it; the
/// `orthogonalize` crate provides Newton–Schulz / Polar Express
/// implementations, [`ExactPolar`] the exact reference.
///
/// Contract: `g` is a finite, nonzero matrix and `out` has its shape (the
/// caller checks both). The implementation may keep workspace buffers in
/// `self`; it should not allocate once they are sized.
pub trait Orthogonalizer<B: Backend> {
    /// Writes `polar(g)` (or the implementation's approximation) into `out`.
    fn polar(&mut self, g: &B::Tensor, out: &mut B::Tensor) -> Result<(), LmoError>;

    /// `true` if [`Orthogonalizer::polar`] is exact up to rounding, so that
    /// `<g, polar(g)>` is the nuclear norm.
    fn is_exact(&self) -> bool {
        false
    }
}

/// Exact polar factor through the one-sided Jacobi SVD ([`JacobiSvd`]) on the
/// host, for any backend (data moves through [`Backend::copy_to_slice`]).
///
/// `polar(G) = Σ_{σ_j > rtol·σ_max} u_j v_jᵀ` with `rtol = max(m,n)·ε_f64`
/// (singular pairs at rounding level count as zero, as Newton–Schulz maps
/// them to zero too). Reference and small-matrix option; cost
/// `O(min(m,n)²·max(m,n))` per sweep in f64.
pub struct ExactPolar<B: Backend> {
    host: Vec<B::Scalar>,
    svd: JacobiSvd,
    _b: PhantomData<fn() -> B>,
}

impl<B: Backend> Default for ExactPolar<B> {
    fn default() -> Self {
        Self {
            host: Vec::new(),
            svd: JacobiSvd::new(),
            _b: PhantomData,
        }
    }
}

impl<B: Backend> ExactPolar<B> {
    /// A new exact orthogonalizer with empty workspace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs the SVD of `g` into the internal workspace and returns it.
    pub(crate) fn decompose(&mut self, g: &B::Tensor) -> Result<&JacobiSvd, LmoError> {
        let (m, n) = B::shape(g).as_matrix()?;
        self.host.clear();
        self.host.resize(m * n, B::Scalar::zero());
        B::copy_to_slice(g, &mut self.host);
        self.svd.compute(&self.host, m, n)?;
        Ok(&self.svd)
    }
}

impl<B: Backend> Orthogonalizer<B> for ExactPolar<B> {
    /// Writes `polar(g)` into `out`. Checks what the [`Orthogonalizer`]
    /// contract asks of a caller, so that a direct call cannot write
    /// garbage: [`LmoError::ShapeMismatch`] if `out` differs in shape,
    /// [`LmoError::UnsupportedRank`] for a non-matrix, [`LmoError::NonFinite`]
    /// for NaN/Inf entries, each with `out` untouched. Zero and empty
    /// matrices give zero.
    fn polar(&mut self, g: &B::Tensor, out: &mut B::Tensor) -> Result<(), LmoError> {
        let shape = B::shape(g);
        shape.check_eq(&B::shape(out))?;
        let (m, n) = shape.as_matrix()?;
        B::check_finite(g)?;
        self.decompose(g)?;
        let rtol = (m.max(n) as f64) * f64::EPSILON;
        self.svd.polar_into(rtol, &mut self.host)?;
        B::copy_from_slice(&self.host, out);
        Ok(())
    }

    fn is_exact(&self) -> bool {
        true
    }
}
