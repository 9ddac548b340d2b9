//! NCCL through cudarc (feature `nccl`): collectives on device buffers in
//! stream order, and the host-buffer [`Communicator`] through staging.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::{
    CudaSlice, CudaStream, CudaViewMut, DevicePtr, DevicePtrMut, DeviceRepr, ValidAsZeroBits,
};
use cudarc::nccl::{Comm, Id, NcclType};

use crate::communicator::{check_gather, check_gather_var, check_root, check_scatter};
use crate::error::arg;
use crate::{CommError, Communicator, ReduceOp};

/// The length of NCCL's unique id (`ncclUniqueId`), in bytes.
pub const NCCL_ID_BYTES: usize = 128;

/// One rank of an NCCL communicator (one GPU per rank), through cudarc's
/// NCCL bindings; the library (`libnccl.so.2`, for example from the
/// `nvidia-nccl-cu13` wheel) is loaded at run time, so this builds without
/// CUDA.
///
/// - The `*_device` methods run on device buffers in the order of the
///   communicator's stream (queued, not waited for): the collectives a
///   GPU optimizer step uses.
/// - The [`Communicator`] implementation takes host buffers and stages
///   them through device buffers kept between calls (copy in, collective,
///   copy out, synchronize): correct for any caller of the seam (the
///   sharded step's agreements and reports), but every call waits for the
///   stream; bulk data belongs in device buffers.
///
/// The ranks meet through NCCL's unique id, made by rank 0 and shared
/// through another communicator ([`NcclComm::with_bootstrap`], e.g.
/// `MpiComm`) or a file ([`NcclComm::from_id_file`]).
///
/// Reference: NVIDIA, "NCCL User Guide", collective operations and
/// `ncclCommInitRank`.
pub struct NcclComm {
    comm: Comm,
    stream: Arc<CudaStream>,
    rank: usize,
    size: usize,
    /// Staging buffers of the host-buffer collectives (grown on demand).
    stage_u8: RefCell<Option<CudaSlice<u8>>>,
    stage_f32: RefCell<Option<CudaSlice<f32>>>,
    stage_f64: RefCell<Option<CudaSlice<f64>>>,
}

fn nccl(e: impl std::fmt::Debug) -> CommError {
    CommError::Transport(format!("NCCL: {e:?}"))
}

fn cuda(e: impl std::fmt::Debug) -> CommError {
    CommError::Transport(format!("CUDA: {e:?}"))
}

fn op(o: ReduceOp) -> cudarc::nccl::ReduceOp {
    match o {
        ReduceOp::Sum => cudarc::nccl::ReduceOp::Sum,
        ReduceOp::Max => cudarc::nccl::ReduceOp::Max,
    }
}

/// `true` when the NCCL library loads (`libnccl.so.2` on the library
/// path).
pub fn nccl_available() -> bool {
    // SAFETY: only probes whether the shared library can be loaded.
    unsafe { cudarc::nccl::sys::is_culib_present() }
}

impl NcclComm {
    /// Rank `rank` of `size` on `stream`'s device, joining the ranks that
    /// were given the same `id` (collective over those ranks).
    pub fn from_id(
        stream: Arc<CudaStream>,
        rank: usize,
        size: usize,
        id: [u8; NCCL_ID_BYTES],
    ) -> Result<Self, CommError> {
        if size == 0 || rank >= size || i32::try_from(size).is_err() {
            return Err(arg(format!("rank {rank} of {size}")));
        }
        if !nccl_available() {
            return Err(CommError::Transport(
                "the NCCL library (libnccl.so.2) does not load: put it on LD_LIBRARY_PATH".into(),
            ));
        }
        // ncclCommInitRank joins on the calling thread's current device.
        stream.context().bind_to_thread().map_err(cuda)?;
        let id = Id::uninit(id.map(|b| b as core::ffi::c_char));
        let comm = Comm::from_rank(stream.clone(), rank, size, id).map_err(nccl)?;
        Ok(NcclComm {
            comm,
            stream,
            rank,
            size,
            stage_u8: RefCell::new(None),
            stage_f32: RefCell::new(None),
            stage_f64: RefCell::new(None),
        })
    }

    /// A new unique id (rank 0 makes it; every rank joins with it).
    pub fn new_id() -> Result<[u8; NCCL_ID_BYTES], CommError> {
        if !nccl_available() {
            return Err(CommError::Transport(
                "the NCCL library (libnccl.so.2) does not load".into(),
            ));
        }
        let id = Id::new().map_err(nccl)?;
        Ok(id.internal().map(|c| c as u8))
    }

    /// The world of one rank on `stream`'s device.
    pub fn single(stream: Arc<CudaStream>) -> Result<Self, CommError> {
        Self::from_id(stream, 0, 1, Self::new_id()?)
    }

