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
//! - [`Cuda`]: the backend. Products go to cuBLAS: `cublasSgemm` for f32,
//!   `cublasGemmEx` with bf16 inputs and f32 accumulation (tensor cores) for
//!   bf16; the Gram products `X·Xᵀ` and `A·A` use `cublasSsyrk` (one
//!   triangle, `k²l` flops) plus a mirror kernel in f32, and a full GEMM in
//!   bf16 (cuBLAS has no bf16 syrk). Everything else is one kernel launch.
//!   Nothing synchronizes with the host except the scalar reductions the
//!   LMOs return (`dot`, norms, `argmax_abs`, the finiteness check).
//!
//! - [`cmd`]: the device-resident path's work as data (launches with typed
//!   arguments, memsets, copies, strided-batched GEMMs), built by
//!   device-free lowering functions and issued 1:1 by [`CudaDevice`];
//!   `emu` (feature `cuda-emu`) runs the same commands on the CPU with
//!   the kernels of `cuda_kernels.cu` compiled as C++.
//!
//! The CUDA libraries are loaded at run time (cudarc's `dynamic-loading`):
//! this module builds on machines without CUDA; [`CudaDevice::available`]
//! tells whether a driver and a device are present.
//!
//! Errors of the driver, NVRTC or cuBLAS inside a [`Backend`] operation
//! (which has no error channel) panic with the library's message; they are
//! not caused by user input, which the optimizer validates first.

use std::sync::{Arc, Mutex};

use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, sys as cublas_sys};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig,
    PushKernelArg,
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

/// Reduction scratch: f64 accumulators, a u32 and a u64 slot.
struct Scratch {
    acc: CudaSlice<f64>,
    bits: CudaSlice<u32>,
    index: CudaSlice<u64>,
    scales: CudaSlice<f32>,
}

impl Scratch {
    /// The first `len` f64 accumulators, zeroed (grown when needed: the
    /// workspace reaches its size on the first step, as on the CPU).
    fn acc(&mut self, dev: &CudaDevice, len: usize) -> &mut CudaSlice<f64> {
        if self.acc.len() < len {
            self.acc = ok(dev.stream.alloc_zeros::<f64>(len), "alloc");
        } else {
            ok(
                dev.stream.memset_zeros(&mut self.acc.slice_mut(0..len)),
                "memset",
            );
        }
        &mut self.acc
    }
}

