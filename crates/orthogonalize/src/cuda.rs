//! The CUDA backend (feature `cuda`): lmo-core's [`Backend`] on device
//! tensors, so that [`crate::NewtonSchulz`] (and every norm, LMO and the
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
//!   feature `cuda-emu`, `CudaDevice::emulated()` issues the same commands
//!   to a CPU emulator that runs the kernels of `cuda_kernels.cu` compiled
//!   as C++ (module `emu`): every operation here then runs, and is checked,
//!   without a GPU.
//!
//! The CUDA libraries are loaded at run time (cudarc's `dynamic-loading`):
//! this module builds on machines without CUDA; [`CudaDevice::available`]
//! tells whether a driver and a device are present.
//!
//! Errors of the driver, NVRTC or cuBLAS inside a [`Backend`] operation
//! (which has no error channel) panic with the library's message; they are
//! not caused by user input, which the optimizer validates first.

use std::sync::{Arc, Mutex};

use cudarc::cublas::{CudaBlas, sys as cublas_sys};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};
use half::bf16;
use lmo_core::{AdamWStep, Backend, LmoError, Shape, Trans};

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
const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// The kernel source, compiled by NVRTC when a [`CudaDevice`] is created.
pub const KERNELS: &str = include_str!("cuda_kernels.cu");

/// Errors creating a [`CudaDevice`].
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
    /// The CPU kernel emulator (feature `cuda-emu`) refused a command (an
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

/// Storage type of a [`CudaTensor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// 32-bit floats.
    F32,
    /// bfloat16 storage, f32 arithmetic.
    Bf16,
}

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
struct Kernels {
    f32: Vec<CudaFunction>,
    bf16: Vec<CudaFunction>,
}

