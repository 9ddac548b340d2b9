//! Device-side pieces of an optimizer step on stacks of same-shape
//! matrices (the building blocks of `gluon_optim::cuda::DeviceOptimizer`):
//! the momentum update into a stack, per-matrix inner products kept on the
//! device (read back once per step when the radius or a report needs
//! them), the LMO update for a radius computed on the host, and one
//! batched finiteness count.

use std::sync::Arc;

use lmo_core::LmoError;

use super::{CudaDevice, CudaError, CudaTensor, DType, Mem, lower};

fn input(msg: &'static str) -> CudaError {
    CudaError::Input(LmoError::InvalidHyperParameter(msg))
}

/// `batch` f64 values on the device (per-matrix inner products), read only
/// when asked.
pub struct DeviceScalars {
    dev: Arc<CudaDevice>,
    mem: Mem,
    len: usize,
}

impl DeviceScalars {
    /// `len` zeros on `dev` (at least one).
    pub fn new(dev: &Arc<CudaDevice>, len: usize) -> Result<Self, CudaError> {
        let len = len.max(1);
        Ok(Self {
            dev: dev.clone(),
            mem: dev.alloc(8 * len)?,
            len,
        })
    }

    /// The values (a host synchronization).
    pub fn to_host(&self) -> Result<Vec<f64>, CudaError> {
        self.dev.read_f64(self.ptr(), self.len)
    }

    /// The device address of the values (8 bytes each), for
    /// [`CudaDevice::issue`]. Kernels that write a u32 or u64 slot use the
    /// low bytes of one value: read it back as `to_host()?[i].to_bits()`.
    pub fn address(&self) -> u64 {
        self.ptr()
    }

    fn ptr(&self) -> u64 {
        self.dev.addr(&self.mem)
    }
}

/// The coefficients of one block's LMO update (phase 4 of SPEC §3), with
/// `D = −s·O`, `O` the polar factor (or other direction) of the LMO's
/// input and `t` the radius the optimizer's radius rule computed on the
/// host (schedule included):
///
/// ```text
/// X ← (1 − t·wd)·X
/// X ← X + t·D                    (unconstrained)
/// X ← (1 − γ)·X + γ·ρ·D,  γ = clamp(t, 0, 1)   (constrained)
/// ```
///
/// The kernel takes these values as they are: no optimizer policy (radius
/// rules, schedules) is evaluated on the device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpdateCoeffs {
    /// The radius `t` (schedule multiplier included).
    pub t: f32,
    /// The norm's total scale `s`.
    pub s: f32,
    /// Decoupled weight decay λ.
    pub weight_decay: f32,
    /// `Some(ρ)`: the constrained (Frank–Wolfe) form.
    pub constrained: Option<f32>,
}

impl UpdateCoeffs {
    /// The update on host slices: the reference the kernel `lmo_update`
    /// implements (`o` is the direction `O`).
    pub fn apply_host(&self, p: &mut [f32], o: &[f32]) {
        let t = self.t;
        let decay = 1.0 - t * self.weight_decay;
        let g = t.clamp(0.0, 1.0);
        for (x, &oi) in p.iter_mut().zip(o) {
            let (pi, d) = (decay * *x, -self.s * oi);
            *x = match self.constrained {
                Some(rho) => (1.0 - g) * pi + g * rho * d,
                None => pi + t * d,
            };
        }
    }
}

fn same_dev(a: &CudaTensor, b: &CudaTensor) -> Result<(), CudaError> {
    if !Arc::ptr_eq(&a.dev, &b.dev) {
        return Err(input("tensors live on different CudaDevices"));
    }
    Ok(())
}

/// `M_j ← β·M_j + (1−β)·G` for matrix `j` of the stack `m`, and with
/// `nesterov = Some(u)`: `U_j ← β·M_j + (1−β)·G` (the LMO's input). One
/// kernel; `g` must have `M_j`'s element count.
pub fn momentum(
    g: &CudaTensor,
    m: &mut CudaTensor,
    j: usize,
    nesterov: Option<&mut CudaTensor>,
    beta: f32,
) -> Result<(), CudaError> {
    same_dev(g, m)?;
    if let Some(u) = nesterov.as_deref() {
        same_dev(g, u)?;
    }
    let dev = &g.dev;
    let nest = nesterov.map(|u| u.desc());
    dev.run(|sink| lower::momentum(g.desc(), m.desc(), j, nest, beta, sink))
}

/// `out[b] = ⟨X_b, Y_b⟩` for every matrix of two same-shape stacks, kept
/// on the device (accumulated in f64).
pub fn batch_dot(x: &CudaTensor, y: &CudaTensor, out: &DeviceScalars) -> Result<(), CudaError> {
    same_dev(x, y)?;
    let o = (out.ptr(), out.len);
    x.dev
        .run(|sink| lower::batch_dot(x.desc(), y.desc(), o, sink))
}

/// `P ← update(P, O_j)` per [`UpdateCoeffs`] (`O_j` matrix `j` of the
/// stack `o`, or `o` itself for `j = 0` of an unstacked tensor). One
/// kernel. Errors: tensors on different devices or of different dtypes,
/// `j` out of range, `P`'s size not that of `O_j`, a non-finite
/// coefficient.
pub fn lmo_update(
    p: &mut CudaTensor,
    o: &CudaTensor,
    j: usize,
    c: &UpdateCoeffs,
) -> Result<(), CudaError> {
    same_dev(p, o)?;
    let dev = p.dev.clone();
    dev.run(|sink| lower::lmo_update(p.desc(), o.desc(), j, c, sink))
}

/// The number of NaN/Inf entries over all of `ts` (all on `dev`): one
/// kernel per tensor into one counter, one 8-byte read.
pub fn count_nonfinite(dev: &Arc<CudaDevice>, ts: &[&CudaTensor]) -> Result<u64, CudaError> {
    if ts.iter().any(|t| !Arc::ptr_eq(&t.dev, dev)) {
        return Err(input("count_nonfinite: tensor on another CudaDevice"));
    }
    let mut guard = dev.scratch()?;
    let sc = guard.as_mut().expect("scratch");
    let ap = dev.acc(sc, 1)?;
    dev.run(|sink| lower::count_nonfinite(ts.iter().map(|t| t.desc()), ap, sink))?;
    Ok(dev.read_one(ap)? as u64)
}

/// A zero stack `[batch, m, n]` of `dtype` on `dev`.
pub fn zeros_stack(
    dev: &Arc<CudaDevice>,
    batch: usize,
    m: usize,
    n: usize,
    dtype: DType,
) -> Result<CudaTensor, CudaError> {
    dev.tensor(&vec![0.0; batch * m * n], &[batch, m, n], dtype)
}

/// `out = u/‖u‖₂` (0 for `u = 0`) for a tensor of any rank, the norm
/// computed and used on the device (`scratch[0]` holds `‖u‖₂²` after).
/// The direction of the Euclidean (Frobenius, vector-RMS) LMO.
pub fn normalize(
    u: &CudaTensor,
    out: &mut CudaTensor,
    scratch: &DeviceScalars,
) -> Result<(), CudaError> {
    same_dev(u, out)?;
    let sp = scratch.ptr();
    u.dev
        .run(|sink| lower::normalize(u.desc(), out.desc(), sp, sink))
}
