//! The CPU kernel emulator (feature `emu`): [`super::CudaDevice::emulated`].
//!
//! Every operation of the CUDA backend (the [`super::Cuda`] backend, the
//! step primitives of [`super::step`], [`super::PolarPlan`]) first lowers
//! its work to [`Cmd`]s (kernel launches with their arguments, memsets,
//! copies, GEMMs, SYRKs), then issues them. On an emulated device this
//! module runs the *same* commands over host memory:
//!
//! - kernel launches run the kernels of `cuda_kernels.cu`, unchanged,
//!   compiled as C++ against a model of the CUDA thread hierarchy
//!   (`emu/emu.h`: one fiber per CUDA thread of a block on the calling
//!   thread, blocks in order, `__syncthreads` a barrier, warp shuffles
//!   over 32 lanes). The launcher checks the argument count and each
//!   argument's kind (pointer, `long long`, `int`, `float`) against the
//!   kernel's C++ signature, the launch dimensions against CUDA's limits,
//!   and reports divergent barriers and deadlocks;
//! - every address a command names must lie inside a live allocation
//!   (memsets, copies, GEMM and SYRK operands over their whole extent,
//!   from batch strides and leading dimensions), copies and outputs must
//!   not overlap their inputs, and leading dimensions must be at least the
//!   rows (cuBLAS's rule);
//! - GEMMs follow cuBLAS's column-major `cublasGemmStridedBatchedEx`
//!   (f64 sums, one rounding to the storage); SYRKs `cublasSsyrk` with the
//!   lower triangle (the strict upper one is left as it was, so a missing
//!   mirror shows);
//! - memory is host memory the emulator allocates and tracks: an address
//!   of freed memory is refused like any other foreign address;
//! - a CUDA graph is the recorded command list, replayed with the
//!   addresses it was captured with.
//!
//! So the emulator checks what the GPU receives (names, launch shapes,
//! argument order and types, addresses, byte counts, strides) and what the
//! kernels compute. It cannot check the driver and cuBLAS themselves, the
//! device's rounding of contracted multiply-adds (NVRTC fuses `a·b + c`;
//! the emulator does not, so f32 results may differ in the last bit), nor
//! the driver's stream capture.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_uchar, c_uint, c_ulong, c_void};
use std::sync::{Arc, Mutex};

use half::bf16;

use super::cmd::{Arg, Cmd, Launch, StridedGemm, Syrk, elem_size};
use super::plan::{GemmOut, gemm_host};
use super::{CudaError, DType, KERNEL_NAMES};

unsafe extern "C" {
    fn lmo_emu_has(name: *const c_char) -> c_int;
    fn lmo_emu_launch(
        name: *const c_char,
        grid: *const c_uint,
        block: *const c_uint,
        params: *mut *mut c_void,
        kinds: *const c_uchar,
        n: c_int,
        err: *mut c_char,
        errlen: c_ulong,
    ) -> c_int;
}

fn emu_err(msg: impl Into<String>) -> CudaError {
    CudaError::Emulator(msg.into())
}

/// `<kernel>_<f32|bf16>` as a NUL-terminated C string in a stack buffer.
fn c_name(kernel: &str, dtype: DType) -> Result<[u8; 64], CudaError> {
    let suffix = match dtype {
        DType::F32 => "_f32",
        DType::Bf16 => "_bf16",
    };
    let mut buf = [0u8; 64];
    let len = kernel.len() + suffix.len();
    if len >= buf.len() {
        return Err(emu_err(format!("kernel name {kernel} too long")));
    }
    buf[..kernel.len()].copy_from_slice(kernel.as_bytes());
    buf[kernel.len()..len].copy_from_slice(suffix.as_bytes());
    Ok(buf)
}

/// `true` when the emulator has kernel `<kernel>_<dtype>`.
pub fn has_kernel(kernel: &str, dtype: DType) -> bool {
    match c_name(kernel, dtype) {
        // SAFETY: `n` is NUL-terminated.
        Ok(n) => unsafe { lmo_emu_has(n.as_ptr() as *const c_char) != 0 },
        Err(_) => false,
    }
}

