//! Newton–Schulz-type odd polynomial iterations, written once against
//! lmo-core's [`Backend`].

use lmo_core::num_traits::{One, Zero};
use lmo_core::{Backend, LmoError, Orthogonalizer, Scalar, Shape, Trans};

use crate::{Normalization, NsConfig};

/// Buffers of one iteration for a working shape `k × l` (`k ≤ l`).
struct Buffers<T> {
    k: usize,
    l: usize,
    x: T,
    y: T,
    a: T,
    b: T,
}

/// A Newton–Schulz-type polar factor iteration (SPEC §2):
///
/// ```text
/// X ← G / (‖G‖_F·(1+δ) + ε)            (or no scaling)
/// if m > n: work on Xᵀ                  (the Gram matrix is min(m,n)²)
/// for (a, b, c) in coefficients:
///     A ← X·Xᵀ                           (Backend::syrk: one triangle where the backend can)
///     B ← b·A + c·A·A                    (A·A = A·Aᵀ: syrk again; skipped when c = 0)
///     X ← a·X + B·X                      (Backend::gemm_from: one GEMM onto a·X, fused
///                                         where the backend can; the last step
///                                         writes into the output)
/// ```
///
/// Per step, `k = min(m,n)`, `l = max(m,n)`: `k²l + k³ + 2k²l` flops with a
/// one-triangle syrk (`2k²l + 2k³ + 2k²l` with plain GEMMs). Buffers
/// (`2·k·l + 2·k²` scalars) are allocated on the first call for a shape and
/// reused; a call with another shape reallocates them.
///
/// Input handling: non-finite entries → [`LmoError::NonFinite`] (output
/// untouched); zero matrix → zero; empty matrix → nothing to do; 1×n and
/// n×1 work like any shape (the polar factor of a nonzero vector is its
/// direction). The Frobenius scaling is overflow-safe (`Backend::norm2`),
/// so entries of size 1e30 or 1e-30 give finite results in f32 and f64.
///
/// References: Higham, "Functions of Matrices" (2008), §8.3 (Newton–Schulz);
/// K. Jordan et al., "Muon" (2024); Amsel et al., "The Polar Express"
/// (arXiv 2505.16932).
pub struct NewtonSchulz<B: Backend> {
    cfg: NsConfig,
    buf: Option<Buffers<B::Tensor>>,
}

impl<B: Backend> Clone for NewtonSchulz<B> {
    /// Clones the configuration; the clone allocates its own buffers.
    fn clone(&self) -> Self {
        Self {
            cfg: self.cfg.clone(),
            buf: None,
        }
    }
}

impl<B: Backend> NewtonSchulz<B> {
    /// A new iteration; invalid hyper-parameters give
    /// [`LmoError::InvalidHyperParameter`] (see [`NsConfig::validate`]).
    pub fn new(cfg: NsConfig) -> Result<Self, LmoError> {
        cfg.validate()?;
        Ok(Self { cfg, buf: None })
    }

    /// Muon's NS5 (see [`NsConfig::muon`]).
    pub fn muon() -> Self {
        Self {
            cfg: NsConfig::muon(),
            buf: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &NsConfig {
        &self.cfg
    }

    /// Scale factor of the normalization for a matrix of Frobenius norm `f`.
    fn input_scale(&self, f: f64) -> f64 {
        match self.cfg.normalization {
            Normalization::Frobenius { delta, eps } => 1.0 / (f * (1.0 + delta) + eps),
            Normalization::None => 1.0,
        }
    }

    /// Writes the iteration's approximation of `polar(g)` into `out`.
    pub fn run(&mut self, g: &B::Tensor, out: &mut B::Tensor) -> Result<(), LmoError> {
        let shape = B::shape(g);
        shape.check_eq(&B::shape(out))?;
        let (m, n) = shape.as_matrix()?;
        B::check_finite(g)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        let fro = B::norm2(g);
        if fro == B::Scalar::zero() {
            B::fill(out, B::Scalar::zero());
            return Ok(());
        }
        let wide = m <= n;
        let (k, l) = if wide { (m, n) } else { (n, m) };
        if !matches!(&self.buf, Some(b) if b.k == k && b.l == l) {
            self.buf = Some(Buffers {
                k,
                l,
                x: B::zeros(g, Shape::matrix(k, l)),
                y: B::zeros(g, Shape::matrix(k, l)),
                a: B::zeros(g, Shape::matrix(k, k)),
                b: B::zeros(g, Shape::matrix(k, k)),
            });
        }
        let s = B::Scalar::of(self.input_scale(fro.as_f64()));
        let buf = self.buf.as_mut().expect("sized above");
        let (x, y) = (&mut buf.x, &mut buf.y);
        if wide {
            B::scale(s, g, x);
        } else {
            B::transpose_into(s, g, x);
        }
        let one = B::Scalar::one();
        let zero = B::Scalar::zero();
        let steps = self.cfg.steps;
        for i in 0..steps {
            let [a, b, c] = self.cfg.coefficients.step(i).map(B::Scalar::of);
            B::syrk(one, x, zero, &mut buf.a);
            B::scale(b, &buf.a, &mut buf.b);
            if c != zero {
                B::syrk(c, &buf.a, one, &mut buf.b);
            }
            if wide && i + 1 == steps {
                // The last product goes straight to the caller's buffer.
                B::gemm_from(one, &buf.b, Trans::No, x, Trans::No, a, x, out);
                return Ok(());
            }
            B::gemm_from(one, &buf.b, Trans::No, x, Trans::No, a, x, y);
            core::mem::swap(x, y);
        }
        if wide {
            B::scale(one, x, out);
        } else {
            B::transpose_into(one, x, out);
        }
        Ok(())
    }
}

impl<B: Backend> Orthogonalizer<B> for NewtonSchulz<B> {
    fn polar(&mut self, g: &B::Tensor, out: &mut B::Tensor) -> Result<(), LmoError> {
        self.run(g, out)
    }
}
