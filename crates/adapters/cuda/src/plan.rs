//! A persistent polar-factor plan: one Newton–Schulz-type configuration,
//! one stack shape, buffers allocated once, the whole iteration queued with
//! no host synchronization and, optionally, replayed as one CUDA graph.

use std::sync::Arc;

use cudarc::driver::{CudaGraph, sys as drv_sys};
use half::bf16;
use lmo_core::LmoError;

use super::cmd::{Arg, Cmd, Launch, Sink, StridedGemm, elem_size, grid_batched, grid_tiles};
use super::{CudaDevice, CudaError, CudaTensor, DType, Mem, drv};
use orthogonalize::{Normalization, NsConfig, NsForm};

/// How many (input, output) address pairs a plan keeps a graph for.
const GRAPH_CACHE: usize = 4;

/// Batched polar factors of a stack of `batch` same-shape `m × n` matrices
/// on a [`CudaDevice`]: the iteration of [`orthogonalize::NewtonSchulz`] (SPEC §2),
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
/// [`orthogonalize::NewtonSchulz`]. Flops per matrix and step: `2k²l` (Gram) `+ 2k³`
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
    _bufs: Vec<Mem>,
    _acc: Mem,
    x: u64,
    y: u64,
    a: u64,
    b: u64,
    acc_ptr: u64,
    graphs: Option<Vec<((u64, u64), Graph)>>,
}

