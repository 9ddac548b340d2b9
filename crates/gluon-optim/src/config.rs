//! Configuration: parameter labels, per-group norms, radius policies,
//! schedules (SPEC §3).

use std::collections::BTreeMap;

use lmo_core::{
    Bf16Storage, ColNorm, ExactPolar, Frobenius, L1, LmoError, Norm, Pieces, RowNorm, Shape,
    SignInf, Spectral, VectorRms, View,
};
use orthogonalize::{NewtonSchulz, NewtonSchulzBf16, NsConfig};

/// What a parameter tensor is; groups are keyed by label.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Label {
    /// 2-D hidden weight matrices (attention, MLP): the LMO step's home.
    Hidden,
    /// Token/position embeddings.
    Embedding,
    /// The output head (unembedding).
    Head,
    /// Vectors: biases, norm gains.
    Vector,
    /// A user label.
    Other(String),
}

/// Where the spectral LMO gets its polar factor.
#[derive(Clone, Debug, PartialEq)]
pub enum Orth {
    /// Exact (one-sided Jacobi SVD, lmo-core's `ExactPolar`); small matrices.
    Exact,
    /// A Newton–Schulz-type iteration (orthogonalize's `NewtonSchulz`).
    NewtonSchulz(NsConfig),
    /// The same iteration with bf16 storage and f32 accumulation
    /// (orthogonalize's `NewtonSchulzBf16`, as `torch.optim.Muon`), on the
    /// path the backend declares through `lmo_core::Bf16Storage`: on the
    /// ndarray f32 backend (`Nd32`) the parameters and momentum stay f32
    /// and only the polar factor runs in bf16 (natively where the CPU has
    /// AVX-512 BF16); on `NdBf16` it is plain `NewtonSchulz`. A backend
    /// that offers no bf16 path (`OFFERS_BF16 = false`) refuses it with
    /// `InvalidHyperParameter` when the optimizer is built.
    NewtonSchulzBf16(NsConfig),
}

/// A norm of SPEC §1 for a parameter group.
#[derive(Clone, Debug, PartialEq)]
pub enum NormSpec {
    /// Frobenius / Euclidean.
    Frobenius,
    /// Spectral (ℓ2→ℓ2), LMO = −polar.
    Spectral(Orth),
    /// RMS→RMS operator norm (Scion "Spectral"): spectral scaled by √(m/n).
    RmsToRms(Orth),
    /// Entrywise ℓ∞, LMO = −sign.
    Sign,
    /// Entrywise ℓ1 (one-entry update).
    L1,
    /// Max column ℓ2.
    ColNorm,
    /// Max row ℓ2.
    RowNorm,
    /// Vector RMS (biases, gains).
    VectorRms,
    /// A user norm, by name: built for each block by the
    /// [`NormRegistry`](crate::NormRegistry) given to
    /// [`Optimizer::with_norms`](crate::Optimizer::with_norms) (any type
    /// implementing lmo-core's `Norm`; no enum to edit). The device step
    /// has no path for it.
    Custom(String),
}

/// A scale of the norm that depends on the block's shape `m × n`
/// (multiplies [`LmoGroup::scale`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ShapeScale {
    /// 1.
    None,
    /// `max(1, m/n)^{1/2}` (K. Jordan's Muon).
    MuonRatio,
    /// `0.2·√max(m, n)`: matches the update RMS of AdamW (Moonlight's Muon).
    MatchAdamRms,
    /// `1/n` (Scion's "Sign" rescaling by 1/d_in).
    InvFanIn,
}

impl ShapeScale {
    /// The factor for a block of shape `dims` (matrices: `m × n`; other
    /// ranks: 1).
    pub fn factor(&self, dims: &[usize]) -> f64 {
        let (m, n) = match dims {
            [m, n] => (*m as f64, *n as f64),
            _ => return 1.0,
        };
        match self {
            ShapeScale::None => 1.0,
            ShapeScale::MuonRatio => (m / n).max(1.0).sqrt(),
            ShapeScale::MatchAdamRms => 0.2 * m.max(n).sqrt(),
            ShapeScale::InvFanIn => 1.0 / n.max(1.0),
        }
    }
}