/// A GPU with its stream, cuBLAS handle, kernels and scratch.
pub struct CudaDevice {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    _workspace: CudaSlice<u8>,
    kernels: Kernels,
    scratch: Mutex<Scratch>,
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
        let scratch = Scratch {
            acc: stream.alloc_zeros::<f64>(1).map_err(drv)?,
            bits: stream.alloc_zeros::<u32>(1).map_err(drv)?,
            index: stream.alloc_zeros::<u64>(1).map_err(drv)?,
            scales: stream.alloc_zeros::<f32>(1).map_err(drv)?,
        };
        let name = ctx.name().unwrap_or_else(|_| "CUDA device".into());
        Ok(Arc::new(CudaDevice {
            stream,
            blas,
            _workspace: workspace,
            kernels,
            scratch: Mutex::new(scratch),
            name,
        }))
    }

    /// Makes the device's context current on this thread (raw driver and
    /// cuBLAS calls need it; cudarc's safe calls do it themselves).
    fn bind(&self) -> Result<(), CudaError> {
        self.stream.context().bind_to_thread().map_err(drv)
    }

    /// The device's ordinal (`cuda:N`).
    pub fn ordinal(&self) -> usize {
        self.stream.context().ordinal()
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream operations are queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits for everything queued so far.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream.synchronize().map_err(drv)
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
        let buf = match dtype {
            DType::F32 => Buf::F32(self.stream.clone_htod(data).map_err(drv)?),
            DType::Bf16 => {
                let h: Vec<bf16> = data.iter().map(|&x| bf16::from_f32(x)).collect();
                Buf::Bf16(self.stream.clone_htod(&h).map_err(drv)?)
            }
        };
        Ok(CudaTensor {
            dev: self.clone(),
            buf: Some(buf),
            shape,
            borrowed: false,
        })
    }

    fn grid(&self, n: usize) -> LaunchConfig {
        let blocks = n.div_ceil(256).clamp(1, 4096) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Queues one [`cmd::Cmd`] on the stream: one driver call (memset,
    /// copy, launch) or one `cublasGemmStridedBatchedEx` per command.
    pub(crate) fn issue(&self, c: &cmd::Cmd) -> Result<(), CudaError> {
        use cmd::{Arg, Cmd};
        let cu = self.stream.cu_stream();
        match c {
            // SAFETY (Zero, Copy): the lowering functions derive every
            // address and byte count from live tensors and plan buffers of
            // at least that size (checked over host memory by the emulator
            // of feature `cuda-emu`, which runs the same commands).
            Cmd::Zero { ptr, bytes } => {
                unsafe { cudarc::driver::result::memset_d8_async(*ptr, 0, *bytes, cu) }.map_err(drv)
            }
            Cmd::Copy { dst, src, bytes } => {
                unsafe { cudarc::driver::result::memcpy_dtod_async(*dst, *src, *bytes, cu) }
                    .map_err(drv)
            }
            Cmd::Launch(l) => {
                let f = self.kernels.get(l.kernel, l.dtype);
                let mut b = self.stream.launch_builder(f);
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
                // SAFETY: the argument list is the kernel's signature in
                // cuda_kernels.cu (number, order, kinds: checked against
                // the C++ signatures by the emulator) and every index the
                // kernel touches is below the lengths passed.
                unsafe { b.launch(cfg) }.map(|_| ()).map_err(drv)
            }
            Cmd::Gemm(g) => self.strided_gemm(g),
        }
    }

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
                CUBLAS_OP_N,
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
}

enum Buf {
    F32(CudaSlice<f32>),
    Bf16(CudaSlice<bf16>),
}

/// A row-major matrix or vector on a [`CudaDevice`] (f32 or bf16 storage).
pub struct CudaTensor {
    dev: Arc<CudaDevice>,
    buf: Option<Buf>,
    shape: Shape,
    borrowed: bool,
}

impl Drop for CudaTensor {
    fn drop(&mut self) {
        if self.borrowed {
            // Memory owned elsewhere (from_raw): give the pointer back
            // without freeing it.
            match self.buf.take() {
                Some(Buf::F32(s)) => {
                    s.leak();
                }
                Some(Buf::Bf16(s)) => {
                    s.leak();
                }
                None => {}
            }
        }
    }
}

impl CudaTensor {
    /// Wraps device memory owned by someone else (for example a libtorch
    /// CUDA tensor's `data_ptr()`): `numel(dims)` contiguous row-major
    /// elements of `dtype` at `ptr`. No copy; dropping the tensor does not
    /// free the memory.
    ///
    /// # Safety
    /// `ptr` must point to a live allocation of at least that many
    /// elements on `dev`'s context, stay valid while the tensor lives, and
    /// not be written by others while operations queued on `dev`'s stream
    /// use it (order them on the same stream, or synchronize).
    pub unsafe fn from_raw(
        dev: &Arc<CudaDevice>,
        ptr: u64,
        dims: &[usize],
        dtype: DType,
    ) -> Result<Self, CudaError> {
        let shape = Shape::new(dims).map_err(|e| CudaError::Driver(e.to_string()))?;
        let n = shape.numel();
        // SAFETY: the caller guarantees a valid allocation of n elements.
        let buf = unsafe {
            match dtype {
                DType::F32 => Buf::F32(dev.stream.upgrade_device_ptr(ptr, n)),
                DType::Bf16 => Buf::Bf16(dev.stream.upgrade_device_ptr(ptr, n)),
            }
        };
        Ok(CudaTensor {
            dev: dev.clone(),
            buf: Some(buf),
            shape,
            borrowed: true,
        })
    }

    /// The storage type.
    pub fn dtype(&self) -> DType {
        match self.buf() {
            Buf::F32(_) => DType::F32,
            Buf::Bf16(_) => DType::Bf16,
        }
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

    fn buf(&self) -> &Buf {
        self.buf.as_ref().expect("live tensor")
    }

    /// The raw device address of the storage. Every operation of this
    /// module is queued on the device's one stream, so the address is used
    /// in stream order; the read/write events cudarc records for other
    /// streams are recorded here, before the work that uses the address.
    fn raw(&self) -> u64 {
        let s = &self.dev.stream;
        match self.buf() {
            Buf::F32(b) => b.device_ptr(s).0,
            Buf::Bf16(b) => b.device_ptr(s).0,
        }
    }

    /// Element size in bytes.
    fn elem(&self) -> usize {
        match self.dtype() {
            DType::F32 => 4,
            DType::Bf16 => 2,
        }
    }

    fn numel(&self) -> usize {
        self.shape.numel()
    }

    /// The tensor as the lowering functions see it.
    fn desc(&self) -> cmd::Desc<'_> {
        cmd::Desc {
            ptr: self.raw(),
            dims: self.shape.dims(),
            dtype: self.dtype(),
        }
    }
}

/// The lmo-core backend on [`CudaTensor`]s (scalars f32).
pub struct Cuda;

fn ok<T, E: core::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("CUDA backend, {what}: {e:?}"))
}

