//! # brox
//!
//! Ball-proximal ("broximal") operators and the Broximal Point Method
//! (Gruntkowska, Li, Rane & Richtárik, "The ball-proximal (='broximal')
//! point method", arXiv 2502.02002), SPEC §4:
//!
//! `brox_f^t(x) = Argmin{ f(z) : ‖z − x‖ ≤ t }`, ball envelope
//! `N_f^t(x) = min_{‖z−x‖≤t} f(z)`, BPM `x_{k+1} ∈ brox_f^{t_k}(x_k)`.
//!
//! - [`Brox`]: an oracle with a [`Certificate`]; exact oracles for linear
//!   functions over any lmo-core norm ball ([`oracles::Linear`]), functions
//!   with a known minimizer ([`oracles::Distance`], [`oracles::L1Distance`]),
//!   quadratics over the Euclidean ball — the trust-region subproblem,
//!   exact, hard case included ([`oracles::Quadratic`], [`Trs`]) —,
//!   separable convex functions over the ℓ∞ ball ([`oracles::SeparableBox`]);
//!   an inexact projected-gradient oracle ([`oracles::SmoothConvex`]).
//! - [`bpm`]: the method with radius schedules ([`Radii`], including the
//!   finite-convergence choice of Result 4), stopping rules and an observer.
//! - [`envelope`]: `N_f^t(x)` and its gradient `∇f(brox(x))`.
//! - [`trust_region`]: BPM on a model of f — linear model over any norm
//!   ball (LMO steps) or quadratic model (exact TRS) — for a user's f with
//!   a gradient and optional Hessian-vector products.

pub mod oracles;
mod trs;
mod trust_region;

pub use trs::{Trs, TrsSolution};
pub use trust_region::{Model, Objective, TrIterate, TrOptions, TrResult, trust_region};

/// Errors; an error leaves the output untouched.
#[derive(Clone, Debug, PartialEq)]
pub enum BroxError {
    /// The radius is not finite and > 0.
    InvalidRadius(f64),
    /// A vector has the wrong length.
    DimensionMismatch {
        /// Expected length.
        expected: usize,
        /// Given length.
        found: usize,
    },
    /// NaN/Inf in the input.
    NonFinite,
    /// Another invalid input (the payload says which).
    InvalidInput(&'static str),
    /// An error of the LMO (linear oracle).
    Lmo(lmo_core::LmoError),
}

impl core::fmt::Display for BroxError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BroxError::InvalidRadius(t) => write!(f, "radius must be finite and > 0, got {t}"),
            BroxError::DimensionMismatch { expected, found } => {
                write!(f, "expected length {expected}, found {found}")
            }
            BroxError::NonFinite => f.write_str("input contains NaN or infinite values"),
            BroxError::InvalidInput(w) => write!(f, "invalid input: {w}"),
            BroxError::Lmo(e) => write!(f, "LMO: {e}"),
        }
    }
}

impl std::error::Error for BroxError {}

/// What an oracle certifies about `u ∈ brox_f^t(x)`.
///
/// Two multipliers, for two forms of the optimality condition of
/// `min f(z)` over `‖z − x‖ ≤ t`:
///
/// - [`Certificate::multiplier`], the Euclidean form (Second Brox
///   theorem): `c ≥ 0` with `c·(x − u) ∈ ∂f(u)`. It is a statement about
///   the vector `x − u`, which is a (scaled) subgradient of the ball's norm
///   at `u − x` only for the Euclidean norm; over another norm's ball such
///   a `c` exists only by coincidence (e.g. a linear `f = <g, ·>` over the
///   ℓ∞ ball: `x − u = t·sign(g)`, parallel to `g` only when all `|g_i|`
///   are equal).
/// - [`Certificate::ball_multiplier`], the form valid for any norm (KKT
///   with the subdifferential of the norm; Rockafellar, *Convex Analysis*,
///   1970, Thm 28.3): `μ ≥ 0` with `0 ∈ ∂f(u) + μ·∂‖·‖(u − x)` and
///   `μ·(t − ‖u − x‖) = 0`, where
///   `∂‖·‖(v) = {w : ‖w‖_* ≤ 1, <w, v> = ‖v‖}`. For the Euclidean ball
///   the two agree through `μ = c·‖u − x‖`.
#[derive(Clone, Debug, PartialEq)]
pub struct Certificate {
    /// `‖u − x‖ = t` (the step hit the sphere; First Brox theorem, second
    /// branch).
    pub boundary: bool,
    /// `c ≥ 0` with `c·(x − u) ∈ ∂f(u)` (Second Brox theorem, Euclidean
    /// form), when the oracle knows it and it exists; `None` otherwise.
    pub multiplier: Option<f64>,
    /// `μ ≥ 0` with `0 ∈ ∂f(u) + μ·∂‖·‖(u − x)` and `μ·(t − ‖u − x‖) = 0`,
    /// in the norm of the oracle's ball (valid for every norm), when the
    /// oracle knows it; `μ = c·‖u − x‖` for the Euclidean ball.
    pub ball_multiplier: Option<f64>,
    /// 0 for exact oracles; the KKT residual (TRS) or gradient-mapping
    /// norm (inexact oracle) otherwise.
    pub tolerance: f64,
    /// Inner iterations (inexact oracles).
    pub iterations: usize,
}

