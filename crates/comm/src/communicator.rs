//! The [`Communicator`] trait: the collectives an optimizer step uses.

use crate::element::{Element, Reduce};
use crate::error::{CommError, arg};

/// A reduction of [`Communicator::all_reduce`] and
/// [`Communicator::reduce_scatter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// Elementwise sum.
    Sum,
    /// Elementwise maximum (with NaN inputs the result is the transport's:
    /// MPI does not define it; callers check finiteness first).
    Max,
}

/// A group of `size()` processes, this one being `rank()`, and the
/// collectives over them (MPI 4.1, chapter 6). Every rank must make the
/// same calls in the same order with matching sizes.
///
/// Implementations provide the required methods: the byte moves
/// (all-gather, variable all-gather, broadcast), the f32 and f64
/// reductions, and the barrier, called with arguments the provided typed
/// methods have checked ([`check_gather`], [`check_gather_var`],
/// [`check_root`], [`check_scatter`]; implementations re-check them, as
/// the required methods are public too). The typed methods take any
/// [`Element`] (moves) or [`Reduce`] (reductions).
pub trait Communicator {
    /// This process's rank, `0 ≤ rank < size`.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn size(&self) -> usize;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<(), CommError>;
    /// `recv = send_0 ‖ send_1 ‖ … ‖ send_{size−1}` (equal lengths).
    fn all_gather_bytes(&self, send: &[u8], recv: &mut [u8]) -> Result<(), CommError>;
    /// `recv = send_0 ‖ … ‖ send_{size−1}` where rank r sends `counts[r]`
    /// bytes.
    fn all_gather_var_bytes(
        &self,
        send: &[u8],
        counts: &[usize],
        recv: &mut [u8],
    ) -> Result<(), CommError>;
    /// Every rank's `buf` becomes rank `root`'s.
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<(), CommError>;
    /// `buf ← op_r buf_r` elementwise over the ranks, f32.
    fn all_reduce_f32(&self, buf: &mut [f32], op: ReduceOp) -> Result<(), CommError>;
    /// `buf ← op_r buf_r` elementwise over the ranks, f64.
    fn all_reduce_f64(&self, buf: &mut [f64], op: ReduceOp) -> Result<(), CommError>;
    /// On rank `root`, `buf ← op_r buf_r` elementwise over the ranks;
    /// elsewhere `buf` is left as it is. f32.
    fn reduce_f32(&self, buf: &mut [f32], root: usize, op: ReduceOp) -> Result<(), CommError>;
    /// As [`Communicator::reduce_f32`], f64.
    fn reduce_f64(&self, buf: &mut [f64], root: usize, op: ReduceOp) -> Result<(), CommError>;
    /// Rank r receives block r (of `recv.len()` elements) of `op_r send_r`,
    /// f32.
    fn reduce_scatter_f32(
        &self,
        send: &[f32],
        recv: &mut [f32],
        op: ReduceOp,
    ) -> Result<(), CommError>;
    /// Rank r receives block r of `op_r send_r`, f64.
    fn reduce_scatter_f64(
        &self,
        send: &[f64],
        recv: &mut [f64],
        op: ReduceOp,
    ) -> Result<(), CommError>;

    /// `recv = send_0 ‖ … ‖ send_{size−1}`, every rank sending
    /// `send.len()` elements; `recv.len()` must be `size·send.len()`.
    fn all_gather<T: Element>(&self, send: &[T], recv: &mut [T]) -> Result<(), CommError>
    where
        Self: Sized,
    {
        check_gather(self.size(), send.len(), recv.len())?;
        self.all_gather_bytes(bytemuck::cast_slice(send), bytemuck::cast_slice_mut(recv))
    }

    /// `recv = send_0 ‖ … ‖ send_{size−1}` where rank r sends `counts[r]`
    /// elements (`counts` the same on every rank, one per rank; `send.len()
    /// = counts[rank]`, `recv.len() = Σ counts`).
    fn all_gather_var<T: Element>(
        &self,
        send: &[T],
        counts: &[usize],
        recv: &mut [T],
    ) -> Result<(), CommError>
    where
        Self: Sized,
    {
        check_gather_var(self.size(), self.rank(), send.len(), counts, recv.len())?;
        let sz = core::mem::size_of::<T>();
        let bytes: Vec<usize> = counts.iter().map(|c| c * sz).collect();
        self.all_gather_var_bytes(
            bytemuck::cast_slice(send),
            &bytes,
            bytemuck::cast_slice_mut(recv),
        )
    }

    /// Every rank's `buf` becomes rank `root`'s (same length everywhere).
    fn broadcast<T: Element>(&self, buf: &mut [T], root: usize) -> Result<(), CommError>
    where
        Self: Sized,
    {
        check_root(self.size(), root)?;
        self.broadcast_bytes(bytemuck::cast_slice_mut(buf), root)
    }

