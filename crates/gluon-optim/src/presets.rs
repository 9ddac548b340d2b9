//! Presets: thin configurations of the one step of SPEC §3.

use std::collections::BTreeMap;

use orthogonalize::{Normalization, NsConfig};

use lmo_core::View;

use crate::OptError;
use crate::config::{
    AdamWGroup, Config, GroupConfig, Label, LmoGroup, Mode, NormSpec, Orth, Radius, ShapeScale,
};

const STANDARD: [Label; 4] = [Label::Hidden, Label::Embedding, Label::Head, Label::Vector];

/// The same group for the four standard labels.
fn everywhere(g: GroupConfig) -> Config {
    STANDARD
        .iter()
        .fold(Config::new(), |c, l| c.group(l.clone(), g.clone()))
}

/// Muon (K. Jordan et al., "Muon: an optimizer for hidden layers in neural
/// networks", 2024), the hybrid users expect:
/// - `Hidden`: spectral LMO through Muon's NS5 (quintic, 5 steps), Nesterov
///   momentum β = 0.95, learning rate `lr` (default 0.02), shape scale
///   `max(1, m/n)^{1/2}`, no weight decay; tensors of rank ≥ 3
///   (convolution kernels `(out, in, kh, kw)`) flattened to
///   `(out, in·kh·kw)` as KellerJordan/Muon does ([`View::Flatten`]; set
///   [`View::Batch`] on the group for per-head 3-D weights);
/// - `Embedding`, `Head`, `Vector`: AdamW with β = (0.9, 0.95), ε = 1e-10,
///   learning rate `adam_lr` (default 3e-4), no weight decay.
pub fn muon(lr: f64, adam_lr: f64) -> Config {
    let hidden = LmoGroup::new(
        NormSpec::Spectral(Orth::NewtonSchulz(NsConfig::muon())),
        Radius::Constant(lr),
    )
    .shape_scale(ShapeScale::MuonRatio)
    .beta(0.95)
    .nesterov(true)
    .view(View::Flatten);
    let adam = AdamWGroup {
        lr: adam_lr,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-10,
        weight_decay: 0.0,
    };
    let mut c = Config::new().group(Label::Hidden, GroupConfig::Lmo(hidden));
    for l in [Label::Embedding, Label::Head, Label::Vector] {
        c = c.group(l, GroupConfig::AdamW(adam));
    }
    c
}

/// Scion (Pethick et al., "Training deep learning models with
/// norm-constrained LMOs", arXiv 2502.07529): per-layer norms —
/// `Hidden`: RMS→RMS spectral (NS5) with radius scale 50 (rank ≥ 3
/// tensors flattened to `(d0, rest)`, [`View::Flatten`]); `Embedding` and
/// `Head`: ℓ∞/sign rescaled by `1/d_in` with radius scale 3000 (the nanogpt
/// reference's tied embedding/head); `Vector`: vector RMS, scale 1.
/// Momentum α = 0.1 (β = 0.9), step size `lr` (default 2⁻¹²; the update of
/// block i is `lr·ρ_i·lmo`). `constrained = true` is SCG (Frank–Wolfe,
/// `X ← (1−lr)·X + lr·ρ·D`), `false` is uSCG (`X ← X + lr·ρ·D`).
pub fn scion(lr: f64, constrained: bool) -> Config {
    scion_with(lr, constrained, ScionRadii::default())
}

/// Per-group radius scales ρ of [`scion_with`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScionRadii {
    /// Hidden matrices (RMS→RMS spectral).
    pub hidden: f64,
    /// Embedding and head (sign, rescaled by 1/d_in).
    pub embedding_head: f64,
    /// Vectors (RMS).
    pub vector: f64,
}

impl Default for ScionRadii {
    /// The nanogpt reference's values: 50, 3000, 1 (made for d_in in the
    /// tens of thousands; small models want much smaller embedding radii).
    fn default() -> Self {
        ScionRadii {
            hidden: 50.0,
            embedding_head: 3000.0,
            vector: 1.0,
        }
    }
}

/// [`scion`] with explicit per-group radii.
pub fn scion_with(lr: f64, constrained: bool, r: ScionRadii) -> Config {
    let mode = if constrained {
        Mode::Constrained { rho: 1.0 }
    } else {
        Mode::Unconstrained
    };
    let ns = Orth::NewtonSchulz(NsConfig::muon());
    let c = Radius::Constant(lr);
    let mut groups = [
        (
            Label::Hidden,
            LmoGroup::new(NormSpec::RmsToRms(ns), c)
                .scale(r.hidden)
                .beta(0.9)
                .view(View::Flatten),
        ),
        (
            Label::Embedding,
            LmoGroup::new(NormSpec::Sign, c)
                .scale(r.embedding_head)
                .shape_scale(ShapeScale::InvFanIn)
                .beta(0.9),
        ),
        (
            Label::Head,
            LmoGroup::new(NormSpec::Sign, c)
                .scale(r.embedding_head)
                .shape_scale(ShapeScale::InvFanIn)
                .beta(0.9),
        ),
        (
            Label::Vector,
            LmoGroup::new(NormSpec::VectorRms, c)
                .scale(r.vector)
                .beta(0.9),
        ),
    ];
    let mut c = Config::new();
    for (l, g) in groups.iter_mut() {
        g.mode = mode;
        c = c.group(l.clone(), GroupConfig::Lmo(g.clone()));
    }
    c
}