impl Kernels {
    fn get(&self, name: &str, d: DType) -> &CudaFunction {
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

/// Device memory: an allocation of the device's driver (GPU memory, or
/// host memory the emulator tracks), or memory someone else owns
/// ([`CudaTensor::from_raw`]).
pub(crate) enum Mem {
    Gpu(CudaSlice<u8>),
    #[cfg(feature = "cuda-emu")]
    Host(emu::HostAlloc),
    Borrowed {
        ptr: u64,
        #[cfg(feature = "cuda-emu")]
        _registration: Option<emu::Registration>,
    },
}

/// Reduction scratch: f64 accumulators, a u32 and a u64 slot, f32 scales.
struct Scratch {
    acc: (Mem, usize),
    bits: Mem,
    index: Mem,
    scales: (Mem, usize),
}

enum Driver {
    Gpu(Gpu),
    #[cfg(feature = "cuda-emu")]
    Emu(emu::Emulator),
}

/// A GPU's stream, cuBLAS handle and kernels.
struct Gpu {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    _workspace: CudaSlice<u8>,
    kernels: Kernels,
}

/// A GPU with its stream, cuBLAS handle, kernels and scratch, or (feature
/// `cuda-emu`, [`CudaDevice::emulated`]) the CPU kernel emulator standing
/// in for one.
pub struct CudaDevice {
    driver: Driver,
    scratch: Mutex<Option<Scratch>>,
    name: String,
}

fn drv(e: impl core::fmt::Debug) -> CudaError {
    CudaError::Driver(format!("{e:?}"))
}

impl CudaDevice {
    /// `true` when the CUDA driver library loads and reports a device.
    pub fn available() -> bool {
        // SAFETY: only probes whether the shared library can be loaded.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return false;
        }
        CudaContext::device_count().map(|n| n > 0).unwrap_or(false)
    }

    /// Device `ordinal` with a new stream.
    pub fn new(ordinal: usize) -> Result<Arc<Self>, CudaError> {
        if !Self::available() {
            return Err(CudaError::Unavailable(
                "no CUDA driver library or no device".into(),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(drv)?;
        let stream = ctx.new_stream().map_err(drv)?;
        Self::with_stream(stream)
    }

    /// Queues every operation on the caller's `stream` (for example the
    /// stream a training framework runs on), with no synchronization of
    /// its own besides scalar reads.
    pub fn with_stream(stream: Arc<CudaStream>) -> Result<Arc<Self>, CudaError> {
        let ctx = stream.context().clone();
        // The device's own architecture; NVRTC's default if this NVRTC
        // does not know it (a GPU newer than the library).
        let ptx = match compile_kernels(ctx.compute_capability().ok()) {
            Ok(p) => p,
            Err(_) => compile_kernels(None)?,
        };
        let module = ctx.load_module(ptx).map_err(drv)?;
        let load = |suffix: &str| -> Result<Vec<CudaFunction>, CudaError> {
            KERNEL_NAMES
                .iter()
                .map(|n| module.load_function(&format!("{n}_{suffix}")).map_err(drv))
                .collect()
        };
        let kernels = Kernels {
            f32: load("f32")?,
            bf16: load("bf16")?,
        };
        let blas =
            CudaBlas::new(stream.clone()).map_err(|e| CudaError::Cublas(format!("{e:?}")))?;
        let workspace = stream
            .alloc_zeros::<u8>(CUBLAS_WORKSPACE_BYTES)
            .map_err(drv)?;
        {
            let (wp, _rw) = workspace.device_ptr(&stream);
            // SAFETY: the workspace lives as long as the device (a field
            // below) and is used only by this handle, on this stream.
            unsafe {
                cublas_sys::cublasSetWorkspace_v2(
                    *blas.handle(),
                    wp as *mut _,
                    CUBLAS_WORKSPACE_BYTES,
                )
                .result()
            }
            .map_err(|e| CudaError::Cublas(format!("{e:?}")))?;
        }
        let name = ctx.name().unwrap_or_else(|_| "CUDA device".into());
        Ok(Arc::new(CudaDevice {
            driver: Driver::Gpu(Gpu {
                stream,
                blas,
                _workspace: workspace,
                kernels,
            }),
            scratch: Mutex::new(None),
            name,
        }))
    }

    /// A device that runs every command on the CPU kernel emulator
    /// (feature `cuda-emu`, module `emu`): the kernels of
    /// `cuda_kernels.cu` compiled as C++, a model of cuBLAS's GEMM and
    /// SYRK, host memory whose every access the emulator checks. Every
    /// operation of this module works on it, without a GPU or a CUDA
    /// library; it is a test tool (slow, single-threaded), not a fast path.
    #[cfg(feature = "cuda-emu")]
    pub fn emulated() -> Arc<Self> {
        Arc::new(CudaDevice {
            driver: Driver::Emu(emu::Emulator::default()),
            scratch: Mutex::new(None),
            name: "CUDA emulator (CPU)".into(),
        })
    }

    /// `true` for [`CudaDevice::emulated`] devices.
    pub fn is_emulated(&self) -> bool {
        !matches!(self.driver, Driver::Gpu(_))
    }

    fn gpu(&self) -> Option<&Gpu> {
        match &self.driver {
            Driver::Gpu(g) => Some(g),
            #[cfg(feature = "cuda-emu")]
            Driver::Emu(_) => None,
        }
    }

    /// Makes the device's context current on this thread (raw driver and
    /// cuBLAS calls need it; cudarc's safe calls do it themselves).
    fn bind(&self) -> Result<(), CudaError> {
        match self.gpu() {
            Some(g) => g.stream.context().bind_to_thread().map_err(drv),
            None => Ok(()),
        }
    }

    /// The device's ordinal (`cuda:N`); `usize::MAX` for an emulated
    /// device.
    pub fn ordinal(&self) -> usize {
        self.gpu()
            .map_or(usize::MAX, |g| g.stream.context().ordinal())
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream operations are queued on (`None` for an emulated
    /// device, which runs each operation when it is issued).
    pub fn stream(&self) -> Option<&Arc<CudaStream>> {
        self.gpu().map(|g| &g.stream)
    }

    /// Waits for everything queued so far.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        match self.gpu() {
            Some(g) => g.stream.synchronize().map_err(drv),
            None => Ok(()),
        }
    }

    /// A tensor of `dims` copied from row-major host data, stored as `dtype`.
    pub fn tensor(
        self: &Arc<Self>,
        data: &[f32],
        dims: &[usize],
        dtype: DType,
    ) -> Result<CudaTensor, CudaError> {
        let shape = Shape::new(dims).map_err(|e| CudaError::Driver(e.to_string()))?;
        if shape.numel() != data.len() {
            return Err(CudaError::Driver(format!(
                "{} values for shape {dims:?}",
                data.len()
            )));
        }
        let t = CudaTensor {
            mem: self.alloc(shape.numel().max(1) * elem_size(dtype))?,
            dev: self.clone(),
            shape,
            dtype,
        };
        self.upload(t.raw(), data, dtype)?;
        Ok(t)
    }

    /// `bytes` zeroed bytes of device memory.
    pub(crate) fn alloc(&self, bytes: usize) -> Result<Mem, CudaError> {
        match &self.driver {
            Driver::Gpu(g) => Ok(Mem::Gpu(
                g.stream.alloc_zeros::<u8>(bytes.max(1)).map_err(drv)?,
            )),
            #[cfg(feature = "cuda-emu")]
            Driver::Emu(e) => Ok(Mem::Host(e.alloc(bytes))),
        }
    }

    /// The device address of `m`. Every operation of this module is
    /// queued on the device's one stream, so the address is used in stream
    /// order; the read/write events cudarc records for other streams are
    /// recorded here, before the work that uses the address.
    pub(crate) fn addr(&self, m: &Mem) -> u64 {
        match m {
            Mem::Gpu(s) => {
                let g = self.gpu().expect("GPU memory on a GPU device");
                s.device_ptr(&g.stream).0
            }
            #[cfg(feature = "cuda-emu")]
            Mem::Host(h) => h.addr(),
            Mem::Borrowed { ptr, .. } => *ptr,
        }
    }

    /// Copies host bytes to the device address `dst` (synchronizes).
    fn htod(&self, dst: u64, src: &[u8]) -> Result<(), CudaError> {
        if src.is_empty() {
            return Ok(());
        }
        match &self.driver {
            Driver::Gpu(g) => {
                self.bind()?;
                // SAFETY: `dst` holds at least `src.len()` bytes (a checked
                // tensor or scratch slot); the copy is queued on the
                // device's stream and awaited before `src` goes away.
                unsafe {
                    cudarc::driver::result::memcpy_htod_async(dst, src, g.stream.cu_stream())
                }
                .map_err(drv)?;
                g.stream.synchronize().map_err(drv)
            }
            #[cfg(feature = "cuda-emu")]
            Driver::Emu(e) => e.write(dst, src),
        }
    }

    /// Copies device bytes at `src` to the host (synchronizes).
    fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<(), CudaError> {
        if dst.is_empty() {
            return Ok(());
        }
        match &self.driver {
            Driver::Gpu(g) => {
                self.bind()?;
                // SAFETY: `src` holds at least `dst.len()` bytes; the copy
                // is awaited before `dst` is read.
                unsafe {
                    cudarc::driver::result::memcpy_dtoh_async(dst, src, g.stream.cu_stream())
                }
                .map_err(drv)?;
                g.stream.synchronize().map_err(drv)
            }
            #[cfg(feature = "cuda-emu")]
            Driver::Emu(e) => e.read(src, dst),
        }
    }

    /// `data` converted to `dtype` and copied to `dst`.
    fn upload(&self, dst: u64, data: &[f32], dtype: DType) -> Result<(), CudaError> {
        match dtype {
            DType::F32 => self.htod(dst, bytemuck_f32(data)),
            DType::Bf16 => {
                let h: Vec<u16> = data.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
                self.htod(dst, bytemuck_u16(&h))
            }
        }
    }

    /// `n` values of `dtype` at `src`, as f32.
    fn download(&self, src: u64, out: &mut [f32], dtype: DType) -> Result<(), CudaError> {
        match dtype {
            DType::F32 => self.dtoh(src, bytemuck_f32_mut(out)),
            DType::Bf16 => {
                let mut h = vec![0u16; out.len()];
                self.dtoh(src, bytemuck_u16_mut(&mut h))?;
                for (o, b) in out.iter_mut().zip(h) {
                    *o = bf16::from_bits(b).to_f32();
                }
                Ok(())
            }
        }
    }

    /// `len` f64 values at `src`.
    /// The f64 at `src` (no allocation: the per-step finiteness read).
    pub(crate) fn read_one(&self, src: u64) -> Result<f64, CudaError> {
        let mut b = [0u8; 8];
        self.dtoh(src, &mut b)?;
        Ok(f64::from_le_bytes(b))
    }

    pub(crate) fn read_f64(&self, src: u64, len: usize) -> Result<Vec<f64>, CudaError> {
        let mut v = vec![0u64; len];
        self.dtoh(src, bytemuck_u64_mut(&mut v))?;
        Ok(v.into_iter().map(f64::from_bits).collect())
    }

    /// Issues one [`cmd::Cmd`]: on a GPU one driver call (memset, copy,
    /// launch) or one cuBLAS call per command, queued on the stream; on an
    /// emulated device, run and checked by the emulator at once.
    ///
    /// # Safety
    /// Every address the command names must lie in live device memory of
    /// this device, as large as the command says (the emulator checks
    /// that; a GPU does not), and a launch's arguments must match the
    /// kernel's signature in `cuda_kernels.cu`.
    #[cfg_attr(
        not(feature = "cuda-emu"),
        allow(clippy::infallible_destructuring_match)
    )]
    pub unsafe fn issue(&self, c: &cmd::Cmd) -> Result<(), CudaError> {
        let g = match &self.driver {
            Driver::Gpu(g) => g,
            #[cfg(feature = "cuda-emu")]
            Driver::Emu(e) => return e.issue(c),
        };
        use cmd::{Arg, Cmd};
        let cu = g.stream.cu_stream();
        match c {
            // SAFETY (Zero, Copy): the caller's contract.
            Cmd::Zero { ptr, bytes } => {
                unsafe { cudarc::driver::result::memset_d8_async(*ptr, 0, *bytes, cu) }.map_err(drv)
            }
            Cmd::Copy { dst, src, bytes } => {
                unsafe { cudarc::driver::result::memcpy_dtod_async(*dst, *src, *bytes, cu) }
                    .map_err(drv)
            }
            Cmd::Launch(l) => {
                let f = g.kernels.get(l.kernel, l.dtype);
                let mut b = g.stream.launch_builder(f);
                for a in l.args() {
                    match a {
                        Arg::Ptr(v) => b.arg(v),
                        Arg::I64(v) => b.arg(v),
                        Arg::I32(v) => b.arg(v),
                        Arg::F32(v) => b.arg(v),
                    };
                }
                let cfg = LaunchConfig {
                    grid_dim: (l.grid[0], l.grid[1], l.grid[2]),
                    block_dim: (l.block[0], l.block[1], l.block[2]),
                    shared_mem_bytes: 0,
                };
                // SAFETY: the caller's contract.
                unsafe { b.launch(cfg) }.map(|_| ()).map_err(drv)
            }
            Cmd::Gemm(gm) => g.strided_gemm(gm),
            Cmd::Syrk(sy) => g.syrk(sy),
        }
    }

    /// Issues commands built by a lowering function (the crate's own, so
    /// the addresses are of live tensors and buffers).
    pub(crate) fn run(
        &self,
        f: impl FnOnce(&mut cmd::Sink) -> Result<(), CudaError>,
    ) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: the crate's lowering functions derive every address from
        // live tensors, plan buffers and scratch of this device, with the
        // sizes they were checked to have (the emulator checks them).
        f(&mut |c| unsafe { self.issue(c) })
    }

    /// The scratch, created on first use.
    fn scratch(&self) -> Result<std::sync::MutexGuard<'_, Option<Scratch>>, CudaError> {
        let mut sc = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        if sc.is_none() {
            *sc = Some(Scratch {
                acc: (self.alloc(8)?, 1),
                bits: self.alloc(4)?,
                index: self.alloc(8)?,
                scales: (self.alloc(4)?, 1),
            });
        }
        Ok(sc)
    }