/// The radius `t_i^k` of the LMO step (SPEC §3), before the schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Radius {
    /// `t_i^k = t`.
    Constant(f64),
    /// Gluon Thm 2: `t_i^k = t0/(k+1)^{3/4}` and momentum `1−β_k = 1/(k+1)^{1/2}`
    /// (overrides the group's β).
    Theory {
        /// `t0 > 0`.
        t0: f64,
    },
    /// Gluon Thm 1: `t_i^k = ‖M_i‖_* / (L0_i + L1_i·‖M_i‖_*)` — with β = 0
    /// (`M = ∇f`) exactly the theorem's deterministic radius; with momentum
    /// the practical variant (the dual norm of the momentum). `‖M‖_*` is the
    /// value the LMO attains (`−<M, lmo(M)>`), exact unless an inexact
    /// orthogonalizer is used. A Newton–Schulz normalization with an
    /// absolute ε (Muon's `M/(‖M‖_F + 1e-7)`) attains a shrinking fraction
    /// of `‖M‖_*` once `‖M‖_F` nears ε, and with L0 = 0 the radius then
    /// stays near `1/L1` while the step stalls: use a relative
    /// normalization (`presets::gluon_ns`, which `presets::gluon` uses).
    /// Fit the constants with [`crate::probe`].
    Adaptive {
        /// `L0 ≥ 0`.
        l0: f64,
        /// `L1 ≥ 0`, `L0 + L1 > 0`.
        l1: f64,
    },
}

/// Unconstrained (trust region, Gluon/uSCG/Muon) or constrained
/// (Frank–Wolfe, SCG) form of the step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// `X ← X + t·D`, i.e. `argmin{<M, Z> : ‖Z − X‖ ≤ t}`.
    Unconstrained,
    /// `X ← (1−γ)·X + γ·ρ·D` with `γ = t_i^k` (clamped to [0, 1]): stays in
    /// the ball `‖X‖ ≤ ρ` once inside.
    Constrained {
        /// The ball radius ρ > 0.
        rho: f64,
    },
}

/// A learning-rate (radius) schedule multiplier `s(k)` for step `k ≥ 0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    /// `s(k) = 1`.
    Constant,
    /// Linear warm-up: `s(k) = min(1, (k+1)/warmup)`.
    Warmup {
        /// Steps to reach 1.
        warmup: u64,
    },
    /// Cosine decay from 1 to `floor` over `total` steps, then `floor`.
    Cosine {
        /// Decay length.
        total: u64,
        /// Final multiplier in [0, 1].
        floor: f64,
    },
    /// Linear decay from 1 to `floor` over `total` steps, then `floor`.
    LinearDecay {
        /// Decay length.
        total: u64,
        /// Final multiplier in [0, 1].
        floor: f64,
    },
    /// Warm-up then cosine decay (the usual LLM schedule).
    WarmupCosine {
        /// Warm-up steps.
        warmup: u64,
        /// Total steps (warm-up included).
        total: u64,
        /// Final multiplier.
        floor: f64,
    },
}

impl Schedule {
    /// The multiplier at step `k`.
    pub fn at(&self, k: u64) -> f64 {
        let cosine = |k: u64, total: u64, floor: f64| {
            let p = (k.min(total) as f64) / (total.max(1) as f64);
            floor + (1.0 - floor) * 0.5 * (1.0 + (core::f64::consts::PI * p).cos())
        };
        match *self {
            Schedule::Constant => 1.0,
            Schedule::Warmup { warmup } => ((k + 1) as f64 / warmup.max(1) as f64).min(1.0),
            Schedule::Cosine { total, floor } => cosine(k, total, floor),
            Schedule::LinearDecay { total, floor } => {
                floor + (1.0 - floor) * (1.0 - k.min(total) as f64 / total.max(1) as f64)
            }
            Schedule::WarmupCosine {
                warmup,
                total,
                floor,
            } => {
                if k < warmup {
                    (k + 1) as f64 / warmup as f64
                } else {
                    cosine(k - warmup, total.saturating_sub(warmup), floor)
                }
            }
        }
    }

    fn validate(&self) -> Result<(), LmoError> {
        let floor_ok = |f: f64| (0.0..=1.0).contains(&f);
        let ok = match *self {
            Schedule::Constant => true,
            Schedule::Warmup { warmup } => warmup > 0,
            Schedule::Cosine { total, floor } | Schedule::LinearDecay { total, floor } => {
                total > 0 && floor_ok(floor)
            }
            Schedule::WarmupCosine {
                warmup,
                total,
                floor,
            } => warmup > 0 && total > warmup && floor_ok(floor),
        };
        if ok {
            Ok(())
        } else {
            Err(LmoError::InvalidHyperParameter(
                "schedule: lengths must be > 0 and floor in [0, 1]",
            ))
        }
    }
}

