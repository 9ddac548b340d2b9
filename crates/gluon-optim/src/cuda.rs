//! The device-resident step (feature `cuda`): the same [`Config`] as
//! [`crate::Optimizer`], stepped on a GPU with no host round trip except
//! one batched finiteness read (optional).
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
//! - keeps the per-matrix inner products `⟨U, polar(U)⟩` on the device, and
//!   computes the adaptive radius `t = ‖U‖_*/(L0 + L1·‖U‖_*)` there too
//!   ([`step::lmo_update`]); [`DeviceOptimizer::dual_norms`] reads them
//!   only when asked;
//! - checks all gradients for NaN/Inf with one reduction and one 8-byte
//!   read ([`DeviceOptimizer::with_finiteness_check`] turns it off: then a
//!   step has no host synchronization at all).
//!
//! Supported groups (every radius policy, both modes, Nesterov, weight
//! decay, the schedule):
//! - spectral and RMS→RMS groups with a Newton–Schulz-type polar factor
//!   ([`Orth::NewtonSchulz`] in the tensors' precision,
//!   [`Orth::NewtonSchulzBf16`] in bf16 with f32 tensors, as
//!   `torch.optim.Muon`), stacked;
//! - sign (ℓ∞), Frobenius and vector-RMS groups, one tensor at a time
//!   (the direction and its inner product on the device): with these,
//!   the Scion and Gluon presets run whole;
//! - AdamW groups (one fused kernel per tensor).
//!
//! ℓ1, column/row-norm groups and the exact polar factor give an error at
//! construction (use [`crate::Optimizer<Cuda>`](crate::Optimizer) for
//! those).

use std::collections::BTreeMap;
use std::sync::Arc;

use lmo_core::{AdamWStep, Backend, LmoError};
use orthogonalize::NsConfig;
use orthogonalize::cuda::step::{self, DeviceScalars, UpdateCoeffs};
use orthogonalize::cuda::{Cuda, CudaDevice, CudaError, CudaTensor, DType, PolarPlan};

use crate::{
    AdamWGroup, Config, GroupConfig, Label, LmoGroup, Mode, NonFinitePolicy, NormSpec, OptError,
    Orth, Radius, momentum, radius,
};

/// Errors of the device step: the optimizer's own, or the device's.
#[derive(Debug)]
pub enum DeviceError {
    /// Configuration, counts, shapes, non-finite gradients.
    Opt(OptError),
    /// The CUDA driver, NVRTC or cuBLAS.
    Cuda(CudaError),
}

impl core::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DeviceError::Opt(e) => write!(f, "{e}"),
            DeviceError::Cuda(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DeviceError {}

impl From<OptError> for DeviceError {
    fn from(e: OptError) -> Self {
        DeviceError::Opt(e)
    }
}

impl From<CudaError> for DeviceError {
    fn from(e: CudaError) -> Self {
        DeviceError::Cuda(e)
    }
}

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

/// The host-side plan of a [`DeviceOptimizer`]: stacks and blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct DevicePlan {
    /// One entry per parameter.
    pub blocks: Vec<BlockPlan>,
    /// The stacks of hidden matrices.
    pub stacks: Vec<StackPlan>,
}

