//! The layer-wise LMO step (SPEC §3) over blocks, with AdamW for the groups
//! configured so.

use lmo_core::{Backend, Bf16Storage, LmoError, Scalar};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{Config, DynNorm, GroupConfig, Label, LmoGroup};
use crate::custom::NormRegistry;
use crate::{phases, validate};

/// Errors of [`Optimizer`]; every error leaves parameters, optimizer state
/// and counters bit-identical (checks run before anything changes, and a
/// step's phase 2 writes only scratch buffers until the commit).
#[derive(Clone, Debug, PartialEq)]
pub enum OptError {
    /// A gradient of block `block` has NaN/Inf or, in an AdamW block, an
    /// entry whose square overflows the scalar type (`|g| > √MAX/2`, f32:
    /// 9.2e18), which would make the second moment Inf.
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
    /// A phased-step call out of order (see [`Optimizer::begin_step`]);
    /// nothing changed.
    Phase(&'static str),
    /// A block index beyond the optimizer's blocks; nothing changed.
    NoBlock(usize),
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
            OptError::Phase(why) => write!(f, "phased step: {why}"),
            OptError::NoBlock(i) => write!(f, "no block {i}"),
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
    /// Steps skipped under [`crate::NonFinitePolicy::Skip`].
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

enum Kind<B: Backend> {
    Lmo {
        cfg: LmoGroup,
        norm: DynNorm<B>,
        m: B::Tensor,
        d: B::Tensor,
        /// Phase 1's result, the LMO's input `U`: the new momentum (or,
        /// with Nesterov, the look-ahead). `m` itself changes only when
        /// the step is committed in phase 4, so a step that fails before
        /// then changes nothing.
        u: B::Tensor,
        /// The dual norm of this step's direction, once phase 2 ran (or the
        /// direction was handed in).
        dual: Option<f64>,
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
/// Buffers are allocated in [`Optimizer::new`] (per LMO block three of the
/// parameter's size: momentum, direction and the LMO's input, which lets a
/// failed step leave the momentum untouched; per AdamW block two); the
/// LMOs size their workspaces on the first step; later steps allocate
/// nothing (sequential
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
    stage: Stage,
}

/// One block's work item in [`Optimizer::finish_step`]: block, report
/// slot, parameter, gradient.
type FinishItem<'a, B> = (
    (&'a mut Block<B>, &'a mut BlockReport),
    (&'a mut <B as Backend>::Tensor, &'a <B as Backend>::Tensor),
);

/// Where the optimizer is within a phased step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// No step in progress.
    Idle,
    /// Phase 1 ran (every LMO input computed, no momentum changed yet);
    /// directions may be computed or handed in.
    Prepared,
    /// The step is skipped (non-finite gradient under `Skip`).
    Skipped,
}

impl<B: Bf16Storage> Optimizer<B>
where
    B::Tensor: Send + Sync,
{
    /// Builds the optimizer for `params` labelled by `labels` (same length).
    /// Errors: invalid hyper-parameters, a label without a group, count
    /// mismatch, a tensor its group's norm is not defined on
    /// ([`lmo_core::Norm::check_shape`]: e.g. a 4-D convolution kernel in a
    /// spectral-norm group is [`LmoError::UnsupportedRank`] here, not at
    /// the first step).
    pub fn new(config: Config, labels: Vec<Label>, params: &[B::Tensor]) -> Result<Self, OptError> {
        Self::with_norms(config, labels, params, &NormRegistry::new())
    }

    /// [`Optimizer::new`] with user norms: the groups whose norm is
    /// [`NormSpec::Custom`](crate::NormSpec::Custom) get theirs from
    /// `norms` (a name it lacks is refused here, before anything is built).
    pub fn with_norms(
        config: Config,
        labels: Vec<Label>,
        params: &[B::Tensor],
        norms: &NormRegistry<B>,
    ) -> Result<Self, OptError> {
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
                    let norm = g
                        .build_norm::<B>(&B::shape(p), norms)
                        .map_err(|error| OptError::Lmo { block: i, error })?;
                    Kind::Lmo {
                        cfg: g.clone(),
                        norm,
                        m: B::zeros_like(p),
                        d: B::zeros_like(p),
                        u: B::zeros_like(p),
                        dual: None,
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
            stage: Stage::Idle,
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
        self.check_counts_and_shapes(params, grads)?;
        let first = grads
            .iter()
            .zip(&self.blocks)
            .position(|(g, b)| !validate::grad_ok::<B>(matches!(b.kind, Kind::AdamW { .. }), g));
        validate::non_finite(self.config.non_finite, first)
    }

    /// Checks counts and shapes of `params` and `grads`.
    fn check_counts_and_shapes(
        &self,
        params: &[B::Tensor],
        grads: &[B::Tensor],
    ) -> Result<(), OptError> {
        let shapes = self.blocks.iter().map(|b| b.shape.as_slice());
        validate::counts_and_shapes::<B>(shapes, params, grads)
    }

    /// One step: updates `params` in place from `grads` and returns what it
    /// did. Validates everything (counts, shapes, finiteness) before
    /// changing anything. Allocation-free after the first step.
    ///
    /// The step is the four phases of [`crate::phases`], run for every
    /// block: [`Optimizer::begin_step`], [`Optimizer::compute_directions`]
    /// for all blocks, [`Optimizer::finish_step`]. A caller that computes
    /// some directions elsewhere runs the same calls with phase 2 for its
    /// own blocks and [`Optimizer::set_direction`] for the others: the
    /// result is the same bit for bit (tests/phases.rs).
    /// [`crate::ShardedOptimizer`] instead runs all four phases of its own
    /// blocks on their owner and broadcasts the parameters.
    pub fn step(
        &mut self,
        params: &mut [B::Tensor],
        grads: &[B::Tensor],
    ) -> Result<&StepReport, OptError> {
        if self.stage == Stage::Prepared {
            return Err(OptError::Phase(
                "a phased step is in progress: finish it with finish_step",
            ));
        }
        if self.begin_step(params, grads)? {
            self.compute_directions(|_| true)?;
        }
        self.finish(params, grads, false)
    }

    /// Phase 1 of a step: validates counts, shapes and finiteness (nothing
    /// changes on error), then computes every LMO block's input
    /// `U = M⁺` (or the Nesterov look-ahead) into a buffer of its own:
    /// the momenta themselves change only when
    /// [`Optimizer::finish_step`] commits the step. Returns `false` when the step is skipped
    /// (non-finite gradient under [`crate::NonFinitePolicy::Skip`]): then nothing
    /// changes and [`Optimizer::finish_step`] reports the skip.
    ///
    /// Errors with [`OptError::Phase`] if a step is already in progress.
    pub fn begin_step(
        &mut self,
        params: &[B::Tensor],
        grads: &[B::Tensor],
    ) -> Result<bool, OptError> {
        if self.stage != Stage::Idle {
            return Err(OptError::Phase(
                "a phased step is in progress: finish it with finish_step",
            ));
        }
        if !self.check(params, grads)? {
            self.stage = Stage::Skipped;
            return Ok(false);
        }
        let k = self.step;
        let run = |(b, g): (&mut Block<B>, &B::Tensor)| {
            if let Kind::Lmo {
                cfg, m, u, dual, ..
            } = &mut b.kind
            {
                phases::momentum_phase::<B>(cfg, k, g, m, u);
                *dual = None;
            }
        };
        if self.config.parallel {
            self.blocks
                .par_iter_mut()
                .zip(grads.par_iter())
                .for_each(run);
        } else {
            self.blocks.iter_mut().zip(grads.iter()).for_each(run);
        }
        self.stage = Stage::Prepared;
        Ok(true)
    }

    /// Phase 2 for the LMO blocks `i` with `owned(i)` (in parallel when
    /// [`Config::parallel`] is set): the direction `D_i = lmo_i(U_i)` and
    /// its dual norm. Other blocks are left for
    /// [`Optimizer::set_direction`]. AdamW blocks have no direction.
    ///
    /// On an LMO error (in any block, sequential or parallel) the step is
    /// abandoned and nothing that outlives it changed: parameters,
    /// momenta, AdamW moments and counters are bit-identical to before
    /// [`Optimizer::begin_step`], so the same step can be retried.
    pub fn compute_directions(
        &mut self,
        owned: impl Fn(usize) -> bool + Sync,
    ) -> Result<(), OptError> {
        if self.stage != Stage::Prepared {
            return Err(OptError::Phase("compute_directions needs begin_step first"));
        }
        let run = |(i, b): (usize, &mut Block<B>)| {
            if !owned(i) {
                return Ok(());
            }
            if let Kind::Lmo {
                norm, d, u, dual, ..
            } = &mut b.kind
            {
                let v = phases::direction::<B>(norm.as_mut(), u, d)
                    .map_err(|error| OptError::Lmo { block: i, error })?;
                *dual = Some(v);
            }
            Ok::<(), OptError>(())
        };
        let r = if self.config.parallel {
            self.blocks.par_iter_mut().enumerate().try_for_each(run)
        } else {
            self.blocks.iter_mut().enumerate().try_for_each(run)
        };
        if r.is_err() {
            self.stage = Stage::Idle;
        }
        r
    }

    /// Abandons a phased step in progress (after [`Optimizer::begin_step`],
    /// before [`Optimizer::finish_step`]): parameters, momenta, AdamW
    /// moments and counters stay as they were before
    /// [`Optimizer::begin_step`], as after an LMO error in
    /// [`Optimizer::compute_directions`]. A
    /// sharded step calls it when another rank's phase 2 failed, so every
    /// rank ends in the same state. Nothing happens between steps.
    pub fn abandon_step(&mut self) {
        self.stage = Stage::Idle;
    }

    /// Block `block`'s direction `D` and dual norm `‖U‖_*` from phase 2 of
    /// the step in progress (what a caller distributing phase 2 sends to
    /// the others), or `None` when it has none yet (or is an AdamW block).
    pub fn direction(&self, block: usize) -> Option<(&B::Tensor, f64)> {
        match (&self.stage, &self.blocks.get(block)?.kind) {
            (
                Stage::Prepared,
                Kind::Lmo {
                    d, dual: Some(v), ..
                },
            ) => Some((d, *v)),
            _ => None,
        }
    }

    /// Hands in block `block`'s phase-2 result computed elsewhere (another
    /// rank, another device): the direction `d` and the dual norm `dual`
    /// its LMO attained. Checked before anything changes: a step in
    /// progress, an LMO block, `d`'s shape, finite `d`, finite `dual ≥ 0`.
    pub fn set_direction(
        &mut self,
        block: usize,
        d: &B::Tensor,
        dual: f64,
    ) -> Result<(), OptError> {
        if self.stage != Stage::Prepared {
            return Err(OptError::Phase("set_direction needs begin_step first"));
        }
        let b = self.blocks.get_mut(block).ok_or(OptError::NoBlock(block))?;
        validate::shape(block, &b.shape, B::shape(d).dims())?;
        if !(dual.is_finite() && dual >= 0.0 && B::all_finite(d)) {
            return Err(OptError::Lmo {
                block,
                error: LmoError::NonFinite,
            });
        }
        match &mut b.kind {
            Kind::Lmo {
                d: mine, dual: v, ..
            } => {
                B::scale(B::Scalar::of(1.0), d, mine);
                *v = Some(dual);
                Ok(())
            }
            Kind::AdamW { .. } => Err(OptError::Phase("an AdamW block has no direction")),
        }
    }

    /// Phases 3 and 4: every LMO block's radius (from its dual norm and the
    /// schedule) and update, every AdamW block's whole update; then the
    /// step counter advances. `params` and `grads` are the ones given to
    /// [`Optimizer::begin_step`]. Checks, before changing anything, that a
    /// step is in progress, that every LMO block has its direction, and the
    /// counts and shapes. A skipped step (see `begin_step`) is counted and
    /// reported here.
    pub fn finish_step(
        &mut self,
        params: &mut [B::Tensor],
        grads: &[B::Tensor],
    ) -> Result<&StepReport, OptError> {
        self.finish(params, grads, true)
    }

    /// [`Optimizer::finish_step`]; `recheck`: check the gradients phase 4
    /// reads (AdamW and Nesterov blocks) for finiteness (`step` passes the
    /// ones `begin_step` checked, and skips it).
    fn finish(
        &mut self,
        params: &mut [B::Tensor],
        grads: &[B::Tensor],
        recheck: bool,
    ) -> Result<&StepReport, OptError> {
        let k = self.step;
        match self.stage {
            Stage::Idle => {
                return Err(OptError::Phase("finish_step needs begin_step first"));
            }
            Stage::Skipped => {
                self.stage = Stage::Idle;
                self.skipped += 1;
                self.report.step = k;
                self.report.skipped = true;
                return Ok(&self.report);
            }
            Stage::Prepared => {}
        }
        self.check_counts_and_shapes(params, grads)?;
        if self
            .blocks
            .iter()
            .any(|b| matches!(b.kind, Kind::Lmo { dual: None, .. }))
        {
            return Err(OptError::Phase(
                "finish_step: an LMO block has no direction (compute_directions or set_direction)",
            ));
        }
        // The blocks that read the gradient again in phase 4: AdamW, and
        // Nesterov LMO blocks (whose momentum commit recomputes
        // M⁺ = β·M + (1−β)·G from it: pass the gradients of begin_step).
        if recheck
            && let Some(block) = self
                .blocks
                .iter()
                .zip(grads)
                .position(|(b, g)| match &b.kind {
                    Kind::AdamW { .. } => !validate::grad_ok::<B>(true, g),
                    Kind::Lmo { cfg, .. } => cfg.nesterov && !B::all_finite(g),
                })
        {
            return Err(OptError::NonFiniteGradient { block });
        }
        let mult = self.config.schedule.at(k);
        let run = |((b, r), (p, g)): FinishItem<'_, B>| {
            *r = finish_block::<B>(b, p, g, k, mult);
        };
        if self.config.parallel {
            self.blocks
                .par_iter_mut()
                .zip(self.report.blocks.par_iter_mut())
                .zip(params.par_iter_mut().zip(grads.par_iter()))
                .for_each(run);
        } else {
            self.blocks
                .iter_mut()
                .zip(self.report.blocks.iter_mut())
                .zip(params.iter_mut().zip(grads.iter()))
                .for_each(run);
        }
        self.stage = Stage::Idle;
        self.report.step = k;
        self.report.skipped = false;
        self.step += 1;
        Ok(&self.report)
    }

    /// The state (momenta, AdamW moments, counters), for checkpoints.
    /// During a phased step (after [`Optimizer::begin_step`], before
    /// [`Optimizer::finish_step`]) it is the state before that step: phase
    /// 1 writes only scratch buffers.
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

    /// Restores a state saved by [`Optimizer::state`] (or by the device
    /// optimizer, which writes the same format) from an optimizer with the
    /// same blocks; checks everything before changing anything: version,
    /// block count, shapes, buffer counts and lengths, and every value
    /// finite in the backend's scalar type.
    pub fn load_state(&mut self, s: &OptState) -> Result<(), OptError> {
        if self.stage != Stage::Idle {
            return Err(OptError::Phase(
                "load_state during a phased step: finish it with finish_step first",
            ));
        }
        if s.version != OptState::VERSION {
            return Err(OptError::BadState(format!(
                "version {} (expected {})",
                s.version,
                OptState::VERSION
            )));
        }
        validate::counters(s.step, s.skipped)?;
        if s.blocks.len() != self.blocks.len() {
            return Err(OptError::BadState(format!(
                "{} blocks, optimizer has {}",
                s.blocks.len(),
                self.blocks.len()
            )));
        }
        for (i, (sb, b)) in s.blocks.iter().zip(&self.blocks).enumerate() {
            let adamw = matches!(b.kind, Kind::AdamW { .. });
            validate::state_block::<B>(i, sb, &b.shape, adamw)?;
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

/// Phases 3 and 4 of one block (its direction is ready).
fn finish_block<B: Backend>(
    b: &mut Block<B>,
    p: &mut B::Tensor,
    g: &B::Tensor,
    k: u64,
    mult: f64,
) -> BlockReport {
    match &mut b.kind {
        Kind::Lmo {
            cfg, m, d, u, dual, ..
        } => {
            phases::commit_momentum::<B>(cfg, k, g, m, u);
            // finish_step checked that every LMO block has its dual norm.
            let dual = dual.unwrap_or(0.0);
            let t = phases::RadiusRule::new(&cfg.radius, k, mult).at(dual);
            phases::apply::<B>(cfg, t, d, p);
            BlockReport {
                radius: t,
                dual_norm: dual,
            }
        }
        Kind::AdamW { cfg, m, v } => {
            let h = phases::adamw_step::<B::Scalar>(cfg, k, mult);
            B::adamw(p, g, m, v, &h);
            BlockReport {
                radius: cfg.lr * mult,
                dual_norm: 0.0,
            }
        }
    }
}
