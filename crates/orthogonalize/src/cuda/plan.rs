//! A persistent polar-factor plan: one Newton–Schulz-type configuration,
//! one stack shape, buffers allocated once, the whole iteration queued with
//! no host synchronization and, optionally, replayed as one CUDA graph.

use std::sync::Arc;

use cudarc::cublas::sys as cublas_sys;
use cudarc::driver::{
    CudaGraph, CudaSlice, DevicePtr, LaunchConfig, PushKernelArg, sys as drv_sys,
};
use half::bf16;
use lmo_core::LmoError;

use super::{Buf, CudaDevice, CudaError, CudaTensor, DType, drv, ok};
use crate::{Normalization, NsConfig};

/// How many (input, output) address pairs a plan keeps a graph for.
const GRAPH_CACHE: usize = 4;

/// Batched polar factors of a stack of `batch` same-shape `m × n` matrices
/// on a [`CudaDevice`]: the iteration of [`crate::NewtonSchulz`] (SPEC §2),
/// with every matrix of the stack in one cuBLAS strided-batched call per
/// product.
///
/// ```text
/// c_b ← 1/(‖G_b‖_F·(1+δ) + ε)                 (batch_sumsq: per-matrix sums on the device)
/// X_b ← c_b·G_b  (or c_b·G_bᵀ when m > n)      (one kernel; the scale never leaves the device)
/// for (a, b, c) in coefficients:
///     A ← X·Xᵀ                                  (cublasGemmStridedBatchedEx)
///     B ← b·A + c·A·A                           (copy A, then one GEMM with β = b; skipped if c = 0)
///     X ← a·X + B·X                             (copy X, then one GEMM with β = a; the last
///                                                one writes the caller's output when no
///                                                conversion or transposition is left)
/// out ← X (or Xᵀ), converted to the tensors' storage
/// ```
///
/// Storage: f32, bf16, or f32 tensors with a bf16 iteration
/// ([`PolarPlan::mixed`]); products accumulate in f32
/// (`CUBLAS_COMPUTE_32F`, tensor cores for bf16) with f32 `α`, `β` (the
/// coefficients are not rounded). The sequence is one list of operations
/// run by the CUDA executor here and, on the CPU, by
/// [`PolarPlan::simulate`], which the tests check against
/// [`crate::NewtonSchulz`]. Flops per matrix and step: `2k²l` (Gram) `+ 2k³`
/// (`A·A`, when `c ≠ 0`) `+ 2k²l`, `k = min(m,n)`, `l = max(m,n)`
/// ([`PolarPlan::flops`]). cuBLAS has no bf16 `syrk`, so the Gram product
/// is a full GEMM.
///
/// [`PolarPlan::run`] queues the work on the device's stream and returns:
/// nothing is read back. With [`PolarPlan::with_graphs`] the first call for
/// an (input, output) address pair captures the sequence into a CUDA graph
/// and every later call with the same addresses replays it (one launch);
/// up to four address pairs are kept.
///
/// Inputs are not checked for NaN/Inf here (that needs a read-back):
/// non-finite entries give non-finite outputs. [`PolarPlan::all_finite`]
/// checks a stack with one reduction and one read.
///
/// References: K. Jordan et al., "Muon" (2024); Amsel et al., "The Polar
/// Express" (arXiv 2505.16932); NVIDIA cuBLAS `cublasGemmStridedBatchedEx`.
pub struct PolarPlan {
    dev: Arc<CudaDevice>,
    /// Storage of the caller's tensors.
    io: DType,
    /// Storage of the iteration's buffers.
    work: DType,
    batch: usize,
    m: usize,
    n: usize,
    steps: Vec<[f32; 3]>,
    norm: Option<(f32, f32)>,
    ops: Vec<Op>,
    // Owned buffers; their addresses are fixed for the plan's lifetime.
    _bufs: Vec<Buf>,
    _acc: CudaSlice<f64>,
    x: u64,
    y: u64,
    a: u64,
    b: u64,
    acc_ptr: u64,
    graphs: Option<Vec<((u64, u64), CudaGraph)>>,
}