    /// The address of `len` zeroed f64 accumulators of the scratch (grown
    /// when needed: the workspace reaches its size on the first step, as on
    /// the CPU).
    fn acc(&self, sc: &mut Scratch, len: usize) -> Result<u64, CudaError> {
        if sc.acc.1 < len {
            sc.acc = (self.alloc(8 * len)?, len);
        }
        let p = self.addr(&sc.acc.0);
        self.run(|sink| {
            sink(&cmd::Cmd::Zero {
                ptr: p,
                bytes: 8 * len,
            })
        })?;
        Ok(p)
    }
}

impl Gpu {
    /// One [`cmd::StridedGemm`] through `cublasGemmStridedBatchedEx`
    /// (`CUBLAS_COMPUTE_32F`, host f32 `α`, `β`).
    fn strided_gemm(&self, g: &cmd::StridedGemm) -> Result<(), CudaError> {
        use cublas_sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
        let ty = match g.dtype {
            DType::F32 => cublas_sys::cudaDataType_t::CUDA_R_32F,
            DType::Bf16 => cublas_sys::cudaDataType_t::CUDA_R_16BF,
        };
        // SAFETY: every (address, leading dimension, stride) triple
        // describes a buffer of a plan or a checked tensor of `batch`
        // matrices (the emulator checks these extents over host memory);
        // α and β are host f32 (pointer mode host), as the compute type
        // CUBLAS_COMPUTE_32F requires.
        unsafe {
            cudarc::cublas::result::gemm_strided_batched_ex(
                *self.blas.handle(),
                if g.ta { CUBLAS_OP_T } else { CUBLAS_OP_N },
                if g.tb { CUBLAS_OP_T } else { CUBLAS_OP_N },
                g.m as i32,
                g.n as i32,
                g.k as i32,
                (&g.alpha) as *const f32 as *const _,
                g.a.0 as *const _,
                ty,
                g.a.1 as i32,
                g.a.2 as i64,
                g.b.0 as *const _,
                ty,
                g.b.1 as i32,
                g.b.2 as i64,
                (&g.beta) as *const f32 as *const _,
                g.c.0 as *mut _,
                ty,
                g.c.1 as i32,
                g.c.2 as i64,
                g.batch as i32,
                cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| CudaError::Cublas(format!("{e:?}")))
    }

    /// One [`cmd::Syrk`] through `cublasSsyrk` (lower triangle, `Aᵀ·A`).
    fn syrk(&self, s: &cmd::Syrk) -> Result<(), CudaError> {
        // SAFETY: addresses and leading dimensions of the tensors' own
        // storage (checked by the emulator over host memory); the handle
        // is bound to the device's stream.
        unsafe {
            cublas_sys::cublasSsyrk_v2(
                *self.blas.handle(),
                cublas_sys::cublasFillMode_t::CUBLAS_FILL_MODE_LOWER,
                cublas_sys::cublasOperation_t::CUBLAS_OP_T,
                s.n as i32,
                s.k as i32,
                &s.alpha,
                s.a.0 as *const f32,
                s.a.1 as i32,
                &s.beta,
                s.c.0 as *mut f32,
                s.c.1 as i32,
            )
            .result()
        }
        .map_err(|e| CudaError::Cublas(format!("{e:?}")))
    }
}

fn bytemuck_f32(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte is a valid u8.
    unsafe { core::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 4) }
}
fn bytemuck_u16(v: &[u16]) -> &[u8] {
    // SAFETY: as above.
    unsafe { core::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 2) }
}
fn bytemuck_f32_mut(v: &mut [f32]) -> &mut [u8] {
    // SAFETY: every bit pattern is a valid f32.
    unsafe { core::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, v.len() * 4) }
}
fn bytemuck_u16_mut(v: &mut [u16]) -> &mut [u8] {
    // SAFETY: every bit pattern is a valid u16.
    unsafe { core::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, v.len() * 2) }
}
fn bytemuck_u64_mut(v: &mut [u64]) -> &mut [u8] {
    // SAFETY: every bit pattern is a valid u64.
    unsafe { core::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, v.len() * 8) }
}

