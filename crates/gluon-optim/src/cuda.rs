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
use lmo_cuda::step::{self, DeviceScalars, UpdateCoeffs};
use lmo_cuda::{Cuda, CudaDevice, CudaError, CudaTensor, DType, PolarPlan};
use orthogonalize::NsConfig;

use crate::{
    AdamWGroup, Config, GroupConfig, Label, LmoGroup, Mode, NonFinitePolicy, NormSpec, OptError,
    Orth, RadiusRule, momentum,
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

/// The update coefficients of step `k` with schedule multiplier `mult` for
/// a block of shape `dims` in group `g` (SPEC §3; what
/// [`crate::Optimizer`] does, with the adaptive radius left to the device).
pub fn update_coeffs(g: &LmoGroup, dims: &[usize], k: u64, mult: f64) -> UpdateCoeffs {
    // The radius rule of phase 3: the kernel evaluates the adaptive rule
    // on the dual norm it keeps on the device; a fixed rule is passed as t.
    let (t, adaptive) = match RadiusRule::new(&g.radius, k, mult) {
        RadiusRule::Adaptive { l0, l1, .. } => (0.0, Some((l0 as f32, l1 as f32))),
        rule => (rule.at(0.0), None),
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

/// The operations the device step is written against. [`CudaExec`] runs
/// them on a GPU; [`HostExec`] runs the same orchestration on the CPU with
/// host twins of every kernel (the tests' reference: stacking, offsets,
/// buffers, per-step scalars all exercised without a GPU).
pub trait Exec {
    /// A tensor.
    type Tensor;
    /// Per-matrix f64 values kept where the tensors are.
    type Scalars;
    /// A batched polar factor for one stack shape.
    type Plan;
    /// The dimensions of a tensor.
    fn dims(t: &Self::Tensor) -> Vec<usize>;
    /// The storage of a tensor.
    fn dtype(t: &Self::Tensor) -> DType;
    /// A zero tensor.
    fn zeros(&self, dims: &[usize], dtype: DType) -> Result<Self::Tensor, DeviceError>;
    /// `len` zero scalars.
    fn scalars(&self, len: usize) -> Result<Self::Scalars, DeviceError>;
    /// The scalars' values (on a GPU: a host synchronization).
    fn read(&self, s: &Self::Scalars) -> Result<Vec<f64>, DeviceError>;
    /// A polar plan for `batch` matrices `m × n` (see [`PolarPlan::mixed`]).
    fn plan(
        &self,
        ns: &NsConfig,
        shape: (usize, usize, usize),
        io: DType,
        work: DType,
    ) -> Result<Self::Plan, DeviceError>;
    /// Turns graph replay of a plan on or off.
    fn set_graphs(plan: &mut Self::Plan, on: bool);
    /// `out = polar(u)` per matrix of the stack.
    fn polar(
        &self,
        plan: &mut Self::Plan,
        u: &Self::Tensor,
        out: &mut Self::Tensor,
    ) -> Result<(), DeviceError>;
    /// See [`step::momentum`].
    fn momentum(
        &self,
        g: &Self::Tensor,
        m: &mut Self::Tensor,
        j: usize,
        nest: Option<&mut Self::Tensor>,
        beta: f32,
    ) -> Result<(), DeviceError>;
    /// See [`step::batch_dot`].
    fn batch_dot(
        &self,
        x: &Self::Tensor,
        y: &Self::Tensor,
        out: &mut Self::Scalars,
    ) -> Result<(), DeviceError>;
    /// `out = sign(u)`.
    fn sign(&self, u: &Self::Tensor, out: &mut Self::Tensor) -> Result<(), DeviceError>;
    /// See [`step::normalize`].
    fn normalize(
        &self,
        u: &Self::Tensor,
        out: &mut Self::Tensor,
        scratch: &mut Self::Scalars,
    ) -> Result<(), DeviceError>;
    /// See [`step::lmo_update`].
    fn lmo_update(
        &self,
        p: &mut Self::Tensor,
        o: &Self::Tensor,
        j: usize,
        inner: &Self::Scalars,
        c: &UpdateCoeffs,
    ) -> Result<(), DeviceError>;
    /// One fused AdamW update (lmo-core's `Backend::adamw`).
    fn adamw(
        &self,
        p: &mut Self::Tensor,
        g: &Self::Tensor,
        m: &mut Self::Tensor,
        v: &mut Self::Tensor,
        h: &AdamWStep<f32>,
    ) -> Result<(), DeviceError>;
    /// NaN/Inf entries over all of `ts` (on a GPU: one read).
    fn count_nonfinite(&self, ts: &[&Self::Tensor]) -> Result<u64, DeviceError>;
}

/// [`Exec`] on a [`CudaDevice`]: the kernels and plans of
/// `lmo_cuda`.
pub struct CudaExec(pub Arc<CudaDevice>);

impl Exec for CudaExec {
    type Tensor = CudaTensor;
    type Scalars = DeviceScalars;
    type Plan = PolarPlan;
    fn dims(t: &CudaTensor) -> Vec<usize> {
        Cuda::shape(t).dims().to_vec()
    }
    fn dtype(t: &CudaTensor) -> DType {
        t.dtype()
    }
    fn zeros(&self, dims: &[usize], dtype: DType) -> Result<CudaTensor, DeviceError> {
        let n = dims.iter().product();
        Ok(self.0.tensor(&vec![0.0; n], dims, dtype)?)
    }
    fn scalars(&self, len: usize) -> Result<DeviceScalars, DeviceError> {
        Ok(DeviceScalars::new(&self.0, len)?)
    }
    fn read(&self, s: &DeviceScalars) -> Result<Vec<f64>, DeviceError> {
        Ok(s.to_host()?)
    }
    fn plan(
        &self,
        ns: &NsConfig,
        (batch, m, n): (usize, usize, usize),
        io: DType,
        work: DType,
    ) -> Result<PolarPlan, DeviceError> {
        Ok(PolarPlan::mixed(&self.0, ns, batch, m, n, io, work)?)
    }
    fn set_graphs(plan: &mut PolarPlan, on: bool) {
        plan.set_graphs(on);
    }
    fn polar(
        &self,
        plan: &mut PolarPlan,
        u: &CudaTensor,
        out: &mut CudaTensor,
    ) -> Result<(), DeviceError> {
        Ok(plan.run(u, out)?)
    }
    fn momentum(
        &self,
        g: &CudaTensor,
        m: &mut CudaTensor,
        j: usize,
        nest: Option<&mut CudaTensor>,
        beta: f32,
    ) -> Result<(), DeviceError> {
        Ok(step::momentum(g, m, j, nest, beta)?)
    }
    fn batch_dot(
        &self,
        x: &CudaTensor,
        y: &CudaTensor,
        out: &mut DeviceScalars,
    ) -> Result<(), DeviceError> {
        Ok(step::batch_dot(x, y, out)?)
    }
    fn sign(&self, u: &CudaTensor, out: &mut CudaTensor) -> Result<(), DeviceError> {
        Cuda::sign(1.0, u, out);
        Ok(())
    }
    fn normalize(
        &self,
        u: &CudaTensor,
        out: &mut CudaTensor,
        scratch: &mut DeviceScalars,
    ) -> Result<(), DeviceError> {
        Ok(step::normalize(u, out, scratch)?)
    }
    fn lmo_update(
        &self,
        p: &mut CudaTensor,
        o: &CudaTensor,
        j: usize,
        inner: &DeviceScalars,
        c: &UpdateCoeffs,
    ) -> Result<(), DeviceError> {
        Ok(step::lmo_update(p, o, j, inner, c)?)
    }
    fn adamw(
        &self,
        p: &mut CudaTensor,
        g: &CudaTensor,
        m: &mut CudaTensor,
        v: &mut CudaTensor,
        h: &AdamWStep<f32>,
    ) -> Result<(), DeviceError> {
        Cuda::adamw(p, g, m, v, h);
        Ok(())
    }
    fn count_nonfinite(&self, ts: &[&CudaTensor]) -> Result<u64, DeviceError> {
        Ok(step::count_nonfinite(&self.0, ts)?)
    }
}

/// A host tensor of [`HostExec`]: row-major values stored as `dtype`
/// (bf16 values are kept rounded in f32).
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Dimensions.
    pub dims: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
    /// Storage (rounding on every store).
    pub dtype: DType,
}

impl HostTensor {
    /// An f32 tensor.
    pub fn f32(data: Vec<f32>, dims: &[usize]) -> Self {
        HostTensor {
            dims: dims.to_vec(),
            data,
            dtype: DType::F32,
        }
    }

    /// Matrix `j` of a stack `[batch, …]` (batch 1 for other ranks): its
    /// element range.
    fn member(&self, j: usize) -> Result<core::ops::Range<usize>, DeviceError> {
        let batch = if self.dims.len() == 3 {
            self.dims[0]
        } else {
            1
        };
        if j >= batch {
            return Err(unsupported("stack index out of range", j).into());
        }
        let per = self.data.len() / batch;
        Ok(j * per..(j + 1) * per)
    }

    fn store(&self, v: f32) -> f32 {
        match self.dtype {
            DType::F32 => v,
            DType::Bf16 => half::bf16::from_f32(v).to_f32(),
        }
    }
}

/// A polar plan of [`HostExec`] (runs [`PolarPlan::simulate`]).
pub struct HostPlan {
    ns: NsConfig,
    shape: (usize, usize, usize),
    io: DType,
    work: DType,
}

/// [`Exec`] on the CPU: each operation is the host twin of its kernel (the
/// same formula in the same precision, f64 reductions) and the polar factor
/// is [`PolarPlan::simulate`]. `DeviceOptimizer<HostExec>` is the device
/// step's orchestration run without a GPU; the tests compare it with
/// [`crate::Optimizer`].
pub struct HostExec;

fn mismatch(a: usize, b: usize) -> DeviceError {
    DeviceError::Opt(OptError::Lmo {
        block: usize::MAX,
        error: LmoError::ShapeMismatch {
            expected: (a, 1),
            found: (b, 1),
        },
    })
}

impl Exec for HostExec {
    type Tensor = HostTensor;
    type Scalars = Vec<f64>;
    type Plan = HostPlan;
    fn dims(t: &HostTensor) -> Vec<usize> {
        t.dims.clone()
    }
    fn dtype(t: &HostTensor) -> DType {
        t.dtype
    }
    fn zeros(&self, dims: &[usize], dtype: DType) -> Result<HostTensor, DeviceError> {
        Ok(HostTensor {
            dims: dims.to_vec(),
            data: vec![0.0; dims.iter().product()],
            dtype,
        })
    }
    fn scalars(&self, len: usize) -> Result<Vec<f64>, DeviceError> {
        Ok(vec![0.0; len.max(1)])
    }
    fn read(&self, s: &Vec<f64>) -> Result<Vec<f64>, DeviceError> {
        Ok(s.clone())
    }
    fn plan(
        &self,
        ns: &NsConfig,
        shape: (usize, usize, usize),
        io: DType,
        work: DType,
    ) -> Result<HostPlan, DeviceError> {
        Ok(HostPlan {
            ns: ns.clone(),
            shape,
            io,
            work,
        })
    }
    fn set_graphs(_: &mut HostPlan, _: bool) {}
    fn polar(
        &self,
        plan: &mut HostPlan,
        u: &HostTensor,
        out: &mut HostTensor,
    ) -> Result<(), DeviceError> {
        let (b, m, n) = plan.shape;
        out.data = PolarPlan::simulate(&plan.ns, b, m, n, plan.io, plan.work, &u.data)?;
        Ok(())
    }
    fn momentum(
        &self,
        g: &HostTensor,
        m: &mut HostTensor,
        j: usize,
        nest: Option<&mut HostTensor>,
        beta: f32,
    ) -> Result<(), DeviceError> {
        let r = m.member(j)?;
        if g.data.len() != r.len() {
            return Err(mismatch(r.len(), g.data.len()));
        }
        let mut nest = nest;
        for (i, k) in r.enumerate() {
            let gi = g.data[i];
            m.data[k] = m.store((1.0 - beta) * gi + beta * m.data[k]);
            if let Some(u) = nest.as_deref_mut() {
                u.data[k] = u.store(beta * m.data[k] + (1.0 - beta) * gi);
            }
        }
        Ok(())
    }
    fn batch_dot(
        &self,
        x: &HostTensor,
        y: &HostTensor,
        out: &mut Vec<f64>,
    ) -> Result<(), DeviceError> {
        let batch = if x.dims.len() == 3 { x.dims[0] } else { 1 };
        let per = x.data.len() / batch.max(1);
        for (b, o) in out.iter_mut().enumerate().take(batch) {
            *o = (b * per..(b + 1) * per)
                .map(|i| x.data[i] as f64 * y.data[i] as f64)
                .sum();
        }
        Ok(())
    }
    fn sign(&self, u: &HostTensor, out: &mut HostTensor) -> Result<(), DeviceError> {
        for (o, &v) in out.data.iter_mut().zip(&u.data) {
            *o = if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                0.0
            };
        }
        Ok(())
    }
    fn normalize(
        &self,
        u: &HostTensor,
        out: &mut HostTensor,
        scratch: &mut Vec<f64>,
    ) -> Result<(), DeviceError> {
        let ss: f64 = u.data.iter().map(|&v| v as f64 * v as f64).sum();
        scratch[0] = ss;
        let f = ss.sqrt();
        let c = if f == 0.0 { 0.0 } else { (1.0 / f) as f32 };
        for k in 0..out.data.len() {
            out.data[k] = out.store(c * u.data[k]);
        }
        Ok(())
    }
    fn lmo_update(
        &self,
        p: &mut HostTensor,
        o: &HostTensor,
        j: usize,
        inner: &Vec<f64>,
        c: &UpdateCoeffs,
    ) -> Result<(), DeviceError> {
        let r = o.member(j)?;
        if p.data.len() != r.len() {
            return Err(mismatch(r.len(), p.data.len()));
        }
        c.apply_host(&mut p.data, &o.data[r], inner[j]);
        for k in 0..p.data.len() {
            p.data[k] = p.store(p.data[k]);
        }
        Ok(())
    }
    fn adamw(
        &self,
        p: &mut HostTensor,
        g: &HostTensor,
        m: &mut HostTensor,
        v: &mut HostTensor,
        h: &AdamWStep<f32>,
    ) -> Result<(), DeviceError> {
        // The adamw kernel of cuda_kernels.cu, element by element.
        for i in 0..g.data.len() {
            let gi = g.data[i];
            let mi = h.beta1 * m.data[i] + (1.0 - h.beta1) * gi;
            let vi = h.beta2 * v.data[i] + (1.0 - h.beta2) * gi * gi;
            m.data[i] = m.store(mi);
            v.data[i] = v.store(vi);
            let upd = (mi / h.bias1) / ((vi / h.bias2).sqrt() + h.eps);
            p.data[i] = p.store((1.0 - h.lr * h.weight_decay) * p.data[i] - h.lr * upd);
        }
        Ok(())
    }
    fn count_nonfinite(&self, ts: &[&HostTensor]) -> Result<u64, DeviceError> {
        Ok(ts
            .iter()
            .map(|t| t.data.iter().filter(|v| !v.is_finite()).count() as u64)
            .sum())
    }
}

struct Stack<E: Exec> {
    plan: StackPlan,
    m: E::Tensor,
    nest: Option<E::Tensor>,
    out: E::Tensor,
    polar: E::Plan,
    inner: E::Scalars,
}

struct Adam<E: Exec> {
    m: E::Tensor,
    v: E::Tensor,
}

struct Elem<E: Exec> {
    m: E::Tensor,
    nest: Option<E::Tensor>,
    out: E::Tensor,
    inner: E::Scalars,
    scratch: E::Scalars,
}

/// The layer-wise LMO step of [`Config`] resident on a device (module
/// docs). With the default [`CudaExec`], parameters and gradients are
/// [`CudaTensor`]s of one dtype (f32 or bf16), for example wrapping a
/// training framework's memory with [`CudaTensor::from_raw`]; with
/// [`HostExec`] the same step runs on host tensors (the tests' reference).
pub struct DeviceOptimizer<E: Exec = CudaExec> {
    exec: E,
    config: Config,
    plan: DevicePlan,
    dims: Vec<Vec<usize>>,
    dtype: DType,
    stacks: Vec<Stack<E>>,
    adam: Vec<Option<Adam<E>>>,
    elems: Vec<Option<Elem<E>>>,
    step: u64,
    skipped: u64,
    check_finite: bool,
}

impl DeviceOptimizer<CudaExec> {
    /// Builds the optimizer for `params` (on `dev`) labelled by `labels`.
    /// Errors: everything [`DevicePlan::new`] checks, mixed dtypes, and
    /// device allocation failures.
    pub fn new(
        dev: &Arc<CudaDevice>,
        config: Config,
        labels: &[Label],
        params: &[CudaTensor],
    ) -> Result<Self, DeviceError> {
        Self::with_exec(CudaExec(dev.clone()), config, labels, params)
    }
}

impl<E: Exec> DeviceOptimizer<E> {
    /// Builds the optimizer on executor `exec` (see
    /// [`DeviceOptimizer::new`]).
    pub fn with_exec(
        exec: E,
        config: Config,
        labels: &[Label],
        params: &[E::Tensor],
    ) -> Result<Self, DeviceError> {
        let dims: Vec<Vec<usize>> = params.iter().map(E::dims).collect();
        let plan = DevicePlan::new(&config, labels, &dims)?;
        let dtype = params.first().map_or(DType::F32, E::dtype);
        if let Some(i) = params.iter().position(|p| E::dtype(p) != dtype) {
            return Err(unsupported("parameters of different dtypes", i).into());
        }
        let mut stacks = Vec::with_capacity(plan.stacks.len());
        for sp in &plan.stacks {
            let (m, n) = sp.dims;
            let b = sp.members.len();
            let work = sp.work.unwrap_or(dtype);
            stacks.push(Stack {
                m: exec.zeros(&[b, m, n], dtype)?,
                nest: match sp.group.nesterov {
                    true => Some(exec.zeros(&[b, m, n], dtype)?),
                    false => None,
                },
                out: exec.zeros(&[b, m, n], dtype)?,
                polar: exec.plan(&sp.ns, (b, m, n), dtype, work)?,
                inner: exec.scalars(b)?,
                plan: sp.clone(),
            });
        }
        let mut adam = Vec::with_capacity(params.len());
        let mut elems = Vec::with_capacity(params.len());
        for (b, d) in plan.blocks.iter().zip(&dims) {
            adam.push(match b {
                BlockPlan::AdamW(_) => Some(Adam {
                    m: exec.zeros(d, dtype)?,
                    v: exec.zeros(d, dtype)?,
                }),
                _ => None,
            });
            elems.push(match b {
                BlockPlan::Elementwise { group, .. } => Some(Elem {
                    m: exec.zeros(d, dtype)?,
                    nest: match group.nesterov {
                        true => Some(exec.zeros(d, dtype)?),
                        false => None,
                    },
                    out: exec.zeros(d, dtype)?,
                    inner: exec.scalars(1)?,
                    scratch: exec.scalars(1)?,
                }),
                _ => None,
            });
        }
        Ok(DeviceOptimizer {
            exec,
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
            E::set_graphs(&mut s.polar, on);
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

    fn check(&self, params: &[E::Tensor], grads: &[E::Tensor]) -> Result<bool, DeviceError> {
        crate::validate::counts(self.dims.len(), params.len(), grads.len())?;
        for (i, (d, (p, g))) in self.dims.iter().zip(params.iter().zip(grads)).enumerate() {
            for t in [p, g] {
                let found = E::dims(t);
                // A tensor of another storage type is a mismatch too.
                if E::dtype(t) != self.dtype {
                    return Err(crate::validate::mismatch(i, d, &found).into());
                }
                crate::validate::shape(i, d, &found)?;
            }
        }
        if !self.check_finite {
            return Ok(true);
        }
        let all: Vec<&E::Tensor> = grads.iter().collect();
        if self.exec.count_nonfinite(&all)? == 0 {
            return Ok(true);
        }
        // Some gradient is non-finite; find which only when the error names it.
        let mut first = 0;
        if self.config.non_finite == NonFinitePolicy::Error {
            for (i, g) in grads.iter().enumerate() {
                if self.exec.count_nonfinite(&[g])? > 0 {
                    first = i;
                    break;
                }
            }
        }
        Ok(crate::validate::non_finite(
            self.config.non_finite,
            Some(first),
        )?)
    }

    /// One step: updates `params` from `grads` on the device. Validates
    /// counts, shapes and dtypes (host only) and, unless turned off,
    /// finiteness (one read) before queuing anything; returns `Ok(false)`
    /// for a step skipped under [`NonFinitePolicy::Skip`]. The work is
    /// queued on the device's stream: synchronize before reading results
    /// on another stream.
    pub fn step(
        &mut self,
        params: &mut [E::Tensor],
        grads: &[E::Tensor],
    ) -> Result<bool, DeviceError> {
        if !self.check(params, grads)? {
            self.skipped += 1;
            return Ok(false);
        }
        let k = self.step;
        let mult = self.config.schedule.at(k);
        let ex = &self.exec;
        for s in &mut self.stacks {
            let beta = momentum(&s.plan.group, k) as f32;
            for (j, &i) in s.plan.members.iter().enumerate() {
                ex.momentum(&grads[i], &mut s.m, j, s.nest.as_mut(), beta)?;
            }
            let u = s.nest.as_ref().unwrap_or(&s.m);
            ex.polar(&mut s.polar, u, &mut s.out)?;
            ex.batch_dot(u, &s.out, &mut s.inner)?;
            let (m, n) = s.plan.dims;
            let c = update_coeffs(&s.plan.group, &[m, n], k, mult);
            for (j, &i) in s.plan.members.iter().enumerate() {
                ex.lmo_update(&mut params[i], &s.out, j, &s.inner, &c)?;
            }
        }
        for (i, (b, e)) in self.plan.blocks.iter().zip(&mut self.elems).enumerate() {
            let (BlockPlan::Elementwise { group, kind }, Some(e)) = (b, e) else {
                continue;
            };
            let beta = momentum(group, k) as f32;
            ex.momentum(&grads[i], &mut e.m, 0, e.nest.as_mut(), beta)?;
            let u = e.nest.as_ref().unwrap_or(&e.m);
            match kind {
                ElemKind::Sign => ex.sign(u, &mut e.out)?,
                ElemKind::Euclidean => ex.normalize(u, &mut e.out, &mut e.scratch)?,
            }
            ex.batch_dot(u, &e.out, &mut e.inner)?;
            let c = update_coeffs(group, &self.dims[i], k, mult);
            ex.lmo_update(&mut params[i], &e.out, 0, &e.inner, &c)?;
        }
        for (i, (b, a)) in self.plan.blocks.iter().zip(&mut self.adam).enumerate() {
            if let (BlockPlan::AdamW(cfg), Some(a)) = (b, a) {
                let h = crate::phases::adamw_step::<f32>(cfg, k, mult);
                ex.adamw(&mut params[i], &grads[i], &mut a.m, &mut a.v, &h)?;
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
            .map(|s| self.exec.read(&s.inner))
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
                    (total_scale(group, &self.dims[i]) * self.exec.read(&e.inner)?[0]).max(0.0)
                }
                _ => 0.0,
            });
        }
        Ok(out)
    }
}
