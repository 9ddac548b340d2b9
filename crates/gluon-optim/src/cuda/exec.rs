//! The operations the device step is written against, and their GPU
//! implementation.

use std::sync::Arc;

use lmo_core::{AdamWStep, Backend};
use lmo_cuda::step::{self, DeviceScalars, UpdateCoeffs};
use lmo_cuda::{Cuda, CudaDevice, CudaTensor, DType, PolarPlan};
use orthogonalize::NsConfig;

use super::DeviceError;

/// The operations the device step is written against. [`CudaExec`] runs
/// them on a GPU; [`HostExec`](super::HostExec) runs the same orchestration on the CPU with
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
        c: &UpdateCoeffs,
    ) -> Result<(), DeviceError>;
    /// The values of a tensor, row-major (on a GPU: a host synchronization).
    fn to_host(&self, t: &Self::Tensor) -> Result<Vec<f32>, DeviceError>;
    /// Overwrites a tensor's values (row-major, `data` of its size).
    fn write(&self, t: &mut Self::Tensor, data: &[f32]) -> Result<(), DeviceError>;
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
        c: &UpdateCoeffs,
    ) -> Result<(), DeviceError> {
        Ok(step::lmo_update(p, o, j, c)?)
    }
    fn to_host(&self, t: &CudaTensor) -> Result<Vec<f32>, DeviceError> {
        Ok(t.read()?)
    }
    fn write(&self, t: &mut CudaTensor, data: &[f32]) -> Result<(), DeviceError> {
        Ok(t.write(data)?)
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
