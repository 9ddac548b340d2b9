//! Device commands: the CUDA backend's work as data. Every kernel launch,
//! memset, copy, GEMM and SYRK that [`super::Cuda`], [`super::step`] and
//! [`super::PolarPlan`] queue is first built as a [`Cmd`] by a device-free
//! lowering function, then issued by [`super::CudaDevice::issue`]: on a
//! GPU one driver or cuBLAS call per command; on an emulated device
//! (feature `emu`) by the CPU kernel emulator, which runs the same
//! commands over host memory with the kernels of `cuda_kernels.cu`
//! compiled as C++. What the emulator checks is therefore exactly what the
//! GPU receives: kernel names, launch dimensions, argument order and types,
//! addresses, byte counts, leading dimensions and strides.

use lmo_core::Shape;

use super::{CudaError, DType};

/// One kernel argument, as pushed to `cuLaunchKernel`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    /// A device address (any pointer parameter).
    Ptr(u64),
    /// A `long long` parameter.
    I64(i64),
    /// An `int` parameter.
    I32(i32),
    /// A `float` parameter.
    F32(f32),
}

/// The most arguments a kernel of `cuda_kernels.cu` takes (`adamw`).
pub const MAX_ARGS: usize = 12;

/// One kernel launch: kernel `<kernel>_<f32|bf16>` on a `grid × block`
/// launch with its arguments in order. Fixed size (no allocation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Launch {
    /// The kernel's base name (an entry of [`super::KERNEL_NAMES`]).
    pub kernel: &'static str,
    /// The storage variant (`_f32` or `_bf16`).
    pub dtype: DType,
    /// Grid dimensions `(x, y, z)`.
    pub grid: [u32; 3],
    /// Block dimensions `(x, y, z)`.
    pub block: [u32; 3],
    args: [Arg; MAX_ARGS],
    len: usize,
}

impl Launch {
    /// A launch of `kernel` with `args` on a `(grid, block)` shape.
    /// Panics with more than [`MAX_ARGS`] arguments (no kernel takes more).
    pub fn new(
        kernel: &'static str,
        dtype: DType,
        (grid, block): ([u32; 3], [u32; 3]),
        args: &[Arg],
    ) -> Self {
        assert!(
            args.len() <= MAX_ARGS,
            "kernel {kernel}: too many arguments"
        );
        let mut a = [Arg::I32(0); MAX_ARGS];
        a[..args.len()].copy_from_slice(args);
        Launch {
            kernel,
            dtype,
            grid,
            block,
            args: a,
            len: args.len(),
        }
    }

    /// The arguments, in order.
    pub fn args(&self) -> &[Arg] {
        &self.args[..self.len]
    }
}

/// A strided-batched product in cuBLAS's column-major convention
/// (`cublasGemmStridedBatchedEx`, `CUBLAS_COMPUTE_32F`, operands and
/// result in `dtype`): for `t < batch`,
/// `C_t = α·op(A_t)·op(B_t) + β·C_t`, `op(X) = Xᵀ` if its flag is set,
/// `X_t` starting `t·stride_x` elements after `x`, element `(i, j)` of a
/// column-major operand at `i + j·ld`. `β = 0` does not read `C`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StridedGemm {
    /// Transpose `A`.
    pub ta: bool,
    /// Transpose `B`.
    pub tb: bool,
    /// Rows of `C` (and of `op(A)`).
    pub m: usize,
    /// Columns of `C` (and of `B`).
    pub n: usize,
    /// The inner dimension.
    pub k: usize,
    /// `α` (host f32).
    pub alpha: f32,
    /// `A`'s address, leading dimension and batch stride (elements).
    pub a: (u64, usize, usize),
    /// `B`'s address, leading dimension and batch stride (elements).
    pub b: (u64, usize, usize),
    /// `β` (host f32).
    pub beta: f32,
    /// `C`'s address, leading dimension and batch stride (elements).
    pub c: (u64, usize, usize),
    /// The number of products.
    pub batch: usize,
    /// Storage of `A`, `B` and `C`.
    pub dtype: DType,
}

