//! NCCL (feature `nccl`) on one GPU, one rank: every host collective of
//! the seam through the staging buffers, the device collectives on a
//! device buffer, the three ways of meeting (local id, bootstrap
//! communicator, id file) and the argument errors. With one rank every
//! collective's result is defined exactly (a sum or maximum over one rank
//! is the value itself, a gather is the send buffer), so the checks are
//! exact; what one rank cannot show is which rank's data lands where
//! (that needs two GPUs: not tested yet).
//!
//! Without a GPU or the NCCL library the test reports a skip; on the GPU
//! machine (`LMO_EXPECT_GPU=1`) it fails instead.
#![cfg(feature = "nccl")]

use std::sync::Arc;
use std::time::Duration;

use cudarc::driver::{CudaContext, CudaStream};
use lmo_comm::{CommError, Communicator, NcclComm, ReduceOp, SingleProcess, nccl_available};

/// The stream of GPU 0 with NCCL loadable, or a reported skip.
fn stream() -> Option<Arc<CudaStream>> {
    let expect = std::env::var("LMO_EXPECT_GPU").as_deref() == Ok("1");
    // SAFETY: only probes whether the shared library can be loaded.
    let driver = unsafe { cudarc::driver::sys::is_culib_present() }
        && CudaContext::device_count().is_ok_and(|n| n > 0);
    if !driver {
        assert!(
            !expect,
            "LMO_EXPECT_GPU=1 but no CUDA driver or device answers"
        );
        lmo_testkit::skip("NCCL on one GPU (no CUDA driver or device)");
        return None;
    }
    if !nccl_available() {
        assert!(!expect, "LMO_EXPECT_GPU=1 but libnccl.so.2 does not load");
        lmo_testkit::skip("NCCL on one GPU (libnccl.so.2 does not load)");
        return None;
    }
    let ctx = CudaContext::new(0).expect("device 0");
    Some(ctx.new_stream().expect("a stream"))
}

fn exercise(c: &NcclComm) {
    assert_eq!((c.rank(), c.size()), (0, 1));
    let mut a = [1.5f32, -2.0, 3.25];
    c.all_reduce(&mut a, ReduceOp::Sum).unwrap();
    assert_eq!(a, [1.5, -2.0, 3.25]);
    let mut b = [1e300f64, -4.0];
    c.all_reduce(&mut b, ReduceOp::Max).unwrap();
    assert_eq!(b, [1e300, -4.0]);
    let mut h = [half::bf16::from_f32(0.5), half::bf16::from_f32(-8.0)];
    c.all_reduce(&mut h, ReduceOp::Sum).unwrap();
    assert_eq!(h.map(f32::from), [0.5, -8.0]);
    let mut g = [0u64; 2];
    c.all_gather(&[7u64, u64::MAX], &mut g).unwrap();
    assert_eq!(g, [7, u64::MAX]);
    let mut v = [0.0f32; 3];
    c.all_gather_var(&[1.0f32, 2.0, 3.0], &[3], &mut v).unwrap();
    assert_eq!(v, [1.0, 2.0, 3.0]);
    let mut r = [0.0f64; 4];
    c.reduce_scatter(&[1.0f64, 2.0, 3.0, 4.0], &mut r, ReduceOp::Sum)
        .unwrap();
    assert_eq!(r, [1.0, 2.0, 3.0, 4.0]);
    // A larger call after smaller ones (the staging buffer grows), then a
    // smaller one again (its front is reused).
    let mut big: Vec<f32> = (0..100_003).map(|i| i as f32).collect();
    let want = big.clone();
    c.broadcast(&mut big, 0).unwrap();
    assert_eq!(big, want);
    c.all_reduce(&mut big, ReduceOp::Max).unwrap();
    assert_eq!(big, want);
    let mut a = [9.0f32];
    c.all_reduce(&mut a, ReduceOp::Sum).unwrap();
    assert_eq!(a, [9.0]);
    let mut d = [2.5f64, -1.0];
    c.reduce(&mut d, 0, ReduceOp::Sum).unwrap();
    assert_eq!(d, [2.5, -1.0]);
    c.barrier().unwrap();
    // Argument errors, found before anything is queued.
    let mut short = [0u64; 1];
    assert!(matches!(
        c.all_gather(&[1u64, 2], &mut short),
        Err(CommError::Argument(_))
    ));
    assert!(matches!(
        c.broadcast(&mut [0u64; 4], 1),
        Err(CommError::Argument(_))
    ));
    // Device buffers, in stream order.
    let s = c.stream();
    let mut d = s.clone_htod(&[3.0f32, 1.0, 2.0]).unwrap();
    c.all_reduce_device(&mut d, ReduceOp::Sum).unwrap();
    c.broadcast_device(&mut d, 0).unwrap();
    let mut e = s.alloc_zeros::<f32>(3).unwrap();
    c.all_gather_device(&d, &mut e).unwrap();
    let mut f = s.alloc_zeros::<f32>(3).unwrap();
    c.reduce_scatter_device(&e, &mut f, ReduceOp::Max).unwrap();
    c.reduce_device(&mut f, 0, ReduceOp::Sum).unwrap();
    assert_eq!(s.clone_dtoh(&f).unwrap(), [3.0, 1.0, 2.0]);
    let mut wrong = s.alloc_zeros::<f32>(2).unwrap();
    assert!(matches!(
        c.all_gather_device(&d, &mut wrong),
        Err(CommError::Argument(_))
    ));
}

#[test]
fn nccl_on_one_gpu_runs_every_collective() {
    let Some(s) = stream() else { return };
    exercise(&NcclComm::single(s.clone()).expect("NCCL, one rank"));
    exercise(&NcclComm::with_bootstrap(s.clone(), &SingleProcess).expect("bootstrap"));
    let path = std::env::temp_dir().join(format!("lmo-nccl-id-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let c =
        NcclComm::from_id_file(s.clone(), 0, 1, &path, Duration::from_secs(5)).expect("id file");
    exercise(&c);
    // A file that exists is refused (a stale id would join another job).
    assert!(matches!(
        NcclComm::from_id_file(s.clone(), 0, 1, &path, Duration::from_secs(5)),
        Err(CommError::Argument(_))
    ));
    std::fs::remove_file(&path).ok();
    // Ranks outside the world.
    let id = [0u8; lmo_comm::NCCL_ID_BYTES];
    assert!(matches!(
        NcclComm::from_id(s.clone(), 2, 2, id),
        Err(CommError::Argument(_))
    ));
    assert!(matches!(
        NcclComm::from_id(s, 0, 0, id),
        Err(CommError::Argument(_))
    ));
}
