//! MPI through rsmpi (feature `mpi`).

use std::cell::RefCell;

use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::Communicator as _;
use mpi::traits::*;

use crate::communicator::{check_gather, check_gather_var, check_root, check_scatter};
use crate::error::arg;
use crate::{CommError, Communicator, ReduceOp};

/// The world communicator of an MPI job (`mpirun -np N …`), through the
/// `mpi` crate (rsmpi 0.8) over the system's MPI library.
///
/// [`MpiComm::init`] initializes MPI once per process; dropping the value
/// finalizes it. MPI's default error handler aborts the job on a transport
/// failure (a rank that dies takes the job down with a message from
/// `mpirun`), so a call returns only argument errors
/// ([`CommError::Argument`], found before anything is sent) and otherwise
/// succeeds. Broadcasts and all-reduces of any length go in chunks of 2^30
/// elements; the all-gathers and reduce-scatters refuse buffers whose
/// total exceeds MPI's `int` count (2^31 − 1 bytes or elements).
///
/// As root, Open MPI needs `OMPI_ALLOW_RUN_AS_ROOT=1
/// OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1`; `--oversubscribe` allows more ranks
/// than cores.
pub struct MpiComm {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// The send copies of the in-place reductions (reused, grown on
    /// demand).
    scratch32: RefCell<Vec<f32>>,
    scratch64: RefCell<Vec<f64>>,
    // Dropped last: finalizes MPI.
    _universe: Universe,
}

impl MpiComm {
    /// Initializes MPI and returns the world communicator. Errors: MPI was
    /// already initialized in this process.
    pub fn init() -> Result<Self, CommError> {
        let universe = mpi::initialize().ok_or_else(|| {
            CommError::Transport("MPI is already initialized in this process".into())
        })?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(MpiComm {
            world,
            rank,
            size,
            scratch32: RefCell::new(Vec::new()),
            scratch64: RefCell::new(Vec::new()),
            _universe: universe,
        })
    }
}

fn count(n: usize) -> Result<mpi::Count, CommError> {
    mpi::Count::try_from(n).map_err(|_| arg(format!("{n} elements exceed MPI's int count")))
}

fn op(o: ReduceOp) -> SystemOperation {
    match o {
        ReduceOp::Sum => SystemOperation::sum(),
        ReduceOp::Max => SystemOperation::max(),
    }
}

/// The most elements (or bytes) one MPI call moves here: MPI counts are
/// C `int`s; larger buffers go in chunks of this size.
const CHUNK: usize = 1 << 30;

/// `buf ← op over ranks of buf`, through a reused send copy of at most
/// [`CHUNK`] elements, chunk by chunk.
fn all_reduce<T: Equivalence + Copy>(
    world: &SimpleCommunicator,
    scratch: &RefCell<Vec<T>>,
    buf: &mut [T],
    o: ReduceOp,
) -> Result<(), CommError> {
    let mut s = scratch.borrow_mut();
    for part in buf.chunks_mut(CHUNK) {
        s.clear();
        s.extend_from_slice(part);
        world.all_reduce_into(&s[..], part, op(o));
    }
    Ok(())
}

/// On `root`, `buf ← op over ranks of buf` (through the reused send copy,
/// chunk by chunk); the others only send.
fn reduce<T: Equivalence + Copy>(
    world: &SimpleCommunicator,
    scratch: &RefCell<Vec<T>>,
    buf: &mut [T],
    root: usize,
    o: ReduceOp,
) -> Result<(), CommError> {
    check_root(world.size() as usize, root)?;
    let at = world.process_at_rank(root as mpi::Rank);
    let mine = world.rank() as usize == root;
    let mut s = scratch.borrow_mut();
    for part in buf.chunks_mut(CHUNK) {
        if mine {
            s.clear();
            s.extend_from_slice(part);
            at.reduce_into_root(&s[..], part, op(o));
        } else {
            at.reduce_into(&part[..], op(o));
        }
    }
    Ok(())
}

/// Rank r receives block r of `op over ranks of send` (equal blocks).
fn reduce_scatter<T: Equivalence>(
    world: &SimpleCommunicator,
    size: usize,
    send: &[T],
    recv: &mut [T],
    o: ReduceOp,
) -> Result<(), CommError> {
    check_scatter(size, send.len(), recv.len())?;
    count(send.len())?;
    world.reduce_scatter_block_into(send, recv, op(o));
    Ok(())
}

impl Communicator for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn barrier(&self) -> Result<(), CommError> {
        self.world.barrier();
        Ok(())
    }
    fn all_gather_bytes(&self, send: &[u8], recv: &mut [u8]) -> Result<(), CommError> {
        check_gather(self.size, send.len(), recv.len())?;
        count(recv.len())?;
        self.world.all_gather_into(send, recv);
        Ok(())
    }
    fn all_gather_var_bytes(
        &self,
        send: &[u8],
        counts: &[usize],
        recv: &mut [u8],
    ) -> Result<(), CommError> {
        check_gather_var(self.size, self.rank, send.len(), counts, recv.len())?;
        count(recv.len())?;
        let c: Vec<mpi::Count> = counts.iter().map(|&n| n as mpi::Count).collect();
        let d: Vec<mpi::Count> = c
            .iter()
            .scan(0, |acc, &x| {
                let at = *acc;
                *acc += x;
                Some(at)
            })
            .collect();
        let mut part = PartitionMut::new(recv, &c[..], &d[..]);
        self.world.all_gather_varcount_into(send, &mut part);
        Ok(())
    }
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<(), CommError> {
        check_root(self.size, root)?;
        let root = self.world.process_at_rank(root as mpi::Rank);
        for part in buf.chunks_mut(CHUNK) {
            root.broadcast_into(part);
        }
        Ok(())
    }
    fn all_reduce_f32(&self, buf: &mut [f32], o: ReduceOp) -> Result<(), CommError> {
        all_reduce(&self.world, &self.scratch32, buf, o)
    }
    fn all_reduce_f64(&self, buf: &mut [f64], o: ReduceOp) -> Result<(), CommError> {
        all_reduce(&self.world, &self.scratch64, buf, o)
    }
    fn reduce_f32(&self, buf: &mut [f32], root: usize, o: ReduceOp) -> Result<(), CommError> {
        reduce(&self.world, &self.scratch32, buf, root, o)
    }
    fn reduce_f64(&self, buf: &mut [f64], root: usize, o: ReduceOp) -> Result<(), CommError> {
        reduce(&self.world, &self.scratch64, buf, root, o)
    }
    fn reduce_scatter_f32(
        &self,
        send: &[f32],
        recv: &mut [f32],
        o: ReduceOp,
    ) -> Result<(), CommError> {
        reduce_scatter(&self.world, self.size, send, recv, o)
    }
    fn reduce_scatter_f64(
        &self,
        send: &[f64],
        recv: &mut [f64],
        o: ReduceOp,
    ) -> Result<(), CommError> {
        reduce_scatter(&self.world, self.size, send, recv, o)
    }
}
