//! The layer-wise LMO step (SPEC §3) over blocks, with AdamW for the groups
//! configured so.

use lmo_core::{AdamWStep, Backend, Bf16Storage, LmoError, Scalar};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{Config, DynNorm, GroupConfig, Label, LmoGroup, Mode, NonFinitePolicy, Radius};

/// Errors of [`Optimizer`]; every error leaves parameters and state
/// untouched.
#[derive(Clone, Debug, PartialEq)]
pub enum OptError {
    /// A gradient of block `block` has NaN/Inf.
    NonFiniteGradient {
        /// Index of the block.
        block: usize,
    },
    /// The number of parameters, gradients or labels differ.
    CountMismatch {
        /// Blocks the optimizer was built for.
        expected: usize,
        /// What was given.
        found: usize,
    },
    /// Block `block`: a tensor has the wrong shape, rank, or a
    /// hyper-parameter is invalid.
    Lmo {
        /// Index of the block (`usize::MAX` for configuration errors).
        block: usize,
        /// The underlying error.
        error: LmoError,
    },
    /// A label has no group in the configuration.
    NoGroup(Label),
    /// A saved state does not fit this optimizer.
    BadState(String),
}

impl core::fmt::Display for OptError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OptError::NonFiniteGradient { block } => {
                write!(f, "gradient of block {block} has NaN/Inf")
            }
            OptError::CountMismatch { expected, found } => {
                write!(f, "expected {expected} tensors, found {found}")
            }
            OptError::Lmo { block, error } if *block == usize::MAX => {
                write!(f, "configuration: {error}")
            }
            OptError::Lmo { block, error } => write!(f, "block {block}: {error}"),
            OptError::NoGroup(l) => write!(f, "no group configured for label {l:?}"),
            OptError::BadState(why) => write!(f, "state does not fit this optimizer: {why}"),
        }
    }
}

impl std::error::Error for OptError {}

/// Optimizer state: a plain serde struct, versioned, separate from the
/// configuration. Saving and loading it continues a run bit for bit on the
/// CPU (f32 values round-trip exactly through f64).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptState {
    /// Format version ([`OptState::VERSION`]).
    pub version: u32,
    /// Steps taken (the `k` of the schedules).
    pub step: u64,
    /// Steps skipped under [`NonFinitePolicy::Skip`].
    pub skipped: u64,
    /// Per block: its shape and its buffers (LMO: momentum; AdamW: m, v),
    /// row-major.
    pub blocks: Vec<BlockState>,
}

/// One block's saved buffers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockState {
    /// The block's shape.
    pub shape: Vec<usize>,
    /// Buffers, row-major.
    pub buffers: Vec<Vec<f64>>,
}

impl OptState {
    /// The current format version.
    pub const VERSION: u32 = 1;
}

/// Per-block figures of one step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BlockReport {
    /// The radius (LMO) or learning rate (AdamW) used, schedule included.
    pub radius: f64,
    /// `‖M‖_*`, the dual norm the LMO attained (0 for AdamW blocks).
    pub dual_norm: f64,
}

/// What one step did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepReport {
    /// The step index `k` it used (before incrementing).
    pub step: u64,
    /// `true` if it was skipped (non-finite gradient, `Skip` policy).
    pub skipped: bool,
    /// Per-block figures (those of the last completed step when skipped).
    pub blocks: Vec<BlockReport>,
}

/// One block's work item in [`Optimizer::step`]: index, block, report
/// slot, parameter, gradient.
type StepItem<'a, B> = (
    usize,
    (
        (&'a mut Block<B>, &'a mut BlockReport),
        (&'a mut <B as Backend>::Tensor, &'a <B as Backend>::Tensor),
    ),
);

enum Kind<B: Backend> {
    Lmo {
        cfg: LmoGroup,
        norm: DynNorm<B>,
        m: B::Tensor,
        d: B::Tensor,
        nest: Option<B::Tensor>,
    },
    AdamW {
        cfg: crate::config::AdamWGroup,
        m: B::Tensor,
        v: B::Tensor,
    },
}

