//! [`Tch`]: the lmo-core [`Backend`] on libtorch tensors.

use std::marker::PhantomData;

use lmo_core::{AdamWStep, Backend, Scalar, Shape, Trans};
use tch::{Device, Kind, Tensor};

/// A libtorch tensor as an lmo-core tensor: a thin owner of a
/// [`tch::Tensor`] (usually a shallow clone that shares storage with a
/// `VarStore` variable, so updates land in the model).
///
/// `Sync` (so that `gluon-optim` may step blocks in parallel). That is sound
/// only because a shared `&TchTensor` gives no way to mutate the storage:
/// the inner tensor is private, and the only access to it through `&self`
/// is a deep copy ([`TchTensor::copy`], new storage). A `&Tensor` would
/// not do: `shallow_clone()` of it yields an owned tensor on the same
/// storage that safe code could write while another thread reads.
/// Mutation goes through `&mut` ([`TchTensor::tensor_mut`]), which Rust
/// makes exclusive.
///
/// ```compile_fail,E0616
/// // No access to the inner tensor through a shared reference:
/// fn alias(t: &lmo_tch::TchTensor) -> tch::Tensor {
///     t.0.shallow_clone()
/// }
/// ```
///
/// ```
/// use lmo_tch::TchTensor;
/// let mut t = TchTensor::new(tch::Tensor::from_slice(&[1.0f32, 2.0]));
/// t.tensor_mut().fill_(3.0); // exclusive: fine
/// let mut c = t.copy(); // a deep copy: writing it leaves `t` alone
/// let _ = c.fill_(0.0);
/// assert_eq!(Vec::<f32>::try_from(t.copy()).unwrap(), vec![3.0, 3.0]);
/// ```
#[derive(Debug)]
pub struct TchTensor(pub(crate) Tensor);

// SAFETY: see the type's documentation. Through `&TchTensor` only const
// libtorch operations run (reads, deep copies, atomic refcount changes):
// the field is crate-private and the crate's backend operations write only
// through `&mut`, which Rust makes exclusive.
unsafe impl Sync for TchTensor {}

impl TchTensor {
    /// Wraps a tensor.
    pub fn new(t: Tensor) -> Self {
        TchTensor(t)
    }

    /// A deep copy of the tensor (new storage, same device, kind and
    /// shape): what a shared reference may read.
    pub fn copy(&self) -> Tensor {
        self.0.copy()
    }

    /// The dimensions.
    pub fn size(&self) -> Vec<i64> {
        self.0.size()
    }

    /// The libtorch tensor, for in-place work (exclusive access).
    pub fn tensor_mut(&mut self) -> &mut Tensor {
        &mut self.0
    }

    /// Unwraps.
    pub fn into_inner(self) -> Tensor {
        self.0
    }
}

impl From<Tensor> for TchTensor {
    fn from(t: Tensor) -> Self {
        TchTensor(t)
    }
}

/// Scalars [`Tch`] computes with: `f32` (for f32, bf16 and f16 tensors)
/// and `f64` (f64 tensors).
pub trait TchScalar: Scalar + tch::kind::Element {}
impl TchScalar for f32 {}
impl TchScalar for f64 {}

/// The lmo-core [`Backend`] on libtorch tensors (CPU or CUDA, wherever
/// the tensors live): every operation is one or a few libtorch kernels on
/// the tensor's device, so on CUDA nothing leaves the GPU except the
/// scalar reductions the LMOs return (`dot`, norms, `argmax_abs`).
///
/// `Tch<f32>` ([`Tch32`]) steps f32, bf16 or f16 tensors: they keep their
/// storage type, products run in it with f32 accumulation (libtorch's
/// matmuls on tensor cores for bf16 on CUDA), and reductions are done in
/// f32 or, for norms, f64 (overflow-safe for any finite f32). `Tch<f64>`
/// ([`Tch64`]) steps f64 tensors.
///
/// Tensors must be matrices or vectors with at most 4 dimensions (see
/// [`Shape`]); libtorch handles any strides.
pub struct Tch<S>(PhantomData<S>);

/// f32/bf16/f16 tensors, f32 scalars.
pub type Tch32 = Tch<f32>;
/// f64 tensors.
pub type Tch64 = Tch<f64>;

/// The shape of a libtorch tensor as an lmo-core [`Shape`] (rank > 4 is
/// rejected by the optimizer's shape check long before an op sees it).
pub fn shape_of(t: &Tensor) -> Shape {
    let dims: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    Shape::new(&dims).unwrap_or_else(|_| Shape::new(&[t.numel()]).expect("rank 1"))
}

/// `op(x)` as a (possibly strided) view.
fn op(x: &Tensor, t: Trans) -> Tensor {
    match t {
        Trans::No => x.shallow_clone(),
        Trans::Yes => x.tr(),
    }
}

