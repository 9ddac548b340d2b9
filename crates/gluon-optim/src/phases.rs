//! The layer-wise step of SPEC §3 as four phases, written once and used by
//! every engine ([`crate::Optimizer`], its phased API for sharded steps,
//! and the device step's coefficients):
//!
//! 1. [`momentum_phase`]: the LMO's input, `U = M⁺ = β_k·M + (1−β_k)·G`
//!    or, with Nesterov, the look-ahead `U = β_k·M⁺ + (1−β_k)·G`; local
//!    to a block, into a buffer of its own (`M` changes only at the
//!    commit, [`commit_momentum`], so a failed step changes nothing).
//! 2. [`direction`]: `D = lmo(U)` and the dual norm `‖U‖_* = −<U, D>`:
//!    the expensive phase, the one a sharded step distributes.
//! 3. [`RadiusRule`]: the radius `t_i^k` of every policy of SPEC §3
//!    (constant, theory schedule, Gluon adaptive) times the schedule, from
//!    the dual norm.
//! 4. [`commit_momentum`] (`M ← M⁺`), then [`apply`]: decoupled weight
//!    decay and the unconstrained or constrained update; [`adamw_step`] gives AdamW's per-step
//!    hyper-parameters (AdamW blocks are stepped whole in this phase).
//!
//! References: Riabinin et al., "Gluon" (arXiv 2505.13416), Thm 1 and 2;
//! Pethick et al., "Scion" (arXiv 2502.07529); Loshchilov & Hutter,
//! "Decoupled weight decay regularization" (2019), Alg. 2.

use lmo_core::{AdamWStep, Backend, LmoError, Norm, Scalar};

use crate::config::{AdamWGroup, LmoGroup, Mode, Radius};

/// The momentum β_k of a group at step k: the group's β, or, under the
/// theory radius (Gluon Thm 2), `1 − 1/√(k+1)`.
pub fn momentum(cfg: &LmoGroup, k: u64) -> f64 {
    match cfg.radius {
        Radius::Theory { .. } => 1.0 - 1.0 / ((k + 1) as f64).sqrt(),
        _ => cfg.beta,
    }
}

/// Phase 1: the LMO's input `U` into `u`, leaving `M` as it is:
/// `U = M⁺ = β_k·M + (1−β_k)·G` or, with Nesterov, the look-ahead
/// `U = β_k·M⁺ + (1−β_k)·G`. The momentum itself becomes `M⁺` only when
/// the step is committed ([`commit_momentum`], phase 4), so a step that
/// fails in phase 2 leaves every buffer that outlives it unchanged.
pub fn momentum_phase<B: Backend>(
    cfg: &LmoGroup,
    k: u64,
    g: &B::Tensor,
    m: &B::Tensor,
    u: &mut B::Tensor,
) {
    let one = B::Scalar::of(1.0);
    let bs = B::Scalar::of(momentum(cfg, k));
    B::scale(one, m, u);
    B::axpby(one - bs, g, bs, u);
    if cfg.nesterov {
        B::axpby(one - bs, g, bs, u);
    }
}

/// Phase 4's momentum commit: `M ← M⁺ = β_k·M + (1−β_k)·G`, bit for bit
/// the `M⁺` phase 1 computed. Without Nesterov `u` holds `M⁺` and the two
/// buffers swap (no arithmetic, `u` becomes scratch); with Nesterov `u`
/// holds the look-ahead and `M⁺` is recomputed by the same operation.
pub fn commit_momentum<B: Backend>(
    cfg: &LmoGroup,
    k: u64,
    g: &B::Tensor,
    m: &mut B::Tensor,
    u: &mut B::Tensor,
) {
    if cfg.nesterov {
        let one = B::Scalar::of(1.0);
        let bs = B::Scalar::of(momentum(cfg, k));
        B::axpby(one - bs, g, bs, m);
    } else {
        core::mem::swap(m, u);
    }
}

/// Phase 2: writes `D = lmo(U)` into `d` and returns the dual norm the LMO
/// attained, `‖U‖_* = max(0, −<U, D>)` (exact unless the norm's
/// orthogonalizer is inexact).
pub fn direction<B: Backend>(
    norm: &mut (dyn Norm<B> + Send),
    u: &B::Tensor,
    d: &mut B::Tensor,
) -> Result<f64, LmoError> {
    let ip = norm.lmo(u, d)?.as_f64();
    // A dual norm beyond the type's range (Σ|U| of entries near MAX)
    // would make the adaptive radius Inf/Inf = NaN: refused, and the
    // step, atomic, changes nothing.
    if !ip.is_finite() || !B::all_finite(d) {
        return Err(LmoError::NonFinite);
    }
    Ok((-ip).max(0.0))
}

