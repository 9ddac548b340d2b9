//! The checks before a libtorch tensor is handed to the CUDA backend (run
//! on the CPU: every refusal), and on a GPU the zero-copy round trip.
#![cfg(feature = "device-step")]

use lmo_cuda::CudaDevice;
use lmo_tch::device::{cuda_layout, cuda_views};
use tch::{Device, Kind, Tensor};

#[test]
fn layout_refuses_what_the_cuda_backend_cannot_view() {
    let cpu = Tensor::zeros([3, 4], (Kind::Float, Device::Cpu));
    assert!(
        cuda_layout(&cpu)
            .unwrap_err()
            .contains("not on a CUDA device")
    );
    let undefined = cpu.grad();
    assert!(cuda_layout(&undefined).unwrap_err().contains("undefined"));
}

/// On a GPU: a view shares libtorch's memory (a write through the view is
/// seen by libtorch), and non-contiguous or f64 tensors are refused.
#[test]
fn views_share_libtorch_memory() {
    if !CudaDevice::available() || !tch::Cuda::is_available() {
        lmo_testkit::skip("everything (no CUDA device visible to both cudarc and libtorch)");
        return;
    }
    let dev = CudaDevice::new(0).unwrap();
    let t = Tensor::arange(12, (Kind::Float, Device::Cuda(0))).reshape([3, 4]);
    assert!(cuda_layout(&t.tr()).unwrap_err().contains("contiguous"));
    assert!(
        cuda_layout(&t.to_kind(Kind::Double))
            .unwrap_err()
            .contains("dtype")
    );
    tch::Cuda::synchronize(0);
    let mut v = unsafe { cuda_views(&dev, &[t.shallow_clone()]) }.unwrap();
    use lmo_core::Backend;
    lmo_cuda::Cuda::scale_mut(2.0, &mut v[0]);
    dev.synchronize().unwrap();
    let back: Vec<f32> = Vec::try_from(t.flatten(0, -1)).unwrap();
    assert_eq!(back, (0..12).map(|k| 2.0 * k as f32).collect::<Vec<_>>());
    drop(v);
    // The memory is still libtorch's after the view is gone.
    assert_eq!(t.sum(Kind::Float).double_value(&[]), 132.0);
}
