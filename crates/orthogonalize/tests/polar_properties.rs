//! Properties of SPEC §2 for every coefficient set and precision:
//! - the iteration acts on singular values one by one: the output singular
//!   values are `p_s(…p_1(σ_j·scale))` of the input's, computed here from an
//!   exact SVD and the scalar polynomials (an independent reference);
//! - the cubic and Polar Express limits equal the exact polar factor on
//!   well-conditioned input; the exact polar factor is orthogonal and agrees
//!   with lmo-core's independent Jacobi SVD;
//! - equivariance `polar(Q·G·P) = Q·polar(G)·P` for orthogonal Q, P;
//! - zero, empty, 1×n, n×1, non-finite, huge (1e30) and tiny (1e-30) input;
//! - the batch API equals one-by-one runs; the spectral LMO plugs them in.

use lmo_core::{Backend, ExactPolar, LmoError, Norm, Orthogonalizer, Scalar, Spectral, Trans};
use lmo_ndarray::{Nd32, Nd64, NdBackend, NdBf16, NdScalar, round_bf16};
use ndarray::{ArrayD, IxDyn};
use orthogonalize::{BatchPolar, CoefficientSet, FaerPolar, NewtonSchulz, Normalization, NsConfig};
use proptest::prelude::*;
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};

fn gaussian(rng: &mut StdRng, m: usize, n: usize) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(&[m, n]), |_| StandardNormal.sample(rng))
}

fn orthogonal(rng: &mut StdRng, n: usize) -> ArrayD<f64> {
    let g = gaussian(rng, n, n);
    let mut q = g.clone();
    FaerPolar::new().run::<Nd64>(&g, &mut q).unwrap();
    q
}

fn mm(a: &ArrayD<f64>, b: &ArrayD<f64>) -> ArrayD<f64> {
    let mut c = ArrayD::zeros(IxDyn(&[a.shape()[0], b.shape()[1]]));
    Nd64::gemm(1.0, a, Trans::No, b, Trans::No, 0.0, &mut c);
    c
}

/// `Q[:, :k]·diag(σ)·P[:k, :]` for random orthogonal Q (m×m), P (n×n).
fn with_singular_values(rng: &mut StdRng, m: usize, n: usize, sigma: &[f64]) -> ArrayD<f64> {
    let q = orthogonal(rng, m);
    let p = orthogonal(rng, n);
    ArrayD::from_shape_fn(IxDyn(&[m, n]), |ix| {
        (0..sigma.len())
            .map(|j| q[[ix[0], j]] * sigma[j] * p[[j, ix[1]]])
            .sum()
    })
}

fn cast<S: NdScalar>(x: &ArrayD<f64>) -> ArrayD<S> {
    x.mapv(S::of)
}

fn up<S: NdScalar>(x: &ArrayD<S>) -> ArrayD<f64> {
    x.mapv(|v| v.as_f64())
}

fn fro(x: &ArrayD<f64>) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

fn sets() -> Vec<CoefficientSet> {
    vec![
        CoefficientSet::MuonQuintic,
        CoefficientSet::Cubic,
        CoefficientSet::PolarExpress,
        CoefficientSet::ModdedNanogpt,
        CoefficientSet::Custom(vec![[2.0, -1.5, 0.5], [1.5, -0.5, 0.0]]),
    ]
}

/// The scalar composite polynomial of a configuration applied to σ.
fn scalar_map(cfg: &NsConfig, sigma: f64) -> f64 {
    (0..cfg.steps).fold(sigma, |x, i| {
        let [a, b, c] = cfg.coefficients.step(i);
        a * x + b * x.powi(3) + c * x.powi(5)
    })
}

fn input_scale(cfg: &NsConfig, g: &ArrayD<f64>) -> f64 {
    match cfg.normalization {
        Normalization::Frobenius { delta, eps } => 1.0 / (fro(g) * (1.0 + delta) + eps),
        Normalization::None => 1.0,
    }
}