/// The radius `t_i^k` of a policy before the schedule, given `‖M‖_*`:
/// `t` (constant), `t0/(k+1)^{3/4}` (theory), `‖M‖_*/(L0 + L1·‖M‖_*)`
/// (adaptive; 0 when `‖M‖_* = 0`).
pub fn radius(policy: &Radius, k: u64, dual: f64) -> f64 {
    RadiusRule::new(policy, k, 1.0).base(dual)
}

/// Phase 3: the radius of one block at one step, as a rule of the dual
/// norm: every policy of SPEC §3 and the schedule multiplier, in one
/// place, evaluated on the host by every engine ([`RadiusRule::at`]): the
/// CPU step, the sharded step (on each block's owner) and the device step
/// (which reads the dual norms only for the adaptive rule and hands the
/// computed radius to its update kernel).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RadiusRule {
    /// `t = base·mult`, independent of the dual norm (constant and theory
    /// policies, `base` already evaluated at step k).
    Fixed {
        /// The policy's radius at step k.
        base: f64,
        /// The schedule multiplier `s(k)`.
        mult: f64,
    },
    /// `t = mult·d/(L0 + L1·d)` for dual norm `d > 0`, and 0 at `d = 0`
    /// (Gluon's adaptive radius, Thm 1).
    Adaptive {
        /// `L0 ≥ 0`.
        l0: f64,
        /// `L1 ≥ 0`.
        l1: f64,
        /// The schedule multiplier `s(k)`.
        mult: f64,
    },
}

impl RadiusRule {
    /// The rule of `policy` at step `k` with schedule multiplier `mult`.
    pub fn new(policy: &Radius, k: u64, mult: f64) -> Self {
        match *policy {
            Radius::Constant(t) => RadiusRule::Fixed { base: t, mult },
            Radius::Theory { t0 } => RadiusRule::Fixed {
                base: t0 / ((k + 1) as f64).powf(0.75),
                mult,
            },
            Radius::Adaptive { l0, l1 } => RadiusRule::Adaptive { l0, l1, mult },
        }
    }

    /// The radius before the schedule for dual norm `dual`.
    pub fn base(&self, dual: f64) -> f64 {
        match *self {
            RadiusRule::Fixed { base, .. } => base,
            RadiusRule::Adaptive { l0, l1, .. } => {
                if dual == 0.0 {
                    0.0
                } else {
                    dual / (l0 + l1 * dual)
                }
            }
        }
    }

    /// The schedule multiplier.
    pub fn mult(&self) -> f64 {
        match *self {
            RadiusRule::Fixed { mult, .. } | RadiusRule::Adaptive { mult, .. } => mult,
        }
    }

    /// The radius `t = base(dual)·mult` used by the step.
    pub fn at(&self, dual: f64) -> f64 {
        self.base(dual) * self.mult()
    }
}

/// Phase 4: decoupled weight decay `X ← (1 − t·λ)·X`, then
/// `X ← X + t·D` (unconstrained) or `X ← (1−γ)·X + γ·ρ·D` with
/// `γ = clamp(t, 0, 1)` (constrained).
pub fn apply<B: Backend>(cfg: &LmoGroup, t: f64, d: &B::Tensor, p: &mut B::Tensor) {
    let one = B::Scalar::of(1.0);
    if cfg.weight_decay > 0.0 {
        B::scale_mut(B::Scalar::of(1.0 - t * cfg.weight_decay), p);
    }
    match cfg.mode {
        Mode::Unconstrained => B::axpby(B::Scalar::of(t), d, one, p),
        Mode::Constrained { rho } => {
            let gamma = t.clamp(0.0, 1.0);
            B::axpby(B::Scalar::of(gamma * rho), d, B::Scalar::of(1.0 - gamma), p)
        }
    }
}

/// AdamW's hyper-parameters at step `k` (0-based) with schedule multiplier
/// `mult`: learning rate `η·s(k)` and the bias corrections `1 − β₁^{k+1}`,
/// `1 − β₂^{k+1}` (the one place they are built, for every engine).
pub fn adamw_step<S: Scalar>(cfg: &AdamWGroup, k: u64, mult: f64) -> AdamWStep<S> {
    // β^(k+1) is 0 in f64 long before k+1 leaves i32 (β < 1).
    let kk = k.saturating_add(1).min(i32::MAX as u64) as i32;
    AdamWStep {
        lr: S::of(cfg.lr * mult),
        beta1: S::of(cfg.beta1),
        beta2: S::of(cfg.beta2),
        eps: S::of(cfg.eps),
        weight_decay: S::of(cfg.weight_decay),
        bias1: S::of(1.0 - cfg.beta1.powi(kk)),
        bias2: S::of(1.0 - cfg.beta2.powi(kk)),
    }
}