/// Launches kernel `$name` on the dtype of `$t` with `$cfg`, arguments
/// pushed in order; `@x` marks a tensor argument (its device slice).
macro_rules! launch {
    ($dev:expr, $name:expr, $dt:expr, $cfg:expr, [$($arg:expr),* $(,)?]) => {{
        let f = $dev.kernels.get($name, $dt);
        let mut b = $dev.stream.launch_builder(f);
        $( b.arg($arg); )*
        // SAFETY: the argument list matches the kernel's signature in
        // cuda_kernels.cu and every index the kernel touches is below the
        // lengths passed.
        ok(unsafe { b.launch($cfg) }, $name);
    }};
}

/// Dispatches on the storage of one tensor: binds the typed slice to `$s`.
macro_rules! with_buf {
    ($t:expr, $s:ident => $body:expr) => {
        match $t.buf() {
            Buf::F32($s) => $body,
            Buf::Bf16($s) => $body,
        }
    };
}

/// Dispatches on the storage of an input and an output tensor of the same
/// dtype: binds the typed slices to `$s` and `$o`.
macro_rules! with_pair {
    ($x:expr, $out:expr, $what:expr, ($s:ident, $o:ident) => $body:expr) => {
        match ($x.buf(), $out.buf.as_mut().expect("live tensor")) {
            (Buf::F32($s), Buf::F32($o)) => $body,
            (Buf::Bf16($s), Buf::Bf16($o)) => $body,
            _ => panic!("CUDA backend: {} on tensors of different dtypes", $what),
        }
    };
}

macro_rules! with_buf_mut {
    ($t:expr, $s:ident => $body:expr) => {
        match $t.buf.as_mut().expect("live tensor") {
            Buf::F32($s) => $body,
            Buf::Bf16($s) => $body,
        }
    };
}

