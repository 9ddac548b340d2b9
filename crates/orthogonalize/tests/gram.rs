//! The Gram form of Newton–Schulz (SPEC §2): the same polynomial of `X₀` as
//! the plain form, so in f64 its output is `U·p_N∘…∘p_1(σ)·Vᵀ` of the
//! normalized input (checked against that closed form from an f64 SVD);
//! tall inputs use the transposed form; bad restarts are refused; the
//! guard falls back to the plain form (bit-identical to it) where the
//! tracked Gram matrix leaves the polynomial's range, and bf16 stress inputs
//! never diverge.

use lmo_core::LmoError;
use lmo_ndarray::{Nd64, NdBf16, round_bf16};
use ndarray::{ArrayD, IxDyn};
use orthogonalize::{CoefficientSet, FaerPolar, NewtonSchulz, Normalization, NsConfig, NsForm};
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};

fn gaussian(seed: u64, m: usize, n: usize) -> ArrayD<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    ArrayD::from_shape_fn(IxDyn(&[m, n]), |_| StandardNormal.sample(&mut rng))
}

/// `U·f(r, σ_r)·Vᵀ` of `g` from faer's thin SVD in f64 (`σ` descending).
fn spectral_map(g: &ArrayD<f64>, f: impl Fn(usize, f64) -> f64) -> ArrayD<f64> {
    let (m, n) = (g.shape()[0], g.shape()[1]);
    let gm = faer::Mat::<f64>::from_fn(m, n, |i, j| g[[i, j]]);
    let svd = gm.thin_svd().unwrap();
    let s = svd.S().column_vector();
    let (u, v) = (svd.U(), svd.V());
    let fs: Vec<f64> = (0..s.nrows()).map(|r| f(r, s[r])).collect();
    ArrayD::from_shape_fn(IxDyn(&[m, n]), |ix| {
        (0..s.nrows())
            .map(|r| u[(ix[0], r)] * fs[r] * v[(ix[1], r)])
            .sum()
    })
}

