//! The element types collectives move ([`Element`]) and reduce
//! ([`Reduce`]).

use half::bf16;

use crate::{CommError, Communicator, ReduceOp};

/// A plain-old-data element a collective can move bit for bit (all-gather,
/// broadcast): `f32`, `f64`, `u64`, [`bf16`].
pub trait Element: bytemuck::Pod + Send + Sync {}

impl Element for f32 {}
impl Element for f64 {}
impl Element for u64 {}
impl Element for bf16 {}

/// An element a collective can reduce (all-reduce, reduce-scatter): each
/// type picks the communicator's f32 or f64 reduction.
pub trait Reduce: Element {
    /// `buf ← op over ranks of buf` (see [`Communicator::all_reduce`]).
    fn all_reduce<C: Communicator + ?Sized>(
        c: &C,
        buf: &mut [Self],
        op: ReduceOp,
    ) -> Result<(), CommError>;

    /// On `root`, `buf ← op over ranks of buf` (see
    /// [`Communicator::reduce`]).
    fn reduce<C: Communicator + ?Sized>(
        c: &C,
        buf: &mut [Self],
        root: usize,
        op: ReduceOp,
    ) -> Result<(), CommError>;

    /// Rank r receives block r of `op` over ranks of `send` (see
    /// [`Communicator::reduce_scatter`]).
    fn reduce_scatter<C: Communicator + ?Sized>(
        c: &C,
        send: &[Self],
        recv: &mut [Self],
        op: ReduceOp,
    ) -> Result<(), CommError>;
}

impl Reduce for f32 {
    fn all_reduce<C: Communicator + ?Sized>(
        c: &C,
        buf: &mut [f32],
        op: ReduceOp,
    ) -> Result<(), CommError> {
        c.all_reduce_f32(buf, op)
    }
    fn reduce<C: Communicator + ?Sized>(
        c: &C,
        buf: &mut [f32],
        root: usize,
        op: ReduceOp,
    ) -> Result<(), CommError> {
        c.reduce_f32(buf, root, op)
    }
    fn reduce_scatter<C: Communicator + ?Sized>(
        c: &C,
        send: &[f32],
        recv: &mut [f32],
        op: ReduceOp,
    ) -> Result<(), CommError> {
        c.reduce_scatter_f32(send, recv, op)
    }
}

impl Reduce for f64 {
    fn all_reduce<C: Communicator + ?Sized>(
        c: &C,
        buf: &mut [f64],
        op: ReduceOp,
    ) -> Result<(), CommError> {
        c.all_reduce_f64(buf, op)
    }
    fn reduce<C: Communicator + ?Sized>(
        c: &C,
        buf: &mut [f64],
        root: usize,
        op: ReduceOp,
    ) -> Result<(), CommError> {
        c.reduce_f64(buf, root, op)
    }
    fn reduce_scatter<C: Communicator + ?Sized>(
        c: &C,
        send: &[f64],
        recv: &mut [f64],
        op: ReduceOp,
    ) -> Result<(), CommError> {
        c.reduce_scatter_f64(send, recv, op)
    }
}

/// bf16 is reduced in f32 (each partial sum rounded to f32, not to bf16;
/// one rounding to bf16 at the end), as NCCL and PyTorch's DDP do for
/// low-precision sums. Sums of 3 or more ranks may depend on the
/// transport's reduction order, as f32 sums do.
impl Reduce for bf16 {
    fn all_reduce<C: Communicator + ?Sized>(
        c: &C,
        buf: &mut [bf16],
        op: ReduceOp,
    ) -> Result<(), CommError> {
        let mut w: Vec<f32> = buf.iter().map(|x| x.to_f32()).collect();
        c.all_reduce_f32(&mut w, op)?;
        for (o, v) in buf.iter_mut().zip(w) {
            *o = bf16::from_f32(v);
        }
        Ok(())
    }
    fn reduce<C: Communicator + ?Sized>(
        c: &C,
        buf: &mut [bf16],
        root: usize,
        op: ReduceOp,
    ) -> Result<(), CommError> {
        let mut w: Vec<f32> = buf.iter().map(|x| x.to_f32()).collect();
        c.reduce_f32(&mut w, root, op)?;
        if c.rank() == root {
            for (o, v) in buf.iter_mut().zip(w) {
                *o = bf16::from_f32(v);
            }
        }
        Ok(())
    }
    fn reduce_scatter<C: Communicator + ?Sized>(
        c: &C,
        send: &[bf16],
        recv: &mut [bf16],
        op: ReduceOp,
    ) -> Result<(), CommError> {
        let w: Vec<f32> = send.iter().map(|x| x.to_f32()).collect();
        let mut r = vec![0.0f32; recv.len()];
        c.reduce_scatter_f32(&w, &mut r, op)?;
        for (o, v) in recv.iter_mut().zip(r) {
            *o = bf16::from_f32(v);
        }
        Ok(())
    }
}
