//! A device: the driver (a GPU's stream, cuBLAS handle and kernels, or
//! the emulator), its memory, scratch and the commands it issues.

use std::sync::{Arc, Mutex};

use cudarc::cublas::{CudaBlas, sys as cublas_sys};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};
use half::bf16;
use lmo_core::Shape;

use crate::cmd::{self, elem_size};
#[cfg(feature = "emu")]
use crate::emu;
use crate::error::*;
use crate::kernels::*;
use crate::tensor::*;

/// Device memory: an allocation of the device's driver (GPU memory, or
/// host memory the emulator tracks), or memory someone else owns
/// ([`CudaTensor::from_raw`]).
pub(crate) enum Mem {
    Gpu(CudaSlice<u8>),
    #[cfg(feature = "emu")]
    Host(emu::HostAlloc),
    Borrowed {
        ptr: u64,
        #[cfg(feature = "emu")]
        _registration: Option<emu::Registration>,
    },
}

/// Reduction scratch: f64 accumulators, a u32 and a u64 slot, f32 scales.
pub(crate) struct Scratch {
    pub(crate) acc: (Mem, usize),
    pub(crate) bits: Mem,
    pub(crate) index: Mem,
    pub(crate) scales: (Mem, usize),
}

pub(crate) enum Driver {
    Gpu(Gpu),
    #[cfg(feature = "emu")]
    Emu(emu::Emulator),
}

/// A GPU's stream, cuBLAS handle and kernels.
pub(crate) struct Gpu {
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: CudaBlas,
    pub(crate) _workspace: CudaSlice<u8>,
    pub(crate) kernels: Kernels,
}

/// A GPU with its stream, cuBLAS handle, kernels and scratch, or (feature
/// `cuda-emu`, [`CudaDevice::emulated`]) the CPU kernel emulator standing
/// in for one.
pub struct CudaDevice {
    pub(crate) driver: Driver,
    pub(crate) scratch: Mutex<Option<Scratch>>,
    pub(crate) name: String,
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
    /// (feature `emu`, module `emu`): the kernels of
    /// `cuda_kernels.cu` compiled as C++, a model of cuBLAS's GEMM and
    /// SYRK, host memory whose every access the emulator checks. Every
    /// operation of this module works on it, without a GPU or a CUDA
    /// library; it is a test tool (slow, single-threaded), not a fast path.
    #[cfg(feature = "emu")]
    pub fn emulated() -> Arc<Self> {
        Arc::new(CudaDevice {
            driver: Driver::Emu(emu::Emulator::default()),
            scratch: Mutex::new(None),
            name: "CUDA emulator (CPU)".into(),
        })
    }

    /// An emulated device ([`CudaDevice::emulated`]) where this crate is
    /// built with feature `emu`, else `None`: lets code that does not
    /// control the feature (shared test helpers) use the emulator when it
    /// is there.
    pub fn try_emulated() -> Option<Arc<Self>> {
        #[cfg(feature = "emu")]
        return Some(Self::emulated());
        #[cfg(not(feature = "emu"))]
        None
    }

    /// `true` for [`CudaDevice::emulated`] devices.
    pub fn is_emulated(&self) -> bool {
        !matches!(self.driver, Driver::Gpu(_))
    }

    pub(crate) fn gpu(&self) -> Option<&Gpu> {
        match &self.driver {
            Driver::Gpu(g) => Some(g),
            #[cfg(feature = "emu")]
            Driver::Emu(_) => None,
        }
    }

    /// Makes the device's context current on this thread (raw driver and
    /// cuBLAS calls need it; cudarc's safe calls do it themselves).
    pub(crate) fn bind(&self) -> Result<(), CudaError> {
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
            #[cfg(feature = "emu")]
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
            #[cfg(feature = "emu")]
            Mem::Host(h) => h.addr(),
            Mem::Borrowed { ptr, .. } => *ptr,
        }
    }

    /// Copies host bytes to the device address `dst` (synchronizes).
    pub(crate) fn htod(&self, dst: u64, src: &[u8]) -> Result<(), CudaError> {
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
            #[cfg(feature = "emu")]
            Driver::Emu(e) => e.write(dst, src),
        }
    }

    /// Copies device bytes at `src` to the host (synchronizes).
    pub(crate) fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<(), CudaError> {
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
            #[cfg(feature = "emu")]
            Driver::Emu(e) => e.read(src, dst),
        }
    }

    /// `data` converted to `dtype` and copied to `dst`.
    pub(crate) fn upload(&self, dst: u64, data: &[f32], dtype: DType) -> Result<(), CudaError> {
        match dtype {
            DType::F32 => self.htod(dst, bytemuck_f32(data)),
            DType::Bf16 => {
                let h: Vec<u16> = data.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
                self.htod(dst, bytemuck_u16(&h))
            }
        }
    }

    /// `n` values of `dtype` at `src`, as f32.
    pub(crate) fn download(
        &self,
        src: u64,
        out: &mut [f32],
        dtype: DType,
    ) -> Result<(), CudaError> {
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
    #[cfg(feature = "emu")]
    pub unsafe fn issue(&self, c: &cmd::Cmd) -> Result<(), CudaError> {
        // SAFETY: the caller's contract is `issue_cmd`'s.
        unsafe { self.issue_cmd(c) }
    }

    /// [`CudaDevice::issue`], the crate's own entry (command lists are
    /// internal; the test feature `emu` makes them public for the
    /// emulator's tests).
    ///
    /// # Safety
    /// As [`CudaDevice::issue`].
    #[cfg_attr(not(feature = "emu"), allow(clippy::infallible_destructuring_match))]
    pub(crate) unsafe fn issue_cmd(&self, c: &cmd::Cmd) -> Result<(), CudaError> {
        let g = match &self.driver {
            Driver::Gpu(g) => g,
            #[cfg(feature = "emu")]
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
        f(&mut |c| unsafe { self.issue_cmd(c) })
    }

    /// The scratch, created on first use.
    pub(crate) fn scratch(&self) -> Result<std::sync::MutexGuard<'_, Option<Scratch>>, CudaError> {
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
    pub(crate) fn acc(&self, sc: &mut Scratch, len: usize) -> Result<u64, CudaError> {
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
    pub(crate) fn strided_gemm(&self, g: &cmd::StridedGemm) -> Result<(), CudaError> {
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
    pub(crate) fn syrk(&self, s: &cmd::Syrk) -> Result<(), CudaError> {
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

pub(crate) fn bytemuck_f32(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte is a valid u8.
    unsafe { core::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 4) }
}
pub(crate) fn bytemuck_u16(v: &[u16]) -> &[u8] {
    // SAFETY: as above.
    unsafe { core::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 2) }
}
pub(crate) fn bytemuck_f32_mut(v: &mut [f32]) -> &mut [u8] {
    // SAFETY: every bit pattern is a valid f32.
    unsafe { core::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, v.len() * 4) }
}
pub(crate) fn bytemuck_u16_mut(v: &mut [u16]) -> &mut [u8] {
    // SAFETY: every bit pattern is a valid u16.
    unsafe { core::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, v.len() * 2) }
}
pub(crate) fn bytemuck_u64_mut(v: &mut [u64]) -> &mut [u8] {
    // SAFETY: every bit pattern is a valid u64.
    unsafe { core::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, v.len() * 8) }
}