struct Block<B: Backend> {
    shape: Vec<usize>,
    kind: Kind<B>,
}

/// The layer-wise LMO optimizer of SPEC §3 (Gluon; Muon, Scion and the rest
/// as presets in [`crate::presets`]), generic over the [`Backend`].
///
/// Per step `k`, per block `i` with group configuration (norm `‖·‖_(i)`,
/// radius `t_i^k` times the schedule, momentum β, weight decay λ):
///
/// ```text
/// M_i ← β_k·M_i + (1−β_k)·G_i
/// D_i ← lmo_i(M_i)     (Nesterov: lmo_i((1−β_k)·G_i + β_k·M_i))
/// X_i ← (1 − t·λ)·X_i                        (decoupled weight decay)
/// unconstrained: X_i ← X_i + t_i^k·D_i       = argmin{<M_i,Z> : ‖Z−X_i‖ ≤ t_i^k}
/// constrained:   X_i ← (1−γ)·X_i + γ·ρ_i·D_i (γ = t_i^k ∧ 1)
/// ```
///
/// Buffers are allocated in [`Optimizer::new`]; the LMOs size their
/// workspaces on the first step; later steps allocate nothing (sequential
/// mode; tested with a counting allocator). Blocks are independent and run
/// in parallel with rayon when [`Config::parallel`] is set, with results
/// identical to the sequential order.
///
/// References: Riabinin et al., "Gluon" (arXiv 2505.13416); Pethick et al.,
/// "Scion" (arXiv 2502.07529); K. Jordan et al., "Muon" (2024).
pub struct Optimizer<B: Backend> {
    config: Config,
    labels: Vec<Label>,
    blocks: Vec<Block<B>>,
    step: u64,
    skipped: u64,
    report: StepReport,
}

