//! Many same-config polar factors at once, in parallel.

use std::sync::Mutex;

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
pub struct BatchPolar<B: Backend> {
    workers: Vec<Mutex<NewtonSchulz<B>>>,
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
        Ok(Self { workers })
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
                let w = rayon::current_thread_index().unwrap_or(0) % self.workers.len();
                let mut ns = self.workers[w]
                    .lock()
                    .expect("worker poisoned by an earlier panic");
                ns.run(g, o)
            })
    }
}