/// A host tensor from `s` on the device and dtype of `like`.
fn vector_like<S: TchScalar>(s: &[S], like: &Tensor) -> Tensor {
    Tensor::from_slice(s)
        .to_device(like.device())
        .to_kind(like.kind())
}

impl<S: TchScalar> Tch<S> {
    /// Reads a 0-dimensional tensor as `S`.
    fn value(t: &Tensor) -> S {
        S::of(t.double_value(&[]))
    }
}

impl<S: TchScalar> Backend for Tch<S> {
    type Scalar = S;
    type Tensor = TchTensor;

    fn shape(t: &TchTensor) -> Shape {
        shape_of(&t.0)
    }

    fn zeros_like(t: &TchTensor) -> TchTensor {
        TchTensor(t.0.zeros_like())
    }

    fn all_finite(t: &TchTensor) -> bool {
        t.0.numel() == 0 || t.0.isfinite().all().int64_value(&[]) != 0
    }

    fn dot(x: &TchTensor, y: &TchTensor) -> S {
        if x.0.numel() == 0 {
            return S::zero();
        }
        // Accumulated in f64: exact enough for any f32/bf16 input.
        let x = x.0.to_kind(Kind::Double);
        let y = y.0.to_kind(Kind::Double);
        Self::value(&(x * y).sum(Kind::Double))
    }

    fn argmax_abs(x: &TchTensor) -> (usize, S) {
        if x.0.numel() == 0 {
            return (0, S::zero());
        }
        let flat = x.0.reshape([-1]);
        // torch.argmax returns the first maximal index.
        let k = flat.abs().argmax(None, false).int64_value(&[]);
        (k as usize, S::of(flat.double_value(&[k])))
    }

    fn sum_abs(x: &TchTensor) -> S {
        if x.0.numel() == 0 {
            return S::zero();
        }
        Self::value(&x.0.abs().sum(Kind::Double))
    }

    fn norm2(x: &TchTensor) -> S {
        if x.0.numel() == 0 {
            return S::zero();
        }
        let d = x.0.to_kind(Kind::Double);
        if x.0.kind() != Kind::Double {
            // Squares of finite f32 (< 3.5e38) cannot overflow f64.
            return Self::value(&d.square().sum(Kind::Double).sqrt());
        }
        // f64: scale by the largest magnitude (BLAS nrm2-style).
        let amax = d.abs().max().double_value(&[]);
        if amax == 0.0 || !amax.is_finite() {
            return S::of(amax);
        }
        let s = (d / amax)
            .square()
            .sum(Kind::Double)
            .sqrt()
            .double_value(&[]);
        S::of(s * amax)
    }

    fn col_norms(x: &TchTensor, out: &mut [S]) {
        norms_along(&x.0, 0, out);
    }

    fn row_norms(x: &TchTensor, out: &mut [S]) {
        norms_along(&x.0, 1, out);
    }

    fn fill(x: &mut TchTensor, v: S) {
        let _ = x.0.fill_(v.as_f64());
    }

    fn set(x: &mut TchTensor, k: usize, v: S) {
        let dims = x.0.size();
        let mut t = x.0.shallow_clone();
        let mut rest = k as i64;
        let mut idx = vec![0i64; dims.len()];
        for (d, i) in dims.iter().zip(idx.iter_mut()).rev() {
            *i = rest % d;
            rest /= d;
        }
        for i in idx {
            t = t.select(0, i);
        }
        let _ = t.fill_(v.as_f64());
    }

    fn scale(a: S, x: &TchTensor, out: &mut TchTensor) {
        let _ = x.0.mul_scalar_out(&out.0, a.as_f64());
    }

    fn sign(a: S, x: &TchTensor, out: &mut TchTensor) {
        let _ = x.0.sign_out(&out.0);
        let _ = out.0.g_mul_scalar_(a.as_f64());
    }

    fn scale_mut(a: S, x: &mut TchTensor) {
        let _ = x.0.g_mul_scalar_(a.as_f64());
    }

    fn axpby(a: S, x: &TchTensor, b: S, y: &mut TchTensor) {
        let (a, b) = (a.as_f64(), b.as_f64());
        if b == 0.0 {
            let _ = x.0.mul_scalar_out(&y.0, a);
            return;
        }
        if b != 1.0 {
            let _ = y.0.g_mul_scalar_(b);
        }
        if a == 1.0 {
            let _ = y.0.g_add_(&x.0);
        } else {
            let _ = y.0.g_add_(&x.0.g_mul_scalar(a));
        }
    }

    fn scale_cols(x: &TchTensor, s: &[S], out: &mut TchTensor) {
        let n = s.len() as i64;
        let _ = x.0.mul_out(&out.0, &vector_like(s, &x.0).view([1, n]));
    }

    fn scale_rows(x: &TchTensor, s: &[S], out: &mut TchTensor) {
        let m = s.len() as i64;
        let _ = x.0.mul_out(&out.0, &vector_like(s, &x.0).view([m, 1]));
    }