    /// The ranks of `bootstrap` (MPI, say), one GPU each: rank 0 makes the
    /// id and broadcasts it over `bootstrap`. Collective over `bootstrap`.
    /// The ranks agree before joining: a failure to make the id on rank 0,
    /// or a rank where NCCL does not load, is an error on every rank (NCCL's
    /// join has no timeout; a rank that never joins would hang the others).
    pub fn with_bootstrap<C: Communicator>(
        stream: Arc<CudaStream>,
        bootstrap: &C,
    ) -> Result<Self, CommError> {
        // [ok, id…]: the others learn whether rank 0 has an id.
        let mut buf = [0u8; NCCL_ID_BYTES + 1];
        let made = match bootstrap.rank() {
            0 => Self::new_id().map(|id| {
                buf[0] = 1;
                buf[1..].copy_from_slice(&id);
            }),
            _ => Ok(()),
        };
        bootstrap.broadcast_bytes(&mut buf, 0)?;
        let ready = made.and_then(|_| match nccl_available() {
            true => Ok(()),
            false => Err(CommError::Transport(
                "the NCCL library (libnccl.so.2) does not load: put it on LD_LIBRARY_PATH".into(),
            )),
        });
        let mut refused = [if ready.is_err() { 1.0f64 } else { 0.0 }];
        bootstrap.all_reduce(&mut refused, ReduceOp::Max)?;
        ready?;
        if buf[0] != 1 || refused[0] > 0.0 {
            return Err(CommError::Transport(
                "another rank cannot join NCCL (its error says why)".into(),
            ));
        }
        let mut id = [0u8; NCCL_ID_BYTES];
        id.copy_from_slice(&buf[1..]);
        Self::from_id(stream, bootstrap.rank(), bootstrap.size(), id)
    }

