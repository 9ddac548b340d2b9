//! The device step's orchestration on the CPU: host twins of every
//! kernel (the tests' reference, no GPU needed).

use lmo_core::{AdamWStep, LmoError};
use lmo_cuda::step::UpdateCoeffs;
use lmo_cuda::{DType, PolarPlan};
use orthogonalize::NsConfig;

use super::{DeviceError, Exec, unsupported};
use crate::OptError;

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
        round(self.dtype, v)
    }
}

/// `v` as stored in `dtype`.
fn round(dtype: DType, v: f32) -> f32 {
    match dtype {
        DType::F32 => v,
        DType::Bf16 => half::bf16::from_f32(v).to_f32(),
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
        // As the kernels' `inv_scale`: at most f32::MAX (for f < 1/f32::MAX
        // the f32 would be +∞, and 0·∞ = NaN).
        let c = if f == 0.0 {
            0.0
        } else {
            (1.0 / f).min(f32::MAX as f64) as f32
        };
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
        c: &UpdateCoeffs,
    ) -> Result<(), DeviceError> {
        let r = o.member(j)?;
        if p.data.len() != r.len() {
            return Err(mismatch(r.len(), p.data.len()));
        }
        c.apply_host(&mut p.data, &o.data[r]);
        for k in 0..p.data.len() {
            p.data[k] = p.store(p.data[k]);
        }
        Ok(())
    }
    fn to_host(&self, t: &HostTensor) -> Result<Vec<f32>, DeviceError> {
        Ok(t.data.clone())
    }
    fn write(&self, t: &mut HostTensor, data: &[f32]) -> Result<(), DeviceError> {
        if data.len() != t.data.len() {
            return Err(mismatch(t.data.len(), data.len()));
        }
        let dtype = t.dtype;
        for (o, &v) in t.data.iter_mut().zip(data) {
            *o = round(dtype, v);
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