impl Cuda {
    /// Runs reduction kernel `name` over `x` (and `y`) into the f64
    /// accumulator and reads it back.
    fn reduce(name: &str, x: &CudaTensor, y: Option<&CudaTensor>) -> f64 {
        let dev = &x.dev;
        let n = x.numel() as i64;
        if n == 0 {
            return 0.0;
        }
        let mut sc = dev.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let acc = sc.acc(dev, 1);
        let cfg = dev.grid(x.numel());
        let dt = x.dtype();
        match (x.buf(), y.map(|y| y.buf())) {
            (Buf::F32(a), Some(Buf::F32(b))) => {
                launch!(dev, name, dt, cfg, [a, b, &mut *acc, &n])
            }
            (Buf::Bf16(a), Some(Buf::Bf16(b))) => {
                launch!(dev, name, dt, cfg, [a, b, &mut *acc, &n])
            }
            (_, Some(_)) => panic!("CUDA backend: {name} on tensors of different dtypes"),
            (Buf::F32(a), None) => launch!(dev, name, dt, cfg, [a, &mut *acc, &n]),
            (Buf::Bf16(a), None) => launch!(dev, name, dt, cfg, [a, &mut *acc, &n]),
        }
        ok(dev.stream.clone_dtoh(&acc.slice(0..1)), "read back")[0]
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
        let mut sc = dev.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let acc = sc.acc(dev, out.len());
        let (mm, nn) = (m as i64, n as i64);
        let dt = x.dtype();
        let cfg = if rows {
            LaunchConfig {
                grid_dim: (m.min(65535) as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            }
        } else {
            dev.grid(n)
        };
        let name = if rows { "row_norms" } else { "col_norms" };
        with_buf!(x, a => launch!(dev, name, dt, cfg, [a, &mut *acc, &mm, &nn]));
        let h = ok(dev.stream.clone_dtoh(&acc.slice(0..out.len())), "read back");
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
        let mut sc = dev.scratch.lock().unwrap_or_else(|e| e.into_inner());
        if sc.scales.len() < s.len() {
            sc.scales = ok(dev.stream.alloc_zeros::<f32>(s.len()), "alloc");
        }
        ok(dev.stream.memcpy_htod(s, &mut sc.scales), "copy scales");
        let (mm, nn) = (m as i64, n as i64);
        let name = if rows { "scale_rows" } else { "scale_cols" };
        let cfg = dev.grid(m * n);
        let dt = x.dtype();
        with_pair!(x, out, name, (a, o) => launch!(dev, name, dt, cfg, [a, &sc.scales, o, &mm, &nn]));
    }

    /// Unary elementwise kernel `name(a, x, out, n)`.
    fn unary(name: &'static str, a: f32, x: &CudaTensor, out: &mut CudaTensor) {
        if x.dtype() != out.dtype() {
            panic!("CUDA backend: {name} on tensors of different dtypes");
        }
        let dev = x.dev.clone();
        let r = lower::unary(name, a, x.desc(), out.desc(), &mut |c| dev.issue(c));
        ok(r, name);
    }
}

fn cublas_op(t: Trans) -> cublas_sys::cublasOperation_t {
    match t {
        Trans::No => cublas_sys::cublasOperation_t::CUBLAS_OP_N,
        Trans::Yes => cublas_sys::cublasOperation_t::CUBLAS_OP_T,
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
        let nn = n as i64;
        let cfg = dev.grid(n);
        let dt = x.dtype();
        let k = {
            let mut sc = dev.scratch.lock().unwrap_or_else(|e| e.into_inner());
            ok(dev.stream.memset_zeros(&mut sc.bits), "memset");
            ok(dev.stream.memcpy_htod(&[u64::MAX], &mut sc.index), "init");
            let Scratch { bits, index, .. } = &mut *sc;
            with_buf!(x, a => launch!(dev, "amax", dt, cfg, [a, &mut *bits, &nn]));
            with_buf!(x, a => launch!(dev, "first_index", dt, cfg, [a, &*bits, &mut *index, &nn]));
            ok(dev.stream.clone_dtoh(&*index), "read back")[0] as usize
        };
        let k = k.min(n - 1);
        let v = match x.buf() {
            Buf::F32(s) => ok(dev.stream.clone_dtoh(&s.slice(k..k + 1)), "read")[0],
            Buf::Bf16(s) => ok(dev.stream.clone_dtoh(&s.slice(k..k + 1)), "read")[0].to_f32(),
        };
        (k, v)
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
        let n = x.numel() as i64;
        if n == 0 {
            return;
        }
        let cfg = dev.grid(x.numel());
        let dt = x.dtype();
        with_buf_mut!(x, s => launch!(dev, "fill", dt, cfg, [s, &v, &n]));
    }

    fn set(x: &mut CudaTensor, k: usize, v: f32) {
        let dev = x.dev.clone();
        with_buf_mut!(x, s => {
            let mut one = s.slice_mut(k..k + 1);
            match_set(&dev, &mut one, v);
        });
    }

    fn scale(a: f32, x: &CudaTensor, out: &mut CudaTensor) {
        Self::unary("scale", a, x, out)
    }

    fn sign(a: f32, x: &CudaTensor, out: &mut CudaTensor) {
        Self::unary("sign", a, x, out)
    }

    fn scale_mut(a: f32, x: &mut CudaTensor) {
        let dev = x.dev.clone();
        let n = x.numel() as i64;
        if n == 0 {
            return;
        }
        let cfg = dev.grid(x.numel());
        let dt = x.dtype();
        // The scale kernel with input and output at the same address.
        with_buf_mut!(x, s => {
            let (ptr, _record) = s.device_ptr_mut(&dev.stream);
            launch!(dev, "scale", dt, cfg, [&a, &ptr, &ptr, &n]);
        });
    }

    fn axpby(a: f32, x: &CudaTensor, b: f32, y: &mut CudaTensor) {
        let dev = x.dev.clone();
        let n = x.numel() as i64;
        if n == 0 {
            return;
        }
        let cfg = dev.grid(x.numel());
        let dt = x.dtype();
        with_pair!(x, y, "axpby", (s, o) => launch!(dev, "axpby", dt, cfg, [&a, s, &b, o, &n]));
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
        // Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ,
        // and a row-major matrix read column-major is its transpose: call
        // cuBLAS with the operands swapped and the flags kept.
        let (ar, ac) = a.shape.as_pair();
        let (br, bc) = b.shape.as_pair();
        let (m, n) = c.shape.as_pair();
        let k = if ta == Trans::No { ac } else { ar };
        if m * n == 0 {
            return;
        }
        if k == 0 {
            Self::scale_mut(beta, c);
            return;
        }
        let dev = a.dev.clone();
        ok(dev.bind(), "bind context");
        let _ = br;
        fn cfg<T>(
            (ta, tb, m, n, k, ac, bc): (Trans, Trans, usize, usize, usize, usize, usize),
            alpha: T,
            beta: T,
        ) -> GemmConfig<T> {
            GemmConfig {
                transa: cublas_op(tb),
                transb: cublas_op(ta),
                m: n as i32,
                n: m as i32,
                k: k as i32,
                alpha,
                lda: bc.max(1) as i32,
                ldb: ac.max(1) as i32,
                beta,
                ldc: n as i32,
            }
        }
        let dims = (ta, tb, m, n, k, ac, bc);
        // SAFETY: the dimensions and leading dimensions describe the
        // tensors' own storage (checked shapes).
        match (a.buf(), b.buf(), c.buf.as_mut().expect("live")) {
            (Buf::F32(x), Buf::F32(y), Buf::F32(z)) => ok(
                unsafe { dev.blas.gemm(cfg(dims, alpha, beta), y, x, z) },
                "sgemm",
            ),
            (Buf::Bf16(x), Buf::Bf16(y), Buf::Bf16(z)) => {
                // cublasGemmEx: bf16 operands, f32 accumulation and f32
                // α, β (full-precision coefficients, as PyTorch passes them).
                let g = cfg(dims, alpha, beta);
                let (xp, _rx) = x.device_ptr(&dev.stream);
                let (yp, _ry) = y.device_ptr(&dev.stream);
                let (zp, _rz) = z.device_ptr_mut(&dev.stream);
                let bf = cublas_sys::cudaDataType_t::CUDA_R_16BF;
                ok(
                    unsafe {
                        cudarc::cublas::result::gemm_ex(
                            *dev.blas.handle(),
                            g.transa,
                            g.transb,
                            g.m,
                            g.n,
                            g.k,
                            (&g.alpha) as *const f32 as *const _,
                            yp as *const _,
                            bf,
                            g.lda,
                            xp as *const _,
                            bf,
                            g.ldb,
                            (&g.beta) as *const f32 as *const _,
                            zp as *mut _,
                            bf,
                            g.ldc,
                            cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                            cublas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                        )
                    },
                    "gemm (bf16, f32 accumulation)",
                )
            }
            _ => panic!("CUDA backend: gemm on tensors of different dtypes"),
        }
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
        ok(out.dev.bind(), "bind context");
        if n != 0 && beta != 0.0 {
            assert_eq!(src.dtype(), out.dtype(), "CUDA backend: gemm_from dtypes");
            let bytes = n * out.elem();
            let (d, s) = (out.raw(), src.raw());
            // SAFETY: both buffers hold n elements of the same type, on
            // this device; the copy is queued on its stream.
            ok(
                unsafe {
                    cudarc::driver::result::memcpy_dtod_async(
                        d,
                        s,
                        bytes,
                        out.dev.stream.cu_stream(),
                    )
                },
                "copy",
            );
        }
        Self::gemm(alpha, a, ta, b, tb, beta, out);
    }

    fn syrk(alpha: f32, x: &CudaTensor, beta: f32, c: &mut CudaTensor) {
        let (k, l) = x.shape.as_pair();
        if x.dtype() == DType::Bf16 || k * l == 0 {
            Self::gemm(alpha, x, Trans::No, x, Trans::Yes, beta, c);
            return;
        }
        let dev = x.dev.clone();
        ok(dev.bind(), "bind context");
        let (Buf::F32(xs), Some(Buf::F32(cs))) = (x.buf(), c.buf.as_mut()) else {
            panic!("CUDA backend: syrk on tensors of different dtypes");
        };
        // Row-major X (k×l) is column-major Xᵀ (l×k): X·Xᵀ = (Xᵀ)ᵀ·Xᵀ is
        // syrk with trans = T; column-major lower = row-major upper.
        {
            let (xp, _rx) = xs.device_ptr(&dev.stream);
            let (cp, _rc) = cs.device_ptr_mut(&dev.stream);
            // SAFETY: pointers and sizes of the tensors' own storage; the
            // handle is bound to the tensors' stream.
            ok(
                unsafe {
                    cublas_sys::cublasSsyrk_v2(
                        *dev.blas.handle(),
                        cublas_sys::cublasFillMode_t::CUBLAS_FILL_MODE_LOWER,
                        cublas_sys::cublasOperation_t::CUBLAS_OP_T,
                        k as i32,
                        l as i32,
                        &alpha,
                        xp as *const f32,
                        l as i32,
                        &beta,
                        cp as *mut f32,
                        k as i32,
                    )
                    .result()
                },
                "ssyrk",
            );
        }
        let kk = k as i64;
        let cfg = dev.grid(k * k);
        launch!(dev, "mirror", DType::F32, cfg, [cs, &kk]);
    }

    fn transpose_into(a: f32, x: &CudaTensor, out: &mut CudaTensor) {
        let (m, n) = x.shape.as_pair();
        if m * n == 0 {
            return;
        }
        let dev = x.dev.clone();
        let cfg = LaunchConfig {
            grid_dim: (n.div_ceil(32) as u32, m.div_ceil(32) as u32, 1),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        };
        let (mm, nn) = (m as i64, n as i64);
        let dt = x.dtype();
        with_pair!(x, out, "transpose", (s, o) => launch!(dev, "transpose", dt, cfg, [&a, s, o, &mm, &nn]));
    }

    fn zeros(like: &CudaTensor, shape: Shape) -> CudaTensor {
        let dev = like.dev.clone();
        let n = shape.numel().max(1);
        let buf = match like.dtype() {
            DType::F32 => Buf::F32(ok(dev.stream.alloc_zeros::<f32>(n), "alloc")),
            DType::Bf16 => Buf::Bf16(ok(dev.stream.alloc_zeros::<bf16>(n), "alloc")),
        };
        CudaTensor {
            dev,
            buf: Some(buf),
            shape,
            borrowed: false,
        }
    }

    fn adamw(
        p: &mut CudaTensor,
        g: &CudaTensor,
        m: &mut CudaTensor,
        v: &mut CudaTensor,
        h: &AdamWStep<f32>,
    ) {
        if [p.dtype(), m.dtype(), v.dtype()]
            .iter()
            .any(|&d| d != g.dtype())
        {
            panic!("CUDA backend: adamw on tensors of different dtypes");
        }
        let dev = g.dev.clone();
        let r = lower::adamw(p.desc(), g.desc(), m.desc(), v.desc(), h, &mut |c| {
            dev.issue(c)
        });
        ok(r, "adamw");
    }

    fn copy_to_slice(x: &CudaTensor, out: &mut [f32]) {
        let n = x.numel();
        if n == 0 {
            return;
        }
        let s = &x.dev.stream;
        match x.buf() {
            Buf::F32(b) => ok(s.memcpy_dtoh(&b.slice(0..n), &mut out[..n]), "copy to host"),
            Buf::Bf16(b) => {
                let h = ok(s.clone_dtoh(&b.slice(0..n)), "copy to host");
                for (o, v) in out.iter_mut().zip(h) {
                    *o = v.to_f32();
                }
            }
        }
    }

    fn copy_from_slice(src: &[f32], out: &mut CudaTensor) {
        let n = out.numel();
        if n == 0 {
            return;
        }
        let s = out.dev.stream.clone();
        match out.buf.as_mut().expect("live") {
            Buf::F32(b) => ok(
                s.memcpy_htod(&src[..n], &mut b.slice_mut(0..n)),
                "copy to device",
            ),
            Buf::Bf16(b) => {
                let h: Vec<bf16> = src[..n].iter().map(|&x| bf16::from_f32(x)).collect();
                ok(s.memcpy_htod(&h, &mut b.slice_mut(0..n)), "copy to device")
            }
        }
    }
}

/// Writes one element (host → device copy of one value).
fn match_set<T: SetValue>(dev: &CudaDevice, one: &mut cudarc::driver::CudaViewMut<'_, T>, v: f32) {
    ok(dev.stream.memcpy_htod(&[T::of(v)], one), "set");
}

/// Storage element types.
trait SetValue: cudarc::driver::DeviceRepr + Copy {
    fn of(v: f32) -> Self;
}
impl SetValue for f32 {
    fn of(v: f32) -> Self {
        v
    }
}
impl SetValue for bf16 {
    fn of(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

pub mod cmd;
#[cfg(feature = "cuda-emu")]
pub mod emu;
mod lower;
mod plan;
pub use plan::PolarPlan;
pub mod step;
pub use step::UpdateCoeffs;
