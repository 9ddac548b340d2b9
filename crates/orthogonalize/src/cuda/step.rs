//! Device-side pieces of an optimizer step on stacks of same-shape
//! matrices (the building blocks of `gluon_optim::cuda::DeviceOptimizer`):
//! the momentum update into a stack, per-matrix inner products kept on the
//! device, the LMO update whose radius may be computed on the device from
//! those inner products, and one batched finiteness count.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use lmo_core::LmoError;

use super::{CudaDevice, CudaError, CudaTensor, DType, drv, ok};

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

/// Matrix `j` of a stack `[batch, …]`: its address and element count.
fn member(stack: &CudaTensor, j: usize) -> Result<(u64, usize), CudaError> {
    let d = stack.shape.dims();
    let batch = if d.len() == 3 { d[0] } else { 1 };
    if j >= batch {
        return Err(input("stack index out of range"));
    }
    let per = stack.numel() / batch;
    Ok((stack.raw() + (j * per * stack.elem()) as u64, per))
}

fn same_dev(a: &CudaTensor, b: &CudaTensor) -> Result<(), CudaError> {
    if !Arc::ptr_eq(&a.dev, &b.dev) {
        return Err(input("tensors live on different CudaDevices"));
    }
    if a.dtype() != b.dtype() {
        return Err(input("tensors of different dtypes"));
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
    let (mp, per) = member(m, j)?;
    if g.numel() != per {
        return Err(CudaError::Input(LmoError::ShapeMismatch {
            expected: (per, 1),
            found: (g.numel(), 1),
        }));
    }
    let (up, nest) = match nesterov {
        Some(u) => {
            same_dev(g, u)?;
            (member(u, j)?.0, 1i32)
        }
        None => (mp, 0i32),
    };
    if per == 0 {
        return Ok(());
    }
    let dev = &g.dev;
    let (gp, n) = (g.raw(), per as i64);
    let cfg = dev.grid(per);
    launch!(
        dev,
        "momentum",
        g.dtype(),
        cfg,
        [&gp, &mp, &up, &beta, &nest, &n]
    );
    Ok(())
}

/// `out[b] = ⟨X_b, Y_b⟩` for every matrix of two same-shape stacks, kept
/// on the device (accumulated in f64).
pub fn batch_dot(x: &CudaTensor, y: &CudaTensor, out: &DeviceScalars) -> Result<(), CudaError> {
    same_dev(x, y)?;
    if x.shape.dims() != y.shape.dims() {
        return Err(CudaError::Input(LmoError::ShapeMismatch {
            expected: x.shape.as_pair(),
            found: y.shape.as_pair(),
        }));
    }
    let d = x.shape.dims();
    let batch = if d.len() == 3 { d[0] } else { 1 };
    if out.v.len() < batch || batch > 65_535 {
        return Err(input("batch_dot: output too short or batch above 65535"));
    }
    let dev = &x.dev;
    dev.bind()?;
    let per = x.numel() / batch.max(1);
    let op = out.ptr();
    // SAFETY: `out` holds at least `batch` f64 values.
    unsafe { cudarc::driver::result::memset_d8_async(op, 0, batch * 8, dev.stream.cu_stream()) }
        .map_err(drv)?;
    if per == 0 {
        return Ok(());
    }
    let cfg = LaunchConfig {
        grid_dim: (per.div_ceil(256).clamp(1, 1024) as u32, batch as u32, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let (xp, yp, n) = (x.raw(), y.raw(), per as i64);
    launch!(dev, "batch_dot", x.dtype(), cfg, [&xp, &yp, &op, &n]);
    Ok(())
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
    let (opp, per) = member(o, j)?;
    if p.numel() != per {
        return Err(CudaError::Input(LmoError::ShapeMismatch {
            expected: (per, 1),
            found: (p.numel(), 1),
        }));
    }
    if j >= inner.v.len() {
        return Err(input("lmo_update: no inner product for this index"));
    }
    if per == 0 {
        return Ok(());
    }
    let dev = p.dev.clone();
    let dp = inner.ptr() + 8 * j as u64;
    let (l0, l1, adaptive) = match c.adaptive {
        Some((l0, l1)) => (l0, l1, 1i32),
        None => (0.0, 0.0, 0i32),
    };
    let (rho, constrained) = match c.constrained {
        Some(r) => (r, 1i32),
        None => (0.0, 0i32),
    };
    let (pp, n) = (p.raw(), per as i64);
    let cfg = dev.grid(per);
    launch!(
        dev,
        "lmo_update",
        p.dtype(),
        cfg,
        [
            &pp,
            &opp,
            &dp,
            &n,
            &c.t,
            &c.mult,
            &l0,
            &l1,
            &adaptive,
            &c.s,
            &c.weight_decay,
            &constrained,
            &rho
        ]
    );
    Ok(())
}

/// The number of NaN/Inf entries over all of `ts` (all on `dev`): one
/// kernel per tensor into one counter, one 8-byte read.
pub fn count_nonfinite(dev: &Arc<CudaDevice>, ts: &[&CudaTensor]) -> Result<u64, CudaError> {
    let mut sc = dev.scratch.lock().unwrap_or_else(|e| e.into_inner());
    let acc = sc.acc(dev, 1);
    let ap = acc.device_ptr(&dev.stream).0;
    for t in ts {
        if !Arc::ptr_eq(&t.dev, dev) {
            return Err(input("count_nonfinite: tensor on another CudaDevice"));
        }
        let n = t.numel() as i64;
        if n == 0 {
            continue;
        }
        let (tp, cfg) = (t.raw(), dev.grid(t.numel()));
        launch!(dev, "nonfinite", t.dtype(), cfg, [&tp, &ap, &n]);
    }
    let v = dev.stream.clone_dtoh(&acc.slice(0..1)).map_err(drv)?;
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
    if u.numel() != out.numel() {
        return Err(CudaError::Input(LmoError::ShapeMismatch {
            expected: u.shape.as_pair(),
            found: out.shape.as_pair(),
        }));
    }
    let dev = &u.dev;
    dev.bind()?;
    let sp = scratch.ptr();
    // SAFETY: `scratch` holds at least one f64.
    unsafe { cudarc::driver::result::memset_d8_async(sp, 0, 8, dev.stream.cu_stream()) }
        .map_err(drv)?;
    let per = u.numel();
    if per == 0 {
        return Ok(());
    }
    let cfg = LaunchConfig {
        grid_dim: (per.div_ceil(256).clamp(1, 1024) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let (up, op, n) = (u.raw(), out.raw(), per as i64);
    let (delta, eps, norm) = (0.0f32, 0.0f32, 1i32);
    launch!(dev, "batch_sumsq", u.dtype(), cfg, [&up, &sp, &n]);
    launch!(
        dev,
        "batch_normalize",
        u.dtype(),
        cfg,
        [&up, &sp, &op, &n, &delta, &eps, &norm]
    );
    Ok(())
}