// SAFETY: the raw addresses point into buffers the plan owns; the graphs
// are only touched through `&mut self`.
unsafe impl Send for PolarPlan {}

fn input(msg: &'static str) -> CudaError {
    CudaError::Input(LmoError::InvalidHyperParameter(msg))
}

impl PolarPlan {
    /// A plan for `batch` matrices of shape `m × n` stored as `dtype`,
    /// iterating `cfg`. Errors: invalid `cfg`, an empty shape, a batch of
    /// 0 or above 65 535, sizes beyond cuBLAS's 32-bit dimensions
    /// ([`CudaError::Input`]); allocation failures ([`CudaError::Driver`]).
    pub fn new(
        dev: &Arc<CudaDevice>,
        cfg: &NsConfig,
        batch: usize,
        m: usize,
        n: usize,
        dtype: DType,
    ) -> Result<Self, CudaError> {
        Self::mixed(dev, cfg, batch, m, n, dtype, dtype)
    }

    /// A plan whose tensors are stored as `io` while the iteration runs in
    /// `work` storage: `(F32, Bf16)` is what `torch.optim.Muon` does on a
    /// GPU (f32 parameters and momentum, bf16 Newton–Schulz). The
    /// conversions are fused into the normalization and one final pass.
    pub fn mixed(
        dev: &Arc<CudaDevice>,
        cfg: &NsConfig,
        batch: usize,
        m: usize,
        n: usize,
        io: DType,
        work: DType,
    ) -> Result<Self, CudaError> {
        let Shape { steps, norm } = Shape::check(cfg, batch, m, n)?;
        let ops = build_ops(&steps, norm.is_some(), m, n, io == work);
        let (k, l) = (m.min(n), m.max(n));
        let s = &dev.stream;
        let alloc = |len: usize| -> Result<Buf, CudaError> {
            Ok(match work {
                DType::F32 => Buf::F32(s.alloc_zeros::<f32>(len).map_err(drv)?),
                DType::Bf16 => Buf::Bf16(s.alloc_zeros::<bf16>(len).map_err(drv)?),
            })
        };
        let bufs = vec![
            alloc(batch * k * l)?,
            alloc(batch * k * l)?,
            alloc(batch * k * k)?,
            alloc(batch * k * k)?,
        ];
        let acc = s.alloc_zeros::<f64>(batch).map_err(drv)?;
        let raw = |b: &Buf| match b {
            Buf::F32(v) => v.device_ptr(s).0,
            Buf::Bf16(v) => v.device_ptr(s).0,
        };
        let (x, y, a, b) = (raw(&bufs[0]), raw(&bufs[1]), raw(&bufs[2]), raw(&bufs[3]));
        let acc_ptr = acc.device_ptr(s).0;
        Ok(PolarPlan {
            dev: dev.clone(),
            io,
            work,
            batch,
            m,
            n,
            steps,
            norm,
            ops,
            _bufs: bufs,
            _acc: acc,
            x,
            y,
            a,
            b,
            acc_ptr,
            graphs: None,
        })
    }

    /// Replays the iteration as a CUDA graph per (input, output) address
    /// pair (`true`), or queues it launch by launch (`false`, the default).
    pub fn with_graphs(mut self, on: bool) -> Self {
        self.set_graphs(on);
        self
    }

    /// [`PolarPlan::with_graphs`] in place (turning it off drops the
    /// captured graphs).
    pub fn set_graphs(&mut self, on: bool) {
        if on != self.graphs.is_some() {
            self.graphs = on.then(Vec::new);
        }
    }

    /// The stack this plan was built for: `(batch, m, n)`.
    pub fn dims(&self) -> (usize, usize, usize) {
        (self.batch, self.m, self.n)
    }

