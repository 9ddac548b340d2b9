//! `Orth::NewtonSchulzBf16` / `Config::with_bf16_polar`: Muon with the
//! polar factor in bf16 and f32 parameters (as `torch.optim.Muon`), on
//! every CPU (natively where it has AVX-512 BF16).

use gluon_optim::{Label, NormSpec, OptError, Optimizer, Orth, presets};
use lmo_core::LmoError;
use lmo_ndarray::{Nd32, Nd64, NdBf16};
use ndarray::{ArrayD, IxDyn};
use orthogonalize::NsConfig;
use rand::{Rng, SeedableRng, rngs::StdRng};

fn rand(rng: &mut StdRng, s: &[usize], scale: f32) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(s), |_| scale * rng.random_range(-1.0..1.0f32))
}

#[test]
fn bf16_polar_step_tracks_f32_and_keeps_f32_parameters() {
    let mut rng = StdRng::seed_from_u64(11);
    let labels = vec![Label::Hidden, Label::Hidden, Label::Vector];
    let params = vec![
        rand(&mut rng, &[96, 200], 0.05).mapv(|v| 1.0 + v),
        rand(&mut rng, &[150, 64], 0.05),
        rand(&mut rng, &[64], 0.05),
    ];
    let grads: Vec<_> = params
        .iter()
        .map(|p| rand(&mut rng, p.shape(), 0.01))
        .collect();
    let cfg = presets::muon(0.02, 1e-3);
    let bf = cfg.clone().with_bf16_polar();
    assert!(matches!(
        bf.groups[&Label::Hidden],
        gluon_optim::GroupConfig::Lmo(ref l) if l.norm == NormSpec::Spectral(Orth::NewtonSchulzBf16(NsConfig::muon()))
    ));
    let (mut p32, mut pbf) = (params.clone(), params.clone());
    let mut o32 = Optimizer::<Nd32>::new(cfg, labels.clone(), &p32).unwrap();
    let mut obf = Optimizer::<Nd32>::new(bf, labels, &pbf).unwrap();
    for _ in 0..3 {
        o32.step(&mut p32, &grads).unwrap();
        obf.step(&mut pbf, &grads).unwrap();
    }
    for i in 0..2 {
        let d32 = &p32[i] - &params[i];
        let dbf = &pbf[i] - &params[i];
        let rel = (&d32 - &dbf).mapv(|v| v * v).sum().sqrt() / d32.mapv(|v| v * v).sum().sqrt();
        // bf16 storage: a few bf16 ulps (2⁻⁸) per entry of the polar factor.
        assert!(rel < 3e-2, "matrix {i}: bf16 vs f32 update differ by {rel}");
        assert!(rel > 0.0, "matrix {i}: the bf16 path was not taken");
    }
    // Parameters stay f32: 1 + v + update is not rounded to bf16.
    let off_grid = pbf[0]
        .iter()
        .filter(|&&v| half::bf16::from_f32(v).to_f32() != v)
        .count();
    assert!(
        off_grid > pbf[0].len() / 2,
        "parameters were rounded to bf16"
    );
}

#[test]
fn bf16_polar_is_plain_newton_schulz_on_ndbf16_and_rejected_elsewhere() {
    let mut rng = StdRng::seed_from_u64(12);
    let labels = vec![Label::Hidden];
    let mut p = vec![rand(&mut rng, &[40, 70], 0.1)];
    lmo_ndarray::round_bf16(&mut p[0]);
    let g = vec![rand(&mut rng, &[40, 70], 0.1)];
    let (mut a, mut b) = (p.clone(), p.clone());
    let cfg = presets::muon(0.02, 1e-3);
    let mut oa = Optimizer::<NdBf16>::new(cfg.clone(), labels.clone(), &a).unwrap();
    let mut ob =
        Optimizer::<NdBf16>::new(cfg.clone().with_bf16_polar(), labels.clone(), &b).unwrap();
    oa.step(&mut a, &g).unwrap();
    ob.step(&mut b, &g).unwrap();
    assert_eq!(a, b);

    let p64 = vec![ArrayD::<f64>::zeros(IxDyn(&[4, 5]))];
    let err = Optimizer::<Nd64>::new(cfg.with_bf16_polar(), labels, &p64).err();
    assert!(
        matches!(
            err,
            Some(OptError::Lmo {
                error: LmoError::InvalidHyperParameter(_),
                ..
            })
        ),
        "{err:?}"
    );
}