/// A group stepped by the layer-wise LMO step of SPEC §3.
#[derive(Clone, Debug, PartialEq)]
pub struct LmoGroup {
    /// The norm (and through it the LMO).
    pub norm: NormSpec,
    /// Constant scale `s` of the norm (`lmo' = s·lmo`).
    pub scale: f64,
    /// Shape-dependent factor of the scale.
    pub shape_scale: ShapeScale,
    /// Radius policy.
    pub radius: Radius,
    /// Momentum β ∈ [0, 1) (`M ← β·M + (1−β)·G`; Scion's α = 1 − β).
    pub beta: f64,
    /// Nesterov: the LMO sees `(1−β)·G + β·M` (as Muon).
    pub nesterov: bool,
    /// Decoupled weight decay λ ≥ 0: `X ← (1 − t·λ)·X` before the step.
    /// The factor must stay positive, so validation refuses t·λ ≥ 1 for a
    /// constant radius, t0·λ ≥ 1 for the theory schedule and λ ≥ L1 for
    /// the adaptive radius (whose t is at most 1/L1, reached when L0 = 0;
    /// with L1 = 0 any λ > 0).
    pub weight_decay: f64,
    /// Unconstrained or constrained form.
    pub mode: Mode,
    /// How a tensor that is not one matrix is cut into the matrices the
    /// norm sees ([`View`]): as it is (the default: a matrix norm refuses
    /// rank ≠ 2 when the optimizer is built), flattened to `(d0, rest)`, a
    /// batch of matrices over the leading axes, or a matrix split along
    /// its rows (fused QKV). Several pieces are one block with the product
    /// norm `max_i ‖X_i‖` (lmo-core's `Pieces`: dual `Σ_i ‖G_i‖_*`, each
    /// piece its own LMO); [`ShapeScale`] applies to each piece's shape.
    pub view: View,
}

impl LmoGroup {
    /// A group with norm `norm` and radius policy `radius`, and the
    /// neutral rest: scale 1, no shape factor, β = 0, no Nesterov, no
    /// weight decay, unconstrained. Set the rest by name with the builder
    /// methods below.
    pub fn new(norm: NormSpec, radius: Radius) -> Self {
        LmoGroup {
            norm,
            scale: 1.0,
            shape_scale: ShapeScale::None,
            radius,
            beta: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            mode: Mode::Unconstrained,
            view: View::AsIs,
        }
    }

    /// Sets how tensors that are not one matrix are cut into matrices
    /// ([`View`]).
    pub fn view(mut self, v: View) -> Self {
        self.view = v;
        self
    }

    /// Builds this group's norm for a block of shape `shape`: the group's
    /// norm with scale `s·f(dims)` ([`LmoGroup::scale`],
    /// [`ShapeScale::factor`]) on the tensor as it is, or, when the
    /// [`View`] cuts it into pieces, one such norm per piece (built for the
    /// piece's dims) combined by lmo-core's `Pieces` (`‖X‖ = max_i ‖X_i‖`,
    /// SPEC §1 and §3). A [`NormSpec::Custom`] norm comes from `norms`.
    ///
    /// Errors: [`LmoError::UnsupportedRank`] for a tensor the norm (or
    /// view) cannot take, e.g. a 4-D kernel with [`View::AsIs`] in a
    /// spectral group; [`LmoError::InvalidHyperParameter`] for bad split
    /// sizes or norm parameters.
    pub fn build_norm<B: Bf16Storage>(
        &self,
        shape: &Shape,
        norms: &crate::NormRegistry<B>,
    ) -> Result<DynNorm<B>, LmoError>
    where
        B::Tensor: Send,
    {
        let one = |s: &Shape| {
            let dims = s.dims();
            let n = self.norm.build_for::<B>(
                dims,
                self.scale * self.shape_scale.factor(dims),
                norms,
            )?;
            n.check_shape(s)?;
            Ok::<_, LmoError>(n)
        };
        if self.view.is_identity_on(shape) {
            return one(shape);
        }
        let parts = self
            .view
            .pieces(shape)?
            .into_iter()
            .map(|s| one(&s).map(|n| (s, n)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Box::new(Pieces::new(*shape, parts)?))
    }

    /// Sets the constant scale `s` of the norm.
    pub fn scale(mut self, s: f64) -> Self {
        self.scale = s;
        self
    }

    /// Sets the shape-dependent factor of the scale.
    pub fn shape_scale(mut self, f: ShapeScale) -> Self {
        self.shape_scale = f;
        self
    }

    /// Sets the radius policy.
    pub fn radius(mut self, r: Radius) -> Self {
        self.radius = r;
        self
    }

    /// Sets the momentum β.
    pub fn beta(mut self, beta: f64) -> Self {
        self.beta = beta;
        self
    }

    /// Turns Nesterov momentum on or off.
    pub fn nesterov(mut self, on: bool) -> Self {
        self.nesterov = on;
        self
    }

    /// Sets the decoupled weight decay λ.
    pub fn weight_decay(mut self, wd: f64) -> Self {
        self.weight_decay = wd;
        self
    }

    /// Sets the mode (unconstrained or constrained).
    pub fn mode(mut self, m: Mode) -> Self {
        self.mode = m;
        self
    }
}

/// AdamW (Loshchilov & Hutter 2019), the baseline and Muon's partner for
/// non-hidden tensors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWGroup {
    /// Learning rate η > 0.
    pub lr: f64,
    /// β₁ ∈ [0, 1).
    pub beta1: f64,
    /// β₂ ∈ [0, 1).
    pub beta2: f64,
    /// ε > 0.
    pub eps: f64,
    /// Decoupled weight decay λ ≥ 0 (`X ← (1 − η·λ)·X`; validation
    /// refuses η·λ ≥ 1, which would flip or zero the weights).
    pub weight_decay: f64,
}

