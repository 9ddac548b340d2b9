//! The device-free halves of the step primitives ([`super::step`]) and of
//! the [`super::Cuda`] backend's operations: each checks shapes and turns
//! its operands into [`Cmd`]s, which [`super::CudaDevice`] issues on a
//! stream or (an emulated device) runs on the CPU kernel emulator.

use lmo_core::{AdamWStep, LmoError, Trans};

use super::cmd::{
    Arg, Cmd, Desc, Launch, Sink, StridedGemm, Syrk, grid_batched, grid_tiles, grid1,
};
use super::{CudaError, UpdateCoeffs};

fn input(msg: &'static str) -> CudaError {
    CudaError::Input(LmoError::InvalidHyperParameter(msg))
}

fn count_mismatch(expected: usize, found: usize) -> CudaError {
    CudaError::Input(LmoError::ShapeMismatch {
        expected: (expected, 1),
        found: (found, 1),
    })
}

fn same_dtype(a: &Desc, b: &Desc) -> Result<(), CudaError> {
    if a.dtype != b.dtype {
        return Err(input("tensors of different dtypes"));
    }
    Ok(())
}

/// See [`super::step::momentum`].
pub(crate) fn momentum(
    g: Desc,
    m: Desc,
    j: usize,
    nest: Option<Desc>,
    beta: f32,
    sink: &mut Sink,
) -> Result<(), CudaError> {
    same_dtype(&g, &m)?;
    let (mp, per) = m
        .member(j)
        .ok_or_else(|| input("stack index out of range"))?;
    if g.numel() != per {
        return Err(count_mismatch(per, g.numel()));
    }
    let (up, flag) = match nest {
        Some(u) => {
            same_dtype(&g, &u)?;
            let (up, un) = u
                .member(j)
                .ok_or_else(|| input("stack index out of range"))?;
            if un != per {
                return Err(count_mismatch(per, un));
            }
            (up, 1)
        }
        None => (mp, 0),
    };
    if per == 0 {
        return Ok(());
    }
    use Arg::*;
    let args = [
        Ptr(g.ptr),
        Ptr(mp),
        Ptr(up),
        F32(beta),
        I32(flag),
        I64(per as i64),
    ];
    sink(&Cmd::Launch(Launch::new(
        "momentum",
        g.dtype,
        grid1(per),
        &args,
    )))
}

/// See [`super::step::batch_dot`]; `out` is `(address, length)` of f64s.
pub(crate) fn batch_dot(
    x: Desc,
    y: Desc,
    out: (u64, usize),
    sink: &mut Sink,
) -> Result<(), CudaError> {
    same_dtype(&x, &y)?;
    if x.shape != y.shape {
        return Err(CudaError::Input(LmoError::ShapeMismatch {
            expected: (x.numel(), 1),
            found: (y.numel(), 1),
        }));
    }
    let batch = x.batch();
    if out.1 < batch || batch > 65_535 {
        return Err(input("batch_dot: output too short or batch above 65535"));
    }
    sink(&Cmd::Zero {
        ptr: out.0,
        bytes: batch * 8,
    })?;
    let per = x.numel() / batch.max(1);
    if per == 0 {
        return Ok(());
    }
    use Arg::*;
    let args = [Ptr(x.ptr), Ptr(y.ptr), Ptr(out.0), I64(per as i64)];
    sink(&Cmd::Launch(Launch::new(
        "batch_dot",
        x.dtype,
        grid_batched(per, batch),
        &args,
    )))
}

