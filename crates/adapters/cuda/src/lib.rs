//! The CUDA backend of the LMO toolkit: lmo-core's [`lmo_core::Backend`] on device
//! tensors, so that [`orthogonalize::NewtonSchulz`] (and every norm, LMO and the
//! whole `gluon-optim` step) runs on a GPU with the same code as on the CPU.
//!
//! - [`CudaDevice`]: a context, the stream every operation is queued on
//!   (the caller's, through [`CudaDevice::with_stream`], or a new one), a
//!   cuBLAS handle on that stream, the NVRTC-compiled kernels
//!   (`cuda_kernels.cu`) and a small scratch buffer for reductions.
//! - [`CudaTensor`]: row-major device storage in f32, or bf16 with f32
//!   arithmetic (what PyTorch's Muon uses on GPUs). [`CudaTensor::from_raw`]
//!   wraps memory someone else owns (a libtorch tensor's `data_ptr`) with no
//!   copy.
//! - [`Cuda`]: the backend. Products go to cuBLAS:
//!   `cublasGemmStridedBatchedEx` (batch 1 here) in f32, or with bf16
//!   inputs and f32 accumulation (tensor cores); the Gram products `X·Xᵀ`
//!   and `A·A` use `cublasSsyrk` (one triangle, `k²l` flops) plus a mirror
//!   kernel in f32, and a full GEMM in bf16 (cuBLAS has no bf16 syrk).
//!   Everything else is one kernel launch. Nothing synchronizes with the
//!   host except the scalar reductions the LMOs return (`dot`, norms,
//!   `argmax_abs`, the finiteness check).
//! - [`cmd`]: all of this work as data (kernel launches with typed
//!   arguments, memsets, copies, GEMMs, SYRKs), built by device-free
//!   lowering functions and issued 1:1 by [`CudaDevice::issue`]. With
//!   feature `emu`, `CudaDevice::emulated()` issues the same commands
//!   to a CPU emulator that runs the kernels of `cuda_kernels.cu` compiled
//!   as C++ (module `emu`): every operation here then runs, and is checked,
//!   without a GPU.
//!
//! The CUDA libraries are loaded at run time (cudarc's `dynamic-loading`):
//! this crate builds on machines without CUDA; [`CudaDevice::available`]
//! tells whether a driver and a device are present.
//!
//! Errors of the driver, NVRTC or cuBLAS inside a [`lmo_core::Backend`] operation
//! (which has no error channel) panic with the library's message; they are
//! not caused by user input, which the optimizer validates first.

mod backend;
// Command lists are internal; the test feature `emu` opens them to the
// emulator's tests.
#[cfg(feature = "emu")]
pub mod cmd;
#[cfg(not(feature = "emu"))]
mod cmd;
mod device;
#[cfg(feature = "emu")]
pub mod emu;
mod error;
mod kernels;
mod lower;
mod plan;
pub mod step;
mod tensor;

pub use backend::Cuda;
pub use device::CudaDevice;
pub(crate) use device::Mem;
pub use error::CudaError;
pub(crate) use error::drv;
pub use kernels::{KERNEL_NAMES, KERNELS, compile_kernels, nvrtc_available};
pub use plan::PolarPlan;
pub use step::UpdateCoeffs;
pub use tensor::{CudaTensor, DType};
