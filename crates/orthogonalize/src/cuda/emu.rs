//! The CPU kernel emulator (feature `cuda-emu`): the device-resident path's
//! commands run without a GPU.
//!
//! The step primitives of [`super::step`], the sign/scale/AdamW kernels and
//! [`super::PolarPlan`] first lower their work to [`Cmd`]s (kernel launches
//! with their arguments, memsets, copies, strided-batched GEMMs), then
//! issue them. This module issues the *same* commands over host memory:
//!
//! - kernel launches run the kernels of `cuda_kernels.cu`, unchanged,
//!   compiled as C++ against a model of the CUDA thread hierarchy
//!   (`emu/emu.h`: one std::thread per CUDA thread of a block, blocks in
//!   order, `__syncthreads` a barrier, warp shuffles over 32 lanes, atomics
//!   serialized). The launcher checks the argument count and each
//!   argument's kind (pointer, `long long`, `int`, `float`) against the
//!   kernel's C++ signature, the launch dimensions against CUDA's limits,
//!   and reports divergent barriers;
//! - every address a command names must lie inside a buffer of the call
//!   (memsets, copies and GEMM operands over their whole extent, from
//!   batch strides and leading dimensions), copies and GEMM outputs must
//!   not overlap their inputs, and leading dimensions must be at least the
//!   rows (cuBLAS's rule);
//! - GEMMs follow cuBLAS's column-major `cublasGemmStridedBatchedEx`
//!   (f64 sums, one rounding to the storage).
//!
//! So the emulator checks what the GPU receives (names, launch shapes,
//! argument order and types, addresses, byte counts, strides) and what the
//! kernels compute. It cannot check the driver and cuBLAS themselves, the
//! device's rounding of contracted multiply-adds (NVRTC fuses `a·b + c`;
//! the emulator does not, so f32 results may differ in the last bit), nor
//! CUDA graph capture. Tensors here are [`EmuTensor`]s: row-major host
//! memory in f32 or raw bf16 bit patterns.

use std::ffi::{c_char, c_int, c_uchar, c_uint, c_ulong, c_void};

use half::bf16;
use lmo_core::{AdamWStep, LmoError};

use super::cmd::{Arg, Cmd, Desc, Launch, StridedGemm, elem_size};
use super::plan::{GemmDims, GemmOut, Lowering, buffer_lens, gemm_host, layout};
use super::{CudaError, DType, KERNEL_NAMES, UpdateCoeffs, lower};
use crate::NsConfig;

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

#[derive(Clone, Debug)]
enum Mem {
    F32(Vec<f32>),
    Bf16(Vec<u16>),
}

/// A row-major host tensor standing in for a [`super::CudaTensor`]: f32
/// values, or bf16 bit patterns (rounded to nearest even when stored).
#[derive(Clone, Debug)]
pub struct EmuTensor {
    dims: Vec<usize>,
    mem: Mem,
}

impl EmuTensor {
    /// A tensor of `dims` holding `values` (rounded to `dtype`). Errors:
    /// a value count that is not the product of `dims`.
    pub fn new(values: &[f32], dims: &[usize], dtype: DType) -> Result<Self, CudaError> {
        let n: usize = dims.iter().product();
        if n != values.len() {
            return Err(CudaError::Input(LmoError::ShapeMismatch {
                expected: (n, 1),
                found: (values.len(), 1),
            }));
        }
        let mem = match dtype {
            DType::F32 => Mem::F32(values.to_vec()),
            DType::Bf16 => Mem::Bf16(
                values
                    .iter()
                    .map(|&v| bf16::from_f32(v).to_bits())
                    .collect(),
            ),
        };
        Ok(EmuTensor {
            dims: dims.to_vec(),
            mem,
        })
    }