/// Gluon (Riabinin et al., "Gluon: making Muon & Scion great again!",
/// arXiv 2505.13416): Scion's per-layer norms with the adaptive (L0, L1)
/// radius `t_i = ‖M_i‖_*/(L0_i + L1_i·‖M_i‖_*)`, momentum `beta`.
/// `hidden` = (L0, L1) of the hidden blocks, `other` = of embeddings, head
/// and vectors (second-hand NanoGPT-124M values: L0 ≈ 0, hidden L1 ≈ 70,
/// embedding/head L1 ≈ 1.3). Fit your own with [`crate::probe`] and pass
/// them per label with [`gluon_fitted`]. Norm scales are 1 (the radius
/// carries the step length). Hidden tensors of rank ≥ 3 are flattened to
/// `(d0, rest)` ([`View::Flatten`]).
///
/// The hidden blocks' Newton–Schulz normalization is relative,
/// `X₀ = M/(‖M‖_F·(1 + δ))` (ε = 0, [`gluon_ns`]), not Muon's
/// `M/(‖M‖_F + 1e-7)`: with an absolute ε, once `‖M‖_F` falls to about ε
/// the iteration starts from singular values far below 1, five steps do
/// not lift them to 1, and the LMO attains a small fraction of the dual
/// norm (1.3 % in one measured case); with L0 = 0 the adaptive radius then
/// stays near 1/L1 while the step stalls (tested in
/// `tests/lipschitz_workflow.rs`).
pub fn gluon(hidden: (f64, f64), other: (f64, f64), beta: f64) -> Config {
    let mut fits = BTreeMap::new();
    fits.insert(Label::Hidden, hidden);
    for l in [Label::Embedding, Label::Head, Label::Vector] {
        fits.insert(l, other);
    }
    gluon_groups(&fits, beta)
}

/// The Newton–Schulz configuration of Gluon's hidden blocks: Muon's NS5
/// with a relative normalization (δ = 0, ε = 0: `polar(c·M) = polar(M)`
/// for every `c > 0`, however small).
pub fn gluon_ns() -> NsConfig {
    NsConfig::muon().with_normalization(Normalization::Frobenius {
        delta: 0.0,
        eps: 0.0,
    })
}

/// [`gluon`] with one `(L0, L1)` per label, as a fit reports them
/// ([`crate::ProbeReport::by_label`]): groups for exactly the labels in
/// `fits` (a model without embeddings needs none). Errors with
/// [`OptError::NoGroup`] for a label Gluon has no norm for
/// (`Label::Other`); invalid constants are refused when the optimizer is
/// built, as for every radius.
pub fn gluon_fitted(fits: &BTreeMap<Label, (f64, f64)>, beta: f64) -> Result<Config, OptError> {
    if let Some(l) = fits.keys().find(|l| !STANDARD.contains(l)) {
        return Err(OptError::NoGroup(l.clone()));
    }
    Ok(gluon_groups(fits, beta))
}

/// Gluon's group of each label in `fits` (the four standard labels only).
fn gluon_groups(fits: &BTreeMap<Label, (f64, f64)>, beta: f64) -> Config {
    let ad = |&(l0, l1): &(f64, f64)| Radius::Adaptive { l0, l1 };
    let mut c = Config::new();
    for (label, lc) in fits {
        let group = match label {
            Label::Hidden => {
                LmoGroup::new(NormSpec::RmsToRms(Orth::NewtonSchulz(gluon_ns())), ad(lc))
                    .view(View::Flatten)
            }
            Label::Embedding | Label::Head => {
                LmoGroup::new(NormSpec::Sign, ad(lc)).shape_scale(ShapeScale::InvFanIn)
            }
            Label::Vector => LmoGroup::new(NormSpec::VectorRms, ad(lc)),
            Label::Other(_) => continue,
        };
        c = c.group(label.clone(), GroupConfig::Lmo(group.beta(beta)));
    }
    c
}

/// Normalized SGD with momentum (Cutkosky & Mehta 2020): Frobenius LMO
/// `−M/‖M‖_F` on every block, radius `lr`.
pub fn normalized_sgd(lr: f64, beta: f64) -> Config {
    let g = LmoGroup::new(NormSpec::Frobenius, Radius::Constant(lr)).beta(beta);
    everywhere(GroupConfig::Lmo(g))
}

/// signSGD / Signum (Bernstein et al. 2018): ℓ∞ LMO `−sign(M)` on every
/// block, radius `lr` (β = 0: signSGD; β > 0: Signum).
pub fn sign_sgd(lr: f64, beta: f64) -> Config {
    let g = LmoGroup::new(NormSpec::Sign, Radius::Constant(lr)).beta(beta);
    everywhere(GroupConfig::Lmo(g))
}

/// AdamW (Loshchilov & Hutter, "Decoupled weight decay regularization",
/// ICLR 2019) on every block: the baseline.
pub fn adamw(a: AdamWGroup) -> Config {
    everywhere(GroupConfig::AdamW(a))
}