/// `cublasSsyrk` with the lower triangle and `trans = T`, column-major,
/// f32: `C = α·Aᵀ·A + β·C` on the lower triangle of the `n × n` matrix `C`
/// (`i ≥ j`, element at `i + j·ldc`); `A` is `k × n` (element `(p, i)` at
/// `p + i·lda`). The strict upper triangle is not touched.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Syrk {
    /// The order of `C`.
    pub n: usize,
    /// The inner dimension (rows of `A`).
    pub k: usize,
    /// `α` (host f32).
    pub alpha: f32,
    /// `A`'s address and leading dimension.
    pub a: (u64, usize),
    /// `β` (host f32).
    pub beta: f32,
    /// `C`'s address and leading dimension.
    pub c: (u64, usize),
}

/// One device command.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cmd {
    /// `bytes` zero bytes at `ptr` (`cuMemsetD8Async`).
    Zero {
        /// Address.
        ptr: u64,
        /// Byte count.
        bytes: usize,
    },
    /// `bytes` bytes from `src` to `dst` (`cuMemcpyDtoDAsync`; the ranges
    /// do not overlap).
    Copy {
        /// Destination address.
        dst: u64,
        /// Source address.
        src: u64,
        /// Byte count.
        bytes: usize,
    },
    /// A kernel launch.
    Launch(Launch),
    /// A strided-batched GEMM.
    Gemm(StridedGemm),
    /// A symmetric rank-k update (one triangle).
    Syrk(Syrk),
}

/// Where lowered commands go: the device's stream, or the emulator.
pub(crate) type Sink<'a> = dyn FnMut(&Cmd) -> Result<(), CudaError> + 'a;

/// The element size of a storage type in bytes.
pub fn elem_size(d: DType) -> usize {
    match d {
        DType::F32 => 4,
        DType::Bf16 => 2,
    }
}

/// A tensor as the lowering functions see it: a device (or, emulated, host)
/// address, its shape and its storage.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Desc {
    pub ptr: u64,
    pub shape: Shape,
    pub dtype: DType,
}

impl Desc {
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    /// `[batch, m, n]` stacks have `batch` members; other ranks one.
    pub fn batch(&self) -> usize {
        match self.shape.dims() {
            [b, _, _] => *b,
            _ => 1,
        }
    }

    /// Matrix `j` of a stack: its address and element count.
    pub fn member(&self, j: usize) -> Option<(u64, usize)> {
        let batch = self.batch();
        if j >= batch {
            return None;
        }
        let per = self.numel() / batch;
        Some((self.ptr + (j * per * elem_size(self.dtype)) as u64, per))
    }
}

/// The launch shape of the grid-stride elementwise kernels: 256 threads,
/// up to 4096 blocks.
pub(crate) fn grid1(n: usize) -> ([u32; 3], [u32; 3]) {
    ([n.div_ceil(256).clamp(1, 4096) as u32, 1, 1], [256, 1, 1])
}

/// The launch shape of the batched kernels: up to 1024 blocks per matrix
/// along x, one matrix per `y`.
pub(crate) fn grid_batched(per: usize, batch: usize) -> ([u32; 3], [u32; 3]) {
    (
        [per.div_ceil(256).clamp(1, 1024) as u32, batch as u32, 1],
        [256, 1, 1],
    )
}

/// The launch shape of the tiled transposes of a `rows × cols` matrix:
/// 32 × 32 tiles, `(32, 8)` threads, one matrix per `z`.
pub(crate) fn grid_tiles(rows: usize, cols: usize, batch: usize) -> ([u32; 3], [u32; 3]) {
    (
        [
            cols.div_ceil(32) as u32,
            rows.div_ceil(32) as u32,
            batch as u32,
        ],
        [32, 8, 1],
    )
}
