//! Device tensors: storage type, shape, and the memory they live in.

use std::sync::Arc;

use lmo_core::{Backend, Shape};

use crate::backend::Cuda;
use crate::cmd;
#[cfg(feature = "emu")]
use crate::cmd::elem_size;
use crate::device::*;
use crate::error::*;

/// Storage type of a [`CudaTensor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// 32-bit floats.
    F32,
    /// bfloat16 storage, f32 arithmetic.
    Bf16,
}

/// A row-major matrix or vector on a [`CudaDevice`] (f32 or bf16 storage).
pub struct CudaTensor {
    pub(crate) dev: Arc<CudaDevice>,
    pub(crate) mem: Mem,
    pub(crate) shape: Shape,
    pub(crate) dtype: DType,
}

impl CudaTensor {
    /// Wraps device memory owned by someone else (for example a libtorch
    /// CUDA tensor's `data_ptr()`): `numel(dims)` contiguous row-major
    /// elements of `dtype` at `ptr`. No copy; dropping the tensor does not
    /// free the memory. On an emulated device `ptr` is a host address,
    /// registered with the emulator while the tensor lives.
    ///
    /// # Safety
    /// `ptr` must point to a live allocation of at least that many
    /// elements on `dev`'s context (host memory for an emulated device),
    /// stay valid while the tensor lives, and not be written by others
    /// while operations queued on `dev`'s stream use it (order them on the
    /// same stream, or synchronize).
    pub unsafe fn from_raw(
        dev: &Arc<CudaDevice>,
        ptr: u64,
        dims: &[usize],
        dtype: DType,
    ) -> Result<Self, CudaError> {
        let shape = Shape::new(dims).map_err(|e| CudaError::Driver(e.to_string()))?;
        let mem = Mem::Borrowed {
            ptr,
            #[cfg(feature = "emu")]
            _registration: match &dev.driver {
                Driver::Emu(e) => Some(e.register(ptr, shape.numel() * elem_size(dtype))),
                Driver::Gpu(_) => None,
            },
        };
        Ok(CudaTensor {
            dev: dev.clone(),
            mem,
            shape,
            dtype,
        })
    }

    /// The storage type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device.
    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.dev
    }

    /// The values as f32, row-major (synchronizes).
    pub fn to_host(&self) -> Vec<f32> {
        let mut v = vec![0.0; self.shape.numel()];
        Cuda::copy_to_slice(self, &mut v);
        v
    }

    /// The values as f32, row-major (synchronizes): [`CudaTensor::to_host`]
    /// with the driver's error returned instead of a panic.
    pub fn read(&self) -> Result<Vec<f32>, CudaError> {
        let mut v = vec![0.0; self.shape.numel()];
        self.dev.download(self.raw(), &mut v, self.dtype)?;
        Ok(v)
    }

    /// Overwrites the values with `data` (row-major, converted to the
    /// storage type). Errors: `data` of another length (nothing copied),
    /// or the driver's.
    pub fn write(&mut self, data: &[f32]) -> Result<(), CudaError> {
        let n = self.shape.numel();
        if data.len() != n {
            return Err(CudaError::Input(lmo_core::LmoError::ShapeMismatch {
                expected: (n, 1),
                found: (data.len(), 1),
            }));
        }
        self.dev.upload(self.raw(), data, self.dtype)
    }

    /// The device address of the storage (a host address on an emulated
    /// device), for [`CudaDevice::issue`].
    pub fn address(&self) -> u64 {
        self.raw()
    }

    pub(crate) fn raw(&self) -> u64 {
        self.dev.addr(&self.mem)
    }

    pub(crate) fn numel(&self) -> usize {
        self.shape.numel()
    }

    /// The tensor as the lowering functions see it.
    pub(crate) fn desc(&self) -> cmd::Desc {
        cmd::Desc {
            ptr: self.raw(),
            shape: self.shape,
            dtype: self.dtype,
        }
    }
}