fn unsupported(msg: &'static str, block: usize) -> OptError {
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
                        NormSpec::L1 | NormSpec::ColNorm | NormSpec::RowNorm => {
                            return Err(unsupported(
                                "the device step has no ℓ1, column- or row-norm LMO; use \
                                 Optimizer<Cuda> for these norms",
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

/// The update coefficients of step `k` with schedule multiplier `mult` for
/// a block of shape `dims` in group `g` (SPEC §3; what
/// [`crate::Optimizer`] does, with the adaptive radius left to the device).
pub fn update_coeffs(g: &LmoGroup, dims: &[usize], k: u64, mult: f64) -> UpdateCoeffs {
    let (t, adaptive) = match g.radius {
        Radius::Adaptive { l0, l1 } => (0.0, Some((l0 as f32, l1 as f32))),
        r => (radius(&r, k, 0.0) * mult, None),
    };
    UpdateCoeffs {
        t: t as f32,
        mult: mult as f32,
        adaptive,
        s: total_scale(g, dims) as f32,
        weight_decay: g.weight_decay as f32,
        constrained: match g.mode {
            Mode::Constrained { rho } => Some(rho as f32),
            Mode::Unconstrained => None,
        },
    }
}

struct Stack {
    plan: StackPlan,
    m: CudaTensor,
    nest: Option<CudaTensor>,
    out: CudaTensor,
    polar: PolarPlan,
    inner: DeviceScalars,
}

struct Adam {
    m: CudaTensor,
    v: CudaTensor,
}

struct Elem {
    m: CudaTensor,
    nest: Option<CudaTensor>,
    out: CudaTensor,
    inner: DeviceScalars,
    scratch: DeviceScalars,
}

/// The layer-wise LMO step of [`Config`] on device tensors, resident on
/// the GPU (module docs). Parameters and gradients are [`CudaTensor`]s of
/// one dtype (f32 or bf16), for example wrapping a training framework's
/// memory with [`CudaTensor::from_raw`].
pub struct DeviceOptimizer {
    dev: Arc<CudaDevice>,
    config: Config,
    plan: DevicePlan,
    dims: Vec<Vec<usize>>,
    dtype: DType,
    stacks: Vec<Stack>,
    adam: Vec<Option<Adam>>,
    elems: Vec<Option<Elem>>,
    step: u64,
    skipped: u64,
    check_finite: bool,
}

impl DeviceOptimizer {
    /// Builds the optimizer for `params` (on `dev`) labelled by `labels`.
    /// Errors: everything [`DevicePlan::new`] checks, mixed dtypes, and
    /// device allocation failures.
    pub fn new(
        dev: &Arc<CudaDevice>,
        config: Config,
        labels: &[Label],
        params: &[CudaTensor],
    ) -> Result<Self, DeviceError> {
        let dims: Vec<Vec<usize>> = params
            .iter()
            .map(|p| Cuda::shape(p).dims().to_vec())
            .collect();
        let plan = DevicePlan::new(&config, labels, &dims)?;
        let dtype = params.first().map_or(DType::F32, |p| p.dtype());
        if let Some(i) = params.iter().position(|p| p.dtype() != dtype) {
            return Err(unsupported("parameters of different dtypes", i).into());
        }
        let mut stacks = Vec::with_capacity(plan.stacks.len());
        for sp in &plan.stacks {
            let (m, n) = sp.dims;
            let b = sp.members.len();
            let work = sp.work.unwrap_or(dtype);
            stacks.push(Stack {
                m: step::zeros_stack(dev, b, m, n, dtype)?,
                nest: match sp.group.nesterov {
                    true => Some(step::zeros_stack(dev, b, m, n, dtype)?),
                    false => None,
                },
                out: step::zeros_stack(dev, b, m, n, dtype)?,
                polar: PolarPlan::mixed(dev, &sp.ns, b, m, n, dtype, work)?,
                inner: DeviceScalars::new(dev, b)?,
                plan: sp.clone(),
            });
        }
        let adam = plan
            .blocks
            .iter()
            .zip(params)
            .map(|(b, p)| match b {
                BlockPlan::AdamW(_) => Some(Adam {
                    m: Cuda::zeros_like(p),
                    v: Cuda::zeros_like(p),
                }),
                _ => None,
            })
            .collect();
        let mut elems = Vec::with_capacity(params.len());
        for (b, p) in plan.blocks.iter().zip(params) {
            elems.push(match b {
                BlockPlan::Elementwise { group, .. } => Some(Elem {
                    m: Cuda::zeros_like(p),
                    nest: group.nesterov.then(|| Cuda::zeros_like(p)),
                    out: Cuda::zeros_like(p),
                    inner: DeviceScalars::new(dev, 1)?,
                    scratch: DeviceScalars::new(dev, 1)?,
                }),
                _ => None,
            });
        }
        Ok(DeviceOptimizer {
            dev: dev.clone(),
            config,
            plan,
            dims,
            dtype,
            stacks,
            adam,
            elems,
            step: 0,
            skipped: 0,
            check_finite: true,
        })
    }

    /// Replays each stack's polar factor as a CUDA graph (see
    /// [`PolarPlan::with_graphs`]).
    pub fn with_graphs(mut self, on: bool) -> Self {
        for s in &mut self.stacks {
            s.polar.set_graphs(on);
        }
        self
    }

    /// Whether [`DeviceOptimizer::step`] checks the gradients for NaN/Inf
    /// first (default `true`: one reduction and one 8-byte read per step;
    /// `false`: no host synchronization, and NaN/Inf propagate into the
    /// parameters).
    pub fn with_finiteness_check(mut self, on: bool) -> Self {
        self.check_finite = on;
        self
    }

    /// The host-side plan (stacks and blocks).
    pub fn plan(&self) -> &DevicePlan {
        &self.plan
    }

    /// Steps taken (skipped ones not counted).
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Steps skipped under [`NonFinitePolicy::Skip`].
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    fn check(&self, params: &[CudaTensor], grads: &[CudaTensor]) -> Result<bool, DeviceError> {
        let n = self.dims.len();
        for len in [params.len(), grads.len()] {
            if len != n {
                return Err(OptError::CountMismatch {
                    expected: n,
                    found: len,
                }
                .into());
            }
        }
        for (i, (d, (p, g))) in self.dims.iter().zip(params.iter().zip(grads)).enumerate() {
            for t in [p, g] {
                let found = Cuda::shape(t);
                if found.dims() != d.as_slice() || t.dtype() != self.dtype {
                    let expected = lmo_core::Shape::new(d).map_or((0, 0), |s| s.as_pair());
                    let error = LmoError::ShapeMismatch {
                        expected,
                        found: found.as_pair(),
                    };
                    return Err(OptError::Lmo { block: i, error }.into());
                }
            }
        }
        if !self.check_finite {
            return Ok(true);
        }
        let all: Vec<&CudaTensor> = grads.iter().collect();
        if step::count_nonfinite(&self.dev, &all)? == 0 {
            return Ok(true);
        }
        match self.config.non_finite {
            NonFinitePolicy::Skip => Ok(false),
            NonFinitePolicy::Error => {
                let block = grads.iter().position(|g| !Cuda::all_finite(g)).unwrap_or(0);
                Err(OptError::NonFiniteGradient { block }.into())
            }
        }
    }

    /// One step: updates `params` from `grads` on the device. Validates
    /// counts, shapes and dtypes (host only) and, unless turned off,
    /// finiteness (one read) before queuing anything; returns `Ok(false)`
    /// for a step skipped under [`NonFinitePolicy::Skip`]. The work is
    /// queued on the device's stream: synchronize before reading results
    /// on another stream.
    pub fn step(
        &mut self,
        params: &mut [CudaTensor],
        grads: &[CudaTensor],
    ) -> Result<bool, DeviceError> {
        if !self.check(params, grads)? {
            self.skipped += 1;
            return Ok(false);
        }
        let k = self.step;
        let mult = self.config.schedule.at(k);
        for s in &mut self.stacks {
            let beta = momentum(&s.plan.group, k) as f32;
            for (j, &i) in s.plan.members.iter().enumerate() {
                step::momentum(&grads[i], &mut s.m, j, s.nest.as_mut(), beta)?;
            }
            let u = s.nest.as_ref().unwrap_or(&s.m);
            s.polar.run(u, &mut s.out)?;
            step::batch_dot(u, &s.out, &s.inner)?;
            let (m, n) = s.plan.dims;
            let c = update_coeffs(&s.plan.group, &[m, n], k, mult);
            for (j, &i) in s.plan.members.iter().enumerate() {
                step::lmo_update(&mut params[i], &s.out, j, &s.inner, &c)?;
            }
        }
        for (i, (b, e)) in self.plan.blocks.iter().zip(&mut self.elems).enumerate() {
            let (BlockPlan::Elementwise { group, kind }, Some(e)) = (b, e) else {
                continue;
            };
            let beta = momentum(group, k) as f32;
            step::momentum(&grads[i], &mut e.m, 0, e.nest.as_mut(), beta)?;
            let u = e.nest.as_ref().unwrap_or(&e.m);
            match kind {
                ElemKind::Sign => Cuda::sign(1.0, u, &mut e.out),
                ElemKind::Euclidean => step::normalize(u, &mut e.out, &e.scratch)?,
            }
            step::batch_dot(u, &e.out, &e.inner)?;
            let c = update_coeffs(group, &self.dims[i], k, mult);
            step::lmo_update(&mut params[i], &e.out, 0, &e.inner, &c)?;
        }
        let kk = (k + 1) as i32;
        for (i, (b, a)) in self.plan.blocks.iter().zip(&mut self.adam).enumerate() {
            if let (BlockPlan::AdamW(cfg), Some(a)) = (b, a) {
                let h = AdamWStep {
                    lr: (cfg.lr * mult) as f32,
                    beta1: cfg.beta1 as f32,
                    beta2: cfg.beta2 as f32,
                    eps: cfg.eps as f32,
                    weight_decay: cfg.weight_decay as f32,
                    bias1: (1.0 - cfg.beta1.powi(kk)) as f32,
                    bias2: (1.0 - cfg.beta2.powi(kk)) as f32,
                };
                Cuda::adamw(&mut params[i], &grads[i], &mut a.m, &mut a.v, &h);
            }
        }
        self.step += 1;
        Ok(true)
    }

    /// `‖U_i‖_* = s_i·⟨U_i, O_i⟩` of the last step for every parameter
    /// (`O_i` the LMO's direction; 0 for AdamW blocks): one read per stack
    /// and per elementwise block.
    pub fn dual_norms(&self) -> Result<Vec<f64>, DeviceError> {
        let inner: Vec<Vec<f64>> = self
            .stacks
            .iter()
            .map(|s| s.inner.to_host())
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(self.plan.blocks.len());
        for (i, (b, e)) in self.plan.blocks.iter().zip(&self.elems).enumerate() {
            out.push(match (b, e) {
                (BlockPlan::Lmo { stack, index }, _) => {
                    let sp = &self.stacks[*stack].plan;
                    let (m, n) = sp.dims;
                    (total_scale(&sp.group, &[m, n]) * inner[*stack][*index]).max(0.0)
                }
                (BlockPlan::Elementwise { group, .. }, Some(e)) => {
                    (total_scale(group, &self.dims[i]) * e.inner.to_host()?[0]).max(0.0)
                }
                _ => 0.0,
            });
        }
        Ok(out)
    }
}