    /// A zero tensor.
    pub fn zeros(dims: &[usize], dtype: DType) -> Self {
        let n = dims.iter().product();
        let mem = match dtype {
            DType::F32 => Mem::F32(vec![0.0; n]),
            DType::Bf16 => Mem::Bf16(vec![0; n]),
        };
        EmuTensor {
            dims: dims.to_vec(),
            mem,
        }
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// The storage.
    pub fn dtype(&self) -> DType {
        match self.mem {
            Mem::F32(_) => DType::F32,
            Mem::Bf16(_) => DType::Bf16,
        }
    }

    /// The values as f32.
    pub fn to_host(&self) -> Vec<f32> {
        match &self.mem {
            Mem::F32(v) => v.clone(),
            Mem::Bf16(v) => v.iter().map(|&b| bf16::from_bits(b).to_f32()).collect(),
        }
    }

    /// The host address of the storage: what a [`Launch`]'s pointer
    /// argument names to address this tensor in [`launch`].
    pub fn address(&mut self) -> u64 {
        self.desc_mut().ptr
    }

    /// The tensor as an input (the commands only read it).
    fn desc(&self) -> Desc<'_> {
        let ptr = match &self.mem {
            Mem::F32(v) => v.as_ptr() as u64,
            Mem::Bf16(v) => v.as_ptr() as u64,
        };
        Desc {
            ptr,
            dims: &self.dims,
            dtype: self.dtype(),
        }
    }

    /// The tensor as an output (the commands may write it).
    fn desc_mut(&mut self) -> Desc<'_> {
        let dtype = self.dtype();
        let ptr = match &mut self.mem {
            Mem::F32(v) => v.as_mut_ptr() as u64,
            Mem::Bf16(v) => v.as_mut_ptr() as u64,
        };
        Desc {
            ptr,
            dims: &self.dims,
            dtype,
        }
    }
}

/// f64 values standing in for [`super::step::DeviceScalars`].
#[derive(Clone, Debug)]
pub struct EmuScalars {
    v: Vec<f64>,
}

impl EmuScalars {
    /// `len` zeros (at least one, as on the device).
    pub fn new(len: usize) -> Self {
        EmuScalars {
            v: vec![0.0; len.max(1)],
        }
    }

    /// Scalars holding `values` (at least one).
    pub fn from_values(values: &[f64]) -> Self {
        let mut v = values.to_vec();
        if v.is_empty() {
            v.push(0.0);
        }
        EmuScalars { v }
    }

    /// The values.
    pub fn to_host(&self) -> Vec<f64> {
        self.v.clone()
    }

    /// The host address of the values (8 bytes each), for [`launch`].
    pub fn address(&mut self) -> u64 {
        self.raw().0
    }

    fn raw(&mut self) -> (u64, usize) {
        (self.v.as_mut_ptr() as u64, self.v.len())
    }
}

/// A host buffer a command may touch: `[base, base + bytes)`.
#[derive(Clone, Copy, Debug)]
struct Region {
    base: u64,
    bytes: usize,
}

fn region(d: &Desc) -> Region {
    Region {
        base: d.ptr,
        bytes: d.numel() * elem_size(d.dtype),
    }
}

/// Issues commands over host memory, refusing any address outside
/// `regions`.
struct Machine<'r> {
    regions: &'r [Region],
}