impl Default for AdamWGroup {
    /// PyTorch's defaults: lr 1e-3, β = (0.9, 0.999), ε = 1e-8, λ = 0.01.
    fn default() -> Self {
        AdamWGroup {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// How one group is stepped.
#[derive(Clone, Debug, PartialEq)]
pub enum GroupConfig {
    /// The layer-wise LMO step.
    Lmo(LmoGroup),
    /// AdamW.
    AdamW(AdamWGroup),
}

/// What a step does when a gradient has NaN/Inf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonFinitePolicy {
    /// Return [`crate::OptError::NonFiniteGradient`]; nothing changes.
    Error,
    /// Skip the step (parameters and state unchanged), count it in
    /// [`crate::OptState::skipped`], return a report that says so.
    Skip,
}

/// The optimizer configuration: one [`GroupConfig`] per [`Label`], a
/// schedule shared by all groups, the non-finite policy and whether blocks
/// step in parallel (results are identical either way).
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Per-label group configuration.
    pub groups: BTreeMap<Label, GroupConfig>,
    /// Multiplier of every radius / learning rate.
    pub schedule: Schedule,
    /// Non-finite gradient policy.
    pub non_finite: NonFinitePolicy,
    /// Step independent blocks in parallel (rayon).
    pub parallel: bool,
}

impl Config {
    /// A configuration with no groups, constant schedule, `Error` policy,
    /// parallel blocks.
    pub fn new() -> Self {
        Config {
            groups: BTreeMap::new(),
            schedule: Schedule::Constant,
            non_finite: NonFinitePolicy::Error,
            parallel: true,
        }
    }

    /// Sets the group of `label`.
    pub fn group(mut self, label: Label, g: GroupConfig) -> Self {
        self.groups.insert(label, g);
        self
    }

    /// Runs every Newton–Schulz polar factor in bf16 storage with f32
    /// accumulation ([`Orth::NewtonSchulzBf16`]), the precision
    /// `torch.optim.Muon` uses: parameters and momentum keep the backend's
    /// precision. On the ndarray f32 backend with AVX-512 BF16 this is about
    /// twice as fast as f32 (docs/orthogonalize.md). Exact orthogonalizers
    /// and non-spectral norms are left as they are.
    pub fn with_bf16_polar(mut self) -> Self {
        for g in self.groups.values_mut() {
            if let GroupConfig::Lmo(l) = g {
                l.norm = match &l.norm {
                    NormSpec::Spectral(Orth::NewtonSchulz(c)) => {
                        NormSpec::Spectral(Orth::NewtonSchulzBf16(c.clone()))
                    }
                    NormSpec::RmsToRms(Orth::NewtonSchulz(c)) => {
                        NormSpec::RmsToRms(Orth::NewtonSchulzBf16(c.clone()))
                    }
                    other => other.clone(),
                };
            }
        }
        self
    }

