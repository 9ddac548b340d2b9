//! A communicator that counts what passes through it.

use core::cell::Cell;

use crate::{CommError, Communicator, ReduceOp};

/// The collectives and payload bytes of a [`Counted`] communicator so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Collective calls (barriers included).
    pub calls: u64,
    /// Payload bytes: the buffer of an all-reduce, reduce or broadcast, the
    /// receive buffer of an all-gather, the send buffer of a
    /// reduce-scatter.
    pub bytes: u64,
}

/// Wraps a communicator and counts its collective calls and payload bytes
/// ([`Traffic`]), for benchmarks and for checking a step's communication
/// against its model. Costs two counter updates per call. It counts every
/// call of a required method that reaches it; the typed methods check
/// their arguments first, so a refused typed call is not counted.
pub struct Counted<C> {
    inner: C,
    calls: Cell<u64>,
    bytes: Cell<u64>,
}

impl<C: Communicator> Counted<C> {
    /// Counts the collectives of `inner`.
    pub fn new(inner: C) -> Self {
        Counted {
            inner,
            calls: Cell::new(0),
            bytes: Cell::new(0),
        }
    }

    /// What passed so far.
    pub fn traffic(&self) -> Traffic {
        Traffic {
            calls: self.calls.get(),
            bytes: self.bytes.get(),
        }
    }

    /// The wrapped communicator.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    fn count(&self, bytes: usize) {
        self.calls.set(self.calls.get() + 1);
        self.bytes.set(self.bytes.get() + bytes as u64);
    }
}

impl<C: Communicator> Communicator for Counted<C> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn barrier(&self) -> Result<(), CommError> {
        self.count(0);
        self.inner.barrier()
    }
    fn all_gather_bytes(&self, send: &[u8], recv: &mut [u8]) -> Result<(), CommError> {
        self.count(recv.len());
        self.inner.all_gather_bytes(send, recv)
    }
    fn all_gather_var_bytes(
        &self,
        send: &[u8],
        counts: &[usize],
        recv: &mut [u8],
    ) -> Result<(), CommError> {
        self.count(recv.len());
        self.inner.all_gather_var_bytes(send, counts, recv)
    }
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<(), CommError> {
        self.count(buf.len());
        self.inner.broadcast_bytes(buf, root)
    }
    fn all_reduce_f32(&self, buf: &mut [f32], op: ReduceOp) -> Result<(), CommError> {
        self.count(4 * buf.len());
        self.inner.all_reduce_f32(buf, op)
    }
    fn all_reduce_f64(&self, buf: &mut [f64], op: ReduceOp) -> Result<(), CommError> {
        self.count(8 * buf.len());
        self.inner.all_reduce_f64(buf, op)
    }
    fn reduce_f32(&self, buf: &mut [f32], root: usize, op: ReduceOp) -> Result<(), CommError> {
        self.count(4 * buf.len());
        self.inner.reduce_f32(buf, root, op)
    }
    fn reduce_f64(&self, buf: &mut [f64], root: usize, op: ReduceOp) -> Result<(), CommError> {
        self.count(8 * buf.len());
        self.inner.reduce_f64(buf, root, op)
    }
    fn reduce_scatter_f32(
        &self,
        send: &[f32],
        recv: &mut [f32],
        op: ReduceOp,
    ) -> Result<(), CommError> {
        self.count(4 * send.len());
        self.inner.reduce_scatter_f32(send, recv, op)
    }
    fn reduce_scatter_f64(
        &self,
        send: &[f64],
        recv: &mut [f64],
        op: ReduceOp,
    ) -> Result<(), CommError> {
        self.count(8 * send.len());
        self.inner.reduce_scatter_f64(send, recv, op)
    }
}
