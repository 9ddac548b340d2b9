//! [`Cuda`]: lmo-core's `Backend` on [`CudaTensor`]s.

use half::bf16;
use lmo_core::{AdamWStep, Backend, Shape, Trans};

use crate::cmd::{self, elem_size};
use crate::lower;
use crate::tensor::*;

/// The lmo-core backend on [`CudaTensor`]s (scalars f32).
pub struct Cuda;

pub(crate) fn ok<T, E: core::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("CUDA backend, {what}: {e:?}"))
}

pub(crate) fn same_dtype(what: &str, ts: &[&CudaTensor]) {
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