/// A row-major matrix or vector on a [`CudaDevice`] (f32 or bf16 storage).
pub struct CudaTensor {
    dev: Arc<CudaDevice>,
    mem: Mem,
    shape: Shape,
    dtype: DType,
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
            #[cfg(feature = "cuda-emu")]
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

    /// The device address of the storage (a host address on an emulated
    /// device), for [`CudaDevice::issue`].
    pub fn address(&self) -> u64 {
        self.raw()
    }

    fn raw(&self) -> u64 {
        self.dev.addr(&self.mem)
    }

    fn numel(&self) -> usize {
        self.shape.numel()
    }

    /// The tensor as the lowering functions see it.
    fn desc(&self) -> cmd::Desc {
        cmd::Desc {
            ptr: self.raw(),
            shape: self.shape,
            dtype: self.dtype,
        }
    }
}

/// The lmo-core backend on [`CudaTensor`]s (scalars f32).
pub struct Cuda;

fn ok<T, E: core::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("CUDA backend, {what}: {e:?}"))
}

fn same_dtype(what: &str, ts: &[&CudaTensor]) {
    if ts.windows(2).any(|w| w[0].dtype != w[1].dtype) {
        panic!("CUDA backend: {what} on tensors of different dtypes");
    }
}

impl Cuda {
    /// Runs reduction kernel `name` over `x` (and `y`) into the f64
    /// accumulator and reads it back.
    fn reduce(name: &'static str, x: &CudaTensor, y: Option<&CudaTensor>) -> f64 {
        let dev = &x.dev;
        let n = x.numel();
        if n == 0 {
            return 0.0;
        }
        if let Some(y) = y {
            same_dtype(name, &[x, y]);
        }
        let mut guard = ok(dev.scratch(), "scratch");
        let sc = guard.as_mut().expect("scratch");
        let acc = ok(dev.acc(sc, 1), "scratch");
        let l = lower::reduce(name, x.desc(), y.map(|y| y.desc()), acc);
        ok(dev.run(|sink| sink(&cmd::Cmd::Launch(l))), name);
        ok(dev.read_one(acc), "read back")
    }

