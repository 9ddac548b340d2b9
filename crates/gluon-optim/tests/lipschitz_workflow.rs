//! The (L0, L1) workflow of SPEC §3 on functions whose layer-wise
//! constants are known in closed form:
//! - `f(X) = exp(<A, X>)`: `∇f = f·A`, so `‖∇f(X) − ∇f(Y)‖_* =
//!   |f(X) − f(Y)|·‖A‖_*` and, along a segment of length `s`,
//!   `|f(X) − f(Y)| ≤ f·(e^{‖A‖_*·s} − 1)`: `(L0, L1) = (0, ‖A‖_*)` in the
//!   block's norm (dual norm `‖·‖_*`);
//! - `f(X) = ½‖X − C‖_F²`: `(L0, L1) = (1, 0)` in the Frobenius norm and
//!   `(min(m, n), 0)` in the spectral norm (`‖·‖_nuc ≤ rank·‖·‖_2`).
//!
//! The public probe helper recovers them, the fit reports what its points
//! covered and warns of long or inexact probe steps, and Gluon with the
//! true constants descends monotonically.

use std::collections::BTreeMap;

use gluon_optim::{
    Config, FitWarning, GroupConfig, Label, LipschitzEstimator, LmoGroup, NormSpec, OptError,
    Optimizer, Orth, Radius, presets, probe,
};
use lmo_core::LmoError;
use lmo_ndarray::Nd64;
use ndarray::{ArrayD, IxDyn};