/// See [`super::step::lmo_update`].
pub(crate) fn lmo_update(
    p: Desc,
    o: Desc,
    j: usize,
    c: &UpdateCoeffs,
    sink: &mut Sink,
) -> Result<(), CudaError> {
    same_dtype(&p, &o)?;
    let (opp, per) = o
        .member(j)
        .ok_or_else(|| input("stack index out of range"))?;
    if p.numel() != per {
        return Err(count_mismatch(per, p.numel()));
    }
    if !(c.t.is_finite() && c.s.is_finite() && c.weight_decay.is_finite())
        || c.constrained.is_some_and(|r| !r.is_finite())
    {
        return Err(input("lmo_update: non-finite coefficient"));
    }
    if per == 0 {
        return Ok(());
    }
    let (rho, constrained) = match c.constrained {
        Some(r) => (r, 1),
        None => (0.0, 0),
    };
    use Arg::*;
    let args = [
        Ptr(p.ptr),
        Ptr(opp),
        I64(per as i64),
        F32(c.t),
        F32(c.s),
        F32(c.weight_decay),
        I32(constrained),
        F32(rho),
    ];
    sink(&Cmd::Launch(Launch::new(
        "lmo_update",
        p.dtype,
        grid1(per),
        &args,
    )))
}

/// The counting half of [`super::step::count_nonfinite`]: adds every
/// tensor's NaN/Inf count to the f64 counter at `acc` (zeroed by the
/// caller, as the scratch accumulators are).
pub(crate) fn count_nonfinite(
    ts: impl IntoIterator<Item = Desc>,
    acc: u64,
    sink: &mut Sink,
) -> Result<(), CudaError> {
    for t in ts {
        let n = t.numel();
        if n == 0 {
            continue;
        }
        let args = [Arg::Ptr(t.ptr), Arg::Ptr(acc), Arg::I64(n as i64)];
        sink(&Cmd::Launch(Launch::new(
            "nonfinite",
            t.dtype,
            grid1(n),
            &args,
        )))?;
    }
    Ok(())
}

/// See [`super::step::normalize`]; `scratch` is the address of one f64.
pub(crate) fn normalize(
    u: Desc,
    out: Desc,
    scratch: u64,
    sink: &mut Sink,
) -> Result<(), CudaError> {
    same_dtype(&u, &out)?;
    if u.numel() != out.numel() {
        return Err(count_mismatch(u.numel(), out.numel()));
    }
    sink(&Cmd::Zero {
        ptr: scratch,
        bytes: 8,
    })?;
    let per = u.numel();
    if per == 0 {
        return Ok(());
    }
    use Arg::*;
    let shape = grid_batched(per, 1);
    let n = I64(per as i64);
    sink(&Cmd::Launch(Launch::new(
        "batch_sumsq",
        u.dtype,
        shape,
        &[Ptr(u.ptr), Ptr(scratch), n],
    )))?;
    let args = [
        Ptr(u.ptr),
        Ptr(scratch),
        Ptr(out.ptr),
        n,
        F32(0.0),
        F32(0.0),
        I32(1),
    ];
    sink(&Cmd::Launch(Launch::new(
        "batch_normalize",
        u.dtype,
        shape,
        &args,
    )))
}

/// `out = a·f(x)` for the elementwise kernels `scale` (`f(x) = x`) and
/// `sign` (`f = sign`, 0 at 0).
pub(crate) fn unary(
    kernel: &'static str,
    a: f32,
    x: Desc,
    out: Desc,
    sink: &mut Sink,
) -> Result<(), CudaError> {
    same_dtype(&x, &out)?;
    if x.numel() != out.numel() {
        return Err(count_mismatch(x.numel(), out.numel()));
    }
    let n = x.numel();
    if n == 0 {
        return Ok(());
    }
    let args = [
        Arg::F32(a),
        Arg::Ptr(x.ptr),
        Arg::Ptr(out.ptr),
        Arg::I64(n as i64),
    ];
    sink(&Cmd::Launch(Launch::new(kernel, x.dtype, grid1(n), &args)))
}