    /// `buf ← op over ranks of buf`, elementwise (bf16 through f32).
    fn all_reduce<T: Reduce>(&self, buf: &mut [T], op: ReduceOp) -> Result<(), CommError>
    where
        Self: Sized,
    {
        T::all_reduce(self, buf, op)
    }

    /// On rank `root`, `buf ← op over ranks of buf` (bf16 through f32);
    /// the other ranks' `buf` is left as it is.
    fn reduce<T: Reduce>(&self, buf: &mut [T], root: usize, op: ReduceOp) -> Result<(), CommError>
    where
        Self: Sized,
    {
        check_root(self.size(), root)?;
        T::reduce(self, buf, root, op)
    }

    /// Rank r receives block r of `op over ranks of send`:
    /// `send.len() = size·recv.len()`.
    fn reduce_scatter<T: Reduce>(
        &self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
    ) -> Result<(), CommError>
    where
        Self: Sized,
    {
        check_scatter(self.size(), send.len(), recv.len())?;
        T::reduce_scatter(self, send, recv, op)
    }
}

/// An all-gather's lengths: `recv = size·send`.
pub fn check_gather(size: usize, send: usize, recv: usize) -> Result<(), CommError> {
    if send.checked_mul(size) != Some(recv) {
        return Err(arg(format!(
            "all-gather of {send} per rank over {size} ranks into {recv}"
        )));
    }
    Ok(())
}

/// A variable all-gather's counts: one per rank, `send = counts[rank]`,
/// `recv = Σ counts`.
pub fn check_gather_var(
    size: usize,
    rank: usize,
    send: usize,
    counts: &[usize],
    recv: usize,
) -> Result<(), CommError> {
    if counts.len() != size {
        return Err(arg(format!("{} counts for {size} ranks", counts.len())));
    }
    match counts.get(rank) {
        Some(&c) if c == send => {}
        Some(&c) => {
            return Err(arg(format!("rank {rank} sends {send}, its count is {c}")));
        }
        None => return Err(arg(format!("rank {rank} of {size} ranks"))),
    }
    let total = counts.iter().try_fold(0usize, |a, &c| a.checked_add(c));
    if total != Some(recv) {
        return Err(arg(format!(
            "counts sum to {total:?}, receive buffer holds {recv}"
        )));
    }
    Ok(())
}

/// A root rank: `root < size`.
pub fn check_root(size: usize, root: usize) -> Result<(), CommError> {
    if root >= size {
        return Err(arg(format!("root {root} of {size} ranks")));
    }
    Ok(())
}

/// A reduce-scatter's lengths: `send = size·recv`.
pub fn check_scatter(size: usize, send: usize, recv: usize) -> Result<(), CommError> {
    if recv.checked_mul(size) != Some(send) {
        return Err(arg(format!(
            "reduce-scatter of {send} over {size} ranks into {recv} each"
        )));
    }
    Ok(())
}

/// A borrowed communicator is one: several optimizers (or an optimizer and
/// the training loop) can share one world. It forwards the required
/// methods; the typed ones are the trait's own (an implementation that
/// overrides a typed method is reached through `&C` by its required
/// methods only).
impl<C: Communicator + ?Sized> Communicator for &C {
    fn rank(&self) -> usize {
        (**self).rank()
    }
    fn size(&self) -> usize {
        (**self).size()
    }
    fn barrier(&self) -> Result<(), CommError> {
        (**self).barrier()
    }
    fn all_gather_bytes(&self, send: &[u8], recv: &mut [u8]) -> Result<(), CommError> {
        (**self).all_gather_bytes(send, recv)
    }
    fn all_gather_var_bytes(
        &self,
        send: &[u8],
        counts: &[usize],
        recv: &mut [u8],
    ) -> Result<(), CommError> {
        (**self).all_gather_var_bytes(send, counts, recv)
    }
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<(), CommError> {
        (**self).broadcast_bytes(buf, root)
    }
    fn all_reduce_f32(&self, buf: &mut [f32], op: ReduceOp) -> Result<(), CommError> {
        (**self).all_reduce_f32(buf, op)
    }
    fn all_reduce_f64(&self, buf: &mut [f64], op: ReduceOp) -> Result<(), CommError> {
        (**self).all_reduce_f64(buf, op)
    }
    fn reduce_f32(&self, buf: &mut [f32], root: usize, op: ReduceOp) -> Result<(), CommError> {
        (**self).reduce_f32(buf, root, op)
    }
    fn reduce_f64(&self, buf: &mut [f64], root: usize, op: ReduceOp) -> Result<(), CommError> {
        (**self).reduce_f64(buf, root, op)
    }
    fn reduce_scatter_f32(
        &self,
        send: &[f32],
        recv: &mut [f32],
        op: ReduceOp,
    ) -> Result<(), CommError> {
        (**self).reduce_scatter_f32(send, recv, op)
    }
    fn reduce_scatter_f64(
        &self,
        send: &[f64],
        recv: &mut [f64],
        op: ReduceOp,
    ) -> Result<(), CommError> {
        (**self).reduce_scatter_f64(send, recv, op)
    }
}
