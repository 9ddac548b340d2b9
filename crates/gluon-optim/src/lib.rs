//! # gluon-optim
//!
//! The layer-wise LMO optimizer of SPEC §3 — Gluon, with Muon, Scion
//! (SCG/uSCG), normalized SGD and signSGD as presets and AdamW as the
//! baseline — written once against lmo-core's [`lmo_core::Backend`].
//!
//! - [`Config`]: parameter groups keyed by [`Label`] (hidden, embedding,
//!   head, vector, own labels), each with a norm ([`NormSpec`], any of SPEC
//!   §1 with a scale), a [`Radius`] policy (constant, theory schedule,
//!   adaptive (L0, L1)), momentum (Nesterov option), weight decay and
//!   [`Mode`] (unconstrained / constrained); a [`Schedule`] multiplier.
//! - [`NormRegistry`]: user norms (any `lmo_core::Norm`) for groups with
//!   [`NormSpec::Custom`], without editing an enum;
//!   [`LmoGroup::new`] and its named builder methods.
//! - [`Optimizer`]: the step, typed errors that leave everything untouched,
//!   [`OptState`] (serde, versioned) for bit-identical resume,
//!   allocation-free after the first step, blocks in parallel (rayon).
//! - [`phases`]: the step as four phases (momentum, direction, radius,
//!   apply), written once; [`Optimizer::begin_step`],
//!   [`Optimizer::compute_directions`], [`Optimizer::set_direction`] and
//!   [`Optimizer::finish_step`] expose them for sharded steps.
//! - [`presets`]: Muon, Scion, Gluon, normalized SGD, signSGD, AdamW.
//! - [`LipschitzEstimator`] and [`fit_envelope`]: record
//!   `(‖∇_i f‖_*, L̂)` along a probe run and fit `(L0, L1)` per block.
//! - [`ShardedOptimizer`]: the step sharded over the ranks of an
//!   `lmo_comm::Communicator` (ZeRO-1 style: each block's state and step
//!   on one owner rank, parameters broadcast), with gradient averaging for
//!   data parallelism and checkpoints in the single-process format.
//! - `cuda` (feature `cuda`): `DeviceOptimizer`, the same configuration
//!   stepped resident on a GPU (batched polar factors, the same phases,
//!   report and checkpoint format).
#![warn(missing_docs)]

mod config;
#[cfg(feature = "cuda")]
pub mod cuda;
mod custom;
mod estimator;
mod optimizer;
pub mod phases;
pub mod presets;
mod probe;
mod sharded;
mod validate;

pub use config::{
    AdamWGroup, Config, DynNorm, GroupConfig, Label, LmoGroup, Mode, NonFinitePolicy, NormSpec,
    Orth, Radius, Schedule, ShapeScale,
};
pub use custom::{NormBuilder, NormRegistry};
pub use estimator::{
    Fit, FitWarning, LONG_STEP_U, LipschitzEstimator, MIN_ALIGN, Point, fit_envelope, fit_quantile,
};
/// Re-export of lmo-core's [`lmo_core::View`], the per-group tensor view ([`LmoGroup::view`]).
pub use lmo_core::View;
pub use optimizer::{BlockReport, BlockState, OptError, OptState, Optimizer, StepReport};
pub use phases::{RadiusRule, momentum, radius};
pub use probe::{ProbeReport, probe};
pub use sharded::{ShardError, ShardedOptimizer, StepTimes, assign_owners};