impl Machine<'_> {
    fn within(&self, what: &str, ptr: u64, bytes: usize) -> Result<(), CudaError> {
        let ok = self.regions.iter().any(|r| {
            ptr >= r.base
                && (ptr - r.base) as usize + bytes <= r.bytes
                && (bytes > 0 || ptr < r.base + r.bytes as u64)
        });
        if ok {
            Ok(())
        } else {
            Err(emu_err(format!(
                "{what}: {bytes} bytes at {ptr:#x} lie outside every buffer of the call"
            )))
        }
    }

    fn issue(&self, c: &Cmd) -> Result<(), CudaError> {
        match *c {
            Cmd::Zero { ptr, bytes } => {
                self.within("memset", ptr, bytes)?;
                // SAFETY: checked to lie inside a live buffer of the call.
                unsafe { core::ptr::write_bytes(ptr as *mut u8, 0, bytes) };
                Ok(())
            }
            Cmd::Copy { dst, src, bytes } => {
                self.within("copy destination", dst, bytes)?;
                self.within("copy source", src, bytes)?;
                if dst < src + bytes as u64 && src < dst + bytes as u64 && bytes > 0 {
                    return Err(emu_err("copy between overlapping ranges"));
                }
                // SAFETY: both ranges lie inside live buffers and do not overlap.
                unsafe { core::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, bytes) };
                Ok(())
            }
            Cmd::Launch(ref l) => self.launch(l),
            Cmd::Gemm(ref g) => self.gemm(g),
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
                    self.within(&format!("{} argument {i}", l.kernel), p, 0)?;
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
        // lies inside a live buffer of the call; `err` holds 512 bytes.
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

    fn gemm(&self, g: &StridedGemm) -> Result<(), CudaError> {
        let es = elem_size(g.dtype);
        let (ar, ac) = if g.ta { (g.k, g.m) } else { (g.m, g.k) };
        let extent =
            |what: &str, (p, ld, stride): (u64, usize, usize), rows: usize, cols: usize| {
                if ld < rows.max(1) {
                    return Err(emu_err(format!(
                        "gemm {what}: leading dimension {ld} below its {rows} rows"
                    )));
                }
                if g.batch == 0 || rows == 0 || cols == 0 {
                    return Ok((p, 0));
                }
                let elems = (g.batch - 1) * stride + (cols - 1) * ld + rows;
                self.within(&format!("gemm {what}"), p, elems * es)?;
                Ok((p, elems * es))
            };
        let a = extent("A", g.a, ar, ac)?;
        let b = extent("B", g.b, g.k, g.n)?;
        let c = extent("C", g.c, g.m, g.n)?;
        for (x, what) in [(a, "A"), (b, "B")] {
            if c.0 < x.0 + x.1 as u64 && x.0 < c.0 + c.1 as u64 {
                return Err(emu_err(format!("gemm: C overlaps {what}")));
            }
        }
        let load = |base: u64| {
            move |i: usize| -> f32 {
                // SAFETY: `i` is below the operand's extent, checked above.
                unsafe {
                    match g.dtype {
                        DType::F32 => *(base as *const f32).add(i),
                        DType::Bf16 => bf16::from_bits(*(base as *const u16).add(i)).to_f32(),
                    }
                }
            }
        };
        let (la, lb) = (load(g.a.0), load(g.b.0));
        let mut out = RawOut {
            base: g.c.0,
            dtype: g.dtype,
        };
        let dims = GemmDims {
            ta: g.ta,
            m: g.m,
            n: g.n,
            k: g.k,
            alpha: g.alpha,
            beta: g.beta,
            batch: g.batch,
        };
        gemm_host(
            &dims,
            (&la, g.a.1, g.a.2),
            (&lb, g.b.1, g.b.2),
            (&mut out, g.c.1, g.c.2),
        );
        Ok(())
    }
}

/// The output of an emulated GEMM: raw host memory of `dtype`.
struct RawOut {
    base: u64,
    dtype: DType,
}

impl GemmOut for RawOut {
    fn get(&self, i: usize) -> f32 {
        // SAFETY: `i` is below C's extent, checked by `Machine::gemm`.
        unsafe {
            match self.dtype {
                DType::F32 => *(self.base as *const f32).add(i),
                DType::Bf16 => bf16::from_bits(*(self.base as *const u16).add(i)).to_f32(),
            }
        }
    }
    fn set(&mut self, i: usize, v: f64) {
        // SAFETY: as in `get`; C does not overlap A or B.
        unsafe {
            match self.dtype {
                DType::F32 => *(self.base as *mut f32).add(i) = v as f32,
                DType::Bf16 => *(self.base as *mut u16).add(i) = bf16::from_f32(v as f32).to_bits(),
            }
        }
    }
}

/// Runs lowered commands over the buffers `regions`.
fn run(
    regions: &[Region],
    f: impl FnOnce(&mut super::cmd::Sink) -> Result<(), CudaError>,
) -> Result<(), CudaError> {
    let machine = Machine { regions };
    f(&mut |c| machine.issue(c))
}