/// One fused AdamW update (lmo-core's `Backend::adamw`, SPEC §3's
/// baseline): the kernel `adamw`.
pub(crate) fn adamw(
    p: Desc,
    g: Desc,
    m: Desc,
    v: Desc,
    h: &AdamWStep<f32>,
    sink: &mut Sink,
) -> Result<(), CudaError> {
    for t in [&p, &m, &v] {
        same_dtype(&g, t)?;
        if t.numel() != g.numel() {
            return Err(count_mismatch(g.numel(), t.numel()));
        }
    }
    let n = g.numel();
    if n == 0 {
        return Ok(());
    }
    use Arg::*;
    let args = [
        Ptr(p.ptr),
        Ptr(g.ptr),
        Ptr(m.ptr),
        Ptr(v.ptr),
        F32(h.lr),
        F32(h.beta1),
        F32(h.beta2),
        F32(h.eps),
        F32(h.weight_decay),
        F32(h.bias1),
        F32(h.bias2),
        I64(n as i64),
    ];
    sink(&Cmd::Launch(Launch::new("adamw", g.dtype, grid1(n), &args)))
}

/// The scalar reductions `dot(x, y, acc, n)`, `sumsq`, `sumabs` and
/// `nonfinite(x, acc, n)` into the f64 at `acc` (zeroed by the caller).
pub(crate) fn reduce(kernel: &'static str, x: Desc, y: Option<Desc>, acc: u64) -> Launch {
    let n = Arg::I64(x.numel() as i64);
    let shape = grid1(x.numel());
    match y {
        Some(y) => Launch::new(
            kernel,
            x.dtype,
            shape,
            &[Arg::Ptr(x.ptr), Arg::Ptr(y.ptr), Arg::Ptr(acc), n],
        ),
        None => Launch::new(kernel, x.dtype, shape, &[Arg::Ptr(x.ptr), Arg::Ptr(acc), n]),
    }
}

/// Squared norms of the rows (`row_norms`, one block per row) or columns
/// (`col_norms`, one thread per column) into the f64s at `acc` (zeroed).
pub(crate) fn line_norms(x: Desc, acc: u64, rows: bool) -> Launch {
    let (m, n) = x.shape.as_pair();
    let args = [
        Arg::Ptr(x.ptr),
        Arg::Ptr(acc),
        Arg::I64(m as i64),
        Arg::I64(n as i64),
    ];
    if rows {
        let shape = ([m.clamp(1, 65_535) as u32, 1, 1], [256, 1, 1]);
        Launch::new("row_norms", x.dtype, shape, &args)
    } else {
        Launch::new("col_norms", x.dtype, grid1(n), &args)
    }
}

/// `out = s ⊙ x` along rows (`scale_rows`) or columns (`scale_cols`), the
/// f32 scales at `scales`.
pub(crate) fn scale_lines(x: Desc, scales: u64, out: Desc, rows: bool) -> Launch {
    let (m, n) = x.shape.as_pair();
    let name = if rows { "scale_rows" } else { "scale_cols" };
    let args = [
        Arg::Ptr(x.ptr),
        Arg::Ptr(scales),
        Arg::Ptr(out.ptr),
        Arg::I64(m as i64),
        Arg::I64(n as i64),
    ];
    Launch::new(name, x.dtype, grid1(m * n), &args)
}

/// `argmax_abs`: `amax` writes the bit pattern of `max |x|` to the u32 at
/// `bits` (zeroed), then `first_index` the first index holding it to the
/// u64 at `index` (set to `u64::MAX`).
pub(crate) fn argmax_abs(x: Desc, bits: u64, index: u64, sink: &mut Sink) -> Result<(), CudaError> {
    let n = x.numel();
    let shape = grid1(n);
    let nn = Arg::I64(n as i64);
    sink(&Cmd::Launch(Launch::new(
        "amax",
        x.dtype,
        shape,
        &[Arg::Ptr(x.ptr), Arg::Ptr(bits), nn],
    )))?;
    let args = [Arg::Ptr(x.ptr), Arg::Ptr(bits), Arg::Ptr(index), nn];
    sink(&Cmd::Launch(Launch::new(
        "first_index",
        x.dtype,
        shape,
        &args,
    )))
}

/// `x = v` everywhere.
pub(crate) fn fill(x: Desc, v: f32, sink: &mut Sink) -> Result<(), CudaError> {
    let n = x.numel();
    if n == 0 {
        return Ok(());
    }
    let args = [Arg::Ptr(x.ptr), Arg::F32(v), Arg::I64(n as i64)];
    sink(&Cmd::Launch(Launch::new("fill", x.dtype, grid1(n), &args)))
}

