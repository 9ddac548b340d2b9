//! Newton–Schulz-type odd polynomial iterations, written once against
//! lmo-core's [`Backend`].

use lmo_core::num_traits::{Float, One, Zero};
use lmo_core::{Backend, LmoError, Orthogonalizer, Scalar, Shape, Trans};

use crate::gram::{self, GramBuffers, Guard};
use crate::{Normalization, NsConfig, NsForm};

/// Buffers of one iteration for a working shape `k × l` (`k ≤ l`).
pub(crate) struct Buffers<T> {
    pub(crate) k: usize,
    pub(crate) l: usize,
    pub(crate) x: T,
    pub(crate) y: T,
    pub(crate) a: T,
    pub(crate) b: T,
    /// The Gram form's `k × k` matrices (allocated on its first run).
    pub(crate) gram: Option<GramBuffers<T>>,
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
/// ## Gram form ([`NsForm::Gram`])
///
/// Every iterate is `X_i = Q_i·X₀` with `Q_i` a polynomial in
/// `R₀ = X₀·X₀ᵀ`, so the steps can run on `k × k` matrices:
///
/// ```text
/// R ← X·Xᵀ, Q ← I
/// for (a, b, c) in coefficients:
///     (before a restart step: X ← Q·X, R ← X·Xᵀ, Q ← I)
///     Z ← b·R + c·R²                     (syrk)
///     Q ← a·Q + Z·Q                      (Q = a·I + Z on the first step)
///     R ← P·R·P, P = a·I + Z             (T = Z·R + a·R, R = T·Z + a·T; skipped
///                                         before a restart and after the last step)
/// out ← Q·X
/// ```
///
/// `Z`, `R` and `T` commute, so the `R` update's products `Z·R` and `T·Z`
/// are symmetric: they run through [`Backend::gemm_sym_from`], one
/// triangle where the backend can (the ndarray backend does). `Z·Q` is a
/// full GEMM: `Z` comes from the tracked (drifted) `R`, so it commutes
/// with `Q` only approximately, and forcing symmetry there measured worse
/// in bf16. Flops for `k ≤ l`: `k²l` (Gram) + `2k²l` (last product) + per
/// restart `3k²l`, and per step at most `k³ + 2k³ + 2k³` on `k × k`
/// matrices (`k³ + 2k³ + 4k³` with full GEMMs), against `3k²l + k³` per
/// step of the plain form: for GPT-2's 768×3072 (`l = 4k`) and 5 steps
/// with one restart, `41k³` (`47k³`) against `65k³`.
/// In exact arithmetic both forms give the same matrix; in floating point
/// the tracked `R` drifts from `X_i·X_iᵀ` (with bf16 storage its small
/// eigenvalues can turn negative, and the polynomial then amplifies them by
/// about `a²` per step), which the restarts bound. A guard checks the
/// first and every tracked `R` and the result: non-finite entries,
/// `‖R‖_F > tr(R)·(1+10⁻²)` (impossible for a positive semi-definite `R`:
/// a negative eigenvalue estimate), a largest eigenvalue of `R` (four
/// power-iteration steps, `O(k²)` each) above `2·s_i²`, or a largest
/// singular value of the result `Q·X` above `1.5·s_N`, checked before the
/// result is formed (four power steps on `Q·R_r·Q`, with `R_r = X·Xᵀ` from
/// the last re-formation, `O(k²)` each), with `s_i` the largest value the scalar polynomial
/// chain reaches after `i` steps on `[0, 1]` (an exploding eigenvalue). On
/// a failed check the matrix is recomputed with the plain form, and
/// [`NewtonSchulz::gram_fallbacks`] counts it. The Gram form is
/// selected per group through the configuration ([`NsConfig::gram`]); the
/// default form stays plain. Matrices with `l < 2k` run the plain form even
/// then: with five steps and one restart the Gram form costs about
/// `(6ρ + 23)·k³` flops with full `k × k` GEMMs (`(6ρ + 17)·k³` with
/// one-triangle `R` updates) against the plain form's `(15ρ + 5)·k³`
/// (`ρ = l/k`, one-triangle syrk): `l ≥ 2k` is the break-even of a backend
/// without one-triangle products. Reference: the Gram Newton–Schulz of Dao AI
/// Lab's `gram-newton-schulz` (used by dion), which restarts in the same
/// way.
///
/// References: Higham, "Functions of Matrices" (2008), §8.3 (Newton–Schulz);
/// K. Jordan et al., "Muon" (2024); Amsel et al., "The Polar Express"
/// (arXiv 2505.16932).
pub struct NewtonSchulz<B: Backend> {
    cfg: NsConfig,
    buf: Option<Buffers<B::Tensor>>,
    guard: Guard,
    fallbacks: u64,
}

impl<B: Backend> Clone for NewtonSchulz<B> {
    /// Clones the configuration; the clone allocates its own buffers.
    fn clone(&self) -> Self {
        Self {
            cfg: self.cfg.clone(),
            buf: None,
            guard: self.guard.clone(),
            fallbacks: 0,
        }
    }
}

impl<B: Backend> NewtonSchulz<B> {
    /// A new iteration; invalid hyper-parameters give
    /// [`LmoError::InvalidHyperParameter`] (see [`NsConfig::validate`]).
    pub fn new(cfg: NsConfig) -> Result<Self, LmoError> {
        cfg.validate()?;
        Ok(Self::from_valid(cfg))
    }