/// `true` when the emulator has every kernel the CUDA backend loads
/// ([`KERNEL_NAMES`] in both storages).
pub fn has_every_kernel() -> bool {
    KERNEL_NAMES
        .iter()
        .all(|k| has_kernel(k, DType::F32) && has_kernel(k, DType::Bf16))
}

/// The emulator behind an emulated [`super::CudaDevice`]: the live
/// allocations (base address → bytes) every command is checked against.
#[derive(Default)]
pub(crate) struct Emulator {
    regions: Arc<Mutex<BTreeMap<u64, usize>>>,
}

/// Zeroed host memory standing in for a device allocation (16-byte
/// aligned), registered with its emulator while it lives.
pub(crate) struct HostAlloc {
    ptr: *mut u8,
    layout: std::alloc::Layout,
    regions: Arc<Mutex<BTreeMap<u64, usize>>>,
}

// SAFETY: the allocation is plain memory reached only through its address
// (like device memory); the registry is behind a mutex.
unsafe impl Send for HostAlloc {}
unsafe impl Sync for HostAlloc {}

impl HostAlloc {
    pub(crate) fn addr(&self) -> u64 {
        self.ptr as u64
    }
}

impl Drop for HostAlloc {
    fn drop(&mut self) {
        lock(&self.regions).remove(&(self.ptr as u64));
        // SAFETY: allocated in `Emulator::alloc` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// Memory someone else owns, registered while a borrowing tensor lives.
pub(crate) struct Registration {
    base: u64,
    regions: Arc<Mutex<BTreeMap<u64, usize>>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.regions).remove(&self.base);
    }
}