/// `y = a·x + b·y` (`b = 0` does not read `y`).
pub(crate) fn axpby(a: f32, x: Desc, b: f32, y: Desc, sink: &mut Sink) -> Result<(), CudaError> {
    if x.numel() != y.numel() {
        return Err(count_mismatch(y.numel(), x.numel()));
    }
    let n = x.numel();
    if n == 0 {
        return Ok(());
    }
    use Arg::*;
    let args = [F32(a), Ptr(x.ptr), F32(b), Ptr(y.ptr), I64(n as i64)];
    sink(&Cmd::Launch(Launch::new("axpby", x.dtype, grid1(n), &args)))
}

/// Row-major `C = α·op(A)·op(B) + β·C` as one cuBLAS product. Row-major
/// `C` (m×n) read column-major is `Cᵀ`, and `Cᵀ = op(B)ᵀ·op(A)ᵀ`: the
/// operands swap, the flags stay (`A`'s storage read column-major is `Aᵀ`
/// with leading dimension its column count). Shapes are the caller's
/// (lmo-core's `Backend::gemm` contract); `k ≥ 1`.
pub(crate) fn gemm(
    alpha: f32,
    a: Desc,
    ta: Trans,
    b: Desc,
    tb: Trans,
    beta: f32,
    c: Desc,
) -> StridedGemm {
    let (ar, ac) = a.shape.as_pair();
    let (_, bc) = b.shape.as_pair();
    let (m, n) = c.shape.as_pair();
    let k = if ta == Trans::No { ac } else { ar };
    StridedGemm {
        ta: tb == Trans::Yes,
        tb: ta == Trans::Yes,
        m: n,
        n: m,
        k,
        alpha,
        // One product: the batch strides are the operands' sizes (any
        // value is valid for a batch of 1; these are the conventional ones).
        a: (b.ptr, bc.max(1), b.numel()),
        b: (a.ptr, ac.max(1), a.numel()),
        beta,
        c: (c.ptr, n.max(1), c.numel()),
        batch: 1,
        dtype: c.dtype,
    }
}

/// Row-major `C = α·X·Xᵀ + β·C` (f32, `X` k×l): row-major X is
/// column-major `Xᵀ` (l×k, ld l), so `X·Xᵀ = (Xᵀ)ᵀ·Xᵀ` is `Ssyrk` with
/// `trans = T`; its column-major lower triangle is the row-major upper
/// one, which the `mirror` kernel copies below the diagonal.
pub(crate) fn syrk(
    alpha: f32,
    x: Desc,
    beta: f32,
    c: Desc,
    sink: &mut Sink,
) -> Result<(), CudaError> {
    let (k, l) = x.shape.as_pair();
    sink(&Cmd::Syrk(Syrk {
        n: k,
        k: l,
        alpha,
        a: (x.ptr, l.max(1)),
        beta,
        c: (c.ptr, k.max(1)),
    }))?;
    let args = [Arg::Ptr(c.ptr), Arg::I64(k as i64)];
    sink(&Cmd::Launch(Launch::new(
        "mirror",
        c.dtype,
        grid1(k * k),
        &args,
    )))
}

/// `out = a·xᵀ` (`x` m×n, `out` n×m): 32 × 32 tiles through shared memory.
pub(crate) fn transpose(a: f32, x: Desc, out: Desc, sink: &mut Sink) -> Result<(), CudaError> {
    let (m, n) = x.shape.as_pair();
    if m * n == 0 {
        return Ok(());
    }
    if out.numel() != m * n {
        return Err(count_mismatch(m * n, out.numel()));
    }
    use Arg::*;
    let args = [
        F32(a),
        Ptr(x.ptr),
        Ptr(out.ptr),
        I64(m as i64),
        I64(n as i64),
    ];
    sink(&Cmd::Launch(Launch::new(
        "transpose",
        x.dtype,
        grid_tiles(m, n, 1),
        &args,
    )))
}
