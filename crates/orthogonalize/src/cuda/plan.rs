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
///                                                one writes the caller's output)
/// ```
///
/// Storage is the tensors' dtype: f32, or bf16 with f32 accumulation
/// (`CUBLAS_COMPUTE_32F`, tensor cores) and f32 `α`, `β` (the coefficients
/// are not rounded). Flops per matrix and step: `2k²l` (Gram) `+ 2k³`
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

    fn elem(&self) -> usize {
        match self.work {
            DType::F32 => 4,
            DType::Bf16 => 2,
        }
    }

    /// One strided-batched product, column-major as cuBLAS sees it:
    /// `C_b = α·op(A_b)·op(B_b) + β·C_b`.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        ta: bool,
        (m, n, k): (usize, usize, usize),
        alpha: f32,
        (a, lda, sa): (u64, usize, usize),
        (b, ldb, sb): (u64, usize, usize),
        beta: f32,
        (c, ldc, sc): (u64, usize, usize),
    ) -> Result<(), CudaError> {
        use cublas_sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
        let ty = match self.work {
            DType::F32 => cublas_sys::cudaDataType_t::CUDA_R_32F,
            DType::Bf16 => cublas_sys::cudaDataType_t::CUDA_R_16BF,
        };
        // SAFETY: every (address, leading dimension, stride) triple
        // describes a buffer of the plan or a checked tensor of `batch`
        // matrices; α and β are host f32 (pointer mode host), as the
        // compute type CUBLAS_COMPUTE_32F requires.
        unsafe {
            cudarc::cublas::result::gemm_strided_batched_ex(
                *self.dev.blas.handle(),
                if ta { CUBLAS_OP_T } else { CUBLAS_OP_N },
                CUBLAS_OP_N,
                m as i32,
                n as i32,
                k as i32,
                (&alpha) as *const f32 as *const _,
                a as *const _,
                ty,
                lda as i32,
                sa as i64,
                b as *const _,
                ty,
                ldb as i32,
                sb as i64,
                (&beta) as *const f32 as *const _,
                c as *mut _,
                ty,
                ldc as i32,
                sc as i64,
                self.batch as i32,
                cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| CudaError::Cublas(format!("{e:?}")))
    }

    fn copy(&self, dst: u64, src: u64, elems: usize) -> Result<(), CudaError> {
        // SAFETY: both addresses hold `elems` elements of the plan's dtype.
        unsafe {
            cudarc::driver::result::memcpy_dtod_async(
                dst,
                src,
                elems * self.elem(),
                self.dev.stream.cu_stream(),
            )
        }
        .map_err(drv)
    }

    /// Queues the whole iteration from `gp` into `op` (no host sync, no
    /// allocation: capturable).
    fn enqueue(&self, gp: u64, op: u64) -> Result<(), CudaError> {
        let dev = &self.dev;
        let (m, n, batch) = (self.m, self.n, self.batch);
        let wide = m <= n;
        let (k, l) = if wide { (m, n) } else { (n, m) };
        let (kk, kl) = (k * k, k * l);
        let per = (m * n) as i64;
        let blocks = (m * n).div_ceil(256).clamp(1, 1024) as u32;
        let row_cfg = LaunchConfig {
            grid_dim: (blocks, batch as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let (delta, eps, normed) = match self.norm {
            Some((d, e)) => (d, e, 1i32),
            None => (0.0, 0.0, 0i32),
        };
        let acc = self.acc_ptr;
        let (io, work) = (self.io, self.work);
        let same = io == work;
        if normed == 1 {
            // SAFETY: `acc` holds `batch` f64 values.
            unsafe {
                cudarc::driver::result::memset_d8_async(acc, 0, batch * 8, dev.stream.cu_stream())
            }
            .map_err(drv)?;
            launch!(dev, "batch_sumsq", io, row_cfg, [&gp, &acc, &per]);
        }
        // Normalize (or only convert/transpose, norm = 0) from `from`
        // storage into the other buffer's storage.
        let flat = |src: u64, dst: u64, from: DType, norm: i32| {
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
                [&src, &acc, &dst, &per, &delta, &eps, &norm]
            );
        };
        let transposed = |src: u64, dst: u64, from: DType, rows: usize, cols: usize, norm: i32| {
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
                [&src, &acc, &dst, &r, &c, &delta, &eps, &norm]
            );
        };
        if wide {
            flat(gp, self.x, io, normed);
        } else {
            transposed(gp, self.x, io, m, n, normed);
        }
        // Row-major X (k×l) is column-major Xc = Xᵀ (l×k, ld l); the Gram
        // matrices are symmetric, so row- and column-major agree on them.
        let (mut x, mut y) = (self.x, self.y);
        let last = self.steps.len();
        for (i, &[a, b, c]) in self.steps.iter().enumerate() {
            // A = X·Xᵀ = Xcᵀ·Xc.
            self.gemm(
                true,
                (k, k, l),
                1.0,
                (x, l, kl),
                (x, l, kl),
                0.0,
                (self.a, k, kk),
            )?;
            let (bm, alpha) = if c != 0.0 {
                // B = b·A + c·A·A.
                self.copy(self.b, self.a, batch * kk)?;
                self.gemm(
                    false,
                    (k, k, k),
                    c,
                    (self.a, k, kk),
                    (self.a, k, kk),
                    b,
                    (self.b, k, kk),
                )?;
                (self.b, 1.0)
            } else {
                (self.a, b)
            };
            // Y = a·X + B·X, i.e. Yc = a·Xc + Xc·B (column-major, B = Bᵀ).
            let dst = if same && wide && i + 1 == last { op } else { y };
            self.copy(dst, x, batch * kl)?;
            self.gemm(
                false,
                (l, k, k),
                alpha,
                (x, l, kl),
                (bm, k, kk),
                a,
                (dst, l, kl),
            )?;
            if dst == op {
                return Ok(());
            }
            core::mem::swap(&mut x, &mut y);
        }
        match (wide, same) {
            (true, true) => self.copy(op, x, batch * kl)?,
            (true, false) => flat(x, op, work, 0),
            (false, _) => transposed(x, op, work, k, l, 0),
        }
        Ok(())
    }
}
