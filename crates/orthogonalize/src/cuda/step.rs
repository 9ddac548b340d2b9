//! Device-side pieces of an optimizer step on stacks of same-shape
//! matrices (the building blocks of `gluon_optim::cuda::DeviceOptimizer`):
//! the momentum update into a stack, per-matrix inner products kept on the
//! device, the LMO update whose radius may be computed on the device from
//! those inner products, and one batched finiteness count.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, DevicePtr};
use lmo_core::LmoError;

use super::{CudaDevice, CudaError, CudaTensor, DType, drv, lower};

fn input(msg: &'static str) -> CudaError {
    CudaError::Input(LmoError::InvalidHyperParameter(msg))
}

/// `batch` f64 values on the device (per-matrix inner products), read only
/// when asked.
pub struct DeviceScalars {
    dev: Arc<CudaDevice>,
    v: CudaSlice<f64>,
}

impl DeviceScalars {
    /// `len` zeros on `dev`.
    pub fn new(dev: &Arc<CudaDevice>, len: usize) -> Result<Self, CudaError> {
        Ok(Self {
            dev: dev.clone(),
            v: dev.stream.alloc_zeros::<f64>(len.max(1)).map_err(drv)?,
        })
    }

    /// The values (a host synchronization).
    pub fn to_host(&self) -> Result<Vec<f64>, CudaError> {
        self.dev.stream.clone_dtoh(&self.v).map_err(drv)
    }

    fn ptr(&self) -> u64 {
        self.v.device_ptr(&self.dev.stream).0
    }
}

/// The coefficients of one block's LMO update, SPEC §3 (with `D = −s·O`,
/// `O` the polar factor of the LMO's input `U`, and `d = s·⟨U, O⟩ = ‖U‖_*`
/// read on the device):
///
/// ```text
/// t = adaptive ? mult·d/(l0 + l1·d)  (0 if d = 0)  : t
/// X ← (1 − t·wd)·X
/// X ← X + t·D                    (unconstrained)
/// X ← (1 − γ)·X + γ·ρ·D,  γ = clamp(t, 0, 1)   (constrained)
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpdateCoeffs {
    /// The radius when not adaptive (schedule multiplier included).
    pub t: f32,
    /// The schedule multiplier (used by the adaptive radius).
    pub mult: f32,
    /// Adaptive radius `(L0, L1)`, or `None`.
    pub adaptive: Option<(f32, f32)>,
    /// The norm's total scale `s`.
    pub s: f32,
    /// Decoupled weight decay λ.
    pub weight_decay: f32,
    /// `Some(ρ)`: the constrained (Frank–Wolfe) form.
    pub constrained: Option<f32>,
}

impl UpdateCoeffs {
    /// The radius for dual norm `d` (the kernel's formula, in f64).
    pub fn radius(&self, d: f64) -> f64 {
        match self.adaptive {
            Some((l0, l1)) => {
                let d = d.max(0.0);
                if d == 0.0 {
                    0.0
                } else {
                    self.mult as f64 * d / (l0 as f64 + l1 as f64 * d)
                }
            }
            None => self.t as f64,
        }
    }

    /// The update on host slices: the reference the kernel `lmo_update`
    /// implements (`o` is the polar factor, `inner = ⟨U, O⟩`).
    pub fn apply_host(&self, p: &mut [f32], o: &[f32], inner: f64) {
        let t = self.radius(self.s as f64 * inner) as f32;
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
    lower::momentum(g.desc(), m.desc(), j, nest, beta, &mut |c| dev.issue(c))
}

/// `out[b] = ⟨X_b, Y_b⟩` for every matrix of two same-shape stacks, kept
/// on the device (accumulated in f64).
pub fn batch_dot(x: &CudaTensor, y: &CudaTensor, out: &DeviceScalars) -> Result<(), CudaError> {
    same_dev(x, y)?;
    let dev = &x.dev;
    dev.bind()?;
    lower::batch_dot(x.desc(), y.desc(), (out.ptr(), out.v.len()), &mut |c| {
        dev.issue(c)
    })
}

/// `P ← update(P, O_j)` per [`UpdateCoeffs`], with the dual norm read from
/// `inner[j]` on the device (`d = s·inner[j]`). One kernel.
pub fn lmo_update(
    p: &mut CudaTensor,
    o: &CudaTensor,
    j: usize,
    inner: &DeviceScalars,
    c: &UpdateCoeffs,
) -> Result<(), CudaError> {
    same_dev(p, o)?;
    let dev = p.dev.clone();
    let inner = (inner.ptr(), inner.v.len());
    lower::lmo_update(p.desc(), o.desc(), j, inner, c, &mut |c| dev.issue(c))
}

/// The number of NaN/Inf entries over all of `ts` (all on `dev`): one
/// kernel per tensor into one counter, one 8-byte read.
pub fn count_nonfinite(dev: &Arc<CudaDevice>, ts: &[&CudaTensor]) -> Result<u64, CudaError> {
    if ts.iter().any(|t| !Arc::ptr_eq(&t.dev, dev)) {
        return Err(input("count_nonfinite: tensor on another CudaDevice"));
    }
    dev.bind()?;
    let mut sc = dev.scratch.lock().unwrap_or_else(|e| e.into_inner());
    let ap = sc.acc(dev, 1).device_ptr(&dev.stream).0;
    lower::count_nonfinite(ts.iter().map(|t| t.desc()), ap, &mut |c| dev.issue(c))?;
    let v = dev.stream.clone_dtoh(&sc.acc.slice(0..1)).map_err(drv)?;
    Ok(v[0] as u64)
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
    let dev = &u.dev;
    dev.bind()?;
    lower::normalize(u.desc(), out.desc(), scratch.ptr(), &mut |c| dev.issue(c))
}
