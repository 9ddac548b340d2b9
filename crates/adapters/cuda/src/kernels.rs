//! The kernels' source (`cuda_kernels.cu`), their names, and their NVRTC
//! compilation.

use cudarc::driver::CudaFunction;

use crate::error::*;
use crate::tensor::*;

/// `true` when NVRTC (a host library: no GPU needed) can be loaded.
pub fn nvrtc_available() -> bool {
    // SAFETY: only probes whether the shared library can be loaded.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles [`KERNELS`] to PTX with NVRTC, for the virtual architecture
/// `compute_{major}{minor}` when `arch` is given (NVRTC's default otherwise).
/// Needs only libnvrtc, not a GPU.
pub fn compile_kernels(arch: Option<(i32, i32)>) -> Result<cudarc::nvrtc::Ptx, CudaError> {
    if !nvrtc_available() {
        return Err(CudaError::Unavailable("no NVRTC library".into()));
    }
    let mut opts = cudarc::nvrtc::CompileOptions::default();
    if let Some((major, minor)) = arch {
        opts.options
            .push(format!("--gpu-architecture=compute_{major}{minor}"));
    }
    cudarc::nvrtc::compile_ptx_with_opts(KERNELS, opts)
        .map_err(|e| CudaError::Nvrtc(format!("{e:?}")))
}

/// cuBLAS workspace set on the handle (Hopper's recommended size): cuBLAS
/// then never allocates during a call, which CUDA graph capture needs.
pub(crate) const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// The kernel source, compiled by NVRTC when a [`crate::CudaDevice`] is created.
pub const KERNELS: &str = include_str!("cuda_kernels.cu");

/// The kernels the backend loads from [`KERNELS`], each as `<name>_f32`
/// and `<name>_bf16`.
pub const KERNEL_NAMES: &[&str] = &[
    "fill",
    "scale",
    "sign",
    "axpby",
    "scale_cols",
    "scale_rows",
    "transpose",
    "mirror",
    "adamw",
    "dot",
    "sumsq",
    "sumabs",
    "nonfinite",
    "amax",
    "first_index",
    "col_norms",
    "row_norms",
    "batch_sumsq",
    "batch_dot",
    "batch_normalize",
    "batch_normalize_t",
    "momentum",
    "lmo_update",
    "cvt_normalize",
    "cvt_normalize_t",
];

/// The compiled kernels, by name and storage type.
pub(crate) struct Kernels {
    pub(crate) f32: Vec<CudaFunction>,
    pub(crate) bf16: Vec<CudaFunction>,
}

impl Kernels {
    pub(crate) fn get(&self, name: &str, d: DType) -> &CudaFunction {
        let i = KERNEL_NAMES
            .iter()
            .position(|n| *n == name)
            .expect("known kernel");
        match d {
            DType::F32 => &self.f32[i],
            DType::Bf16 => &self.bf16[i],
        }
    }
}