fn lock(m: &Mutex<BTreeMap<u64, usize>>) -> std::sync::MutexGuard<'_, BTreeMap<u64, usize>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Emulator {
    /// `bytes` zeroed bytes (at least 1).
    pub(crate) fn alloc(&self, bytes: usize) -> HostAlloc {
        let layout =
            std::alloc::Layout::from_size_align(bytes.max(1), 16).expect("allocation size");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        lock(&self.regions).insert(ptr as u64, bytes);
        HostAlloc {
            ptr,
            layout,
            regions: self.regions.clone(),
        }
    }

    /// Registers `bytes` at `base` (memory a caller owns) while the
    /// registration lives.
    pub(crate) fn register(&self, base: u64, bytes: usize) -> Registration {
        lock(&self.regions).insert(base, bytes);
        Registration {
            base,
            regions: self.regions.clone(),
        }
    }

    /// `true` when `[ptr, ptr + bytes)` (or, for 0 bytes, `ptr`) lies in a
    /// live allocation.
    fn live(&self, ptr: u64, bytes: usize) -> bool {
        lock(&self.regions)
            .range(..=ptr)
            .next_back()
            .is_some_and(|(&base, &len)| {
                let off = (ptr - base) as usize;
                off + bytes <= len && (bytes > 0 || off < len)
            })
    }

    fn within(&self, what: &str, ptr: u64, bytes: usize) -> Result<(), CudaError> {
        if self.live(ptr, bytes) {
            Ok(())
        } else {
            Err(outside(what, ptr, bytes))
        }
    }

    /// Host bytes to `dst`.
    pub(crate) fn write(&self, dst: u64, src: &[u8]) -> Result<(), CudaError> {
        self.within("copy to device", dst, src.len())?;
        // SAFETY: checked to lie inside a live buffer.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }

    /// Bytes at `src` to the host.
    pub(crate) fn read(&self, src: u64, dst: &mut [u8]) -> Result<(), CudaError> {
        self.within("copy to host", src, dst.len())?;
        // SAFETY: checked to lie inside a live buffer.
        unsafe { core::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Runs one command, checked.
    pub(crate) fn issue(&self, c: &Cmd) -> Result<(), CudaError> {
        match *c {
            Cmd::Zero { ptr, bytes } => {
                self.within("memset", ptr, bytes)?;
                // SAFETY: checked to lie inside a live buffer.
                unsafe { core::ptr::write_bytes(ptr as *mut u8, 0, bytes) };
                Ok(())
            }
            Cmd::Copy { dst, src, bytes } => {
                self.within("copy destination", dst, bytes)?;
                self.within("copy source", src, bytes)?;
                if bytes > 0 && dst < src + bytes as u64 && src < dst + bytes as u64 {
                    return Err(emu_err("copy between overlapping ranges"));
                }
                // SAFETY: both ranges lie inside live buffers and do not overlap.
                unsafe { core::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, bytes) };
                Ok(())
            }
            Cmd::Launch(ref l) => self.launch(l),
            Cmd::Gemm(ref g) => self.gemm(g),
            Cmd::Syrk(ref s) => self.syrk(s),
        }
    }

    fn launch(&self, l: &Launch) -> Result<(), CudaError> {
        let name = c_name(l.kernel, l.dtype)?;
        let args = l.args();
        let mut kinds = [0u8; super::cmd::MAX_ARGS];
        let mut vals = [0u64; super::cmd::MAX_ARGS];
        for (i, a) in args.iter().enumerate() {
            let (k, v) = match *a {
                Arg::Ptr(p) => {
                    if !self.live(p, 0) {
                        return Err(outside(&format!("{} argument {i}", l.kernel), p, 0));
                    }
                    (0, p)
                }
                Arg::I64(v) => (1, v as u64),
                Arg::I32(v) => (2, v as u32 as u64),
                Arg::F32(v) => (3, v.to_bits() as u64),
            };
            kinds[i] = k;
            vals[i] = v;
        }
        // Each parameter pointer addresses its value's first bytes (little
        // endian), as cuLaunchKernel's kernelParams do.
        let mut params = [core::ptr::null_mut::<c_void>(); super::cmd::MAX_ARGS];
        for (p, v) in params.iter_mut().zip(vals.iter_mut()) {
            *p = v as *mut u64 as *mut c_void;
        }
        let mut err = [0u8; 512];
        // SAFETY: `name` is NUL-terminated; `params[i]` points to a value
        // whose kind (and so size) the launcher checks against the
        // kernel's signature before reading it; every pointer argument
        // lies inside a live buffer; `err` holds 512 bytes. What a kernel
        // indexes from a pointer is bounded by the sizes passed with it,
        // which the tests check against the formulas.
        let rc = unsafe {
            lmo_emu_launch(
                name.as_ptr() as *const c_char,
                l.grid.as_ptr(),
                l.block.as_ptr(),
                params.as_mut_ptr(),
                kinds.as_ptr(),
                args.len() as c_int,
                err.as_mut_ptr() as *mut c_char,
                err.len() as c_ulong,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
        Err(emu_err(String::from_utf8_lossy(&err[..end]).into_owned()))
    }

    /// The bytes a column-major operand spans, checked: `batch` matrices
    /// `stride` elements apart, `rows × cols` with leading dimension `ld`.
    #[allow(clippy::too_many_arguments)]
    fn extent(
        &self,
        what: &str,
        (p, ld, stride): (u64, usize, usize),
        rows: usize,
        cols: usize,
        batch: usize,
        es: usize,
    ) -> Result<(u64, usize), CudaError> {
        if ld < rows.max(1) {
            return Err(emu_err(format!(
                "{what}: leading dimension {ld} below its {rows} rows"
            )));
        }
        if batch == 0 || rows == 0 || cols == 0 {
            return Ok((p, 0));
        }
        let bytes = ((batch - 1) * stride + (cols - 1) * ld + rows) * es;
        self.within(what, p, bytes)?;
        Ok((p, bytes))
    }

    fn gemm(&self, g: &StridedGemm) -> Result<(), CudaError> {
        let es = elem_size(g.dtype);
        let (ar, ac) = if g.ta { (g.k, g.m) } else { (g.m, g.k) };
        let (br, bc) = if g.tb { (g.n, g.k) } else { (g.k, g.n) };
        let a = self.extent("gemm A", g.a, ar, ac, g.batch, es)?;
        let b = self.extent("gemm B", g.b, br, bc, g.batch, es)?;
        let c = self.extent("gemm C", g.c, g.m, g.n, g.batch, es)?;
        for (x, what) in [(a, "A"), (b, "B")] {
            if overlap(c, x) {
                return Err(emu_err(format!("gemm: C overlaps {what}")));
            }
        }
        let (la, lb) = (loader(g.a.0, g.dtype), loader(g.b.0, g.dtype));
        let mut out = RawOut {
            base: g.c.0,
            dtype: g.dtype,
        };
        gemm_host(g, &la, &lb, &mut out);
        Ok(())
    }

    fn syrk(&self, s: &Syrk) -> Result<(), CudaError> {
        let a = self.extent("syrk A", (s.a.0, s.a.1, 0), s.k, s.n, 1, 4)?;
        let c = self.extent("syrk C", (s.c.0, s.c.1, 0), s.n, s.n, 1, 4)?;
        if overlap(c, a) {
            return Err(emu_err("syrk: C overlaps A"));
        }
        // Ssyrk(lower, T) is the GEMM Aᵀ·A with only the lower triangle of
        // C written.
        let g = StridedGemm {
            ta: true,
            tb: false,
            m: s.n,
            n: s.n,
            k: s.k,
            alpha: s.alpha,
            a: (s.a.0, s.a.1, 0),
            b: (s.a.0, s.a.1, 0),
            beta: s.beta,
            c: (s.c.0, s.c.1, 0),
            batch: 1,
            dtype: DType::F32,
        };
        let la = loader(s.a.0, DType::F32);
        let mut out = LowerOnly {
            c: RawOut {
                base: s.c.0,
                dtype: DType::F32,
            },
            ldc: s.c.1,
        };
        gemm_host(&g, &la, &la, &mut out);
        Ok(())
    }
}

/// A GEMM output that keeps the lower triangle (`i ≥ j`, element at
/// `i + j·ldc`) and drops writes above it.
struct LowerOnly {
    c: RawOut,
    ldc: usize,
}

impl GemmOut for LowerOnly {
    fn get(&self, at: usize) -> f32 {
        self.c.get(at)
    }
    fn set(&mut self, at: usize, v: f64) {
        if at % self.ldc >= at / self.ldc {
            self.c.set(at, v);
        }
    }
}

fn outside(what: &str, ptr: u64, bytes: usize) -> CudaError {
    emu_err(format!(
        "{what}: {bytes} bytes at {ptr:#x} lie outside every live buffer"
    ))
}

fn overlap(a: (u64, usize), b: (u64, usize)) -> bool {
    a.1 > 0 && b.1 > 0 && a.0 < b.0 + b.1 as u64 && b.0 < a.0 + a.1 as u64
}

/// Element `i` of `dtype` storage at `base` (checked by the caller).
fn loader(base: u64, dtype: DType) -> impl Fn(usize) -> f32 {
    move |i| {
        // SAFETY: `i` is below the operand's checked extent.
        unsafe {
            match dtype {
                DType::F32 => *(base as *const f32).add(i),
                DType::Bf16 => bf16::from_bits(*(base as *const u16).add(i)).to_f32(),
            }
        }
    }
}

/// The output of an emulated GEMM or SYRK: raw host memory of `dtype`.
struct RawOut {
    base: u64,
    dtype: DType,
}

impl GemmOut for RawOut {
    fn get(&self, i: usize) -> f32 {
        loader(self.base, self.dtype)(i)
    }
    fn set(&mut self, i: usize, v: f64) {
        // SAFETY: `i` is below C's checked extent; C overlaps no input.
        unsafe {
            match self.dtype {
                DType::F32 => *(self.base as *mut f32).add(i) = v as f32,
                DType::Bf16 => *(self.base as *mut u16).add(i) = bf16::from_f32(v as f32).to_bits(),
            }
        }
    }
}