/// A captured launch sequence: a CUDA graph, or on an emulated device the
/// recorded commands (replayed with the addresses they were captured with,
/// as a graph is).
enum Graph {
    Gpu(CudaGraph),
    #[cfg(feature = "emu")]
    Recorded(Vec<Cmd>),
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
        let (Shape { steps, norm }, ops) = layout(cfg, batch, m, n, io == work)?;
        let bufs = buffer_lens(batch, m, n)
            .into_iter()
            .map(|len| dev.alloc(len * elem_size(work)))
            .collect::<Result<Vec<_>, _>>()?;
        let acc = dev.alloc(8 * batch)?;
        let (x, y, a, b) = (
            dev.addr(&bufs[0]),
            dev.addr(&bufs[1]),
            dev.addr(&bufs[2]),
            dev.addr(&bufs[3]),
        );
        let acc_ptr = dev.addr(&acc);
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
        let dev = &self.dev;
        let mut guard = dev.scratch()?;
        let sc = guard.as_mut().expect("scratch");
        let acc = dev.acc(sc, 1)?;
        dev.run(|sink| super::lower::count_nonfinite([g.desc()], acc, sink))?;
        Ok(dev.read_one(acc)? == 0.0)
    }

    /// Queues `out_b = polar(g_b)` (approximately, per the configuration)
    /// for every matrix of the stack. `g` and `out` must not overlap.
    /// Errors: shape, dtype or device mismatch ([`CudaError::Input`],
    /// nothing queued); driver or cuBLAS failures.
    pub fn run(&mut self, g: &CudaTensor, out: &mut CudaTensor) -> Result<(), CudaError> {
        self.check(g)?;
        self.check(out)?;
        let (gp, op) = (g.raw(), out.raw());
        let Some(graphs) = self.graphs.as_ref() else {
            return self.enqueue(gp, op);
        };
        if let Some((_, graph)) = graphs.iter().find(|(k, _)| *k == (gp, op)) {
            return match graph {
                Graph::Gpu(g) => g.launch().map_err(drv),
                #[cfg(feature = "emu")]
                Graph::Recorded(cmds) => self.dev.run(|sink| cmds.iter().try_for_each(sink)),
            };
        }
        let graph = self.capture(gp, op)?;
        let graphs = self.graphs.as_mut().expect("graph mode");
        if graphs.len() == GRAPH_CACHE {
            graphs.remove(0);
        }
        graphs.push(((gp, op), graph));
        Ok(())
    }

    /// Captures the op list from `gp` into `op` and runs it once.
    fn capture(&self, gp: u64, op: u64) -> Result<Graph, CudaError> {
        let Some(stream) = self.dev.stream() else {
            #[cfg(feature = "emu")]
            {
                let mut cmds = Vec::new();
                self.lowering().run(gp, op, &mut |c| {
                    cmds.push(*c);
                    Ok(())
                })?;
                self.dev.run(|sink| cmds.iter().try_for_each(&mut *sink))?;
                return Ok(Graph::Recorded(cmds));
            }
            #[cfg(not(feature = "emu"))]
            unreachable!("only emulated devices have no stream");
        };
        self.dev.bind()?;
        stream
            .begin_capture(drv_sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(drv)?;
        // Issued directly: `enqueue` would bind the context again, which
        // is not needed inside a capture (the context is bound above).
        let low = self.lowering();
        // SAFETY: as in `CudaDevice::run`: the plan's own buffers and the
        // checked tensors `g`, `out`.
        let queued = low.run(gp, op, &mut |c| unsafe { self.dev.issue_cmd(c) });
        // End the capture whether or not queuing failed.
        let graph = stream.end_capture(drv_sys::CUgraphInstantiate_flags(0));
        queued?;
        let graph = graph
            .map_err(drv)?
            .ok_or_else(|| CudaError::Driver("stream capture produced no graph".into()))?;
        graph.launch().map_err(drv)?;
        Ok(Graph::Gpu(graph))
    }

    /// Queues the op list from `gp` into `op` (no host sync, no
    /// allocation: capturable).
    fn enqueue(&self, gp: u64, op: u64) -> Result<(), CudaError> {
        let low = self.lowering();
        self.dev.run(|sink| low.run(gp, op, sink))
    }

    /// The plan's op list with its buffer addresses.
    fn lowering(&self) -> Lowering<'_> {
        Lowering {
            ops: &self.ops,
            batch: self.batch,
            m: self.m,
            n: self.n,
            io: self.io,
            work: self.work,
            norm: self.norm,
            bufs: [self.x, self.y, self.a, self.b],
            acc: self.acc_ptr,
        }
    }

    /// The host reference of [`PolarPlan::run`]: the same op list (the
    /// same products with the same column-major operands, strides, copies,
    /// normalization and conversions) executed on the CPU, with storage
    /// rounding to bf16 (nearest even) where the plan stores bf16, f64
    /// accumulation elsewhere. Needs no GPU: the tests check the op list
    /// against [`orthogonalize::NewtonSchulz`] with it. `g` holds the stack
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
        let (shape, ops) = layout(cfg, batch, m, n, io == work)?;
        if g.len() != batch * m * n {
            return Err(CudaError::Input(LmoError::ShapeMismatch {
                expected: (batch * m, n),
                found: (g.len(), 1),
            }));
        }
        let dtype_of = |b: BufId| match b {
            BufId::In | BufId::Out => io,
            _ => work,
        };
        let mut bufs: Vec<Vec<f32>> = vec![
            g.iter().map(|&v| store(io, v as f64)).collect(),
            vec![0.0; batch * m * n],
        ];
        bufs.extend(buffer_lens(batch, m, n).map(|len| vec![0.0; len]));
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
                    let mut c = HostOut {
                        v: &mut bufs[gm.c.buf as usize],
                        dtype: dt,
                    };
                    // The command the lowering issues, minus its
                    // addresses (`gemm_host` reads through the loaders).
                    let cmd = StridedGemm {
                        ta: gm.ta,
                        tb: false,
                        m: gm.m,
                        n: gm.n,
                        k: gm.k,
                        alpha: gm.alpha,
                        a: (0, gm.a.ld, gm.a.stride),
                        b: (0, gm.b.ld, gm.b.stride),
                        beta: gm.beta,
                        c: (0, gm.c.ld, gm.c.stride),
                        batch,
                        dtype: dt,
                    };
                    gemm_host(&cmd, &|i| a[i], &|i| bb[i], &mut c);
                }
            }
        }
        Ok(bufs.swap_remove(1))
    }
}

/// An op list bound to addresses: the plan's work buffers `X, Y, A, B`
/// (`[batch·k·l, batch·k·l, batch·k·k, batch·k·k]` elements of `work`,
/// [`buffer_lens`]) and `batch` f64 accumulators. [`Lowering::run`] turns
/// it into the [`Cmd`]s [`PolarPlan::run`] queues (and the emulator of
/// feature `emu` runs over host memory).
pub(crate) struct Lowering<'a> {
    pub ops: &'a [Op],
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub io: DType,
    pub work: DType,
    pub norm: Option<(f32, f32)>,
    pub bufs: [u64; 4],
    pub acc: u64,
}