    /// Floating-point operations of one [`PolarPlan::run`] (multiply-adds
    /// count 2), the numerator of a TFLOP/s figure.
    pub fn flops(&self) -> f64 {
        let (k, l) = (self.m.min(self.n) as f64, self.m.max(self.n) as f64);
        let per: f64 = self
            .steps
            .iter()
            .map(|s| 4.0 * k * k * l + if s[2] != 0.0 { 2.0 * k * k * k } else { 0.0 })
            .sum();
        per * self.batch as f64
    }

    /// Checks `t` against the plan: dims `[batch, m, n]` (or `[m, n]` for a
    /// batch of 1), dtype and device.
    fn check(&self, t: &CudaTensor) -> Result<(), CudaError> {
        let d = t.shape.dims();
        let ok_dims =
            d == [self.batch, self.m, self.n] || (self.batch == 1 && d == [self.m, self.n]);
        if !ok_dims {
            return Err(CudaError::Input(LmoError::ShapeMismatch {
                expected: (self.batch * self.m, self.n),
                found: t.shape.as_pair(),
            }));
        }
        if t.dtype() != self.io {
            return Err(input("polar plan: tensor dtype differs from the plan's"));
        }
        if !Arc::ptr_eq(&t.dev, &self.dev) {
            return Err(input("polar plan: tensor lives on another CudaDevice"));
        }
        Ok(())
    }

    /// `true` when every entry of the stack `g` is finite (one reduction,
    /// one 8-byte read: a host synchronization).
    pub fn all_finite(&self, g: &CudaTensor) -> Result<bool, CudaError> {
        self.check(g)?;
        let mut sc = self.dev.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let acc = sc.acc(&self.dev, 1);
        let n = g.numel() as i64;
        let cfg = self.dev.grid(g.numel());
        let gp = g.raw();
        launch!(self.dev, "nonfinite", self.io, cfg, [&gp, &mut *acc, &n]);
        let v = self.dev.stream.clone_dtoh(&acc.slice(0..1)).map_err(drv)?;
        Ok(v[0] == 0.0)
    }

