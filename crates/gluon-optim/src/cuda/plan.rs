//! The host-side plan of the device step: which parameters share a stack,
//! which are stepped elementwise or by AdamW, and each block's update
//! coefficients.

use std::collections::BTreeMap;

use lmo_core::LmoError;
use lmo_cuda::{DType, UpdateCoeffs};
use orthogonalize::NsConfig;

use crate::{AdamWGroup, Config, GroupConfig, Label, LmoGroup, Mode, NormSpec, OptError, Orth};

/// How the device step handles one parameter (the host-side plan, built
/// and checked without a device).
#[derive(Clone, Debug, PartialEq)]
pub enum BlockPlan {
    /// Matrix `index` of the stack `stack` (an LMO group of one shape).
    Lmo {
        /// Index into [`DevicePlan::stacks`].
        stack: usize,
        /// Position in that stack.
        index: usize,
    },
    /// An elementwise LMO of group `group`, stepped on its own.
    Elementwise {
        /// The group's configuration.
        group: LmoGroup,
        /// The direction.
        kind: ElemKind,
    },
    /// AdamW.
    AdamW(AdamWGroup),
}

/// The direction `O` of an elementwise LMO (the update is `−s·O`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElemKind {
    /// `O = sign(U)` (ℓ∞ ball; `⟨U, O⟩ = Σ|U|`).
    Sign,
    /// `O = U/‖U‖₂` (Frobenius and vector-RMS balls; `⟨U, O⟩ = ‖U‖₂`).
    Euclidean,
}

/// One stack: the hidden matrices of one group and one shape.
#[derive(Clone, Debug, PartialEq)]
pub struct StackPlan {
    /// The group's configuration.
    pub group: LmoGroup,
    /// `(m, n)` of every member.
    pub dims: (usize, usize),
    /// Parameter indices, in stack order.
    pub members: Vec<usize>,
    /// The iteration.
    pub ns: NsConfig,
    /// `Some(Bf16)` when the group asks for bf16 polar factors.
    pub work: Option<DType>,
}

/// The host-side plan of a [`DeviceOptimizer`](super::DeviceOptimizer): stacks and blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct DevicePlan {
    /// One entry per parameter.
    pub blocks: Vec<BlockPlan>,
    /// The stacks of hidden matrices.
    pub stacks: Vec<StackPlan>,
}

pub(crate) fn unsupported(msg: &'static str, block: usize) -> OptError {
    OptError::Lmo {
        block,
        error: LmoError::InvalidHyperParameter(msg),
    }
}

impl DevicePlan {
    /// Groups parameters of shapes `dims` (labelled `labels`) into stacks;
    /// checks the configuration and that every group has a device path.
    pub fn new(config: &Config, labels: &[Label], dims: &[Vec<usize>]) -> Result<Self, OptError> {
        config.validate().map_err(|error| OptError::Lmo {
            block: usize::MAX,
            error,
        })?;
        if labels.len() != dims.len() {
            return Err(OptError::CountMismatch {
                expected: labels.len(),
                found: dims.len(),
            });
        }
        let mut stacks: Vec<StackPlan> = Vec::new();
        let mut by_key: BTreeMap<(Label, usize, usize), usize> = BTreeMap::new();
        let mut blocks = Vec::with_capacity(labels.len());
        for (i, (label, d)) in labels.iter().zip(dims).enumerate() {
            let group = config
                .groups
                .get(label)
                .ok_or_else(|| OptError::NoGroup(label.clone()))?;
            match group {
                GroupConfig::AdamW(a) => blocks.push(BlockPlan::AdamW(*a)),
                GroupConfig::Lmo(g) => {
                    let whole = lmo_core::Shape::new(d)
                        .map(|s| g.view.is_identity_on(&s))
                        .unwrap_or(false);
                    if !whole {
                        return Err(unsupported(
                            "the device step takes each tensor whole (a matrix, or View::AsIs); \
                             use Optimizer<Cuda> for flattened, batched or split views",
                            i,
                        ));
                    }
                    let elem = |kind| BlockPlan::Elementwise {
                        group: g.clone(),
                        kind,
                    };
                    let orth = match &g.norm {
                        NormSpec::Spectral(o) | NormSpec::RmsToRms(o) => o,
                        NormSpec::Sign => {
                            blocks.push(elem(ElemKind::Sign));
                            continue;
                        }
                        NormSpec::Frobenius | NormSpec::VectorRms => {
                            blocks.push(elem(ElemKind::Euclidean));
                            continue;
                        }
                        NormSpec::L1
                        | NormSpec::ColNorm
                        | NormSpec::RowNorm
                        | NormSpec::Custom(_) => {
                            return Err(unsupported(
                                "the device step has no ℓ1, column-, row- or custom-norm LMO; \
                                 use Optimizer<Cuda> for these norms",
                                i,
                            ));
                        }
                    };
                    let (ns, work) = match orth {
                        Orth::NewtonSchulz(c) => (c.clone(), None),
                        Orth::NewtonSchulzBf16(c) => (c.clone(), Some(DType::Bf16)),
                        Orth::Exact => {
                            return Err(unsupported(
                                "the exact polar factor has no device path; use Orth::NewtonSchulz",
                                i,
                            ));
                        }
                    };
                    let &[m, n] = d.as_slice() else {
                        return Err(OptError::Lmo {
                            block: i,
                            error: LmoError::UnsupportedRank(d.len()),
                        });
                    };
                    let key = (label.clone(), m, n);
                    let s = *by_key.entry(key).or_insert_with(|| {
                        stacks.push(StackPlan {
                            group: g.clone(),
                            dims: (m, n),
                            members: Vec::new(),
                            ns,
                            work,
                        });
                        stacks.len() - 1
                    });
                    blocks.push(BlockPlan::Lmo {
                        stack: s,
                        index: stacks[s].members.len(),
                    });
                    stacks[s].members.push(i);
                }
            }
        }
        Ok(DevicePlan { blocks, stacks })
    }
}

/// The norm's total scale `s` of a block of shape `dims` in group `g`: the
/// group scale and its shape factor, times `√(m/n)` for RMS→RMS and `√d`
/// (`d` entries) for vector RMS (lmo-core's definitions).
pub fn total_scale(g: &LmoGroup, dims: &[usize]) -> f64 {
    let s = g.scale * g.shape_scale.factor(dims);
    match (&g.norm, dims) {
        (NormSpec::RmsToRms(_), &[m, n]) => s * (m as f64 / n as f64).sqrt(),
        (NormSpec::VectorRms, d) => s * (d.iter().product::<usize>() as f64).sqrt(),
        _ => s,
    }
}

/// The update coefficients of a block of shape `dims` in group `g` for the
/// radius `t` its radius rule gave ([`crate::RadiusRule::at`], schedule
/// included): phase 4 of SPEC §3 as the `lmo_update` kernel takes it.
pub fn update_coeffs(g: &LmoGroup, dims: &[usize], t: f64) -> UpdateCoeffs {
    UpdateCoeffs {
        t: t as f32,
        s: total_scale(g, dims) as f32,
        weight_decay: g.weight_decay as f32,
        constrained: match g.mode {
            Mode::Constrained { rho } => Some(rho as f32),
            Mode::Unconstrained => None,
        },
    }
}