    /// Squared norms along rows or columns into `out` (sqrt taken here).
    fn line_norms(x: &CudaTensor, out: &mut [f32], rows: bool) {
        let dev = &x.dev;
        let (m, n) = x.shape.as_pair();
        if out.is_empty() {
            return;
        }
        if m * n == 0 {
            out.fill(0.0);
            return;
        }
        let mut guard = ok(dev.scratch(), "scratch");
        let sc = guard.as_mut().expect("scratch");
        let acc = ok(dev.acc(sc, out.len()), "scratch");
        let l = lower::line_norms(x.desc(), acc, rows);
        ok(dev.run(|sink| sink(&cmd::Cmd::Launch(l))), "line norms");
        let h = ok(dev.read_f64(acc, out.len()), "read back");
        for (o, v) in out.iter_mut().zip(h) {
            *o = v.sqrt() as f32;
        }
    }

    /// `out = s ⊙ x` along columns or rows.
    fn scale_lines(x: &CudaTensor, s: &[f32], out: &mut CudaTensor, rows: bool) {
        let dev = x.dev.clone();
        let (m, n) = x.shape.as_pair();
        if m * n == 0 {
            return;
        }
        same_dtype("scale_lines", &[x, out]);
        let mut guard = ok(dev.scratch(), "scratch");
        let sc = guard.as_mut().expect("scratch");
        if sc.scales.1 < s.len() {
            sc.scales = (ok(dev.alloc(4 * s.len()), "alloc"), s.len());
        }
        let sp = dev.addr(&sc.scales.0);
        ok(dev.upload(sp, s, DType::F32), "copy scales");
        let l = lower::scale_lines(x.desc(), sp, out.desc(), rows);
        ok(dev.run(|sink| sink(&cmd::Cmd::Launch(l))), "scale lines");
    }