    /// Rank `rank` of `size`, meeting through the file `path` on a file
    /// system every rank sees: rank 0 writes a new id there (refusing a
    /// file that exists), the others wait for it for at most `timeout`.
    /// Use a new path per job (one naming the job's id): a rank other than
    /// 0 cannot tell a stale id from an earlier job, joins with it and
    /// waits in NCCL without a timeout.
    pub fn from_id_file(
        stream: Arc<CudaStream>,
        rank: usize,
        size: usize,
        path: &Path,
        timeout: Duration,
    ) -> Result<Self, CommError> {
        let io = |e: std::io::Error| CommError::Transport(format!("{}: {e}", path.display()));
        let id = if rank == 0 {
            if path.exists() {
                return Err(arg(format!(
                    "{} exists (an id of an earlier job?): remove it or choose a new path",
                    path.display()
                )));
            }
            let id = Self::new_id()?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, id).map_err(io)?;
            std::fs::rename(&tmp, path).map_err(io)?;
            id
        } else {
            let start = Instant::now();
            loop {
                match std::fs::read(path) {
                    Ok(b) if b.len() == NCCL_ID_BYTES => {
                        let mut id = [0u8; NCCL_ID_BYTES];
                        id.copy_from_slice(&b);
                        break id;
                    }
                    Ok(b) => {
                        return Err(CommError::Transport(format!(
                            "{}: {} bytes, an NCCL id has {NCCL_ID_BYTES}",
                            path.display(),
                            b.len()
                        )));
                    }
                    Err(_) if start.elapsed() < timeout => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(io(e)),
                }
            }
        };
        Self::from_id(stream, rank, size, id)
    }

    /// The stream the collectives are queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// `buf ← op_r buf_r` over the ranks, in place, queued on the stream.
    pub fn all_reduce_device<T: NcclType + DeviceRepr, B: DevicePtrMut<T>>(
        &self,
        buf: &mut B,
        o: ReduceOp,
    ) -> Result<(), CommError> {
        self.comm.all_reduce_in_place(buf, &op(o)).map_err(nccl)?;
        Ok(())
    }

    /// `recv = send_0 ‖ … ‖ send_{size−1}`, queued on the stream.
    pub fn all_gather_device<T, S, R>(&self, send: &S, recv: &mut R) -> Result<(), CommError>
    where
        T: NcclType + DeviceRepr,
        S: DevicePtr<T>,
        R: DevicePtrMut<T>,
    {
        check_gather(self.size, send.len(), recv.len())?;
        self.comm.all_gather(send, recv).map_err(nccl)?;
        Ok(())
    }

    /// Rank r receives block r (of `recv.len()` elements) of `op_r send_r`,
    /// queued on the stream.
    pub fn reduce_scatter_device<T, S, R>(
        &self,
        send: &S,
        recv: &mut R,
        o: ReduceOp,
    ) -> Result<(), CommError>
    where
        T: NcclType + DeviceRepr,
        S: DevicePtr<T>,
        R: DevicePtrMut<T>,
    {
        check_scatter(self.size, send.len(), recv.len())?;
        self.comm.reduce_scatter(send, recv, &op(o)).map_err(nccl)?;
        Ok(())
    }

    /// On rank `root`, `buf ← op_r buf_r` (in place; the others' `buf` is
    /// only read), queued on the stream.
    pub fn reduce_device<T: NcclType + DeviceRepr, B: DevicePtrMut<T>>(
        &self,
        buf: &mut B,
        root: usize,
        o: ReduceOp,
    ) -> Result<(), CommError> {
        check_root(self.size, root)?;
        self.comm
            .reduce_in_place(buf, &op(o), root as i32)
            .map_err(nccl)?;
        Ok(())
    }

    /// Every rank's `buf` becomes rank `root`'s, queued on the stream.
    pub fn broadcast_device<T: NcclType + DeviceRepr, B: DevicePtrMut<T>>(
        &self,
        buf: &mut B,
        root: usize,
    ) -> Result<(), CommError> {
        check_root(self.size, root)?;
        self.comm
            .broadcast_in_place(buf, root as i32)
            .map_err(nccl)?;
        Ok(())
    }

    /// A staging buffer of at least `n` elements (kept for the next call).
    fn staged<'a, T: DeviceRepr + ValidAsZeroBits>(
        &self,
        cell: &'a RefCell<Option<CudaSlice<T>>>,
        n: usize,
    ) -> Result<std::cell::RefMut<'a, Option<CudaSlice<T>>>, CommError> {
        let mut s = cell.borrow_mut();
        if s.as_ref().is_none_or(|b| b.len() < n) {
            *s = Some(self.stream.alloc_zeros::<T>(n.max(1)).map_err(cuda)?);
        }
        Ok(s)
    }

    /// `buf` to the front of a staging buffer, the device collective `f`
    /// on it, and (if `back`) the result into `buf`; then waits for the
    /// stream. No allocation once the staging buffer is large enough.
    fn round_trip<T, F>(
        &self,
        cell: &RefCell<Option<CudaSlice<T>>>,
        buf: &mut [T],
        back: bool,
        f: F,
    ) -> Result<(), CommError>
    where
        T: DeviceRepr + ValidAsZeroBits,
        F: FnOnce(&mut CudaSlice<T>) -> Result<(), CommError>,
    {
        let n = buf.len();
        let mut guard = self.staged(cell, n)?;
        let Some(dev) = guard.as_mut() else {
            return Err(CommError::Transport("no staging buffer".into()));
        };
        {
            let mut front = dev.slice_mut(..n);
            self.stream.memcpy_htod(&*buf, &mut front).map_err(cuda)?;
        }
        f(dev)?;
        if back {
            let front = dev.slice(..n);
            self.stream.memcpy_dtoh(&front, buf).map_err(cuda)?;
        }
        self.stream.synchronize().map_err(cuda)
    }

    /// `send` to the front of a staging buffer, the device collective `f`
    /// from it into the `recv.len()` elements behind it, and those into
    /// `recv`; then waits for the stream.
    fn send_recv<T, F>(
        &self,
        cell: &RefCell<Option<CudaSlice<T>>>,
        send: &[T],
        recv: &mut [T],
        f: F,
    ) -> Result<(), CommError>
    where
        T: DeviceRepr + ValidAsZeroBits,
        F: FnOnce(&CudaViewMut<'_, T>, &mut CudaViewMut<'_, T>) -> Result<(), CommError>,
    {
        let (ns, nr) = (send.len(), recv.len());
        let mut guard = self.staged(cell, ns + nr)?;
        let Some(dev) = guard.as_mut() else {
            return Err(CommError::Transport("no staging buffer".into()));
        };
        {
            let mut front = dev.slice_mut(..ns);
            self.stream.memcpy_htod(send, &mut front).map_err(cuda)?;
        }
        {
            let (s, mut r) = dev.split_at_mut(ns);
            let mut r = r.slice_mut(..nr);
            f(&s, &mut r)?;
        }
        let back = dev.slice(ns..ns + nr);
        self.stream.memcpy_dtoh(&back, recv).map_err(cuda)?;
        self.stream.synchronize().map_err(cuda)
    }

    /// The host reductions: in place on the front of a staging buffer.
    fn all_reduce_host<T: NcclType + DeviceRepr + ValidAsZeroBits + Copy>(
        &self,
        cell: &RefCell<Option<CudaSlice<T>>>,
        buf: &mut [T],
        o: ReduceOp,
    ) -> Result<(), CommError> {
        if buf.is_empty() {
            return Ok(());
        }
        let n = buf.len();
        self.round_trip(cell, buf, true, |d| {
            self.all_reduce_device(&mut d.slice_mut(..n), o)
        })
    }

    /// The host reduces: in place on the front of a staging buffer, copied
    /// back on the root only.
    fn reduce_host<T: NcclType + DeviceRepr + ValidAsZeroBits + Copy>(
        &self,
        cell: &RefCell<Option<CudaSlice<T>>>,
        buf: &mut [T],
        root: usize,
        o: ReduceOp,
    ) -> Result<(), CommError> {
        check_root(self.size, root)?;
        if buf.is_empty() {
            return Ok(());
        }
        let n = buf.len();
        let back = self.rank == root;
        self.round_trip(cell, buf, back, |d| {
            self.reduce_device(&mut d.slice_mut(..n), root, o)
        })
    }

    /// The host reduce-scatters: send at the front, the block received
    /// behind it.
    fn reduce_scatter_host<T: NcclType + DeviceRepr + ValidAsZeroBits + Copy>(
        &self,
        cell: &RefCell<Option<CudaSlice<T>>>,
        send: &[T],
        recv: &mut [T],
        o: ReduceOp,
    ) -> Result<(), CommError> {
        check_scatter(self.size, send.len(), recv.len())?;
        if recv.is_empty() {
            return Ok(());
        }
        self.send_recv(cell, send, recv, |s, r| self.reduce_scatter_device(s, r, o))
    }
}

