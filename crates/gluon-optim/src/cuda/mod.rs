//! The device-resident step (feature `cuda`): the same [`Config`] as
//! [`crate::Optimizer`], stepped on a GPU with the same phases, validation,
//! radius rules, report and checkpoint format.
//!
//! [`crate::Optimizer<Cuda>`](crate::Optimizer) already runs on a GPU, but
//! through the generic block loop: every LMO returns its inner product to
//! the host, every polar factor reads its Frobenius norm back, every
//! gradient is checked on its own. [`DeviceOptimizer`] instead:
//!
//! - stacks the momenta of same-shape hidden matrices of a group into one
//!   `[batch, m, n]` buffer, so each Newton–Schulz product of the group is
//!   one cuBLAS strided-batched call ([`PolarPlan`], optionally replayed as
//!   a CUDA graph);
//! - keeps the per-matrix inner products `⟨U, polar(U)⟩` on the device and
//!   reads them only where the host needs them: for the adaptive radius
//!   `t = ‖U‖_*/(L0 + L1·‖U‖_*)` (one read per stack that uses it; the
//!   radius rule is [`crate::RadiusRule`], evaluated on the host as for
//!   the CPU optimizer, and the kernels take the computed radius) and for
//!   [`DeviceOptimizer::report`];
//! - checks all gradients for NaN/Inf with one reduction and one 8-byte
//!   read ([`DeviceOptimizer::with_finiteness_check`] turns it off: then a
//!   step with fixed radius rules has no host synchronization at all);
//! - saves and loads [`crate::OptState`], the CPU optimizer's checkpoint
//!   format ([`DeviceOptimizer::state`], [`DeviceOptimizer::load_state`]).
//!
//! Supported groups (every radius policy, both modes, Nesterov, weight
//! decay, the schedule):
//! - spectral and RMS→RMS groups with a Newton–Schulz-type polar factor
//!   ([`Orth::NewtonSchulz`](crate::Orth::NewtonSchulz) in the tensors'
//!   precision, [`Orth::NewtonSchulzBf16`](crate::Orth::NewtonSchulzBf16)
//!   in bf16 with f32 tensors, as `torch.optim.Muon`), stacked;
//! - sign (ℓ∞), Frobenius and vector-RMS groups, one tensor at a time
//!   (the direction and its inner product on the device): with these,
//!   the Scion and Gluon presets run whole;
//! - AdamW groups (one fused kernel per tensor).
//!
//! ℓ1, column/row-norm groups and the exact polar factor give an error at
//! construction (use [`crate::Optimizer<Cuda>`](crate::Optimizer) for
//! those).
//!
//! One job per file: `plan` (which parameter goes where, update
//! coefficients), `exec` (the operations, on a GPU), `host` (the same
//! operations on the CPU, the tests' reference), `optimizer` (the phased
//! step and its report), `state` (checkpoints), `error`.

#[cfg(doc)]
use lmo_cuda::PolarPlan;

#[cfg(doc)]
use crate::Config;

mod error;
mod exec;
mod host;
mod optimizer;
mod plan;
mod state;

pub use error::DeviceError;
pub use exec::{CudaExec, Exec};
pub use host::{HostExec, HostPlan, HostTensor};
pub use optimizer::DeviceOptimizer;
pub(crate) use plan::unsupported;
pub use plan::{BlockPlan, DevicePlan, ElemKind, StackPlan, total_scale, update_coeffs};