    /// Unary elementwise kernel `name(a, x, out, n)`.
    fn unary(name: &'static str, a: f32, x: &CudaTensor, out: &mut CudaTensor) {
        let dev = x.dev.clone();
        let r = dev.run(|sink| lower::unary(name, a, x.desc(), out.desc(), sink));
        ok(r, name);
    }
}

impl Backend for Cuda {
    type Scalar = f32;
    type Tensor = CudaTensor;

    fn shape(t: &CudaTensor) -> Shape {
        t.shape
    }

    fn zeros_like(t: &CudaTensor) -> CudaTensor {
        Self::zeros(t, t.shape)
    }

    fn all_finite(t: &CudaTensor) -> bool {
        Self::reduce("nonfinite", t, None) == 0.0
    }

    fn dot(x: &CudaTensor, y: &CudaTensor) -> f32 {
        Self::reduce("dot", x, Some(y)) as f32
    }

    fn argmax_abs(x: &CudaTensor) -> (usize, f32) {
        let n = x.numel();
        if n == 0 {
            return (0, 0.0);
        }
        let dev = x.dev.clone();
        let k = {
            let mut guard = ok(dev.scratch(), "scratch");
            let sc = guard.as_mut().expect("scratch");
            let (bits, index) = (dev.addr(&sc.bits), dev.addr(&sc.index));
            ok(dev.htod(bits, &[0; 4]), "init");
            ok(dev.htod(index, &u64::MAX.to_le_bytes()), "init");
            let r = dev.run(|sink| lower::argmax_abs(x.desc(), bits, index, sink));
            ok(r, "argmax_abs");
            ok(dev.read_one(index), "read back").to_bits() as usize
        };
        let k = k.min(n - 1);
        let mut v = [0.0f32];
        let at = x.raw() + (k * elem_size(x.dtype)) as u64;
        ok(dev.download(at, &mut v, x.dtype), "read");
        (k, v[0])
    }