impl<B: Bf16Storage> Optimizer<B>
where
    B::Tensor: Send + Sync,
{
    /// Builds the optimizer for `params` labelled by `labels` (same length).
    /// Errors: invalid hyper-parameters, a label without a group, count
    /// mismatch.
    pub fn new(config: Config, labels: Vec<Label>, params: &[B::Tensor]) -> Result<Self, OptError> {
        config.validate().map_err(|error| OptError::Lmo {
            block: usize::MAX,
            error,
        })?;
        if labels.len() != params.len() {
            return Err(OptError::CountMismatch {
                expected: labels.len(),
                found: params.len(),
            });
        }
        let mut blocks = Vec::with_capacity(params.len());
        for (i, (label, p)) in labels.iter().zip(params).enumerate() {
            let shape = B::shape(p).dims().to_vec();
            let group = config
                .groups
                .get(label)
                .ok_or_else(|| OptError::NoGroup(label.clone()))?;
            let kind = match group {
                GroupConfig::Lmo(g) => {
                    let s = g.scale * g.shape_scale.factor(&shape);
                    let norm = g
                        .norm
                        .build::<B>(s)
                        .map_err(|error| OptError::Lmo { block: i, error })?;
                    Kind::Lmo {
                        cfg: g.clone(),
                        norm,
                        m: B::zeros_like(p),
                        d: B::zeros_like(p),
                        nest: g.nesterov.then(|| B::zeros_like(p)),
                    }
                }
                GroupConfig::AdamW(a) => Kind::AdamW {
                    cfg: *a,
                    m: B::zeros_like(p),
                    v: B::zeros_like(p),
                },
            };
            blocks.push(Block { shape, kind });
        }
        let report = StepReport {
            step: 0,
            skipped: false,
            blocks: vec![BlockReport::default(); blocks.len()],
        };
        Ok(Optimizer {
            config,
            labels,
            blocks,
            step: 0,
            skipped: 0,
            report,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The labels, one per block.
    pub fn labels(&self) -> &[Label] {
        &self.labels
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Steps skipped so far (non-finite gradients under `Skip`).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Checks counts, shapes and finiteness; `Ok(false)` when the step is
    /// to be skipped (non-finite gradient under the `Skip` policy).
    fn check(&self, params: &[B::Tensor], grads: &[B::Tensor]) -> Result<bool, OptError> {
        let n = self.blocks.len();
        for len in [params.len(), grads.len()] {
            if len != n {
                return Err(OptError::CountMismatch {
                    expected: n,
                    found: len,
                });
            }
        }
        for (i, (b, (p, g))) in self.blocks.iter().zip(params.iter().zip(grads)).enumerate() {
            for t in [p, g] {
                let found = B::shape(t);
                if found.dims() != b.shape.as_slice() {
                    let expected = lmo_core::Shape::new(&b.shape)
                        .map(|s| s.as_pair())
                        .unwrap_or((0, 0));
                    let error = LmoError::ShapeMismatch {
                        expected,
                        found: found.as_pair(),
                    };
                    return Err(OptError::Lmo { block: i, error });
                }
            }
        }
        match grads.iter().position(|g| !B::all_finite(g)) {
            None => Ok(true),
            Some(block) => match self.config.non_finite {
                NonFinitePolicy::Error => Err(OptError::NonFiniteGradient { block }),
                NonFinitePolicy::Skip => Ok(false),
            },
        }
    }

    /// One step: updates `params` in place from `grads` and returns what it
    /// did. Validates everything (counts, shapes, finiteness) before
    /// changing anything. Allocation-free after the first step.
    pub fn step(
        &mut self,
        params: &mut [B::Tensor],
        grads: &[B::Tensor],
    ) -> Result<&StepReport, OptError> {
        let k = self.step;
        self.report.step = k;
        if !self.check(params, grads)? {
            self.skipped += 1;
            self.report.skipped = true;
            return Ok(&self.report);
        }
        self.report.skipped = false;
        let mult = self.config.schedule.at(k);
        let run = |(i, ((b, r), (p, g))): StepItem<'_, B>| {
            *r = step_block::<B>(b, p, g, k, mult)
                .map_err(|error| OptError::Lmo { block: i, error })?;
            Ok::<(), OptError>(())
        };
        let blocks = self.blocks.iter_mut().zip(self.report.blocks.iter_mut());
        if self.config.parallel {
            self.blocks
                .par_iter_mut()
                .zip(self.report.blocks.par_iter_mut())
                .zip(params.par_iter_mut().zip(grads.par_iter()))
                .enumerate()
                .try_for_each(run)?;
        } else {
            blocks
                .zip(params.iter_mut().zip(grads.iter()))
                .enumerate()
                .try_for_each(run)?;
        }
        self.step += 1;
        Ok(&self.report)
    }

    /// The state (momenta, AdamW moments, counters), for checkpoints.
    pub fn state(&self) -> OptState {
        let read = |t: &B::Tensor| {
            let mut v = vec![B::Scalar::zero(); B::shape(t).numel()];
            B::copy_to_slice(t, &mut v);
            v.into_iter().map(Scalar::as_f64).collect::<Vec<f64>>()
        };
        let blocks = self
            .blocks
            .iter()
            .map(|b| BlockState {
                shape: b.shape.clone(),
                buffers: match &b.kind {
                    Kind::Lmo { m, .. } => vec![read(m)],
                    Kind::AdamW { m, v, .. } => vec![read(m), read(v)],
                },
            })
            .collect();
        OptState {
            version: OptState::VERSION,
            step: self.step,
            skipped: self.skipped,
            blocks,
        }
    }

    /// Restores a state saved by [`Optimizer::state`] from an optimizer
    /// with the same blocks; checks everything before changing anything.
    pub fn load_state(&mut self, s: &OptState) -> Result<(), OptError> {
        if s.version != OptState::VERSION {
            return Err(OptError::BadState(format!(
                "version {} (expected {})",
                s.version,
                OptState::VERSION
            )));
        }
        if s.blocks.len() != self.blocks.len() {
            return Err(OptError::BadState(format!(
                "{} blocks, optimizer has {}",
                s.blocks.len(),
                self.blocks.len()
            )));
        }
        for (i, (sb, b)) in s.blocks.iter().zip(&self.blocks).enumerate() {
            let want = match b.kind {
                Kind::Lmo { .. } => 1,
                Kind::AdamW { .. } => 2,
            };
            let numel: usize = b.shape.iter().product();
            if sb.shape != b.shape
                || sb.buffers.len() != want
                || sb.buffers.iter().any(|v| v.len() != numel)
            {
                return Err(OptError::BadState(format!(
                    "block {i}: shape or buffers differ"
                )));
            }
            if sb.buffers.iter().flatten().any(|x| !x.is_finite()) {
                return Err(OptError::BadState(format!("block {i}: non-finite buffer")));
            }
        }
        for (sb, b) in s.blocks.iter().zip(&mut self.blocks) {
            let write = |src: &Vec<f64>, t: &mut B::Tensor| {
                let v: Vec<B::Scalar> = src.iter().map(|&x| B::Scalar::of(x)).collect();
                B::copy_from_slice(&v, t);
            };
            match &mut b.kind {
                Kind::Lmo { m, .. } => write(&sb.buffers[0], m),
                Kind::AdamW { m, v, .. } => {
                    write(&sb.buffers[0], m);
                    write(&sb.buffers[1], v);
                }
            }
        }
        self.step = s.step;
        self.skipped = s.skipped;
        Ok(())
    }
}

use lmo_core::num_traits::Zero;

/// The radius `t_i^k` of a policy before the schedule, given `‖M‖_*`.
pub fn radius(policy: &Radius, k: u64, dual: f64) -> f64 {
    match *policy {
        Radius::Constant(t) => t,
        Radius::Theory { t0 } => t0 / ((k + 1) as f64).powf(0.75),
        Radius::Adaptive { l0, l1 } => {
            if dual == 0.0 {
                0.0
            } else {
                dual / (l0 + l1 * dual)
            }
        }
    }
}

/// The momentum β_k of a group at step k (the theory schedule overrides β).
pub fn momentum(cfg: &LmoGroup, k: u64) -> f64 {
    match cfg.radius {
        Radius::Theory { .. } => 1.0 - 1.0 / ((k + 1) as f64).sqrt(),
        _ => cfg.beta,
    }
}

fn step_block<B: Backend>(
    b: &mut Block<B>,
    p: &mut B::Tensor,
    g: &B::Tensor,
    k: u64,
    mult: f64,
) -> Result<BlockReport, LmoError> {
    let one = B::Scalar::of(1.0);
    match &mut b.kind {
        Kind::Lmo {
            cfg,
            norm,
            m,
            d,
            nest,
        } => {
            let beta = momentum(cfg, k);
            let bs = B::Scalar::of(beta);
            B::axpby(one - bs, g, bs, m);
            let ip = match nest {
                Some(nb) => {
                    B::scale(bs, m, nb);
                    B::axpby(one - bs, g, one, nb);
                    norm.lmo(nb, d)?
                }
                None => norm.lmo(m, d)?,
            };
            let dual = (-ip.as_f64()).max(0.0);
            let t = radius(&cfg.radius, k, dual) * mult;
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
            Ok(BlockReport {
                radius: t,
                dual_norm: dual,
            })
        }
        Kind::AdamW { cfg, m, v } => {
            let kk = (k + 1) as i32;
            let h = AdamWStep {
                lr: B::Scalar::of(cfg.lr * mult),
                beta1: B::Scalar::of(cfg.beta1),
                beta2: B::Scalar::of(cfg.beta2),
                eps: B::Scalar::of(cfg.eps),
                weight_decay: B::Scalar::of(cfg.weight_decay),
                bias1: B::Scalar::of(1.0 - cfg.beta1.powi(kk)),
                bias2: B::Scalar::of(1.0 - cfg.beta2.powi(kk)),
            };
            B::adamw(p, g, m, v, &h);
            Ok(BlockReport {
                radius: cfg.lr * mult,
                dual_norm: 0.0,
            })
        }
    }
}