    /// Runs every Newton–Schulz polar factor in the Gram form
    /// (`orthogonalize::NsForm::Gram` with `NsConfig::default_restarts`):
    /// the same polynomial evaluated on `min(m,n)²` matrices, faster for
    /// rectangular blocks (docs/orthogonalize.md, "Gram Newton–Schulz").
    /// Blocks with `max(m,n) < 2·min(m,n)` (squares) run the plain form,
    /// which needs fewer flops there. Combines with [`Config::with_bf16_polar`] in either order.
    /// Exact orthogonalizers and non-spectral norms are left as they are;
    /// the device step refuses the Gram form when it is built.
    pub fn with_gram_polar(mut self) -> Self {
        for g in self.groups.values_mut() {
            if let GroupConfig::Lmo(l) = g {
                match &mut l.norm {
                    NormSpec::Spectral(Orth::NewtonSchulz(c) | Orth::NewtonSchulzBf16(c))
                    | NormSpec::RmsToRms(Orth::NewtonSchulz(c) | Orth::NewtonSchulzBf16(c)) => {
                        *c = c.clone().gram();
                    }
                    _ => {}
                }
            }
        }
        self
    }

    /// Runs every spectral LMO on the exact polar factor ([`Orth::Exact`],
    /// a Jacobi SVD): what an (L0, L1) probe should step with
    /// ([`crate::probe`]), since a Newton–Schulz step is not exactly the LMO
    /// direction and lowers the fitted L1 by about its alignment
    /// ([`crate::FitWarning::InexactSteps`]). Slow on large matrices:
    /// meant for short probes and tests. Non-spectral norms are left as
    /// they are.
    pub fn with_exact_polar(mut self) -> Self {
        for g in self.groups.values_mut() {
            if let GroupConfig::Lmo(l) = g {
                match &mut l.norm {
                    NormSpec::Spectral(o) | NormSpec::RmsToRms(o) => *o = Orth::Exact,
                    _ => {}
                }
            }
        }
        self
    }

    /// Sets the schedule.
    pub fn schedule(mut self, s: Schedule) -> Self {
        self.schedule = s;
        self
    }

    /// Sets the non-finite policy.
    pub fn non_finite(mut self, p: NonFinitePolicy) -> Self {
        self.non_finite = p;
        self
    }