    /// Queues `out_b = polar(g_b)` (approximately, per the configuration)
    /// for every matrix of the stack. `g` and `out` must not overlap.
    /// Errors: shape, dtype or device mismatch ([`CudaError::Input`],
    /// nothing queued); driver or cuBLAS failures.
    pub fn run(&mut self, g: &CudaTensor, out: &mut CudaTensor) -> Result<(), CudaError> {
        self.check(g)?;
        self.check(out)?;
        self.dev.bind()?;
        let (gp, op) = (g.raw(), out.raw());
        let Some(graphs) = self.graphs.as_ref() else {
            return self.enqueue(gp, op);
        };
        if let Some((_, graph)) = graphs.iter().find(|(k, _)| *k == (gp, op)) {
            return graph.launch().map_err(drv);
        }
        let stream = self.dev.stream.clone();
        stream
            .begin_capture(drv_sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(drv)?;
        let queued = self.enqueue(gp, op);
        // End the capture whether or not queuing failed.
        let graph = stream.end_capture(drv_sys::CUgraphInstantiate_flags(0));
        queued?;
        let graph = graph
            .map_err(drv)?
            .ok_or_else(|| CudaError::Driver("stream capture produced no graph".into()))?;
        graph.launch().map_err(drv)?;
        let graphs = self.graphs.as_mut().expect("graph mode");
        if graphs.len() == GRAPH_CACHE {
            graphs.remove(0);
        }
        graphs.push(((gp, op), graph));
        Ok(())
    }

    fn dtype_of(&self, b: BufId) -> DType {
        match b {
            BufId::In | BufId::Out => self.io,
            _ => self.work,
        }
    }

    /// One strided-batched product, column-major as cuBLAS sees it:
    /// `C_b = α·op(A_b)·B_b + β·C_b` (operands in the work storage).
    fn gemm(&self, g: &Gemm, addr: &impl Fn(BufId) -> u64) -> Result<(), CudaError> {
        use cublas_sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
        let ty = match self.work {
            DType::F32 => cublas_sys::cudaDataType_t::CUDA_R_32F,
            DType::Bf16 => cublas_sys::cudaDataType_t::CUDA_R_16BF,
        };
        // SAFETY: every (address, leading dimension, stride) triple
        // describes a buffer of the plan or a checked tensor of `batch`
        // matrices (the host interpreter `simulate` runs the same ops on
        // host buffers of exactly these sizes); α and β are host f32
        // (pointer mode host), as the compute type CUBLAS_COMPUTE_32F
        // requires.
        unsafe {
            cudarc::cublas::result::gemm_strided_batched_ex(
                *self.dev.blas.handle(),
                if g.ta { CUBLAS_OP_T } else { CUBLAS_OP_N },
                CUBLAS_OP_N,
                g.m as i32,
                g.n as i32,
                g.k as i32,
                (&g.alpha) as *const f32 as *const _,
                addr(g.a.buf) as *const _,
                ty,
                g.a.ld as i32,
                g.a.stride as i64,
                addr(g.b.buf) as *const _,
                ty,
                g.b.ld as i32,
                g.b.stride as i64,
                (&g.beta) as *const f32 as *const _,
                addr(g.c.buf) as *mut _,
                ty,
                g.c.ld as i32,
                g.c.stride as i64,
                self.batch as i32,
                cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| CudaError::Cublas(format!("{e:?}")))
    }

    /// Queues the op list from `gp` into `op` (no host sync, no
    /// allocation: capturable).
    fn enqueue(&self, gp: u64, op: u64) -> Result<(), CudaError> {
        let dev = &self.dev;
        let (m, n, batch) = (self.m, self.n, self.batch);
        let per = (m * n) as i64;
        let row_cfg = LaunchConfig {
            grid_dim: ((m * n).div_ceil(256).clamp(1, 1024) as u32, batch as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let (delta, eps) = self.norm.unwrap_or((0.0, 0.0));
        let acc = self.acc_ptr;
        let same = self.io == self.work;
        let addr = |b: BufId| match b {
            BufId::In => gp,
            BufId::Out => op,
            BufId::X => self.x,
            BufId::Y => self.y,
            BufId::A => self.a,
            BufId::B => self.b,
        };
        for o in &self.ops {
            match o {
                Op::Sumsq => {
                    // SAFETY: `acc` holds `batch` f64 values.
                    unsafe {
                        cudarc::driver::result::memset_d8_async(
                            acc,
                            0,
                            batch * 8,
                            dev.stream.cu_stream(),
                        )
                    }
                    .map_err(drv)?;
                    launch!(dev, "batch_sumsq", self.io, row_cfg, [&gp, &acc, &per]);
                }
                Op::Scale {
                    src,
                    dst,
                    transpose,
                    norm,
                } => {
                    let (s, d, from) = (addr(*src), addr(*dst), self.dtype_of(*src));
                    let norm = *norm as i32;
                    match *transpose {
                        None => {
                            let name = if same {
                                "batch_normalize"
                            } else {
                                "cvt_normalize"
                            };
                            launch!(
                                dev,
                                name,
                                from,
                                row_cfg,
                                [&s, &acc, &d, &per, &delta, &eps, &norm]
                            );
                        }
                        Some((rows, cols)) => {
                            let cfg = LaunchConfig {
                                grid_dim: (
                                    cols.div_ceil(32) as u32,
                                    rows.div_ceil(32) as u32,
                                    batch as u32,
                                ),
                                block_dim: (32, 8, 1),
                                shared_mem_bytes: 0,
                            };
                            let (r, c) = (rows as i64, cols as i64);
                            let name = if same {
                                "batch_normalize_t"
                            } else {
                                "cvt_normalize_t"
                            };
                            launch!(
                                dev,
                                name,
                                from,
                                cfg,
                                [&s, &acc, &d, &r, &c, &delta, &eps, &norm]
                            );
                        }
                    }
                }
                Op::Copy { dst, src, elems } => {
                    let bytes = batch * elems * elem_size(self.dtype_of(*dst));
                    // SAFETY: both buffers hold `batch·elems` elements of
                    // the same storage type (the op list copies only
                    // between buffers of one storage).
                    unsafe {
                        cudarc::driver::result::memcpy_dtod_async(
                            addr(*dst),
                            addr(*src),
                            bytes,
                            dev.stream.cu_stream(),
                        )
                    }
                    .map_err(drv)?;
                }
                Op::Gemm(g) => self.gemm(g, &addr)?,
            }
        }
        Ok(())
    }

    /// The host reference of [`PolarPlan::run`]: the same op list (the
    /// same products with the same column-major operands, strides, copies,
    /// normalization and conversions) executed on the CPU, with storage
    /// rounding to bf16 (nearest even) where the plan stores bf16, f64
    /// accumulation elsewhere. Needs no GPU: the tests check the op list
    /// against [`crate::NewtonSchulz`] with it. `g` holds the stack
    /// `[batch, m, n]` row-major (rounded to `io` first).
    #[allow(clippy::too_many_arguments)]
    pub fn simulate(
        cfg: &NsConfig,
        batch: usize,
        m: usize,
        n: usize,
        io: DType,
        work: DType,
        g: &[f32],
    ) -> Result<Vec<f32>, CudaError> {
        let shape = Shape::check(cfg, batch, m, n)?;
        if g.len() != batch * m * n {
            return Err(CudaError::Input(LmoError::ShapeMismatch {
                expected: (batch * m, n),
                found: (g.len(), 1),
            }));
        }
        let ops = build_ops(&shape.steps, shape.norm.is_some(), m, n, io == work);
        let (k, l) = (m.min(n), m.max(n));
        let store = |d: DType, v: f64| -> f32 {
            match d {
                DType::F32 => v as f32,
                DType::Bf16 => bf16::from_f32(v as f32).to_f32(),
            }
        };
        let dtype_of = |b: BufId| match b {
            BufId::In | BufId::Out => io,
            _ => work,
        };
        let mut bufs: Vec<Vec<f32>> = vec![
            g.iter().map(|&v| store(io, v as f64)).collect(),
            vec![0.0; batch * m * n],
            vec![0.0; batch * k * l],
            vec![0.0; batch * k * l],
            vec![0.0; batch * k * k],
            vec![0.0; batch * k * k],
        ];
        let mut acc = vec![0.0f64; batch];
        let (delta, eps) = shape.norm.unwrap_or((0.0, 0.0));
        let per = m * n;
        for o in &ops {
            match o {
                Op::Sumsq => {
                    for (b, a) in acc.iter_mut().enumerate() {
                        *a = bufs[0][b * per..(b + 1) * per]
                            .iter()
                            .map(|&v| v as f64 * v as f64)
                            .sum();
                    }
                }
                Op::Scale {
                    src,
                    dst,
                    transpose,
                    norm,
                } => {
                    let s = bufs[*src as usize].clone();
                    let dt = dtype_of(*dst);
                    let d = &mut bufs[*dst as usize];
                    for (b, &ss) in acc.iter().enumerate() {
                        let c = if *norm {
                            inv_scale(ss, delta, eps)
                        } else {
                            1.0
                        };
                        let o = b * per;
                        match *transpose {
                            None => {
                                for i in 0..per {
                                    d[o + i] = store(dt, (c * s[o + i]) as f64);
                                }
                            }
                            Some((rows, cols)) => {
                                for r in 0..rows {
                                    for cc in 0..cols {
                                        d[o + cc * rows + r] =
                                            store(dt, (c * s[o + r * cols + cc]) as f64);
                                    }
                                }
                            }
                        }
                    }
                }
                Op::Copy { dst, src, elems } => {
                    let s = bufs[*src as usize][..batch * elems].to_vec();
                    bufs[*dst as usize][..batch * elems].copy_from_slice(&s);
                }
                Op::Gemm(gm) => {
                    let (a, bb) = (
                        bufs[gm.a.buf as usize].clone(),
                        bufs[gm.b.buf as usize].clone(),
                    );
                    let dt = dtype_of(gm.c.buf);
                    let c = &mut bufs[gm.c.buf as usize];
                    for t in 0..batch {
                        let (ao, bo, co) = (t * gm.a.stride, t * gm.b.stride, t * gm.c.stride);
                        for j in 0..gm.n {
                            for i in 0..gm.m {
                                let mut sum = 0.0f64;
                                for p in 0..gm.k {
                                    let x = if gm.ta {
                                        a[ao + p + i * gm.a.ld]
                                    } else {
                                        a[ao + i + p * gm.a.ld]
                                    };
                                    sum += x as f64 * bb[bo + p + j * gm.b.ld] as f64;
                                }
                                let at = co + i + j * gm.c.ld;
                                let old = if gm.beta == 0.0 {
                                    0.0
                                } else {
                                    gm.beta as f64 * c[at] as f64
                                };
                                c[at] = store(dt, gm.alpha as f64 * sum + old);
                            }
                        }
                    }
                }
            }
        }
        Ok(bufs.swap_remove(1))
    }
}

fn elem_size(d: DType) -> usize {
    match d {
        DType::F32 => 4,
        DType::Bf16 => 2,
    }
}

/// The kernels' `inv_scale`: `1/(√ss·(1+δ)+ε)`, 0 for a zero matrix.
fn inv_scale(ss: f64, delta: f32, eps: f32) -> f32 {
    let f = ss.sqrt();
    if f == 0.0 {
        0.0
    } else {
        (1.0 / (f * (1.0 + delta as f64) + eps as f64)) as f32
    }
}

/// The buffers an op names: the caller's input and output, the plan's two
/// `k × l` stacks and two `k × k` stacks (the index into the host
/// interpreter's buffer list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BufId {
    In = 0,
    Out = 1,
    X = 2,
    Y = 3,
    A = 4,
    B = 5,
}

/// One column-major operand of a strided-batched product.
#[derive(Clone, Copy, Debug)]
struct Operand {
    buf: BufId,
    ld: usize,
    stride: usize,
}

fn opnd(buf: BufId, ld: usize, stride: usize) -> Operand {
    Operand { buf, ld, stride }
}

/// `C_b = α·op(A_b)·B_b + β·C_b`, column-major, `op` = transpose if `ta`.
#[derive(Clone, Debug)]
struct Gemm {
    ta: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Operand,
    b: Operand,
    beta: f32,
    c: Operand,
}

/// One step of the plan's launch sequence.
#[derive(Clone, Debug)]
enum Op {
    /// `acc[b] = Σ In_b²` (acc zeroed first).
    Sumsq,
    /// `dst_b = c_b·src_b` (`c_b` from acc if `norm`, else 1), converted to
    /// dst's storage, transposed when `transpose = Some((rows, cols))`
    /// (`src_b` is rows × cols).
    Scale {
        src: BufId,
        dst: BufId,
        transpose: Option<(usize, usize)>,
        norm: bool,
    },
    /// `batch·elems` elements from src to dst (same storage).
    Copy {
        dst: BufId,
        src: BufId,
        elems: usize,
    },
    /// A strided-batched product.
    Gemm(Gemm),
}

/// The launch sequence of the iteration (the struct docs of
/// [`PolarPlan`]). Row-major X (k×l) is column-major Xc = Xᵀ (l×k, ld l);
/// the Gram matrices are symmetric, so row- and column-major agree on them.
fn build_ops(steps: &[[f32; 3]], normed: bool, m: usize, n: usize, same: bool) -> Vec<Op> {
    use BufId::*;
    let wide = m <= n;
    let (k, l) = if wide { (m, n) } else { (n, m) };
    let (kk, kl) = (k * k, k * l);
    let mut v = Vec::new();
    if normed {
        v.push(Op::Sumsq);
    }
    v.push(Op::Scale {
        src: In,
        dst: X,
        transpose: (!wide).then_some((m, n)),
        norm: normed,
    });
    let (mut x, mut y) = (X, Y);
    for (i, &[a, b, c]) in steps.iter().enumerate() {
        // A = X·Xᵀ = Xcᵀ·Xc.
        v.push(Op::Gemm(Gemm {
            ta: true,
            m: k,
            n: k,
            k: l,
            alpha: 1.0,
            a: opnd(x, l, kl),
            b: opnd(x, l, kl),
            beta: 0.0,
            c: opnd(A, k, kk),
        }));
        let (bm, alpha) = if c != 0.0 {
            // B = b·A + c·A·A.
            v.push(Op::Copy {
                dst: B,
                src: A,
                elems: kk,
            });
            v.push(Op::Gemm(Gemm {
                ta: false,
                m: k,
                n: k,
                k,
                alpha: c,
                a: opnd(A, k, kk),
                b: opnd(A, k, kk),
                beta: b,
                c: opnd(B, k, kk),
            }));
            (B, 1.0)
        } else {
            (A, b)
        };
        // Y = a·X + B·X, i.e. Yc = a·Xc + Xc·B (column-major, B = Bᵀ).
        let dst = if same && wide && i + 1 == steps.len() {
            Out
        } else {
            y
        };
        v.push(Op::Copy {
            dst,
            src: x,
            elems: kl,
        });
        v.push(Op::Gemm(Gemm {
            ta: false,
            m: l,
            n: k,
            k,
            alpha,
            a: opnd(x, l, kl),
            b: opnd(bm, k, kk),
            beta: a,
            c: opnd(dst, l, kl),
        }));
        if dst == Out {
            return v;
        }
        core::mem::swap(&mut x, &mut y);
    }
    v.push(match (wide, same) {
        (true, true) => Op::Copy {
            dst: Out,
            src: x,
            elems: kl,
        },
        (true, false) => Op::Scale {
            src: x,
            dst: Out,
            transpose: None,
            norm: false,
        },
        (false, _) => Op::Scale {
            src: x,
            dst: Out,
            transpose: Some((k, l)),
            norm: false,
        },
    });
    v
}

/// The validated, device-free part of a plan.
struct Shape {
    steps: Vec<[f32; 3]>,
    norm: Option<(f32, f32)>,
}

impl Shape {
    fn check(cfg: &NsConfig, batch: usize, m: usize, n: usize) -> Result<Self, CudaError> {
        cfg.validate().map_err(CudaError::Input)?;
        if m == 0 || n == 0 {
            return Err(input("polar plan: empty matrix shape"));
        }
        if batch == 0 || batch > 65_535 {
            return Err(input("polar plan: batch must be in 1..=65535"));
        }
        let (k, l) = (m.min(n), m.max(n));
        if l > i32::MAX as usize / 2 || k * l > (1usize << 40) {
            return Err(input("polar plan: matrix too large for cuBLAS"));
        }
        let steps = (0..cfg.steps)
            .map(|i| cfg.coefficients.step(i).map(|v| v as f32))
            .collect();
        let norm = match cfg.normalization {
            Normalization::Frobenius { delta, eps } => Some((delta as f32, eps as f32)),
            Normalization::None => None,
        };
        Ok(Shape { steps, norm })
    }
}
