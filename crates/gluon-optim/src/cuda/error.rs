//! The device step's errors.

use lmo_cuda::CudaError;

use crate::OptError;

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
