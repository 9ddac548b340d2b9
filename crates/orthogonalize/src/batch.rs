//! Many same-config polar factors at once, in parallel.

use std::sync::{Mutex, TryLockError};

use lmo_core::{Backend, LmoError};
use rayon::prelude::*;

use crate::{NewtonSchulz, NsConfig};

/// Runs one [`NewtonSchulz`] configuration on many matrices (a model has
/// dozens), in parallel across matrices with rayon.
///
/// Each rayon worker owns one [`NewtonSchulz`] (and so one set of buffers
/// per working shape it last saw); after the first call with a given list of
/// shapes nothing is allocated when matrices of one shape are grouped
/// together. Results are identical to running the matrices one by one.
///
/// A worker is locked only with `try_lock`: while one matrix's iteration
/// waits inside a nested parallel operation (the backend's GEMM or
/// elementwise kernels on the same pool), rayon may run another matrix of
/// the batch on the same thread; that matrix finds its thread's worker
/// busy and takes another free one, or, if none is free, a fresh clone of
/// the configuration (allocating its buffers once). No lock is ever
/// waited on, so the batch cannot deadlock on itself, and a worker
/// poisoned by an earlier panic is reused (its buffers are overwritten).
pub struct BatchPolar<B: Backend> {
    workers: Vec<Mutex<NewtonSchulz<B>>>,
    proto: NewtonSchulz<B>,
}

impl<B: Backend> BatchPolar<B>
where
    B::Tensor: Send + Sync,
{
    /// One worker per thread of the current rayon pool.
    pub fn new(cfg: NsConfig) -> Result<Self, LmoError> {
        let ns = NewtonSchulz::<B>::new(cfg)?;
        let workers = (0..rayon::current_num_threads())
            .map(|_| Mutex::new(ns.clone()))
            .collect();
        Ok(Self { workers, proto: ns })
    }

    /// Writes the polar factor of `gs[i]` into `outs[i]` for every `i`.
    /// Errors: [`LmoError::ShapeMismatch`] if the lists differ in length or
    /// a pair in shape, else the first error of any matrix (those matrices'
    /// outputs are untouched; others may have been written).
    pub fn run(&self, gs: &[B::Tensor], outs: &mut [B::Tensor]) -> Result<(), LmoError> {
        if gs.len() != outs.len() {
            return Err(LmoError::ShapeMismatch {
                expected: (gs.len(), 1),
                found: (outs.len(), 1),
            });
        }
        for (g, o) in gs.iter().zip(outs.iter()) {
            B::shape(g).check_eq(&B::shape(o))?;
            B::shape(g).as_matrix()?;
        }
        gs.par_iter()
            .zip(outs.par_iter_mut())
            .try_for_each(|(g, o)| {
                let n = self.workers.len();
                let w = rayon::current_thread_index().unwrap_or(0);
                for j in 0..n {
                    match self.workers[(w + j) % n].try_lock() {
                        Ok(mut ns) => return ns.run(g, o),
                        Err(TryLockError::Poisoned(p)) => return p.into_inner().run(g, o),
                        Err(TryLockError::WouldBlock) => {}
                    }
                }
                self.proto.clone().run(g, o)
            })
    }
}