/// First-order bound on how rounding propagates to the output singular
/// values: every stored iterate is rounded with an error of about
/// `u·‖X_i‖₂` (absolute in the spectral sense: rounding `A = X·Xᵀ` moves
/// all its eigenvalues by ~u·‖A‖), and an error injected at step i is
/// amplified by `Π_{j≥i}|p_j'(x_j)|` along each singular value's scalar
/// trajectory. Returns the largest bound over the input's singular values
/// `sigmas` (already normalized).
fn propagated_error(cfg: &NsConfig, sigmas: &[f64], u: f64) -> f64 {
    let traj: Vec<(Vec<f64>, Vec<f64>)> = sigmas
        .iter()
        .map(|&sigma| {
            let (mut xs, mut ds) = (vec![sigma], vec![]);
            for i in 0..cfg.steps {
                let [a, b, c] = cfg.coefficients.step(i);
                let x = *xs.last().unwrap();
                ds.push((a + 3.0 * b * x * x + 5.0 * c * x.powi(4)).abs());
                xs.push(a * x + b * x.powi(3) + c * x.powi(5));
            }
            (xs, ds)
        })
        .collect();
    let xmax: Vec<f64> = (0..=cfg.steps)
        .map(|i| traj.iter().map(|(xs, _)| xs[i].abs()).fold(0.0, f64::max))
        .collect();
    traj.iter()
        .map(|(_, ds)| {
            (0..=cfg.steps)
                .map(|i| u * xmax[i] * ds[i..].iter().product::<f64>())
                .sum::<f64>()
        })
        .fold(0.0, f64::max)
}