    fn gemm(
        alpha: S,
        a: &TchTensor,
        ta: Trans,
        b: &TchTensor,
        tb: Trans,
        beta: S,
        c: &mut TchTensor,
    ) {
        let (alpha, beta) = (alpha.as_f64(), beta.as_f64());
        let (a, b) = (op(&a.0, ta), op(&b.0, tb));
        if beta == 0.0 {
            let _ = a.mm_out(&c.0, &b);
            if alpha != 1.0 {
                let _ = c.0.g_mul_scalar_(alpha);
            }
            return;
        }
        let mut p = a.mm(&b);
        if alpha != 1.0 {
            let _ = p.g_mul_scalar_(alpha);
        }
        if beta != 1.0 {
            let _ = c.0.g_mul_scalar_(beta);
        }
        let _ = c.0.g_add_(&p);
    }

    fn transpose_into(a: S, x: &TchTensor, out: &mut TchTensor) {
        out.0.copy_(&x.0.tr());
        if a.as_f64() != 1.0 {
            let _ = out.0.g_mul_scalar_(a.as_f64());
        }
    }

    fn zeros(like: &TchTensor, shape: Shape) -> TchTensor {
        let dims: Vec<i64> = shape.dims().iter().map(|&d| d as i64).collect();
        TchTensor(Tensor::zeros(dims, (like.0.kind(), like.0.device())))
    }

    fn adamw(
        p: &mut TchTensor,
        g: &TchTensor,
        m: &mut TchTensor,
        v: &mut TchTensor,
        h: &AdamWStep<S>,
    ) {
        let f = |s: S| s.as_f64();
        let (b1, b2) = (f(h.beta1), f(h.beta2));
        Self::axpby(S::of(1.0 - b1), g, h.beta1, m);
        let _ = v.0.g_mul_scalar_(b2);
        let _ = v.0.g_add_(&(g.0.square() * (1.0 - b2)));
        let denom = (&v.0 / f(h.bias2)).sqrt() + f(h.eps);
        let upd = (&m.0 / f(h.bias1)) / denom;
        let decay = 1.0 - f(h.lr) * f(h.weight_decay);
        if decay != 1.0 {
            let _ = p.0.g_mul_scalar_(decay);
        }
        let _ = p.0.g_sub_(&(upd * f(h.lr)));
    }

    /// libtorch's SVD (LAPACK `gesdd` on the CPU, cuSOLVER on CUDA) of
    /// the matrix in f64.
    fn spectral_norms(x: &TchTensor) -> Option<(f64, f64)> {
        if x.0.dim() != 2 || x.0.numel() == 0 {
            return None;
        }
        let (_, s, _) = x.0.to_kind(Kind::Double).svd(true, false);
        Some((
            s.max().double_value(&[]),
            s.sum(Kind::Double).double_value(&[]),
        ))
    }

    fn copy_to_slice(x: &TchTensor, out: &mut [S]) {
        let n = x.0.numel();
        x.0.to_device(Device::Cpu)
            .to_kind(S::KIND)
            .contiguous()
            .copy_data(out, n);
    }

    fn copy_from_slice(src: &[S], out: &mut TchTensor) {
        let t = Tensor::from_slice(src).view(out.0.size().as_slice());
        out.0.copy_(&t);
    }
}

/// Euclidean norms along dimension `dim` of a matrix (0: of columns, 1: of
/// rows), computed in f64, into `out`.
fn norms_along<S: TchScalar>(x: &Tensor, dim: i64, out: &mut [S]) {
    if out.is_empty() {
        return;
    }
    if x.numel() == 0 {
        out.fill(S::zero());
        return;
    }
    let d = x.to_kind(Kind::Double);
    // Scale per slice by its largest magnitude: overflow-safe in f64 too.
    let amax = d.abs().amax([dim], true);
    let safe = amax.where_scalarother(&amax.gt(0.0), 1.0);
    let n = (d / &safe)
        .square()
        .sum_dim_intlist(Some([dim].as_slice()), false, Kind::Double)
        .sqrt()
        * safe.reshape([-1]);
    let v = n.to_device(Device::Cpu).to_kind(S::KIND).contiguous();
    v.copy_data(out, out.len());
}

/// libtorch tensors offer no bf16 polar factor through this backend yet
/// (a group asking for one is refused when the optimizer is built); the
/// rounding is libtorch's own conversion to `BFloat16` and back.
impl<S: TchScalar> lmo_core::Bf16Storage for Tch<S> {
    type Bf16 = Tch<S>;
    const OFFERS_BF16: bool = false;
    fn to_bf16(src: &TchTensor, dst: &mut TchTensor) {
        let r = src.0.to_kind(Kind::BFloat16).to_kind(dst.0.kind());
        dst.0.copy_(&r);
    }
}
