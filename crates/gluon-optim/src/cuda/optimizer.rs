//! [`DeviceOptimizer`]: the layer-wise step of [`Config`] with its
//! tensors on a device, run as the phases of [`crate::phases`].

use std::sync::Arc;

use lmo_cuda::{CudaDevice, CudaTensor, DType};

use super::{
    BlockPlan, CudaExec, DeviceError, DevicePlan, ElemKind, Exec, StackPlan, total_scale,
    unsupported, update_coeffs,
};
use crate::{
    BlockReport, Config, Label, NonFinitePolicy, OptError, RadiusRule, StepReport, momentum,
};

/// `‖U‖_* = max(0, s·⟨U, O⟩)` from the norm's total scale and the inner
/// product kept on the device.
fn dual_norm(scale: f64, inner: f64) -> f64 {
    (scale * inner).max(0.0)
}

pub(super) struct Stack<E: Exec> {
    pub(super) plan: StackPlan,
    pub(super) m: E::Tensor,
    nest: Option<E::Tensor>,
    out: E::Tensor,
    polar: E::Plan,
    inner: E::Scalars,
}

pub(super) struct Adam<E: Exec> {
    pub(super) m: E::Tensor,
    pub(super) v: E::Tensor,
}

pub(super) struct Elem<E: Exec> {
    pub(super) m: E::Tensor,
    nest: Option<E::Tensor>,
    out: E::Tensor,
    inner: E::Scalars,
    scratch: E::Scalars,
}