/// Output singular values of `B`'s iteration against the scalar reference,
/// within `tol` plus the propagated rounding of unit roundoff `u` (several
/// roundings per step: a factor 4).
fn singular_value_map<B>(
    cfg: &NsConfig,
    g64: &ArrayD<f64>,
    tol: f64,
    u: f64,
) -> Result<(), TestCaseError>
where
    B: Backend<Tensor = ArrayD<<B as Backend>::Scalar>>,
    B::Scalar: NdScalar,
{
    let g: ArrayD<B::Scalar> = cast(g64);
    let g_used = up(&g); // what the backend actually saw (after rounding)
    let mut out = g.clone();
    NewtonSchulz::<B>::new(cfg.clone())
        .unwrap()
        .run(&g, &mut out)
        .unwrap();
    let mut faer = FaerPolar::new();
    let sin = faer.singular_values::<Nd64>(&g_used).unwrap();
    let s = input_scale(cfg, &g_used);
    let normalized: Vec<f64> = sin.iter().map(|&x| x * s).collect();
    let slack = 4.0 * propagated_error(cfg, &normalized, u);
    let mut want: Vec<f64> = normalized.iter().map(|&x| scalar_map(cfg, x)).collect();
    want.sort_by(|a, b| b.total_cmp(a));
    let got = faer.singular_values::<Nd64>(&up(&out)).unwrap();
    for (w, o) in want.iter().zip(&got) {
        prop_assert!(
            (w - o).abs() <= tol * (1.0 + w.abs()) + slack,
            "{}: σ_out {o} vs scalar reference {w} (slack {slack})",
            cfg.coefficients.name()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(std::env::var("POLAR_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24)))]

    #[test]
    fn output_singular_values_follow_the_scalar_polynomial(
        m in 1usize..24, n in 1usize..24, seed: u64, set in 0usize..5, steps in 1usize..8
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let g = gaussian(&mut rng, m, n);
        let cfg = NsConfig::new(sets()[set].clone()).with_steps(steps);
        singular_value_map::<Nd64>(&cfg, &g, 1e-9, f64::EPSILON / 2.0)?;
        singular_value_map::<Nd32>(&cfg, &g, 2e-3, f32::EPSILON as f64 / 2.0)?;
        // bf16: 8-bit mantissa, rounding at every stored tensor; the slack
        // is the propagated rounding (vacuous for singular values below
        // bf16's resolution, tight for the large ones). Polar Express's
        // safety-scaled schedule is chaotic near the top of [0, 1] (a 1%
        // change of σ ≈ 0.99 moves its 5-step image between 0.87 and 1.10),
        // so in bf16 it gets finiteness and the polynomials' range only;
        // its bf16 accuracy is quantified in docs/orthogonalize.md.
        if cfg.coefficients == CoefficientSet::PolarExpress {
            let gb: ArrayD<f32> = cast(&g);
            let mut ob = gb.clone();
            NewtonSchulz::<NdBf16>::new(cfg.clone()).unwrap().run(&gb, &mut ob).unwrap();
            let s = FaerPolar::new().singular_values::<Nd64>(&up(&ob)).unwrap();
            prop_assert!(s.iter().all(|v| v.is_finite() && *v <= 2.0), "{s:?}");
        } else {
            singular_value_map::<NdBf16>(&cfg, &g, 0.05, 2f64.powi(-9))?;
        }
    }

    #[test]
    fn equivariance_under_orthogonal_transforms(m in 1usize..16, n in 1usize..16, seed: u64, set in 0usize..5) {
        let mut rng = StdRng::seed_from_u64(seed);
        let g = gaussian(&mut rng, m, n);
        let q = orthogonal(&mut rng, m);
        let p = orthogonal(&mut rng, n);
        let qgp = mm(&mm(&q, &g), &p);
        let mut ns = NewtonSchulz::<Nd64>::new(NsConfig::new(sets()[set].clone())).unwrap();
        let (mut a, mut b) = (g.clone(), g.clone());
        ns.run(&g, &mut a).unwrap();
        ns.run(&qgp, &mut b).unwrap();
        let want = mm(&mm(&q, &a), &p);
        let err = fro(&(&b - &want)) / fro(&want).max(1e-300);
        prop_assert!(err < 1e-10, "relative error {err}");
    }

    #[test]
    fn exact_polar_is_orthogonal_and_matches_jacobi(m in 1usize..30, n in 1usize..30, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let g = gaussian(&mut rng, m, n);
        let (mut a, mut b) = (g.clone(), g.clone());
        FaerPolar::new().run::<Nd64>(&g, &mut a).unwrap();
        ExactPolar::<Nd64>::new().polar(&g, &mut b).unwrap();
        prop_assert!(fro(&(&a - &b)) < 1e-11 * (m.min(n) as f64));
        // UᵀU = I on the smaller side (Gaussian matrices have full rank).
        let k = m.min(n);
        let mut gram = ArrayD::zeros(IxDyn(&[k, k]));
        if m >= n {
            Nd64::gemm(1.0, &a, Trans::Yes, &a, Trans::No, 0.0, &mut gram);
        } else {
            Nd64::gemm(1.0, &a, Trans::No, &a, Trans::Yes, 0.0, &mut gram);
        }
        for i in 0..k {
            for j in 0..k {
                let want = if i == j { 1.0 } else { 0.0 };
                prop_assert!((gram[[i, j]] - want).abs() < 1e-12);
            }
        }
    }
}

/// Converging sets reach the exact polar factor on well-conditioned input.
#[test]
fn cubic_and_polar_express_limits_are_exact() {
    let mut rng = StdRng::seed_from_u64(3);
    for (m, n) in [(40, 40), (60, 25), (25, 60)] {
        let k = m.min(n);
        let sigma: Vec<f64> = (0..k)
            .map(|j| 1.0 + 9.0 * j as f64 / (k - 1) as f64)
            .collect(); // condition 10
        let g = with_singular_values(&mut rng, m, n, &sigma);
        let mut exact = g.clone();
        FaerPolar::new().run::<Nd64>(&g, &mut exact).unwrap();
        for (cfg, tol64, tol32) in [
            (
                NsConfig::new(CoefficientSet::Cubic).with_steps(30),
                1e-12,
                2e-5,
            ),
            (NsConfig::polar_express().with_steps(10), 1e-12, 2e-5),
        ] {
            let mut out = g.clone();
            NewtonSchulz::<Nd64>::new(cfg.clone())
                .unwrap()
                .run(&g, &mut out)
                .unwrap();
            let e64 = fro(&(&out - &exact)) / fro(&exact);
            assert!(
                e64 < tol64,
                "{} f64 {m}x{n}: {e64}",
                cfg.coefficients.name()
            );
            let g32: ArrayD<f32> = cast(&g);
            let mut o32 = g32.clone();
            NewtonSchulz::<Nd32>::new(cfg.clone())
                .unwrap()
                .run(&g32, &mut o32)
                .unwrap();
            let e32 = fro(&(&up(&o32) - &exact)) / fro(&exact);
            assert!(
                e32 < tol32,
                "{} f32 {m}x{n}: {e32}",
                cfg.coefficients.name()
            );
        }
    }
}

/// `tol`: general tolerance; `mag_tol`: tolerance on the magnitude of a
/// rank-one output (bf16 rounding before a steep first polynomial, as in
/// Polar Express, moves it by up to ~20 %).
fn edge_cases<B>(tol: f64, mag_tol: f64)
where
    B: Backend<Tensor = ArrayD<<B as Backend>::Scalar>>,
    B::Scalar: NdScalar,
{
    for set in sets() {
        let cfg = NsConfig::new(set.clone());
        let mut ns = NewtonSchulz::<B>::new(cfg.clone()).unwrap();
        // Zero → zero.
        let z = ArrayD::<B::Scalar>::zeros(IxDyn(&[3, 5]));
        let mut out = ArrayD::from_elem(IxDyn(&[3, 5]), B::Scalar::of(7.0));
        ns.run(&z, &mut out).unwrap();
        assert!(out.iter().all(|v| *v == B::Scalar::of(0.0)));
        // Empty → Ok, nothing written.
        let e = ArrayD::<B::Scalar>::zeros(IxDyn(&[0, 4]));
        let mut eo = e.clone();
        ns.run(&e, &mut eo).unwrap();
        // 1×n and n×1: rank one, σ = ‖g‖, so the output is p(1-ish)·g/‖g‖.
        for (m, n) in [(1, 6), (6, 1)] {
            let g64 = ArrayD::from_shape_fn(IxDyn(&[m, n]), |ix| (ix[0] + ix[1]) as f64 - 2.5);
            let g: ArrayD<B::Scalar> = cast(&g64);
            let mut o = g.clone();
            ns.run(&g, &mut o).unwrap();
            let want = scalar_map(&cfg, fro(&up(&g)) * input_scale(&cfg, &up(&g)));
            let dir = up(&g) / fro(&up(&g));
            let alpha: f64 = (&up(&o) * &dir).sum();
            let off = fro(&(&up(&o) - &(&dir * alpha)));
            assert!(
                off < tol,
                "{} {m}x{n}: not parallel to g ({off})",
                set.name()
            );
            assert!(
                (alpha - want).abs() < mag_tol,
                "{} {m}x{n}: {alpha} vs {want}",
                set.name()
            );
        }
        // Non-finite → error, output untouched.
        let mut bad = ArrayD::from_elem(IxDyn(&[4, 4]), B::Scalar::of(1.0));
        bad[[2, 1]] = B::Scalar::of(f64::NAN);
        let mut bo = ArrayD::from_elem(IxDyn(&[4, 4]), B::Scalar::of(7.0));
        assert_eq!(ns.run(&bad, &mut bo), Err(LmoError::NonFinite));
        assert!(bo.iter().all(|v| *v == B::Scalar::of(7.0)));
        // Shape mismatch and rank errors.
        let mut wrong = ArrayD::<B::Scalar>::zeros(IxDyn(&[4, 5]));
        assert!(matches!(
            ns.run(&bad, &mut wrong),
            Err(LmoError::ShapeMismatch { .. })
        ));
        let v = ArrayD::<B::Scalar>::zeros(IxDyn(&[4]));
        assert_eq!(
            ns.run(&v, &mut v.clone()),
            Err(LmoError::UnsupportedRank(1))
        );
        // Huge and tiny entries: finite; with ε = 0 exactly scale-invariant.
        let mut rng = StdRng::seed_from_u64(1);
        let base = gaussian(&mut rng, 5, 8);
        let mut ns0 =
            NewtonSchulz::<B>::new(cfg.clone().with_normalization(Normalization::Frobenius {
                delta: 0.0,
                eps: 0.0,
            }))
            .unwrap();
        let gb: ArrayD<B::Scalar> = cast(&base);
        let mut ob = gb.clone();
        ns0.run(&gb, &mut ob).unwrap();
        for mag in [1e30, 1e-30] {
            let g: ArrayD<B::Scalar> = cast(&(&base * mag));
            let mut o = g.clone();
            ns.run(&g, &mut o).unwrap();
            assert!(
                o.iter().all(|v| v.as_f64().is_finite()),
                "{} {mag}",
                set.name()
            );
            ns0.run(&g, &mut o).unwrap();
            let err = fro(&(&up(&o) - &up(&ob))) / fro(&up(&ob));
            assert!(err < tol, "{} scale {mag}: {err}", set.name());
        }
    }
}

#[test]
fn edge_cases_f64() {
    edge_cases::<Nd64>(1e-10, 1e-10);
}

#[test]
fn edge_cases_f32() {
    edge_cases::<Nd32>(1e-4, 1e-4);
}

#[test]
fn edge_cases_bf16() {
    edge_cases::<NdBf16>(0.08, 0.3);
}

#[test]
fn invalid_configs_are_rejected() {
    let bad = [
        NsConfig::muon().with_steps(0),
        NsConfig::new(CoefficientSet::Custom(vec![])),
        NsConfig::new(CoefficientSet::Custom(vec![[1.0, f64::NAN, 0.0]])),
        NsConfig::muon().with_normalization(Normalization::Frobenius {
            delta: -0.1,
            eps: 0.0,
        }),
    ];
    for cfg in bad {
        assert!(matches!(
            NewtonSchulz::<Nd64>::new(cfg),
            Err(LmoError::InvalidHyperParameter(_))
        ));
    }
}

#[test]
fn polar_express_coefficients_follow_the_reference() {
    let pe = CoefficientSet::PolarExpress;
    // arXiv 2505.16932, Algorithm 1 (SPEC §2): the published triples in
    // full precision, literals copied from the spec, not the crate.
    let published: [[f64; 3]; 8] = [
        [8.28721201814563, -23.595886519098837, 17.300387312530933],
        [4.107059111542203, -2.9478499167379106, 0.5448431082926601],
        [3.9486908534822946, -2.908902115962949, 0.5518191394370137],
        [3.3184196573706015, -2.488488024314874, 0.51004894012372],
        [2.300652019954817, -1.6689039845747493, 0.4188073119525673],
        [1.891301407787398, -1.2679958271945868, 0.37680408948524835],
        [1.8750014808534479, -1.2500016453999487, 0.3750001645474248],
        [1.875, -1.25, 0.375],
    ];
    // The first seven divided by (1.01, 1.01³, 1.01⁵) for safety, not the
    // eighth; from step 8 on the last one repeats.
    let safe = |[a, b, c]: [f64; 3]| [a / 1.01, b / 1.01f64.powi(3), c / 1.01f64.powi(5)];
    for (i, t) in published.iter().enumerate().take(7) {
        assert_eq!(pe.step(i), safe(*t), "Polar Express step {i}");
    }
    for i in [7, 8, 9, 40, 1000] {
        assert_eq!(pe.step(i), [1.875, -1.25, 0.375], "Polar Express step {i}");
    }
    // modded-nanogpt's per-step quintic (2025-02); the last one repeats.
    let nanogpt: [[f64; 3]; 5] = [
        [4.0848, -6.8946, 2.9270],
        [3.9505, -6.3029, 2.6377],
        [3.7418, -5.5913, 2.3037],
        [2.8769, -3.1427, 1.2046],
        [2.8366, -3.0525, 1.2012],
    ];
    let ng = CoefficientSet::ModdedNanogpt;
    for (i, t) in nanogpt.iter().enumerate() {
        assert_eq!(ng.step(i), *t, "modded-nanogpt step {i}");
    }
    for i in [5, 9, 100] {
        assert_eq!(
            ng.step(i),
            [2.8366, -3.0525, 1.2012],
            "modded-nanogpt step {i}"
        );
    }
    // Muon's quintic and the classical cubic, the same at every step.
    for i in [0, 1, 3, 4, 50] {
        assert_eq!(
            CoefficientSet::MuonQuintic.step(i),
            [3.4445, -4.7750, 2.0315]
        );
        assert_eq!(CoefficientSet::Cubic.step(i), [1.5, -0.5, 0.0]);
    }
    // Normalization margin δ: 0.01 for Polar Express (as the reference
    // normalizes), 0 for Muon and the others.
    assert_eq!(pe.default_delta(), 0.01);
    assert_eq!(CoefficientSet::MuonQuintic.default_delta(), 0.0);
    assert_eq!(CoefficientSet::Cubic.default_delta(), 0.0);
    assert_eq!(ng.default_delta(), 0.0);
    assert_eq!(
        CoefficientSet::Custom(vec![[1.5, -0.5, 0.0]]).default_delta(),
        0.0
    );
    // …and the presets normalize with it (ε = 1e-7 as Muon's reference).
    let frob = |delta| Normalization::Frobenius { delta, eps: 1e-7 };
    assert_eq!(NsConfig::polar_express().normalization, frob(0.01));
    assert_eq!(NsConfig::muon().normalization, frob(0.0));
    assert_eq!(
        NsConfig::new(CoefficientSet::ModdedNanogpt).normalization,
        frob(0.0)
    );
}

#[test]
fn muon_ns5_lands_in_its_known_band() {
    // Muon's quintic is deliberately inexact: σ_out ∈ [0.68, 1.2] for
    // Gaussian input (the band K. Jordan reports is roughly [0.7, 1.2]).
    let mut rng = StdRng::seed_from_u64(11);
    let g = gaussian(&mut rng, 64, 128);
    let mut o = g.clone();
    NewtonSchulz::<Nd64>::muon().run(&g, &mut o).unwrap();
    let s = FaerPolar::new().singular_values::<Nd64>(&o).unwrap();
    assert!(
        s.iter().all(|&x| (0.68..=1.2).contains(&x)),
        "{:?}",
        (s[0], s[s.len() - 1])
    );
}

#[test]
fn batch_equals_one_by_one_and_plugs_into_spectral() {
    let mut rng = StdRng::seed_from_u64(5);
    let shapes = [(30, 50), (50, 30), (30, 50), (8, 8), (1, 9)];
    let gs: Vec<ArrayD<f32>> = shapes
        .iter()
        .map(|&(m, n)| cast(&gaussian(&mut rng, m, n)))
        .collect();
    let mut outs: Vec<ArrayD<f32>> = gs.to_vec();
    let batch = BatchPolar::<Nd32>::new(NsConfig::muon()).unwrap();
    batch.run(&gs, &mut outs).unwrap();
    batch.run(&gs, &mut outs).unwrap(); // second call reuses buffers
    let mut ns = NewtonSchulz::<Nd32>::muon();
    for (g, o) in gs.iter().zip(&outs) {
        let mut one = g.clone();
        ns.run(g, &mut one).unwrap();
        assert_eq!(&one, o, "batch must equal one-by-one bit for bit");
    }
    let mut short = outs.clone();
    short.pop();
    assert!(matches!(
        batch.run(&gs, &mut short),
        Err(LmoError::ShapeMismatch { .. })
    ));

    // Spectral LMO with a converged cubic: <g, lmo(g)> = −‖g‖_nuclear.
    let sigma: Vec<f64> = (0..12).map(|j| 1.0 + j as f64).collect();
    let g = with_singular_values(&mut rng, 20, 12, &sigma);
    let ns =
        NewtonSchulz::<Nd64>::new(NsConfig::new(CoefficientSet::Cubic).with_steps(40)).unwrap();
    let mut sp = Spectral::with_orthogonalizer(ns);
    let mut d = g.clone();
    let ip = sp.lmo(&g, &mut d).unwrap();
    let nuc: f64 = sigma.iter().sum();
    assert!((ip + nuc).abs() < 1e-9 * nuc, "{ip} vs -{nuc}");
}

#[test]
fn bf16_rounding_is_to_nearest() {
    let mut x =
        ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![1.0f32 + 1.0 / 512.0, 5.3, -2.0]).unwrap();
    round_bf16(&mut x);
    assert_eq!(x[[0, 0]], 1.0); // halfway between 1 and 1+2⁻⁷: ties to even
    assert_eq!(x[[0, 1]], 5.3125);
    assert_eq!(x[[0, 2]], -2.0);
    let _ = NdBackend::<f32>::default();
}
