//! The device-free halves of the step primitives ([`super::step`]) and of
//! the elementwise kernels the device step uses: each checks shapes and
//! turns its operands into [`Cmd`]s. The CUDA wrappers issue them on a
//! stream; the emulator (feature `cuda-emu`) runs them over host memory.

use lmo_core::{AdamWStep, LmoError};

use super::cmd::{Arg, Cmd, Desc, Launch, Sink, grid_batched, grid1};
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
    if x.dims != y.dims {
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

/// See [`super::step::lmo_update`]; `inner` is `(address, length)` of f64s.
pub(crate) fn lmo_update(
    p: Desc,
    o: Desc,
    j: usize,
    inner: (u64, usize),
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
    if j >= inner.1 {
        return Err(input("lmo_update: no inner product for this index"));
    }
    if per == 0 {
        return Ok(());
    }
    let (l0, l1, adaptive) = match c.adaptive {
        Some((l0, l1)) => (l0, l1, 1),
        None => (0.0, 0.0, 0),
    };
    let (rho, constrained) = match c.constrained {
        Some(r) => (r, 1),
        None => (0.0, 0),
    };
    use Arg::*;
    let args = [
        Ptr(p.ptr),
        Ptr(opp),
        Ptr(inner.0 + 8 * j as u64),
        I64(per as i64),
        F32(c.t),
        F32(c.mult),
        F32(l0),
        F32(l1),
        I32(adaptive),
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

/// The counting half of [`super::step::count_nonfinite`]: zeroes the f64
/// counter at `acc` and adds every tensor's NaN/Inf count to it.
pub(crate) fn count_nonfinite<'a>(
    ts: impl IntoIterator<Item = Desc<'a>>,
    acc: u64,
    sink: &mut Sink,
) -> Result<(), CudaError> {
    sink(&Cmd::Zero { ptr: acc, bytes: 8 })?;
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