impl Communicator for NcclComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn barrier(&self) -> Result<(), CommError> {
        let mut one = [0.0f32];
        self.all_reduce_host(&self.stage_f32, &mut one, ReduceOp::Sum)
    }

    fn all_gather_bytes(&self, send: &[u8], recv: &mut [u8]) -> Result<(), CommError> {
        check_gather(self.size, send.len(), recv.len())?;
        if recv.is_empty() {
            return Ok(());
        }
        self.send_recv(&self.stage_u8, send, recv, |s, r| {
            self.all_gather_device(s, r)
        })
    }

    /// NCCL has no variable all-gather: every rank's part is padded to
    /// the largest count, gathered, and the padding dropped (through two
    /// host buffers allocated per call: this call serves checkpoints, not
    /// steps).
    fn all_gather_var_bytes(
        &self,
        send: &[u8],
        counts: &[usize],
        recv: &mut [u8],
    ) -> Result<(), CommError> {
        check_gather_var(self.size, self.rank, send.len(), counts, recv.len())?;
        let most = counts.iter().copied().max().unwrap_or(0);
        if most == 0 {
            return Ok(());
        }
        let mut padded = vec![0u8; most];
        padded[..send.len()].copy_from_slice(send);
        let mut all = vec![0u8; most * self.size];
        self.all_gather_bytes(&padded, &mut all)?;
        let mut at = 0;
        for (r, &c) in counts.iter().enumerate() {
            recv[at..at + c].copy_from_slice(&all[r * most..r * most + c]);
            at += c;
        }
        Ok(())
    }

    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<(), CommError> {
        check_root(self.size, root)?;
        if buf.is_empty() {
            return Ok(());
        }
        let n = buf.len();
        self.round_trip(&self.stage_u8, buf, true, |d| {
            self.broadcast_device(&mut d.slice_mut(..n), root)
        })
    }

    fn all_reduce_f32(&self, buf: &mut [f32], o: ReduceOp) -> Result<(), CommError> {
        self.all_reduce_host(&self.stage_f32, buf, o)
    }

    fn all_reduce_f64(&self, buf: &mut [f64], o: ReduceOp) -> Result<(), CommError> {
        self.all_reduce_host(&self.stage_f64, buf, o)
    }

    fn reduce_f32(&self, buf: &mut [f32], root: usize, o: ReduceOp) -> Result<(), CommError> {
        self.reduce_host(&self.stage_f32, buf, root, o)
    }

    fn reduce_f64(&self, buf: &mut [f64], root: usize, o: ReduceOp) -> Result<(), CommError> {
        self.reduce_host(&self.stage_f64, buf, root, o)
    }

    fn reduce_scatter_f32(
        &self,
        send: &[f32],
        recv: &mut [f32],
        o: ReduceOp,
    ) -> Result<(), CommError> {
        self.reduce_scatter_host(&self.stage_f32, send, recv, o)
    }

    fn reduce_scatter_f64(
        &self,
        send: &[f64],
        recv: &mut [f64],
        o: ReduceOp,
    ) -> Result<(), CommError> {
        self.reduce_scatter_host(&self.stage_f64, send, recv, o)
    }
}
