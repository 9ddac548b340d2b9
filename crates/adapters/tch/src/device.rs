//! Zero-copy hand-off of libtorch CUDA tensors to the CUDA backend
//! (feature `device-step`): a training loop in tch keeps its parameters and
//! gradients where libtorch put them, and `gluon_optim::cuda::DeviceOptimizer`
//! steps them in place.
//!
//! Streams: libtorch queues its work on its current CUDA stream, the
//! [`CudaDevice`] on its own. Order them: `tch::Cuda::synchronize(i)` after
//! `backward()` and before the step, and [`CudaDevice::synchronize`] after
//! the step and before libtorch reads the parameters again.
//!
//! ```no_run
//! use std::sync::Arc;
//! use gluon_optim::{cuda::DeviceOptimizer, presets, Label};
//! use lmo_tch::device::cuda_views;
//! use lmo_cuda::CudaDevice;
//! use tch::{Device, Kind, Tensor};
//!
//! let dev = CudaDevice::new(0).unwrap();
//! let w = Tensor::randn([256, 128], (Kind::Float, Device::Cuda(0))).set_requires_grad(true);
//! let loss = w.square().sum(Kind::Float);
//! loss.backward();
//! tch::Cuda::synchronize(0);
//! // SAFETY: `w` and its gradient outlive the views and are not written by
//! // libtorch while the step runs (synchronized above and below).
//! let mut params = unsafe { cuda_views(&dev, &[w.shallow_clone()]) }.unwrap();
//! let grads = unsafe { cuda_views(&dev, &[w.grad()]) }.unwrap();
//! let mut opt = DeviceOptimizer::new(&dev, presets::muon(0.02, 3e-4), &[Label::Hidden], &params).unwrap();
//! opt.step(&mut params, &grads).unwrap();
//! dev.synchronize().unwrap();
//! ```

use std::sync::Arc;

use lmo_cuda::{CudaDevice, CudaError, CudaTensor, DType};
use tch::{Device, Kind, Tensor};

/// What a libtorch tensor must be to be viewed by the CUDA backend, and
/// what it is: `(dims, dtype, CUDA device index)`. Errors (as text): not on
/// a CUDA device, not contiguous, a dtype other than f32/bf16, or empty of
/// storage (undefined tensor).
pub fn cuda_layout(t: &Tensor) -> Result<(Vec<usize>, DType, usize), String> {
    if !t.defined() {
        return Err("undefined tensor (a gradient before backward?)".into());
    }
    let Device::Cuda(index) = t.device() else {
        return Err(format!("tensor on {:?}, not on a CUDA device", t.device()));
    };
    if !t.is_contiguous() {
        return Err("tensor is not contiguous (call .contiguous() first)".into());
    }
    let dtype = match t.kind() {
        Kind::Float => DType::F32,
        Kind::BFloat16 => DType::Bf16,
        k => return Err(format!("dtype {k:?}: the CUDA backend stores f32 or bf16")),
    };
    let dims = t.size().iter().map(|&d| d as usize).collect();
    Ok((dims, dtype, index))
}

/// [`CudaTensor`] views of libtorch CUDA tensors: no copy, nothing freed
/// when the views drop ([`CudaTensor::from_raw`]).
///
/// # Safety
/// Each tensor's storage must stay alive and unmoved while its view lives,
/// libtorch must not write it while operations queued on `dev` use it (see
/// the module docs on streams), and the tensors must live on `dev`'s GPU.
pub unsafe fn cuda_views(
    dev: &Arc<CudaDevice>,
    ts: &[Tensor],
) -> Result<Vec<CudaTensor>, CudaError> {
    ts.iter()
        .map(|t| {
            let (dims, dtype, index) = cuda_layout(t).map_err(CudaError::Unavailable)?;
            if index != dev.ordinal() {
                return Err(CudaError::Unavailable(format!(
                    "tensor on cuda:{index}, device is cuda:{}",
                    dev.ordinal()
                )));
            }
            // SAFETY: a contiguous CUDA tensor of `dims` and `dtype` (checked
            // above); lifetime and ordering are the caller's contract.
            unsafe { CudaTensor::from_raw(dev, t.data_ptr() as u64, &dims, dtype) }
        })
        .collect()
}