fn max_abs_diff(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn equals_the_scalar_polynomial_of_the_singular_values() {
    let sets = [
        NsConfig::muon(),
        NsConfig::polar_express(),
        NsConfig::new(CoefficientSet::ModdedNanogpt),
        NsConfig::new(CoefficientSet::Cubic).with_steps(9),
    ];
    for (i, base) in sets.into_iter().enumerate() {
        for &(m, n) in &[(24, 96), (96, 24), (40, 40), (1, 17)] {
            let g = gaussian(10 + i as u64, m, n);
            let Normalization::Frobenius { delta, eps } = base.normalization else {
                unreachable!()
            };
            let fro = g.iter().map(|v| v * v).sum::<f64>().sqrt();
            let scale = 1.0 / (fro * (1.0 + delta) + eps);
            let chain = |mut x: f64| {
                x *= scale;
                for s in 0..base.steps {
                    let [a, b, c] = base.coefficients.step(s);
                    x *= a + x * x * (b + c * x * x);
                }
                x
            };
            let want = spectral_map(&g, |_, x| chain(x));
            for restarts in [vec![], vec![2], NsConfig::default_restarts(base.steps)] {
                let cfg = base.clone().gram_with_restarts(restarts.clone());
                let mut ns = NewtonSchulz::<Nd64>::new(cfg).unwrap();
                let mut out = ArrayD::zeros(g.raw_dim());
                ns.run(&g, &mut out).unwrap();
                let err = max_abs_diff(&out, &want);
                assert!(
                    err < 1e-9,
                    "{} {m}×{n} restarts {restarts:?}: max error {err:e}",
                    base.coefficients.name()
                );
                assert_eq!(ns.gram_fallbacks(), 0);
            }
        }
    }
}

#[test]
fn bad_restarts_are_refused() {
    for r in [vec![0], vec![5], vec![3, 2], vec![2, 2]] {
        let cfg = NsConfig::muon().gram_with_restarts(r.clone());
        assert!(
            matches!(
                NewtonSchulz::<Nd64>::new(cfg),
                Err(LmoError::InvalidHyperParameter(_))
            ),
            "{r:?}"
        );
    }
    assert_eq!(NsConfig::default_restarts(5), vec![3]);
    assert_eq!(NsConfig::default_restarts(10), vec![3, 6, 9]);
    assert_eq!(
        NsConfig::muon().gram().form,
        NsForm::Gram { restarts: vec![3] }
    );
}

/// Without normalization an input with σ_max = 1.9 is outside the cubic's
/// range `[0, 1]`: the tracked `R` has an eigenvalue 3.6 > 2·s² = 2, so the
/// guard hands the matrix to the plain form, whose output is returned
/// unchanged.
#[test]
fn guard_falls_back_to_the_plain_form() {
    // Singular values 1.9, then spread over (0.1, 0.9).
    let g = spectral_map(&gaussian(3, 12, 30), |r, _| {
        if r == 0 { 1.9 } else { 0.1 + 0.07 * r as f64 }
    });
    let cfg = NsConfig::new(CoefficientSet::Cubic)
        .with_steps(3)
        .with_normalization(Normalization::None);
    let mut plain = NewtonSchulz::<Nd64>::new(cfg.clone()).unwrap();
    let mut want = ArrayD::zeros(g.raw_dim());
    plain.run(&g, &mut want).unwrap();
    let mut gram = NewtonSchulz::<Nd64>::new(cfg.gram_with_restarts(vec![])).unwrap();
    let mut got = ArrayD::zeros(g.raw_dim());
    gram.run(&g, &mut got).unwrap();
    assert_eq!(gram.gram_fallbacks(), 1);
    assert_eq!(got, want);
    // A healthy input afterwards takes the Gram path again.
    let h = g.mapv(|v| v / 2.0);
    gram.run(&h, &mut got).unwrap();
    assert_eq!(gram.gram_fallbacks(), 1);
}

/// bf16 storage on the stress inputs (condition number 1e6, rank 1,
/// scaled by 1e±30, square and tall): the output is finite and its largest
/// singular value within 1.5× of the plain form's, with or without the
/// guard's fallbacks.
#[test]
fn bf16_stress_inputs_never_diverge() {
    let n = 48;
    // Rank r, singular values log-spaced from `scale` to `scale/c`.
    let cond = |seed: u64, m: usize, nn: usize, r: usize, c: f64, scale: f64| {
        spectral_map(&gaussian(seed, m, nn), |j, _| {
            if j < r {
                scale * c.powf(-(j as f64) / (r.max(2) - 1) as f64)
            } else {
                0.0
            }
        })
    };
    let inputs = [
        cond(1, n, n, n, 1e6, 1.0),
        cond(2, n, 4 * n, n, 1e6, 1.0),
        cond(3, n, 4 * n, 1, 1.0, 1.0),
        cond(4, 4 * n, n, n / 4, 10.0, 1.0),
        cond(5, n, 4 * n, n, 1e2, 1e30),
        cond(6, 4 * n, n, n, 1e2, 1e-30),
    ];
    let mut svd = FaerPolar::new();
    for set in [
        NsConfig::muon().with_steps(8),
        NsConfig::polar_express(),
        NsConfig::new(CoefficientSet::ModdedNanogpt),
    ] {
        let delta = set.coefficients.default_delta();
        let set = set.with_normalization(Normalization::Frobenius { delta, eps: 0.0 });
        for (i, g) in inputs.iter().enumerate() {
            let mut x: ArrayD<f32> = g.mapv(|v| v as f32);
            round_bf16(&mut x);
            let mut p = ArrayD::zeros(x.raw_dim());
            NewtonSchulz::<NdBf16>::new(set.clone())
                .unwrap()
                .run(&x, &mut p)
                .unwrap();
            let mut q = ArrayD::zeros(x.raw_dim());
            let mut gram = NewtonSchulz::<NdBf16>::new(set.clone().gram()).unwrap();
            gram.run(&x, &mut q).unwrap();
            assert!(q.iter().all(|v| v.is_finite()), "input {i}");
            let sp = svd.singular_values::<Nd64>(&p.mapv(f64::from)).unwrap()[0];
            let sq = svd.singular_values::<Nd64>(&q.mapv(f64::from)).unwrap()[0];
            assert!(
                sq <= 1.5 * sp,
                "{} input {i}: σ_max {sq} against plain {sp}",
                set.coefficients.name()
            );
        }
    }
}