impl Lowering<'_> {
    fn dtype_of(&self, b: BufId) -> DType {
        match b {
            BufId::In | BufId::Out => self.io,
            _ => self.work,
        }
    }

    /// The commands of one polar factor from the stack at `gp` into the
    /// stack at `op` (both `batch·m·n` elements of `io`).
    pub fn run(&self, gp: u64, op: u64, sink: &mut Sink) -> Result<(), CudaError> {
        let (m, n, batch) = (self.m, self.n, self.batch);
        let per = Arg::I64((m * n) as i64);
        let row = grid_batched(m * n, batch);
        let (delta, eps) = self.norm.unwrap_or((0.0, 0.0));
        let acc = Arg::Ptr(self.acc);
        let same = self.io == self.work;
        let addr = |b: BufId| match b {
            BufId::In => gp,
            BufId::Out => op,
            BufId::X => self.bufs[0],
            BufId::Y => self.bufs[1],
            BufId::A => self.bufs[2],
            BufId::B => self.bufs[3],
        };
        for o in self.ops {
            let c = match o {
                Op::Sumsq => {
                    sink(&Cmd::Zero {
                        ptr: self.acc,
                        bytes: batch * 8,
                    })?;
                    let args = [Arg::Ptr(gp), acc, per];
                    Cmd::Launch(Launch::new("batch_sumsq", self.io, row, &args))
                }
                Op::Scale {
                    src,
                    dst,
                    transpose,
                    norm,
                } => {
                    let (s, d, from) = (addr(*src), addr(*dst), self.dtype_of(*src));
                    let (s, d, norm) = (Arg::Ptr(s), Arg::Ptr(d), Arg::I32(*norm as i32));
                    let (delta, eps) = (Arg::F32(delta), Arg::F32(eps));
                    match *transpose {
                        None => {
                            let name = if same {
                                "batch_normalize"
                            } else {
                                "cvt_normalize"
                            };
                            let args = [s, acc, d, per, delta, eps, norm];
                            Cmd::Launch(Launch::new(name, from, row, &args))
                        }
                        Some((rows, cols)) => {
                            let name = if same {
                                "batch_normalize_t"
                            } else {
                                "cvt_normalize_t"
                            };
                            let (r, c) = (Arg::I64(rows as i64), Arg::I64(cols as i64));
                            let args = [s, acc, d, r, c, delta, eps, norm];
                            let shape = grid_tiles(rows, cols, batch);
                            Cmd::Launch(Launch::new(name, from, shape, &args))
                        }
                    }
                }
                Op::Copy { dst, src, elems } => Cmd::Copy {
                    dst: addr(*dst),
                    src: addr(*src),
                    bytes: batch * elems * elem_size(self.dtype_of(*dst)),
                },
                Op::Gemm(g) => Cmd::Gemm(StridedGemm {
                    ta: g.ta,
                    tb: false,
                    m: g.m,
                    n: g.n,
                    k: g.k,
                    alpha: g.alpha,
                    a: (addr(g.a.buf), g.a.ld, g.a.stride),
                    b: (addr(g.b.buf), g.b.ld, g.b.stride),
                    beta: g.beta,
                    c: (addr(g.c.buf), g.c.ld, g.c.stride),
                    batch,
                    dtype: self.work,
                }),
            };
            sink(&c)?;
        }
        Ok(())
    }
}

/// The element counts of a plan's work buffers `X, Y, A, B`.
pub(crate) fn buffer_lens(batch: usize, m: usize, n: usize) -> [usize; 4] {
    let (k, l) = (m.min(n), m.max(n));
    [batch * k * l, batch * k * l, batch * k * k, batch * k * k]
}

/// The validated shape and op list of a plan (shared by
/// [`PolarPlan::mixed`], [`PolarPlan::simulate`] and the emulator).
pub(crate) fn layout(
    cfg: &NsConfig,
    batch: usize,
    m: usize,
    n: usize,
    same: bool,
) -> Result<(Shape, Vec<Op>), CudaError> {
    let shape = Shape::check(cfg, batch, m, n)?;
    let ops = build_ops(&shape.steps, shape.norm.is_some(), m, n, same);
    Ok((shape, ops))
}

/// `v` stored as `d` and read back: f32, or bf16 rounded to nearest even.
fn store(d: DType, v: f64) -> f32 {
    match d {
        DType::F32 => v as f32,
        DType::Bf16 => bf16::from_f32(v as f32).to_f32(),
    }
}

/// The output operand of [`gemm_host`]: reads `C` and stores a value
/// rounded to its storage.
pub(crate) trait GemmOut {
    fn get(&self, i: usize) -> f32;
    fn set(&mut self, i: usize, v: f64);
}

/// A host buffer holding values of storage `dtype` (bf16 kept rounded in
/// f32).
pub(crate) struct HostOut<'a> {
    pub v: &'a mut [f32],
    pub dtype: DType,
}

