//! The world of one process.

use crate::communicator::{check_gather, check_gather_var, check_root, check_scatter};
use crate::{CommError, Communicator, ReduceOp};

/// One rank, no communication: every collective is the identity (or a
/// copy). The default communicator; costs nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SingleProcess;

fn copy<T: Copy>(send: &[T], recv: &mut [T]) {
    recv.copy_from_slice(send);
}

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn barrier(&self) -> Result<(), CommError> {
        Ok(())
    }
    fn all_gather_bytes(&self, send: &[u8], recv: &mut [u8]) -> Result<(), CommError> {
        check_gather(1, send.len(), recv.len())?;
        copy(send, recv);
        Ok(())
    }
    fn all_gather_var_bytes(
        &self,
        send: &[u8],
        counts: &[usize],
        recv: &mut [u8],
    ) -> Result<(), CommError> {
        check_gather_var(1, 0, send.len(), counts, recv.len())?;
        copy(send, recv);
        Ok(())
    }
    fn broadcast_bytes(&self, _buf: &mut [u8], root: usize) -> Result<(), CommError> {
        check_root(1, root)
    }
    fn all_reduce_f32(&self, _buf: &mut [f32], _op: ReduceOp) -> Result<(), CommError> {
        Ok(())
    }
    fn all_reduce_f64(&self, _buf: &mut [f64], _op: ReduceOp) -> Result<(), CommError> {
        Ok(())
    }
    fn reduce_f32(&self, _buf: &mut [f32], root: usize, _op: ReduceOp) -> Result<(), CommError> {
        check_root(1, root)
    }
    fn reduce_f64(&self, _buf: &mut [f64], root: usize, _op: ReduceOp) -> Result<(), CommError> {
        check_root(1, root)
    }
    fn reduce_scatter_f32(
        &self,
        send: &[f32],
        recv: &mut [f32],
        _op: ReduceOp,
    ) -> Result<(), CommError> {
        check_scatter(1, send.len(), recv.len())?;
        copy(send, recv);
        Ok(())
    }
    fn reduce_scatter_f64(
        &self,
        send: &[f64],
        recv: &mut [f64],
        _op: ReduceOp,
    ) -> Result<(), CommError> {
        check_scatter(1, send.len(), recv.len())?;
        copy(send, recv);
        Ok(())
    }
}