/// A ball-proximal oracle for a function `f` on `R^n`.
pub trait Brox {
    /// `n`.
    fn dim(&self) -> usize;
    /// `f(z)`.
    fn value(&self, z: &[f64]) -> f64;
    /// Writes `∇f(z)` and returns `true` if `f` is differentiable here (the
    /// oracle knows its gradient); else `false`, `out` unspecified.
    fn gradient(&self, z: &[f64], out: &mut [f64]) -> bool;
    /// Writes a point of `brox_f^t(x)` into `out`.
    fn brox(&mut self, x: &[f64], t: f64, out: &mut [f64]) -> Result<Certificate, BroxError>;
}

/// Shared input checks of the oracles.
pub(crate) fn check(n: usize, x: &[f64], t: f64, out: &[f64]) -> Result<(), BroxError> {
    if !(t.is_finite() && t > 0.0) {
        return Err(BroxError::InvalidRadius(t));
    }
    for len in [x.len(), out.len()] {
        if len != n {
            return Err(BroxError::DimensionMismatch {
                expected: n,
                found: len,
            });
        }
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(BroxError::NonFinite);
    }
    Ok(())
}

/// The ball envelope `N_f^t(x) = f(u)` for `u ∈ brox_f^t(x)`, and, when `f`
/// is differentiable at `u`, its gradient `∇N_f^t(x) = ∇f(u)` (the
/// minimizer moves with x; for convex f, `N` is convex and
/// `Argmin N = Argmin f + B(0, t)`).
pub fn envelope(o: &mut dyn Brox, x: &[f64], t: f64) -> Result<(f64, Option<Vec<f64>>), BroxError> {
    let mut u = vec![0.0; o.dim()];
    o.brox(x, t, &mut u)?;
    let mut g = vec![0.0; o.dim()];
    let has = o.gradient(&u, &mut g);
    Ok((o.value(&u), has.then_some(g)))
}

/// Radius schedule of BPM.
#[derive(Clone, Debug, PartialEq)]
pub enum Radii {
    /// `t_k = t`.
    Constant(f64),
    /// `t_k` from a list (the last one repeats).
    Sequence(Vec<f64>),
    /// Result 4: with `D ≥ ‖x_0 − x*‖`, the constant `t = D/√K` makes
    /// `Σ_{k<K} t_k² = D²`, so `x_K ∈ Argmin f`: finite convergence in `K`
    /// steps.
    FiniteConvergence {
        /// An upper bound `D` on the distance to a minimizer.
        distance: f64,
        /// The number of steps `K`.
        steps: usize,
    },
}

