//! `Config::with_gram_polar`: the Gram form evaluates the same polynomial
//! (SPEC §2), so in f64 a Muon step with it equals the plain step to
//! rounding, and every spectral group's configuration carries the Gram form.

use gluon_optim::{GroupConfig, Label, NormSpec, Optimizer, Orth, presets};
use lmo_ndarray::Nd64;
use ndarray::{ArrayD, IxDyn};
use orthogonalize::NsForm;

fn mat(m: usize, n: usize, seed: usize) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(&[m, n]), |ix| {
        (((ix[0] * 131 + ix[1] * 71 + seed * 17) % 97) as f64 / 97.0 - 0.5) * 0.1
    })
}

#[test]
fn gram_muon_step_equals_the_plain_step_in_f64() {
    let labels = vec![Label::Hidden, Label::Hidden];
    let params = vec![mat(16, 64, 1), mat(64, 16, 2)];
    let grads = vec![mat(16, 64, 3), mat(64, 16, 4)];
    let cfg = presets::muon(0.02, 1e-3);
    let gram = cfg.clone().with_gram_polar();
    let mut spectral = 0;
    for g in gram.groups.values() {
        if let GroupConfig::Lmo(l) = g
            && let NormSpec::Spectral(Orth::NewtonSchulz(c)) = &l.norm
        {
            assert!(matches!(c.form, NsForm::Gram { .. }));
            spectral += 1;
        }
    }
    assert!(spectral > 0);
    let (mut p, mut q) = (params.clone(), params.clone());
    let mut plain = Optimizer::<Nd64>::new(cfg, labels.clone(), &p).unwrap();
    let mut gr = Optimizer::<Nd64>::new(gram, labels, &q).unwrap();
    for _ in 0..3 {
        plain.step(&mut p, &grads).unwrap();
        gr.step(&mut q, &grads).unwrap();
    }
    for ((a, b), p0) in p.iter().zip(&q).zip(&params) {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(d < 1e-12, "max difference {d:e}");
        assert_ne!(b, p0, "the Gram step moved the parameters");
    }
}