impl GemmOut for HostOut<'_> {
    fn get(&self, i: usize) -> f32 {
        self.v[i]
    }
    fn set(&mut self, i: usize, v: f64) {
        self.v[i] = store(self.dtype, v);
    }
}

/// cuBLAS's strided-batched GEMM `g` on host values, column-major: for
/// `t < batch`, `C_t(i, j) = α·Σ_p op(A_t)(i, p)·op(B_t)(p, j) + β·C_t(i, j)`
/// with `op(A)(i, p) = A[p + i·lda]` if `ta` else `A[i + p·lda]` (and
/// likewise `op(B)(p, j)` with `tb`), sums in f64, one rounding to `C`'s
/// storage; `β = 0` reads no `C`. `a`, `b` load an operand's element by
/// its offset from the operand's start (`g`'s addresses are not read).
pub(crate) fn gemm_host(
    g: &StridedGemm,
    a: &dyn Fn(usize) -> f32,
    b: &dyn Fn(usize) -> f32,
    c: &mut dyn GemmOut,
) {
    let ((_, lda, sa), (_, ldb, sb), (_, ldc, sc)) = (g.a, g.b, g.c);
    // op(A) by rows and op(B) by columns, gathered once per matrix into
    // contiguous f64 (exact: every f32 is an f64), so each entry of C is
    // one contiguous dot product.
    let (mut ar, mut bc) = (vec![0.0f64; g.m * g.k], vec![0.0f64; g.n * g.k]);
    for t in 0..g.batch {
        let (ao, bo, co) = (t * sa, t * sb, t * sc);
        let gather = |out: &mut [f64], lines: usize, at: &dyn Fn(usize, usize) -> f32| {
            for r in 0..lines {
                for p in 0..g.k {
                    out[r * g.k + p] = at(r, p) as f64;
                }
            }
        };
        gather(&mut ar, g.m, &|i, p| {
            a(ao + if g.ta { p + i * lda } else { i + p * lda })
        });
        gather(&mut bc, g.n, &|j, p| {
            b(bo + if g.tb { j + p * ldb } else { p + j * ldb })
        });
        for j in 0..g.n {
            let col = &bc[j * g.k..(j + 1) * g.k];
            for i in 0..g.m {
                let row = &ar[i * g.k..(i + 1) * g.k];
                let sum: f64 = row.iter().zip(col).map(|(x, y)| x * y).sum();
                let at = co + i + j * ldc;
                let old = if g.beta == 0.0 {
                    0.0
                } else {
                    g.beta as f64 * c.get(at) as f64
                };
                c.set(at, g.alpha as f64 * sum + old);
            }
        }
    }
}

/// The kernels' `inv_scale`: `1/(√ss·(1+δ)+ε)`, 0 for a zero matrix, at
/// most `f32::MAX` (with ε = 0 and `√ss < 1/f32::MAX` the f32 would be +∞
/// and `0·∞ = NaN`; clamped, every scaled entry stays ≤ 1).
fn inv_scale(ss: f64, delta: f32, eps: f32) -> f32 {
    let f = ss.sqrt();
    if f == 0.0 {
        0.0
    } else {
        (1.0 / (f * (1.0 + delta as f64) + eps as f64)).min(f32::MAX as f64) as f32
    }
}

/// The buffers an op names: the caller's input and output, the plan's two
/// `k × l` stacks and two `k × k` stacks (the index into the host
/// interpreter's buffer list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BufId {
    In = 0,
    Out = 1,
    X = 2,
    Y = 3,
    A = 4,
    B = 5,
}

/// One column-major operand of a strided-batched product.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Operand {
    buf: BufId,
    ld: usize,
    stride: usize,
}

fn opnd(buf: BufId, ld: usize, stride: usize) -> Operand {
    Operand { buf, ld, stride }
}

/// `C_b = α·op(A_b)·B_b + β·C_b`, column-major, `op` = transpose if `ta`.
#[derive(Clone, Debug)]
pub(crate) struct Gemm {
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
pub(crate) enum Op {
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
pub(crate) struct Shape {
    pub(crate) steps: Vec<[f32; 3]>,
    pub(crate) norm: Option<(f32, f32)>,
}

impl Shape {
    fn check(cfg: &NsConfig, batch: usize, m: usize, n: usize) -> Result<Self, CudaError> {
        cfg.validate().map_err(CudaError::Input)?;
        if cfg.form != NsForm::Plain {
            return Err(input(
                "polar plan: the batched plan runs the plain Newton–Schulz form; \
                 the Gram form runs through orthogonalize::NewtonSchulz on the CUDA Backend",
            ));
        }
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