impl Radii {
    /// `t_k`: `t`, `v[min(k, len − 1)]`, or `D/√K`.
    ///
    /// Errors: an empty sequence or `K = 0` ([`BroxError::InvalidInput`]);
    /// a `t_k` that is not finite and `> 0` ([`BroxError::InvalidRadius`]).
    pub fn at(&self, k: usize) -> Result<f64, BroxError> {
        let t = match self {
            Radii::Constant(t) => *t,
            Radii::Sequence(v) => match v.get(k).or(v.last()) {
                Some(t) => *t,
                None => return Err(BroxError::InvalidInput("empty radius sequence")),
            },
            Radii::FiniteConvergence { distance, steps } => {
                if *steps == 0 {
                    return Err(BroxError::InvalidInput(
                        "finite-convergence schedule needs steps ≥ 1",
                    ));
                }
                distance / (*steps as f64).sqrt()
            }
        };
        if !(t.is_finite() && t > 0.0) {
            return Err(BroxError::InvalidRadius(t));
        }
        Ok(t)
    }

    /// Checks every radius of the schedule (each `t_k` finite and `> 0`, a
    /// non-empty sequence, `K ≥ 1`), with the errors of [`Radii::at`]; a
    /// schedule that passes gives `Ok` for every `k`.
    pub fn validate(&self) -> Result<(), BroxError> {
        match self {
            Radii::Sequence(v) => {
                if v.is_empty() {
                    return Err(BroxError::InvalidInput("empty radius sequence"));
                }
                (0..v.len()).try_for_each(|k| self.at(k).map(|_| ()))
            }
            _ => self.at(0).map(|_| ()),
        }
    }
}

/// One BPM iteration, as the observer sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Iterate {
    /// k (the iterate produced is `x_{k+1}`).
    pub k: usize,
    /// The radius `t_k`.
    pub t: f64,
    /// `f(x_{k+1})`.
    pub f: f64,
    /// `‖x_{k+1} − x_k‖`.
    pub step: f64,
    /// `‖∇f(x_{k+1})‖` when the oracle knows the gradient.
    pub grad_norm: Option<f64>,
    /// Whether the step hit the boundary of the ball.
    pub boundary: bool,
}

/// When to stop BPM.
#[derive(Clone, Debug, PartialEq)]
pub struct Stop {
    /// Iteration cap.
    pub max_iter: usize,
    /// Stop once a step is shorter than this and did not hit the boundary
    /// (then `x` is a minimizer: First Brox theorem, first branch).
    pub interior_step: bool,
}

impl Default for Stop {
    fn default() -> Self {
        Stop {
            max_iter: 1000,
            interior_step: true,
        }
    }
}

/// The result of [`bpm`].
#[derive(Clone, Debug, PartialEq)]
pub struct BpmResult {
    /// The last iterate.
    pub x: Vec<f64>,
    /// Per-iteration records.
    pub history: Vec<Iterate>,
}

/// The Broximal Point Method `x_{k+1} ∈ brox_f^{t_k}(x_k)` from `x0`,
/// calling `observer` after every iteration.
///
/// Errors, before any iteration (the observer is not called): `x0` of the
/// wrong length, an invalid radius schedule ([`Radii::validate`]); later,
/// an oracle's error.
pub fn bpm(
    o: &mut dyn Brox,
    x0: &[f64],
    radii: &Radii,
    stop: &Stop,
    mut observer: impl FnMut(&Iterate),
) -> Result<BpmResult, BroxError> {
    let n = o.dim();
    if x0.len() != n {
        return Err(BroxError::DimensionMismatch {
            expected: n,
            found: x0.len(),
        });
    }
    radii.validate()?;
    let mut x = x0.to_vec();
    let mut next = vec![0.0; n];
    let mut g = vec![0.0; n];
    let mut history = vec![];
    for k in 0..stop.max_iter {
        let t = radii.at(k)?;
        let cert = o.brox(&x, t, &mut next)?;
        let step = next
            .iter()
            .zip(&x)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt();
        let grad_norm = o
            .gradient(&next, &mut g)
            .then(|| g.iter().map(|v| v * v).sum::<f64>().sqrt());
        let it = Iterate {
            k,
            t,
            f: o.value(&next),
            step,
            grad_norm,
            boundary: cert.boundary,
        };
        observer(&it);
        history.push(it);
        std::mem::swap(&mut x, &mut next);
        if stop.interior_step && !cert.boundary {
            break;
        }
    }
    Ok(BpmResult { x, history })
}