    fn from_valid(cfg: NsConfig) -> Self {
        Self {
            guard: Guard::new(&cfg),
            cfg,
            buf: None,
            fallbacks: 0,
        }
    }

    /// Muon's NS5 (see [`NsConfig::muon`]).
    pub fn muon() -> Self {
        Self::from_valid(NsConfig::muon())
    }

    /// How many matrices the Gram form's guard sent back to the plain form
    /// since this iteration was built (0 for the plain form).
    pub fn gram_fallbacks(&self) -> u64 {
        self.fallbacks
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
        // The norm the normalization needs is finite for finite input
        // (overflow-safe): only a non-finite norm calls for the check.
        let fro = B::norm2(g);
        if !fro.is_finite() {
            B::check_finite(g)?;
        }
        if m == 0 || n == 0 {
            return Ok(());
        }
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
                gram: None,
            }),
        };
        normalize::<B>(self.cfg.normalization, g, fro, !wide, &mut buf.x);
        if let NsForm::Gram { restarts } = &self.cfg.form
            && l >= 2 * k
        {
            if gram::run::<B>(&self.cfg, restarts, &self.guard, buf, wide, out) {
                return Ok(());
            }
            // The guard refused this matrix: the plain form from X₀ again.
            self.fallbacks += 1;
            normalize::<B>(self.cfg.normalization, g, fro, !wide, &mut buf.x);
        }
        plain::<B>(&self.cfg, buf, wide, out);
        Ok(())
    }
}

/// The plain form on the normalized `buf.x`, the result written to `out`.
fn plain<B: Backend>(
    cfg: &NsConfig,
    buf: &mut Buffers<B::Tensor>,
    wide: bool,
    out: &mut B::Tensor,
) {
    let (x, y) = (&mut buf.x, &mut buf.y);
    let one = B::Scalar::one();
    let zero = B::Scalar::zero();
    let steps = cfg.steps;
    for i in 0..steps {
        let [a, b, c] = cfg.coefficients.step(i).map(B::Scalar::of);
        B::syrk(one, x, zero, &mut buf.a);
        B::scale(b, &buf.a, &mut buf.b);
        if c != zero {
            B::syrk(c, &buf.a, one, &mut buf.b);
        }
        if wide && i + 1 == steps {
            // The last product goes straight to the caller's buffer.
            B::gemm_from(one, &buf.b, Trans::No, x, Trans::No, a, x, out);
            return;
        }
        B::gemm_from(one, &buf.b, Trans::No, x, Trans::No, a, x, y);
        core::mem::swap(x, y);
    }
    if wide {
        B::scale(one, x, out);
    } else {
        B::transpose_into(one, x, out);
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