/// A deterministic matrix with entries in [−1, 1) (integer hashing).
fn matrix(m: usize, n: usize, seed: u64) -> ArrayD<f64> {
    let v = (0..m * n)
        .map(|k| {
            let h = (k as u64 + 1)
                .wrapping_mul(6364136223846793005)
                .wrapping_add(seed.wrapping_mul(1442695040888963407));
            ((h >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(&[m, n]), v).unwrap()
}

fn inner(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The block functions of the tests.
#[derive(Clone)]
enum Block {
    /// `exp(<A, X>)`.
    Exp(ArrayD<f64>),
    /// `½‖X − C‖_F²`.
    Quad(ArrayD<f64>),
}

impl Block {
    fn value_grad(&self, x: &ArrayD<f64>, g: &mut ArrayD<f64>) -> f64 {
        match self {
            Block::Exp(a) => {
                let f = inner(a, x).exp();
                g.assign(&(a * f));
                f
            }
            Block::Quad(c) => {
                let d = x - c;
                let f = 0.5 * inner(&d, &d);
                g.assign(&d);
                f
            }
        }
    }
}

fn lmo_group(norm: NormSpec, radius: Radius) -> GroupConfig {
    GroupConfig::Lmo(LmoGroup::new(norm, radius).beta(0.0))
}

/// The dual norm of `a` in `spec` (scale 1).
fn dual(spec: &NormSpec, a: &ArrayD<f64>) -> f64 {
    spec.build::<Nd64>(1.0).unwrap().dual_norm(a).unwrap()
}

/// Probes `blocks` from `X = 0` with a constant radius `t` per block
/// (β = 0, the norms of `specs`, exact polar factors unless `specs` says
/// otherwise), `steps` steps, quantile `tau`.
fn run_probe(
    blocks: &[(Label, NormSpec, Block)],
    t: &[f64],
    steps: usize,
    tau: f64,
) -> gluon_optim::ProbeReport {
    let mut cfg = Config::new();
    for ((l, spec, _), &t) in blocks.iter().zip(t) {
        cfg = cfg.group(l.clone(), lmo_group(spec.clone(), Radius::Constant(t)));
    }
    cfg.parallel = false;
    let labels: Vec<Label> = blocks.iter().map(|b| b.0.clone()).collect();
    let mut params: Vec<ArrayD<f64>> = blocks
        .iter()
        .map(|(_, _, b)| match b {
            Block::Exp(a) | Block::Quad(a) => ArrayD::zeros(a.raw_dim()),
        })
        .collect();
    let mut opt = Optimizer::<Nd64>::new(cfg.clone(), labels.clone(), &params).unwrap();
    let mut est = LipschitzEstimator::<Nd64>::new(&cfg, &labels, &params).unwrap();
    probe(&mut opt, &mut est, &mut params, steps, tau, |x, g| {
        for ((b, x), g) in blocks.iter().zip(x).zip(g.iter_mut()) {
            b.2.value_grad(x, g);
        }
    })
    .unwrap()
}

/// `(1 − e^{−u})/u`: the documented shortfall of L1 for steps of `u = L1·s`.
fn bias(u: f64) -> f64 {
    -(-u).exp_m1() / u
}

#[test]
fn the_probe_recovers_known_constants_of_a_sum_of_blocks_in_different_norms() {
    let a1 = matrix(6, 10, 1);
    let a3 = matrix(4, 5, 3) * 0.2;
    let c2 = matrix(3, 7, 2);
    let spectral = NormSpec::Spectral(Orth::Exact);
    let l1_hidden = dual(&spectral, &a1); // ‖A1‖_nuc
    let l1_embed = dual(&NormSpec::Sign, &a3); // ‖A3‖_1
    let blocks = vec![
        (Label::Hidden, spectral, Block::Exp(a1)),
        (Label::Vector, NormSpec::Frobenius, Block::Quad(c2)),
        (Label::Embedding, NormSpec::Sign, Block::Exp(a3)),
    ];
    // Steps of u = L1·t = 0.01 on the exponential blocks.
    let t = [0.01 / l1_hidden, 0.05, 0.01 / l1_embed];
    let steps = 20;
    for tau in [1.0, 0.9] {
        let r = run_probe(&blocks, &t, steps, tau);
        assert!(r.warnings.is_empty(), "τ = {tau}: {:?}", r.warnings);
        for (i, truth) in [(0, l1_hidden), (2, l1_embed)] {
            let f = r.fits[i].unwrap();
            assert_eq!(f.n, steps, "one point per step");
            // L̂ = g·L1·(1 − e^{−u})/u exactly: the fit is that line, 0.5 %
            // below the truth, through the origin.
            let want = truth * bias(0.01);
            assert!(
                (f.l1 - want).abs() < 1e-6 * want,
                "τ = {tau}, block {i}: {f}"
            );
            assert!(f.l0 <= 1e-6 * truth * f.g_range.1, "{f}");
            assert!((f.l1 - truth).abs() < 0.006 * truth, "{f}");
            assert!((f.step - t[i]).abs() < 1e-12 * t[i], "{f}");
            assert!((f.align - 1.0).abs() < 1e-9, "exact LMO steps: {f}");
            // The g range covered: from ‖A‖_* (f = 1) down to e^{−0.01·19}.
            assert!((f.g_range.1 - truth).abs() < 1e-9 * truth, "{f}");
            let lo = truth * (-0.01 * (steps - 1) as f64).exp();
            assert!((f.g_range.0 - lo).abs() < 1e-9 * truth, "{f}");
        }
        // The quadratic in the Frobenius norm: L̂ = 1 at every point.
        let f = r.fits[1].unwrap();
        assert!(
            (f.l0 - 1.0).abs() < 1e-9 && f.l1.abs() < 1e-9,
            "τ = {tau}: {f}"
        );
        assert_eq!(r.by_label[&Label::Vector], (f.l0, f.l1));
    }
}

#[test]
fn long_probe_steps_lower_l1_by_the_documented_factor_and_warn() {
    let a = matrix(5, 8, 7);
    let spectral = NormSpec::Spectral(Orth::Exact);
    let l1 = dual(&spectral, &a);
    let blocks = vec![(Label::Hidden, spectral, Block::Exp(a))];
    // u = L1·t = 1: L1 comes out at (1 − e^{−1}) = 63 % of the truth.
    let r = run_probe(&blocks, &[1.0 / l1], 8, 1.0);
    let f = r.fits[0].unwrap();
    assert!((f.l1 - l1 * bias(1.0)).abs() < 1e-6 * l1, "{f}");
    assert!((f.step_bias() - bias(f.l1 / l1)).abs() < 1e-12, "{f}");
    let long = r
        .warnings
        .iter()
        .find_map(|(i, w)| match w {
            FitWarning::LongSteps { u, bias } if *i == 0 => Some((*u, *bias)),
            _ => None,
        })
        .expect("long steps warn");
    assert!((long.0 - f.l1 / l1).abs() < 1e-9, "u = L1·s: {long:?}");
    assert!(long.1 < 0.8, "{long:?}");
    assert!(
        r.warnings[0].1.to_string().contains("(1 − e^(−u))/u"),
        "{}",
        r.warnings[0].1
    );
    // The same probe with steps 20× shorter: no warning.
    let blocks = vec![(
        Label::Hidden,
        NormSpec::Spectral(Orth::Exact),
        blocks[0].2.clone(),
    )];
    assert!(run_probe(&blocks, &[0.05 / l1], 8, 1.0).warnings.is_empty());
}

#[test]
fn newton_schulz_probe_steps_are_flagged_as_inexact() {
    // A = M₁·diag(1, 2.5, …, 8.5)·M₂ (M₁, M₂ random): singular values
    // spread over about an order of magnitude, which Muon's NS5 maps into
    // about [0.7, 1.2], so its step is not the exact LMO direction.
    use ndarray::Ix2;
    let two = |m: ArrayD<f64>| m.into_dimensionality::<Ix2>().unwrap();
    let d =
        ndarray::Array2::from_diag(&ndarray::Array1::from_shape_fn(6, |i| 1.0 + 1.5 * i as f64));
    let a = two(matrix(6, 6, 11))
        .dot(&d)
        .dot(&two(matrix(6, 12, 12)))
        .into_dyn();
    let ns = NormSpec::Spectral(Orth::NewtonSchulz(presets::gluon_ns()));
    let l1 = dual(&NormSpec::Spectral(Orth::Exact), &a);
    let blocks = vec![(Label::Hidden, ns, Block::Exp(a.clone()))];
    let r = run_probe(&blocks, &[0.01 / l1], 10, 1.0);
    let f = r.fits[0].unwrap();
    assert!(f.align < 0.95, "{f:?}");
    assert!(
        r.warnings
            .iter()
            .any(|(_, w)| matches!(w, FitWarning::InexactSteps { align } if *align == f.align)),
        "{:?}",
        r.warnings
    );
    // The exact polar factor: aligned, no warning.
    let cfg = Config::new()
        .group(
            Label::Hidden,
            lmo_group(
                NormSpec::Spectral(Orth::NewtonSchulz(presets::gluon_ns())),
                Radius::Constant(0.01 / l1),
            ),
        )
        .with_exact_polar();
    let GroupConfig::Lmo(g) = &cfg.groups[&Label::Hidden] else {
        unreachable!()
    };
    assert_eq!(g.norm, NormSpec::Spectral(Orth::Exact));
    let blocks = vec![(Label::Hidden, g.norm.clone(), Block::Exp(a))];
    assert!(
        run_probe(&blocks, &[0.01 / l1], 10, 1.0)
            .warnings
            .is_empty()
    );
}

#[test]
fn gluon_with_the_true_constants_descends_monotonically() {
    // ½‖X − C‖_F² in the spectral norm: (L0, L1) = (min(m, n), 0); Gluon's
    // step t = ‖G‖_nuc/L0 decreases f by at least ‖G‖_nuc²/(2·L0).
    let c = matrix(5, 9, 21);
    let quad = Block::Quad(c.clone());
    let cfg = Config::new().group(
        Label::Hidden,
        lmo_group(
            NormSpec::Spectral(Orth::Exact),
            Radius::Adaptive { l0: 5.0, l1: 0.0 },
        ),
    );
    let mut p = vec![ArrayD::<f64>::zeros(IxDyn(&[5, 9]))];
    let mut g = p.clone();
    let mut opt = Optimizer::<Nd64>::new(cfg, vec![Label::Hidden], &p).unwrap();
    let mut prev = quad.value_grad(&p[0], &mut g[0]);
    let f0 = prev;
    // Down to f = 1e-12·f0 (below, rounding in X − C is of the size of
    // the guaranteed decrease).
    for k in 0..100 {
        if prev < 1e-12 * f0 {
            break;
        }
        let nuc = dual(&NormSpec::Spectral(Orth::Exact), &g[0]);
        opt.step(&mut p, &g).unwrap();
        let f = quad.value_grad(&p[0], &mut g[0]);
        // ‖G‖_nuc² ≥ ‖G‖_F² = 2f: at least 20 % less per step.
        assert!(
            f <= prev - nuc * nuc / 10.0 * (1.0 - 1e-9),
            "step {k}: {prev} → {f}"
        );
        prev = f;
    }
    assert!(prev < 1e-12 * f0, "{f0} → {prev}");
    // exp(<A, X>) in Gluon's hidden norm (RMS→RMS) with its true constants
    // (0, ‖A‖_*): t = 1/L1, so f falls by exactly e^{−1} per step.
    let a = matrix(4, 6, 5);
    let l1 = dual(&NormSpec::RmsToRms(Orth::Exact), &a);
    let exp = Block::Exp(a);
    let mut fits = BTreeMap::new();
    fits.insert(Label::Hidden, (0.0, l1));
    let cfg = presets::gluon_fitted(&fits, 0.0)
        .unwrap()
        .with_exact_polar();
    let mut p = vec![ArrayD::<f64>::zeros(IxDyn(&[4, 6]))];
    let mut g = p.clone();
    let mut opt = Optimizer::<Nd64>::new(cfg, vec![Label::Hidden], &p).unwrap();
    let mut prev = exp.value_grad(&p[0], &mut g[0]);
    for k in 0..40 {
        opt.step(&mut p, &g).unwrap();
        let f = exp.value_grad(&p[0], &mut g[0]);
        assert!(
            (f / prev - (-1f64).exp()).abs() < 1e-9,
            "step {k}: {prev} → {f}"
        );
        prev = f;
    }
}

#[test]
fn gluons_newton_schulz_is_scale_invariant_where_muons_stalls() {
    // The fraction of the exact dual norm the LMO attains, at scale 1 and
    // far below Muon's ε = 1e-7.
    let m = matrix(8, 16, 31);
    let exact = dual(&NormSpec::Spectral(Orth::Exact), &m);
    let attained = |spec: NormSpec, c: f64| {
        let mut norm = spec.build::<Nd64>(1.0).unwrap();
        let g = &m * c;
        let mut d = ArrayD::zeros(g.raw_dim());
        -norm.lmo(&g, &mut d).unwrap() / (c * exact)
    };
    let gluon = || NormSpec::Spectral(Orth::NewtonSchulz(presets::gluon_ns()));
    let muon = || NormSpec::Spectral(Orth::NewtonSchulz(orthogonalize::NsConfig::muon()));
    let at_one = attained(gluon(), 1.0);
    assert!(at_one > 0.7, "{at_one}");
    for c in [1e-9, 1e-20, 1e-200] {
        let a = attained(gluon(), c);
        assert!((a - at_one).abs() < 1e-9, "scale {c}: {a} vs {at_one}");
    }
    // Muon's absolute ε: a small fraction once ‖M‖_F ≪ 1e-7.
    assert!(attained(muon(), 1e-13) < 0.1 * at_one);
}

#[test]
fn estimator_constructor_from_norms_reset_and_errors() {
    let blocks = [matrix(3, 4, 41), matrix(1, 5, 42)];
    let labels = vec![Label::Hidden, Label::Vector];
    let norms = || {
        vec![
            NormSpec::Spectral(Orth::Exact).build::<Nd64>(1.0).unwrap(),
            NormSpec::Frobenius.build::<Nd64>(1.0).unwrap(),
        ]
    };
    let mut est = LipschitzEstimator::<Nd64>::from_norms(&labels, norms(), &blocks).unwrap();
    let g = blocks.clone();
    est.observe(&blocks, &g).unwrap();
    let moved: Vec<ArrayD<f64>> = blocks.iter().map(|b| b * 1.5).collect();
    est.observe(&moved, &moved).unwrap();
    assert_eq!(est.points(0).len(), 1);
    // After a reset the next iterate pairs with nothing.
    est.reset();
    est.observe(&blocks, &g).unwrap();
    assert_eq!(est.points(0).len(), 1);
    est.observe(&moved, &moved).unwrap();
    assert_eq!(est.points(0).len(), 2);
    // Counts and shapes are checked.
    assert_eq!(
        LipschitzEstimator::<Nd64>::from_norms(&labels[..1], norms(), &blocks).err(),
        Some(OptError::CountMismatch {
            expected: 2,
            found: 1
        })
    );
    let vec3 = vec![ArrayD::<f64>::zeros(IxDyn(&[2, 2, 2])), blocks[1].clone()];
    assert!(matches!(
        LipschitzEstimator::<Nd64>::from_norms(&labels, norms(), &vec3).err(),
        Some(OptError::Lmo { block: 0, .. })
    ));
    // The probe refuses a quantile outside (0, 1] before it moves anything.
    let cfg = Config::new().group(
        Label::Hidden,
        lmo_group(NormSpec::Frobenius, Radius::Constant(0.1)),
    );
    let mut p = vec![blocks[0].clone()];
    let mut opt = Optimizer::<Nd64>::new(cfg.clone(), vec![Label::Hidden], &p).unwrap();
    let mut est = LipschitzEstimator::<Nd64>::new(&cfg, &[Label::Hidden], &p).unwrap();
    // A gradient that would move `p` (g = X ≠ 0) if a step ran.
    let e = probe(&mut opt, &mut est, &mut p, 3, 1.5, |x, g| {
        g[0].assign(&x[0])
    })
    .unwrap_err();
    assert!(matches!(
        e,
        OptError::Lmo {
            error: LmoError::InvalidHyperParameter(_),
            ..
        }
    ));
    assert_eq!(p[0], blocks[0]);
    assert!(est.points(0).is_empty());
    assert_eq!(opt.steps(), 0);
    // … and a valid quantile does move it and records one point per step.
    let r = probe(&mut opt, &mut est, &mut p, 3, 1.0, |x, g| {
        g[0].assign(&x[0])
    })
    .unwrap();
    assert_ne!(p[0], blocks[0]);
    assert_eq!(r.fits[0].unwrap().n, 3);
    // Points and fits saved before `step`, `align` and `g_range` existed
    // load with those unknown (NaN) and raise no warning.
    let old: gluon_optim::Point =
        serde_json::from_str(r#"{"k": 3, "g": 2.0, "lhat": 1.5}"#).unwrap();
    assert!(old.step.is_nan() && old.align.is_nan());
    let f = gluon_optim::fit_envelope(&[old]).unwrap();
    assert!(f.warnings().is_empty(), "{f:?}");
    let old: gluon_optim::Fit =
        serde_json::from_str(r#"{"l0": 1.0, "l1": 2.0, "above": 0.0, "n": 4}"#).unwrap();
    assert!(old.g_range.0.is_nan() && old.warnings().is_empty());
}

#[test]
fn gluon_fitted_takes_constants_per_label() {
    let mut fits = BTreeMap::new();
    fits.insert(Label::Hidden, (0.5, 70.0));
    fits.insert(Label::Head, (0.0, 1.3));
    let cfg = presets::gluon_fitted(&fits, 0.9).unwrap();
    assert_eq!(cfg.groups.len(), 2);
    for (l, &(l0, l1)) in &fits {
        let GroupConfig::Lmo(g) = &cfg.groups[l] else {
            panic!("{l:?} is not an LMO group")
        };
        assert_eq!(g.radius, Radius::Adaptive { l0, l1 });
        assert_eq!(g.beta, 0.9);
    }
    // The two-pair preset is the per-label one with shared constants.
    let mut all = BTreeMap::new();
    all.insert(Label::Hidden, (0.0, 70.0));
    for l in [Label::Embedding, Label::Head, Label::Vector] {
        all.insert(l, (0.0, 1.3));
    }
    assert_eq!(
        presets::gluon_fitted(&all, 0.95).unwrap(),
        presets::gluon((0.0, 70.0), (0.0, 1.3), 0.95)
    );
    fits.insert(Label::Other("qk".into()), (0.0, 1.0));
    assert_eq!(
        presets::gluon_fitted(&fits, 0.9).err(),
        Some(OptError::NoGroup(Label::Other("qk".into())))
    );
}
