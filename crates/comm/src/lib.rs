//! The communicator seam of the LMO toolkit: what a data-parallel or
//! sharded optimizer step needs from a transport, and nothing more.
//!
//! - [`Communicator`]: rank, world size, all-reduce (sum, max),
//!   all-gather (equal and variable counts), reduce-scatter, broadcast and
//!   barrier over buffers of any [`Element`] (`f32`, `f64`, `u64`,
//!   [`half::bf16`]). Implementations provide the byte-level moves and the
//!   f32/f64 reductions; the typed calls, their argument checks and the
//!   bf16 reductions (through f32) are written once here.
//! - [`SingleProcess`]: the world of one rank (the default, no
//!   communication at all).
//! - [`Counted`]: any communicator, counting its calls and payload bytes
//!   ([`Traffic`]) for benchmarks and communication models.
//! - `MpiComm` (feature `mpi`): MPI through the `mpi` crate (rsmpi) over
//!   the system's library (Open MPI 4.1 on Debian: `openmpi-bin
//!   libopenmpi-dev libclang-dev`); launch with `mpirun -np N`.
//! - `NcclComm` (feature `nccl`): NCCL through cudarc, one GPU per rank:
//!   collectives on device buffers in the order of a CUDA stream, and the
//!   host-buffer [`Communicator`] through staging buffers; the ranks meet
//!   through an id shared over another communicator (MPI) or a file.
//!
//! Every rank must make the same collective calls in the same order with
//! matching sizes (MPI's rule). Argument errors are found before anything
//! is sent ([`CommError::Argument`]) but only on the rank that made them:
//! callers that cannot guarantee matching calls agree on a status first
//! (as `gluon_optim::ShardedOptimizer` does with one all-reduce per step).
//!
//! Reference: MPI Forum, "MPI: A Message-Passing Interface Standard",
//! version 4.1 (2023), chapter 6 (collective communication).

mod communicator;
mod counted;
mod element;
mod error;
#[cfg(feature = "mpi")]
mod mpi_comm;
#[cfg(feature = "nccl")]
mod nccl_comm;
mod single;

pub use communicator::{
    Communicator, ReduceOp, check_gather, check_gather_var, check_root, check_scatter,
};
pub use counted::{Counted, Traffic};
pub use element::{Element, Reduce};
pub use error::CommError;
#[cfg(feature = "mpi")]
pub use mpi_comm::MpiComm;
#[cfg(feature = "nccl")]
pub use nccl_comm::{NCCL_ID_BYTES, NcclComm, nccl_available};
pub use single::SingleProcess;
