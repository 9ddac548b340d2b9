//! The errors of the CUDA backend.

use lmo_core::LmoError;

/// Errors creating a [`crate::CudaDevice`].
#[derive(Debug)]
pub enum CudaError {
    /// No CUDA driver library, or no device with that ordinal.
    Unavailable(String),
    /// The driver failed.
    Driver(String),
    /// NVRTC failed to compile the kernels.
    Nvrtc(String),
    /// cuBLAS failed.
    Cublas(String),
    /// Bad input: shapes, dtypes, devices or hyper-parameters (nothing was
    /// queued).
    Input(LmoError),
    /// The CPU kernel emulator (feature `emu`) refused a command (an
    /// address outside every buffer, an argument list that does not match
    /// the kernel's signature, launch dimensions beyond CUDA's limits) or
    /// found a fault while running it (a divergent barrier).
    Emulator(String),
}

impl core::fmt::Display for CudaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CudaError::Unavailable(s) => write!(f, "CUDA unavailable: {s}"),
            CudaError::Driver(s) => write!(f, "CUDA driver: {s}"),
            CudaError::Nvrtc(s) => write!(f, "NVRTC: {s}"),
            CudaError::Cublas(s) => write!(f, "cuBLAS: {s}"),
            CudaError::Input(e) => write!(f, "bad input: {e}"),
            CudaError::Emulator(s) => write!(f, "CUDA emulator: {s}"),
        }
    }
}

impl std::error::Error for CudaError {}

pub(crate) fn drv(e: impl core::fmt::Debug) -> CudaError {
    CudaError::Driver(format!("{e:?}"))
}
