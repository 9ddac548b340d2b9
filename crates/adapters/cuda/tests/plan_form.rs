//! The batched device plan runs the plain Newton–Schulz form only: a Gram
//! configuration is refused with a typed input error before anything is
//! queued (checked on the device-free path, no GPU needed).

use lmo_core::LmoError;
use lmo_cuda::{CudaError, DType, PolarPlan};
use orthogonalize::NsConfig;

#[test]
fn the_plan_refuses_the_gram_form() {
    let g: Vec<f32> = (0..32).map(|i| (i as f32 * 0.37).sin()).collect();
    let plain = PolarPlan::simulate(&NsConfig::muon(), 1, 4, 8, DType::F32, DType::F32, &g);
    assert!(plain.is_ok());
    let gram = PolarPlan::simulate(
        &NsConfig::muon().gram(),
        1,
        4,
        8,
        DType::F32,
        DType::F32,
        &g,
    );
    assert!(matches!(
        gram,
        Err(CudaError::Input(LmoError::InvalidHyperParameter(_)))
    ));
}