/// The layer-wise LMO step of [`Config`] resident on a device (module
/// docs). With the default [`CudaExec`], parameters and gradients are
/// [`CudaTensor`]s of one dtype (f32 or bf16), for example wrapping a
/// training framework's memory with [`CudaTensor::from_raw`]; with
/// [`HostExec`](super::HostExec) the same step runs on host tensors (the tests' reference).
pub struct DeviceOptimizer<E: Exec = CudaExec> {
    pub(super) exec: E,
    config: Config,
    pub(super) plan: DevicePlan,
    pub(super) dims: Vec<Vec<usize>>,
    pub(super) dtype: DType,
    pub(super) stacks: Vec<Stack<E>>,
    pub(super) adam: Vec<Option<Adam<E>>>,
    pub(super) elems: Vec<Option<Elem<E>>>,
    pub(super) step: u64,
    pub(super) skipped: u64,
    check_finite: bool,
    /// The last step's figures; `dual_norm` of a block is valid only where
    /// `read[i]` (the others are read from the device by `report`).
    report: StepReport,
    read: Vec<bool>,
    /// `false` after a step that failed part way (the device buffers no
    /// longer hold the last completed step's inner products).
    report_ok: bool,
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
        let n = dims.len();
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
            report: StepReport {
                step: 0,
                skipped: false,
                blocks: vec![BlockReport::default(); n],
            },
            read: vec![true; n],
            report_ok: true,
        })
    }

    /// Replays each stack's polar factor as a CUDA graph (see
    /// [`PolarPlan::with_graphs`](lmo_cuda::PolarPlan::with_graphs)).
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

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// One step: updates `params` from `grads` on the device, as the phases
    /// of [`crate::phases`]:
    ///
    /// 1. validation (counts, shapes and dtypes on the host; unless turned
    ///    off, finiteness with one read) before anything is queued, then
    ///    momentum (and Nesterov look-ahead) per block;
    /// 2. directions: one batched polar factor per stack, the elementwise
    ///    directions, and the inner products `⟨U, O⟩` kept on the device;
    /// 3. radii on the host by [`RadiusRule`], the rule the CPU optimizer
    ///    evaluates: a fixed rule needs nothing from the device; the
    ///    adaptive rule reads its blocks' inner products (one read per
    ///    stack or elementwise block that uses it);
    /// 4. the update kernels with the computed radius, and AdamW.
    ///
    /// Returns `Ok(false)` for a step skipped under
    /// [`NonFinitePolicy::Skip`]. The work is queued on the device's
    /// stream: synchronize before reading results on another stream.
    pub fn step(
        &mut self,
        params: &mut [E::Tensor],
        grads: &[E::Tensor],
    ) -> Result<bool, DeviceError> {
        let k = self.step;
        if !self.check(params, grads)? {
            self.skipped += 1;
            self.report.step = k;
            self.report.skipped = true;
            return Ok(false);
        }
        let mult = self.config.schedule.at(k);
        self.report_ok = false;
        self.directions(grads, k)?;
        self.radii(k, mult)?;
        self.apply(params, grads, k, mult)?;
        self.step += 1;
        self.report.step = k;
        self.report.skipped = false;
        self.report_ok = true;
        Ok(true)
    }

    /// Phases 1 and 2 for every LMO block: momentum, direction, and the
    /// inner product `⟨U, O⟩` on the device.
    fn directions(&mut self, grads: &[E::Tensor], k: u64) -> Result<(), DeviceError> {
        let ex = &self.exec;
        for s in &mut self.stacks {
            let beta = momentum(&s.plan.group, k) as f32;
            for (j, &i) in s.plan.members.iter().enumerate() {
                ex.momentum(&grads[i], &mut s.m, j, s.nest.as_mut(), beta)?;
            }
            let u = s.nest.as_ref().unwrap_or(&s.m);
            ex.polar(&mut s.polar, u, &mut s.out)?;
            ex.batch_dot(u, &s.out, &mut s.inner)?;
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
        }
        Ok(())
    }

    /// Phase 3 on the host: every block's radius (into the report), reading
    /// the dual norms `‖U‖_* = s·⟨U, O⟩` only where the rule needs them.
    fn radii(&mut self, k: u64, mult: f64) -> Result<(), DeviceError> {
        for s in &self.stacks {
            let rule = RadiusRule::new(&s.plan.group.radius, k, mult);
            let (m, n) = s.plan.dims;
            let scale = total_scale(&s.plan.group, &[m, n]);
            let inner = match rule {
                RadiusRule::Adaptive { .. } => Some(self.exec.read(&s.inner)?),
                RadiusRule::Fixed { .. } => None,
            };
            for (j, &i) in s.plan.members.iter().enumerate() {
                let dual = inner.as_ref().map(|v| dual_norm(scale, v[j]));
                let r = &mut self.report.blocks[i];
                r.radius = rule.at(dual.unwrap_or(0.0));
                r.dual_norm = dual.unwrap_or(0.0);
                self.read[i] = dual.is_some();
            }
        }
        for (i, (b, e)) in self.plan.blocks.iter().zip(&self.elems).enumerate() {
            let r = &mut self.report.blocks[i];
            match (b, e) {
                (BlockPlan::Elementwise { group, .. }, Some(e)) => {
                    let rule = RadiusRule::new(&group.radius, k, mult);
                    let dual = match rule {
                        RadiusRule::Adaptive { .. } => {
                            let v = self.exec.read(&e.inner)?[0];
                            Some(dual_norm(total_scale(group, &self.dims[i]), v))
                        }
                        RadiusRule::Fixed { .. } => None,
                    };
                    r.radius = rule.at(dual.unwrap_or(0.0));
                    r.dual_norm = dual.unwrap_or(0.0);
                    self.read[i] = dual.is_some();
                }
                (BlockPlan::AdamW(a), _) => {
                    r.radius = a.lr * mult;
                    r.dual_norm = 0.0;
                    self.read[i] = true;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Phase 4: the update kernels with the radii of phase 3, and AdamW.
    fn apply(
        &mut self,
        params: &mut [E::Tensor],
        grads: &[E::Tensor],
        k: u64,
        mult: f64,
    ) -> Result<(), DeviceError> {
        let ex = &self.exec;
        for s in &self.stacks {
            let (m, n) = s.plan.dims;
            for (j, &i) in s.plan.members.iter().enumerate() {
                let t = self.report.blocks[i].radius;
                let c = update_coeffs(&s.plan.group, &[m, n], t);
                ex.lmo_update(&mut params[i], &s.out, j, &c)?;
            }
        }
        for (i, (b, e)) in self.plan.blocks.iter().zip(&self.elems).enumerate() {
            if let (BlockPlan::Elementwise { group, .. }, Some(e)) = (b, e) {
                let t = self.report.blocks[i].radius;
                let c = update_coeffs(group, &self.dims[i], t);
                ex.lmo_update(&mut params[i], &e.out, 0, &c)?;
            }
        }
        for (i, (b, a)) in self.plan.blocks.iter().zip(&mut self.adam).enumerate() {
            if let (BlockPlan::AdamW(cfg), Some(a)) = (b, a) {
                let h = crate::phases::adamw_step::<f32>(cfg, k, mult);
                ex.adamw(&mut params[i], &grads[i], &mut a.m, &mut a.v, &h)?;
            }
        }
        Ok(())
    }

    /// What the last step did, in the CPU optimizer's [`StepReport`]: the
    /// radius (or AdamW learning rate) of every block, and `‖U_i‖_*`, the
    /// dual norm its LMO attained (0 for AdamW blocks). Dual norms the
    /// step did not need (fixed radius rules) are read from the device
    /// here: one read per stack and elementwise block. After a skipped
    /// step: the last completed step's figures, `skipped` set.
    ///
    /// Errors: after a step that failed part way (its inner products
    /// replaced the last completed step's), [`OptError::Phase`].
    pub fn report(&mut self) -> Result<&StepReport, DeviceError> {
        if !self.report_ok {
            return Err(OptError::Phase("the last step failed part way: no report").into());
        }
        for s in &self.stacks {
            if s.plan.members.iter().all(|&i| self.read[i]) {
                continue;
            }
            let (m, n) = s.plan.dims;
            let scale = total_scale(&s.plan.group, &[m, n]);
            let inner = self.exec.read(&s.inner)?;
            for (j, &i) in s.plan.members.iter().enumerate() {
                self.report.blocks[i].dual_norm = dual_norm(scale, inner[j]);
                self.read[i] = true;
            }
        }
        for (i, (b, e)) in self.plan.blocks.iter().zip(&self.elems).enumerate() {
            if let (BlockPlan::Elementwise { group, .. }, Some(e)) = (b, e)
                && !self.read[i]
            {
                let v = self.exec.read(&e.inner)?[0];
                self.report.blocks[i].dual_norm = dual_norm(total_scale(group, &self.dims[i]), v);
                self.read[i] = true;
            }
        }
        Ok(&self.report)
    }
}