fn scalars_region(s: (u64, usize)) -> Region {
    Region {
        base: s.0,
        bytes: s.1 * 8,
    }
}

/// One [`Launch`] over `tensors` and `scalars` (its pointer arguments
/// must address them, see [`EmuTensor::address`]): the way to run a
/// single kernel of `cuda_kernels.cu` on the CPU. The scalars serve as the
/// kernels' f64 accumulators and as their u32/u64 slots (the low bytes of
/// an 8-byte value: `to_host()[i].to_bits()`).
pub fn launch(
    l: &Launch,
    tensors: &mut [&mut EmuTensor],
    scalars: &mut [&mut EmuScalars],
) -> Result<(), CudaError> {
    let mut regions: Vec<Region> = tensors.iter_mut().map(|t| region(&t.desc_mut())).collect();
    regions.extend(scalars.iter_mut().map(|s| scalars_region(s.raw())));
    run(&regions, |sink| sink(&Cmd::Launch(*l)))
}

/// [`super::step::momentum`] on the emulator.
pub fn momentum(
    g: &EmuTensor,
    m: &mut EmuTensor,
    j: usize,
    nesterov: Option<&mut EmuTensor>,
    beta: f32,
) -> Result<(), CudaError> {
    let (gd, md) = (g.desc(), m.desc_mut());
    let nd = nesterov.map(|u| u.desc_mut());
    let mut regions = vec![region(&gd), region(&md)];
    regions.extend(nd.as_ref().map(region));
    run(&regions, |sink| lower::momentum(gd, md, j, nd, beta, sink))
}

/// [`super::step::batch_dot`] on the emulator.
pub fn batch_dot(x: &EmuTensor, y: &EmuTensor, out: &mut EmuScalars) -> Result<(), CudaError> {
    let (xd, yd, o) = (x.desc(), y.desc(), out.raw());
    run(&[region(&xd), region(&yd), scalars_region(o)], |sink| {
        lower::batch_dot(xd, yd, o, sink)
    })
}

/// [`super::step::lmo_update`] on the emulator.
pub fn lmo_update(
    p: &mut EmuTensor,
    o: &EmuTensor,
    j: usize,
    inner: &EmuScalars,
    c: &UpdateCoeffs,
) -> Result<(), CudaError> {
    let (pd, od) = (p.desc_mut(), o.desc());
    let inn = (inner.v.as_ptr() as u64, inner.v.len());
    run(&[region(&pd), region(&od), scalars_region(inn)], |sink| {
        lower::lmo_update(pd, od, j, inn, c, sink)
    })
}

/// [`super::step::count_nonfinite`] on the emulator.
pub fn count_nonfinite(ts: &[&EmuTensor]) -> Result<u64, CudaError> {
    let mut acc = EmuScalars::new(1);
    let a = acc.raw();
    let descs: Vec<Desc> = ts.iter().map(|t| t.desc()).collect();
    let mut regions: Vec<Region> = descs.iter().map(region).collect();
    regions.push(scalars_region(a));
    run(&regions, |sink| {
        lower::count_nonfinite(descs.iter().copied(), a.0, sink)
    })?;
    Ok(acc.v[0] as u64)
}

/// [`super::step::normalize`] on the emulator.
pub fn normalize(
    u: &EmuTensor,
    out: &mut EmuTensor,
    scratch: &mut EmuScalars,
) -> Result<(), CudaError> {
    let (ud, od, s) = (u.desc(), out.desc_mut(), scratch.raw());
    run(&[region(&ud), region(&od), scalars_region(s)], |sink| {
        lower::normalize(ud, od, s.0, sink)
    })
}

/// `out = a·sign(x)` (the `sign` kernel, as `Backend::sign` of the CUDA
/// backend launches it).
pub fn sign(a: f32, x: &EmuTensor, out: &mut EmuTensor) -> Result<(), CudaError> {
    unary("sign", a, x, out)
}

