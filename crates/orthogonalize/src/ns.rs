//! Newton–Schulz-type odd polynomial iterations, written once against
//! lmo-core's [`Backend`].

use lmo_core::num_traits::{Float, One, Zero};
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
/// direction). The Frobenius scaling never forms a factor that overflows:
/// `‖G‖_F` is computed without over- or underflow (`Backend::norm2`), and
/// where `‖G‖_F` is subnormal (f32 below 1.2e-38, f64 below 2.2e-308) or
/// itself overflows, `G` is first scaled by an exact power of two into the
/// normal range and `X₀` formed from that (same value, `(p·G)/(‖p·G‖_F·(1+δ) + p·ε)`).
/// So every finite input gives a finite result, down to subnormals, and
/// with `ε = 0` the map is scale-invariant there too.
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
        let buf = match &mut self.buf {
            Some(b) if b.k == k && b.l == l => b,
            slot => slot.insert(Buffers {
                k,
                l,
                x: B::zeros(g, Shape::matrix(k, l)),
                y: B::zeros(g, Shape::matrix(k, l)),
                a: B::zeros(g, Shape::matrix(k, k)),
                b: B::zeros(g, Shape::matrix(k, k)),
            }),
        };
        let (x, y) = (&mut buf.x, &mut buf.y);
        normalize::<B>(self.cfg.normalization, g, fro, !wide, x);
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

/// `x = G/(‖G‖_F·(1+δ) + ε)` (or `Gᵀ/…` with `transpose`), `fro = ‖G‖_F > 0`.
///
/// One pass when the factor is representable, which it is whenever `fro`
/// is normal and finite (`1/fro ≤ 1/min_positive`). Otherwise two: first
/// an exact power of two `p` into `x` (the lift `1/min_positive` for a
/// subnormal `fro`; the machine epsilon for an overflowing one, whose
/// entries are all finite), then the factor `1/(‖p·G‖_F·(1+δ) + p·ε)`
/// computed from the norm of `x`, which is in the normal range.
fn normalize<B: Backend>(
    norm: Normalization,
    g: &B::Tensor,
    fro: B::Scalar,
    transpose: bool,
    x: &mut B::Tensor,
) {
    let put = |a: B::Scalar, x: &mut B::Tensor| {
        if transpose {
            B::transpose_into(a, g, x)
        } else {
            B::scale(a, g, x)
        }
    };
    let Normalization::Frobenius { delta, eps } = norm else {
        put(B::Scalar::one(), x);
        return;
    };
    let pre = if fro < B::Scalar::min_positive_value() {
        Some(B::Scalar::subnormal_lift())
    } else if !fro.is_finite() {
        Some(B::Scalar::epsilon())
    } else {
        None
    };
    match pre {
        None => put(B::Scalar::of(1.0 / (fro.as_f64() * (1.0 + delta) + eps)), x),
        Some(p) => {
            put(p, x);
            let f = B::norm2(x).as_f64();
            let s = 1.0 / (f * (1.0 + delta) + p.as_f64() * eps);
            B::scale_mut(B::Scalar::of(s), x);
        }
    }
}

impl<B: Backend> Orthogonalizer<B> for NewtonSchulz<B> {
    fn polar(&mut self, g: &B::Tensor, out: &mut B::Tensor) -> Result<(), LmoError> {
        self.run(g, out)
    }
}