    /// Checks every hyper-parameter.
    pub fn validate(&self) -> Result<(), LmoError> {
        self.schedule.validate()?;
        let pos = |x: f64| x.is_finite() && x > 0.0;
        let nonneg = |x: f64| x.is_finite() && x >= 0.0;
        let unit = |x: f64| x.is_finite() && (0.0..1.0).contains(&x);
        let bad = LmoError::InvalidHyperParameter;
        for g in self.groups.values() {
            match g {
                GroupConfig::Lmo(l) => {
                    if !pos(l.scale) {
                        return Err(bad("norm scale must be finite and > 0"));
                    }
                    if !unit(l.beta) {
                        return Err(bad("momentum β must be in [0, 1)"));
                    }
                    if !nonneg(l.weight_decay) {
                        return Err(bad("weight decay must be finite and ≥ 0"));
                    }
                    match l.radius {
                        Radius::Constant(t) if !nonneg(t) => {
                            return Err(bad("radius must be finite and ≥ 0"));
                        }
                        Radius::Theory { t0 } if !pos(t0) => {
                            return Err(bad("theory radius t0 must be > 0"));
                        }
                        Radius::Adaptive { l0, l1 }
                            if !(nonneg(l0) && nonneg(l1) && l0 + l1 > 0.0) =>
                        {
                            return Err(bad("adaptive radius needs L0, L1 ≥ 0 with L0 + L1 > 0"));
                        }
                        _ => {}
                    }
                    // Decoupled weight decay scales X by 1 − t·λ; t·λ ≥ 1
                    // would flip or zero the weights. Schedules multiply t
                    // by at most 1, so the bound on the base radius holds
                    // at every step: t < 1/λ for a constant radius, t0 <
                    // 1/λ for the theory schedule (t_k ≤ t0) and, for the
                    // adaptive radius t = d/(L0 + L1·d) ≤ 1/L1 (equal when
                    // L0 = 0, and after rounding for large d), λ < L1.
                    let wd = l.weight_decay;
                    let flips = wd > 0.0
                        && match l.radius {
                            Radius::Constant(t) => t * wd >= 1.0,
                            Radius::Theory { t0 } => t0 * wd >= 1.0,
                            Radius::Adaptive { l1, .. } => wd >= l1,
                        };
                    if flips {
                        return Err(bad(
                            "weight decay: the factor 1 − t·λ must stay > 0 (constant or \
                             theory radius: t·λ < 1; adaptive radius: λ < L1)",
                        ));
                    }
                    if let Mode::Constrained { rho } = l.mode
                        && !pos(rho)
                    {
                        return Err(bad("constrained radius ρ must be > 0"));
                    }
                    if let NormSpec::Custom(name) = &l.norm
                        && name.is_empty()
                    {
                        return Err(bad("a custom norm needs a name"));
                    }
                    if let NormSpec::Spectral(Orth::NewtonSchulz(c))
                    | NormSpec::RmsToRms(Orth::NewtonSchulz(c)) = &l.norm
                    {
                        c.validate()?;
                    }
                }
                GroupConfig::AdamW(a) => {
                    if !(pos(a.lr)
                        && unit(a.beta1)
                        && unit(a.beta2)
                        && pos(a.eps)
                        && nonneg(a.weight_decay)
                        && a.lr * a.weight_decay < 1.0)
                    {
                        return Err(bad(
                            "AdamW needs lr, ε > 0, β₁, β₂ ∈ [0, 1), λ ≥ 0 and lr·λ < 1",
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

/// A norm object usable from several threads.
pub type DynNorm<B> = Box<dyn Norm<B> + Send>;

impl NormSpec {
    /// Builds the norm for a block of shape `dims` with total scale `s`,
    /// a [`NormSpec::Custom`] norm through `norms`.
    pub fn build_for<B: Bf16Storage>(
        &self,
        dims: &[usize],
        s: f64,
        norms: &crate::NormRegistry<B>,
    ) -> Result<DynNorm<B>, LmoError>
    where
        B::Tensor: Send,
    {
        match self {
            NormSpec::Custom(name) => norms.build(name, dims, s),
            _ => self.build::<B>(s),
        }
    }

    /// Builds a built-in norm with total scale `s`;
    /// [`NormSpec::Custom`] needs a registry ([`NormSpec::build_for`]) and
    /// gives [`LmoError::InvalidHyperParameter`] here.
    pub fn build<B: Bf16Storage>(&self, s: f64) -> Result<DynNorm<B>, LmoError>
    where
        B::Tensor: Send,
    {
        fn spectral<B: Bf16Storage>(o: &Orth, s: f64, rms: bool) -> Result<DynNorm<B>, LmoError>
        where
            B::Tensor: Send,
        {
            Ok(match o {
                Orth::Exact => {
                    let n = Spectral::with_orthogonalizer(ExactPolar::<B>::new()).with_scale(s)?;
                    Box::new(if rms { n.rms_to_rms() } else { n })
                }
                Orth::NewtonSchulz(c) => {
                    let n = Spectral::with_orthogonalizer(NewtonSchulz::<B>::new(c.clone())?)
                        .with_scale(s)?;
                    Box::new(if rms { n.rms_to_rms() } else { n })
                }
                Orth::NewtonSchulzBf16(c) => {
                    let n = Spectral::with_orthogonalizer(NewtonSchulzBf16::<B>::new(c.clone())?)
                        .with_scale(s)?;
                    Box::new(if rms { n.rms_to_rms() } else { n })
                }
            })
        }
        Ok(match self {
            NormSpec::Frobenius => Box::new(Frobenius::new().with_scale(s)?),
            NormSpec::Spectral(o) => spectral::<B>(o, s, false)?,
            NormSpec::RmsToRms(o) => spectral::<B>(o, s, true)?,
            NormSpec::Sign => Box::new(SignInf::new().with_scale(s)?),
            NormSpec::L1 => Box::new(L1::new().with_scale(s)?),
            NormSpec::ColNorm => Box::new(ColNorm::<B::Scalar>::new().with_scale(s)?),
            NormSpec::RowNorm => Box::new(RowNorm::<B::Scalar>::new().with_scale(s)?),
            NormSpec::VectorRms => Box::new(VectorRms::new().with_scale(s)?),
            NormSpec::Custom(_) => {
                return Err(LmoError::InvalidHyperParameter(
                    "a custom norm is built through a NormRegistry (Optimizer::with_norms)",
                ));
            }
        })
    }
}