    fn sum_abs(x: &CudaTensor) -> f32 {
        Self::reduce("sumabs", x, None) as f32
    }

    fn norm2(x: &CudaTensor) -> f32 {
        // Squares of finite f32 cannot overflow the f64 accumulator.
        Self::reduce("sumsq", x, None).sqrt() as f32
    }

    fn col_norms(x: &CudaTensor, out: &mut [f32]) {
        Self::line_norms(x, out, false)
    }

    fn row_norms(x: &CudaTensor, out: &mut [f32]) {
        Self::line_norms(x, out, true)
    }

    fn fill(x: &mut CudaTensor, v: f32) {
        let dev = x.dev.clone();
        ok(dev.run(|sink| lower::fill(x.desc(), v, sink)), "fill");
    }

    fn set(x: &mut CudaTensor, k: usize, v: f32) {
        assert!(k < x.numel(), "CUDA backend: set index {k} out of range");
        let at = x.raw() + (k * elem_size(x.dtype)) as u64;
        ok(x.dev.upload(at, &[v], x.dtype), "set");
    }

    fn scale(a: f32, x: &CudaTensor, out: &mut CudaTensor) {
        Self::unary("scale", a, x, out)
    }

    fn sign(a: f32, x: &CudaTensor, out: &mut CudaTensor) {
        Self::unary("sign", a, x, out)
    }

    fn scale_mut(a: f32, x: &mut CudaTensor) {
        // The scale kernel with input and output at the same address.
        let dev = x.dev.clone();
        let d = x.desc();
        ok(
            dev.run(|sink| lower::unary("scale", a, d, d, sink)),
            "scale",
        );
    }

    fn axpby(a: f32, x: &CudaTensor, b: f32, y: &mut CudaTensor) {
        same_dtype("axpby", &[x, y]);
        let dev = x.dev.clone();
        let r = dev.run(|sink| lower::axpby(a, x.desc(), b, y.desc(), sink));
        ok(r, "axpby");
    }

    fn scale_cols(x: &CudaTensor, s: &[f32], out: &mut CudaTensor) {
        Self::scale_lines(x, s, out, false)
    }

    fn scale_rows(x: &CudaTensor, s: &[f32], out: &mut CudaTensor) {
        Self::scale_lines(x, s, out, true)
    }

    fn gemm(
        alpha: f32,
        a: &CudaTensor,
        ta: Trans,
        b: &CudaTensor,
        tb: Trans,
        beta: f32,
        c: &mut CudaTensor,
    ) {
        same_dtype("gemm", &[a, b, c]);
        let (ar, ac) = a.shape.as_pair();
        let k = if ta == Trans::No { ac } else { ar };
        let (m, n) = c.shape.as_pair();
        if m * n == 0 {
            return;
        }
        if k == 0 {
            Self::scale_mut(beta, c);
            return;
        }
        let dev = a.dev.clone();
        let g = lower::gemm(alpha, a.desc(), ta, b.desc(), tb, beta, c.desc());
        ok(dev.run(|sink| sink(&cmd::Cmd::Gemm(g))), "gemm");
    }

