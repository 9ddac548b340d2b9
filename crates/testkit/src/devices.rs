//! The CUDA devices a GPU test runs on (feature `cuda`).

use std::sync::Arc;

use lmo_cuda::CudaDevice;

/// The devices a GPU test runs on: the GPU when there is one, then the CPU
/// kernel emulator where lmo-cuda is built with feature `emu`
/// ([`CudaDevice::try_emulated`]), which runs the same commands.
///
/// A missing GPU is reported with [`crate::skip`], or, on the GPU machine
/// (`LMO_EXPECT_GPU=1`, set by `cargo xtask gpu-bundle`'s run.sh), is a
/// failure. An empty list (no GPU, no emulator) is reported as skipping
/// everything; a missing emulator is a failure under `LMO_EXPECT_EMU=1`
/// (set by `cargo xtask test`, which builds it).
pub fn cuda_devices() -> Vec<Arc<CudaDevice>> {
    let mut v = Vec::new();
    if CudaDevice::available() {
        v.push(CudaDevice::new(0).expect("device 0 of an available driver"));
    } else {
        assert!(
            std::env::var("LMO_EXPECT_GPU").as_deref() != Ok("1"),
            "LMO_EXPECT_GPU=1 but no CUDA driver or device answers"
        );
        crate::skip("the GPU part (no CUDA driver or device; the emulator part runs)");
    }
    let emulator = CudaDevice::try_emulated();
    // `cargo xtask test` builds the emulator (feature lmo-cuda/emu) and
    // says so: then a missing emulator fails instead of skipping.
    assert!(
        emulator.is_some() || std::env::var("LMO_EXPECT_EMU").as_deref() != Ok("1"),
        "LMO_EXPECT_EMU=1 but the CUDA kernel emulator is not built in (feature lmo-cuda/emu)"
    );
    v.extend(emulator);
    if v.is_empty() {
        crate::skip("everything (no GPU and no emulator: feature lmo-cuda/emu)");
    }
    v
}