/// `out = a·x` (the `scale` kernel, as `Backend::scale` launches it).
pub fn scale(a: f32, x: &EmuTensor, out: &mut EmuTensor) -> Result<(), CudaError> {
    unary("scale", a, x, out)
}

fn unary(
    kernel: &'static str,
    a: f32,
    x: &EmuTensor,
    out: &mut EmuTensor,
) -> Result<(), CudaError> {
    let (xd, od) = (x.desc(), out.desc_mut());
    run(&[region(&xd), region(&od)], |sink| {
        lower::unary(kernel, a, xd, od, sink)
    })
}

/// One fused AdamW update (the `adamw` kernel, as `Backend::adamw` of the
/// CUDA backend launches it).
pub fn adamw(
    p: &mut EmuTensor,
    g: &EmuTensor,
    m: &mut EmuTensor,
    v: &mut EmuTensor,
    h: &AdamWStep<f32>,
) -> Result<(), CudaError> {
    let (pd, gd, md, vd) = (p.desc_mut(), g.desc(), m.desc_mut(), v.desc_mut());
    let regions = [region(&pd), region(&gd), region(&md), region(&vd)];
    run(&regions, |sink| lower::adamw(pd, gd, md, vd, h, sink))
}

/// [`super::PolarPlan`] on the emulator: the same validated shape, op list
/// and buffer sizes, lowered to the same commands, over host buffers.
pub struct EmuPlan {
    batch: usize,
    m: usize,
    n: usize,
    io: DType,
    shape: super::plan::Shape,
    ops: Vec<super::plan::Op>,
    work: DType,
    bufs: [EmuTensor; 4],
    acc: EmuScalars,
}

impl EmuPlan {
    /// See [`super::PolarPlan::mixed`] (same errors).
    pub fn mixed(
        cfg: &NsConfig,
        batch: usize,
        m: usize,
        n: usize,
        io: DType,
        work: DType,
    ) -> Result<Self, CudaError> {
        let (shape, ops) = layout(cfg, batch, m, n, io == work)?;
        let bufs = buffer_lens(batch, m, n).map(|len| EmuTensor::zeros(&[len], work));
        Ok(EmuPlan {
            batch,
            m,
            n,
            io,
            shape,
            ops,
            work,
            bufs,
            acc: EmuScalars::new(batch),
        })
    }

    /// See [`super::PolarPlan::run`]: `out_b = polar(g_b)` for every
    /// matrix of the stack (`[batch, m, n]`, or `[m, n]` for a batch of 1).
    pub fn run(&mut self, g: &EmuTensor, out: &mut EmuTensor) -> Result<(), CudaError> {
        let want = [self.batch, self.m, self.n];
        for t in [g.dims(), out.dims()] {
            if t != want && !(self.batch == 1 && t == [self.m, self.n]) {
                return Err(CudaError::Input(LmoError::ShapeMismatch {
                    expected: (self.batch * self.m, self.n),
                    found: (t.iter().product(), 1),
                }));
            }
        }
        if g.dtype() != self.io || out.dtype() != self.io {
            return Err(CudaError::Input(LmoError::InvalidHyperParameter(
                "polar plan: tensor dtype differs from the plan's",
            )));
        }
        let (gd, od) = (g.desc(), out.desc_mut());
        let [x, y, a, b] = &mut self.bufs;
        let bd = [x.desc_mut(), y.desc_mut(), a.desc_mut(), b.desc_mut()];
        let acc = self.acc.raw();
        let mut regions = vec![region(&gd), region(&od), scalars_region(acc)];
        regions.extend(bd.iter().map(region));
        let low = Lowering {
            ops: &self.ops,
            batch: self.batch,
            m: self.m,
            n: self.n,
            io: self.io,
            work: self.work,
            norm: self.shape.norm,
            bufs: bd.map(|d| d.ptr),
            acc: acc.0,
        };
        run(&regions, |sink| low.run(gd.ptr, od.ptr, sink))
    }
}