    /// `out = α·op(A)·op(B) + β·src`: one device-to-device copy of `src`
    /// into `out`, then one GEMM with `β` (cuBLAS's `C` is read and
    /// written in place), instead of the default scale pass plus GEMM.
    fn gemm_from(
        alpha: f32,
        a: &CudaTensor,
        ta: Trans,
        b: &CudaTensor,
        tb: Trans,
        beta: f32,
        src: &CudaTensor,
        out: &mut CudaTensor,
    ) {
        let n = out.numel();
        if n != 0 && beta != 0.0 {
            same_dtype("gemm_from", &[src, out]);
            let c = cmd::Cmd::Copy {
                dst: out.raw(),
                src: src.raw(),
                bytes: n * elem_size(out.dtype),
            };
            ok(out.dev.run(|sink| sink(&c)), "copy");
        }
        Self::gemm(alpha, a, ta, b, tb, beta, out);
    }

    fn syrk(alpha: f32, x: &CudaTensor, beta: f32, c: &mut CudaTensor) {
        let (k, l) = x.shape.as_pair();
        if x.dtype == DType::Bf16 || k * l == 0 {
            Self::gemm(alpha, x, Trans::No, x, Trans::Yes, beta, c);
            return;
        }
        same_dtype("syrk", &[x, c]);
        let dev = x.dev.clone();
        let r = dev.run(|sink| lower::syrk(alpha, x.desc(), beta, c.desc(), sink));
        ok(r, "syrk");
    }

    fn transpose_into(a: f32, x: &CudaTensor, out: &mut CudaTensor) {
        same_dtype("transpose", &[x, out]);
        let dev = x.dev.clone();
        let r = dev.run(|sink| lower::transpose(a, x.desc(), out.desc(), sink));
        ok(r, "transpose");
    }

    fn zeros(like: &CudaTensor, shape: Shape) -> CudaTensor {
        let dev = like.dev.clone();
        let mem = ok(
            dev.alloc(shape.numel().max(1) * elem_size(like.dtype)),
            "alloc",
        );
        CudaTensor {
            dev,
            mem,
            shape,
            dtype: like.dtype,
        }
    }

    fn adamw(
        p: &mut CudaTensor,
        g: &CudaTensor,
        m: &mut CudaTensor,
        v: &mut CudaTensor,
        h: &AdamWStep<f32>,
    ) {
        let dev = g.dev.clone();
        let r = dev.run(|sink| lower::adamw(p.desc(), g.desc(), m.desc(), v.desc(), h, sink));
        ok(r, "adamw");
    }

    fn copy_to_slice(x: &CudaTensor, out: &mut [f32]) {
        let n = x.numel();
        ok(
            x.dev.download(x.raw(), &mut out[..n], x.dtype),
            "copy to host",
        );
    }

    fn copy_from_slice(src: &[f32], out: &mut CudaTensor) {
        let n = out.numel();
        ok(
            out.dev.upload(out.raw(), &src[..n], out.dtype),
            "copy to device",
        );
    }
}

pub mod cmd;
#[cfg(feature = "cuda-emu")]
pub mod emu;
mod lower;
mod plan;
pub use plan::PolarPlan;
pub mod step;
use cmd::elem_size;
pub use step::UpdateCoeffs;

/// The CUDA backend's bf16 path is the device step's own
/// (`DeviceOptimizer` with `Orth::NewtonSchulzBf16`, bf16 tensors); the
/// generic bf16 polar factor is not offered on `Cuda`. The rounding goes
/// through the host (never on a hot path).
impl lmo_core::Bf16Storage for Cuda {
    type Bf16 = Cuda;
    const OFFERS_BF16: bool = false;
    fn to_bf16(src: &CudaTensor, dst: &mut CudaTensor) {
        let mut h = vec![0.0f32; Cuda::shape(src).numel()];
        Cuda::copy_to_slice(src, &mut h);
        h.iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32());
        Cuda::copy_from_slice(&h, dst);
    }
}
