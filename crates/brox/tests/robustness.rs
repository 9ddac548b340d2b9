//! Issue 17: scale invariance of the exact trust-region solver, empty
//! inputs, and the linear oracle's certificate in non-Euclidean norms.

use brox::oracles::{Distance, Linear, Quadratic};
use brox::{Brox, BroxError, Model, Objective, Radii, Stop, TrOptions, Trs, bpm, trust_region};
use lmo_core::{ColNorm, Frobenius, L1, Norm, RowNorm, SignInf, Spectral, VectorRms};
use lmo_ndarray::Nd64;
use ndarray::{ArrayD, IxDyn};
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};

fn gauss(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}
fn nrm(a: &[f64]) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}
/// `½sᵀAs + gᵀs`, computed here independently of the solver.
fn model(a: &[f64], g: &[f64], s: &[f64]) -> f64 {
    let n = g.len();
    let as_: Vec<f64> = (0..n)
        .map(|i| (0..n).map(|j| a[i * n + j] * s[j]).sum())
        .collect();
    0.5 * s.iter().zip(&as_).map(|(x, y)| x * y).sum::<f64>()
        + s.iter().zip(g).map(|(x, y)| x * y).sum::<f64>()
}
/// `Q·diag(lam)·Qᵀ` with `Q` the eigenvectors of a random symmetric matrix
/// (row-major), and `Q` itself.
fn with_spectrum(rng: &mut StdRng, lam: &[f64]) -> (Vec<f64>, faer::Mat<f64>) {
    let n = lam.len();
    let m = gauss(rng, n * n);
    let q = faer::Mat::from_fn(n, n, |i, j| m[i * n + j] + m[j * n + i])
        .self_adjoint_eigen(faer::Side::Lower)
        .unwrap()
        .U()
        .to_owned();
    let a = (0..n * n)
        .map(|ij| {
            (0..n)
                .map(|k| q[(ij / n, k)] * lam[k] * q[(ij % n, k)])
                .sum()
        })
        .collect();
    (a, q)
}

/// `(name, n, A, g, t)`.
type TrsCase = (&'static str, usize, Vec<f64>, Vec<f64>, f64);

/// Easy, interior, hard, near-hard and degenerate instances.
fn trs_instances() -> Vec<TrsCase> {
    let mut rng = StdRng::seed_from_u64(17);
    let mut v = vec![];
    // Random indefinite, boundary solution (easy case).
    let n = 30;
    let m = gauss(&mut rng, n * n);
    let a: Vec<f64> = (0..n * n)
        .map(|ij| 0.5 * (m[ij] + m[(ij % n) * n + ij / n]))
        .collect();
    v.push(("indefinite", n, a, gauss(&mut rng, n), 1.0));
    // SPD with a small gradient: interior solution, λ = 0.
    let lam: Vec<f64> = (0..n).map(|i| 1.0 + i as f64).collect();
    let (a, _) = with_spectrum(&mut rng, &lam);
    let g: Vec<f64> = gauss(&mut rng, n).iter().map(|x| 0.01 * x).collect();
    v.push(("interior", n, a, g, 10.0));
    // Hard case: g ⟂ q_1, ‖s(−λ_1)‖ < t.
    let lam: Vec<f64> = (0..n)
        .map(|i| if i == 0 { -2.0 } else { 0.5 + i as f64 })
        .collect();
    let (a, q) = with_spectrum(&mut rng, &lam);
    let g: Vec<f64> = (0..n)
        .map(|i| (1..n).map(|k| 0.01 * q[(i, k)]).sum())
        .collect();
    v.push(("hard", n, a.clone(), g, 3.0));
    // Hard case with g = 0: s = ±t·q_1.
    v.push(("hard, g = 0", n, a, vec![0.0; n], 3.0));
    // g = 0 and A ⪰ 0: s = 0.
    let lam: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let (a, _) = with_spectrum(&mut rng, &lam);
    v.push(("zero", n, a, vec![0.0; n], 1.0));
    // A = 0: s = −t·g/‖g‖.
    v.push(("linear", n, vec![0.0; n * n], gauss(&mut rng, n), 2.0));
    // Widely spread spectrum (condition 1e8), boundary.
    let lam: Vec<f64> = (0..n)
        .map(|i| 10f64.powf(-8.0 + 8.0 * i as f64 / (n - 1) as f64))
        .collect();
    let (a, _) = with_spectrum(&mut rng, &lam);
    v.push(("ill-conditioned", n, a, gauss(&mut rng, n), 1.0));
    // Near the hard case: g has a 1e-9 component along q_1.
    let g: Vec<f64> = (0..n)
        .map(|i| 1e-9 * q[(i, 0)] + (1..n).map(|k| 0.01 * q[(i, k)]).sum::<f64>())
        .collect();
    let lam: Vec<f64> = (0..n)
        .map(|i| if i == 0 { -2.0 } else { 0.5 + i as f64 })
        .collect();
    let a: Vec<f64> = (0..n * n)
        .map(|ij| {
            (0..n)
                .map(|k| q[(ij / n, k)] * lam[k] * q[(ij % n, k)])
                .sum()
        })
        .collect();
    v.push(("near-hard", n, a, g, 3.0));
    // n = 1, negative curvature.
    v.push(("1-D", 1, vec![-3.0], vec![0.5], 0.25));
    v
}

/// The minimizer of `½sᵀ(cA)s + (cg)ᵀs` over `‖s‖ ≤ t` does not depend on
/// `c > 0`, and the value scales by `c`. For every `c` in `1e-30..1e30`,
/// on both paths: `‖s‖ ≤ t·(1 + 1e-12)`; the value of the returned `s` on
/// the unscaled problem, computed here, and `value/c` both match the
/// `c = 1` value within `1e-10·M`, `M = ½‖A‖₂t² + ‖g‖t` (a bound on
/// `|q(s)|` over the ball: the value's natural scale; rounding gives about
/// `n·ε·M`, a 1e-12 KKT residual at most about 1e-12·M); `λ/c` matches the
/// `c = 1` multiplier within `1e-8·(‖A‖₂ + ‖g‖/t)`; the KKT residual stays
/// ≤ 1e-10.
#[test]
fn trs_is_scale_invariant() {
    let mut failures = vec![];
    let cs = [1e-30, 1e-20, 1e-10, 1e-5, 1.0, 1e5, 1e10, 1e20, 1e30];
    for (name, n, a, g, t) in trs_instances() {
        let anorm = if n == 0 {
            0.0
        } else {
            faer::Mat::from_fn(n, n, |i, j| a[i * n + j])
                .self_adjoint_eigenvalues(faer::Side::Lower)
                .unwrap()
                .iter()
                .fold(0.0f64, |m, v| m.max(v.abs()))
        };
        let big_m = 0.5 * anorm * t * t + nrm(&g) * t;
        let lscale = anorm + nrm(&g) / t;
        for eigen in [false, true] {
            let make = |a: &[f64]| {
                if eigen {
                    Trs::with_eigen(a, n).unwrap()
                } else {
                    Trs::new(a, n).unwrap()
                }
            };
            let reference = make(&a).solve(&g, t).unwrap();
            for c in cs {
                let ca: Vec<f64> = a.iter().map(|v| c * v).collect();
                let cg: Vec<f64> = g.iter().map(|v| c * v).collect();
                let sol = make(&ca).solve(&cg, t).unwrap();
                let what = format!("{name}, eigen = {eigen}, c = {c:e}");
                let q = model(&a, &g, &sol.s);
                let checks = [
                    (
                        nrm(&sol.s) <= t * (1.0 + 1e-12),
                        format!("‖s‖ = {} > t = {t}", nrm(&sol.s)),
                    ),
                    (
                        sol.norm <= t * (1.0 + 1e-12),
                        format!("norm = {}", sol.norm),
                    ),
                    (
                        (q - reference.value).abs() <= 1e-10 * big_m,
                        format!("q(s) = {q} vs {}", reference.value),
                    ),
                    (
                        (sol.value / c - reference.value).abs() <= 1e-10 * big_m,
                        format!("value/c = {} vs {}", sol.value / c, reference.value),
                    ),
                    (
                        (sol.lambda / c - reference.lambda).abs() <= 1e-8 * lscale,
                        format!("λ/c = {} vs {}", sol.lambda / c, reference.lambda),
                    ),
                    (
                        sol.kkt_residual <= 1e-10,
                        format!("KKT residual {}", sol.kkt_residual),
                    ),
                ];
                failures.extend(
                    checks
                        .into_iter()
                        .filter(|(ok, _)| !ok)
                        .map(|(_, m)| format!("{what}: {m}")),
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// The same invariance on random symmetric matrices of any inertia,
    /// random radii and random scales `c = 10^e`, `e ∈ [−30, 30]`.
    #[test]
    fn trs_is_scale_invariant_on_random_instances(
        seed: u64,
        n in 1usize..25,
        t in 0.01f64..10.0,
        e in -30.0f64..30.0,
        eigen: bool,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let m = gauss(&mut rng, n * n);
        let a: Vec<f64> = (0..n * n).map(|ij| 0.5 * (m[ij] + m[(ij % n) * n + ij / n])).collect();
        let g = gauss(&mut rng, n);
        let c = 10f64.powf(e);
        let make = |a: &[f64]| if eigen { Trs::with_eigen(a, n).unwrap() } else { Trs::new(a, n).unwrap() };
        let reference = make(&a).solve(&g, t).unwrap();
        let ca: Vec<f64> = a.iter().map(|v| c * v).collect();
        let cg: Vec<f64> = g.iter().map(|v| c * v).collect();
        let sol = make(&ca).solve(&cg, t).unwrap();
        let anorm = faer::Mat::from_fn(n, n, |i, j| a[i * n + j])
            .self_adjoint_eigenvalues(faer::Side::Lower)
            .unwrap()
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        let big_m = 0.5 * anorm * t * t + nrm(&g) * t;
        proptest::prop_assert!(nrm(&sol.s) <= t * (1.0 + 1e-12), "‖s‖ = {}", nrm(&sol.s));
        let q = model(&a, &g, &sol.s);
        proptest::prop_assert!((q - reference.value).abs() <= 1e-10 * big_m, "{q} vs {}", reference.value);
        proptest::prop_assert!((sol.value / c - reference.value).abs() <= 1e-10 * big_m);
        proptest::prop_assert!(sol.kkt_residual <= 1e-10, "residual {}", sol.kkt_residual);
    }
}

/// The constraint residual is what it says, `max(0, ‖s‖ − t)/t` with `‖s‖`
/// recomputed here, and the solver keeps it ≤ 1e-12 on every instance,
/// path and scale.
#[test]
fn trs_reports_its_constraint_residual() {
    for (name, n, a, g, t) in trs_instances() {
        for eigen in [false, true] {
            for c in [1e-30, 1.0, 1e30] {
                let ca: Vec<f64> = a.iter().map(|v| c * v).collect();
                let cg: Vec<f64> = g.iter().map(|v| c * v).collect();
                let trs = if eigen {
                    Trs::with_eigen(&ca, n).unwrap()
                } else {
                    Trs::new(&ca, n).unwrap()
                };
                let sol = trs.solve(&cg, t).unwrap();
                let want = (nrm(&sol.s) - t).max(0.0) / t;
                assert!(
                    (sol.constraint_residual - want).abs() <= 4.0 * f64::EPSILON,
                    "{name}, c = {c:e}: {} vs {want}",
                    sol.constraint_residual
                );
                assert!(sol.constraint_residual <= 1e-12, "{name}, c = {c:e}");
            }
        }
    }
}

/// `n = 0` on every path: the empty step, value 0, multiplier 0 — and the
/// radius is still validated.
#[test]
fn trs_accepts_n_zero() {
    for trs in [Trs::new(&[], 0).unwrap(), Trs::with_eigen(&[], 0).unwrap()] {
        let sol = trs.solve(&[], 1.5).unwrap();
        assert!(sol.s.is_empty());
        assert_eq!((sol.value, sol.lambda, sol.norm), (0.0, 0.0, 0.0));
        assert_eq!((sol.kkt_residual, sol.constraint_residual), (0.0, 0.0));
        assert_eq!(trs.solve(&[], 0.0), Err(BroxError::InvalidRadius(0.0)));
        assert!(matches!(
            trs.solve(&[1.0], 1.0),
            Err(BroxError::DimensionMismatch {
                expected: 0,
                found: 1
            })
        ));
    }
    // The quadratic oracle and the trust-region method on R^0.
    let mut q = Quadratic::new(vec![], vec![]).unwrap();
    let cert = q.brox(&[], 1.0, &mut []).unwrap();
    assert!(!cert.boundary);
    struct Empty;
    impl Objective for Empty {
        fn dim(&self) -> usize {
            0
        }
        fn value(&self, _x: &[f64]) -> f64 {
            0.0
        }
        fn gradient(&self, _x: &[f64], _g: &mut [f64]) {}
        fn hessian_vector(&self, _x: &[f64], _v: &[f64], _out: &mut [f64]) -> bool {
            true
        }
    }
    let r =
        trust_region::<Nd64, Frobenius>(&Empty, &mut Model::Quadratic, &[], &TrOptions::default())
            .unwrap();
    assert!(r.converged && r.x.is_empty());
}

/// `n·n` overflowing `usize` is a typed error, not an arithmetic panic.
#[test]
fn trs_rejects_an_overflowing_dimension() {
    assert!(matches!(
        Trs::new(&[], usize::MAX),
        Err(BroxError::InvalidInput(_))
    ));
    // (2^(BITS/2))² = 2^BITS overflows too.
    let half = 1usize << (usize::BITS / 2);
    assert!(matches!(
        Trs::with_eigen(&[1.0], half),
        Err(BroxError::InvalidInput(_))
    ));
}

fn tensor(v: Vec<f64>, dims: &[usize]) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(dims), v).unwrap()
}

/// One linear oracle call over the ball of a norm.
struct LinearCase {
    name: &'static str,
    x: Vec<f64>,
    u: Vec<f64>,
    cert: brox::Certificate,
    /// Whether the norm is a multiple of the Euclidean one.
    euclid: bool,
    /// `‖u − x‖` and `‖g‖_*` by the norm's own `norm` and `dual_norm`.
    step_norm: f64,
    dual: f64,
}

/// The oracle for `<g, ·>` over the ball of `norm`, with a second instance
/// `check` of the same norm for the independent `‖u − x‖` and `‖g‖_*`.
fn linear_case<N: Norm<Nd64>>(
    name: &'static str,
    euclid: bool,
    norm: N,
    mut check: N,
    g: &[f64],
    dims: &[usize],
    t: f64,
) -> LinearCase {
    let mut rng = StdRng::seed_from_u64(g.len() as u64);
    let x = gauss(&mut rng, g.len());
    let mut u = vec![0.0; g.len()];
    let gt = tensor(g.to_vec(), dims);
    let mut lin = Linear::<Nd64, _>::new(gt.clone(), norm).unwrap();
    let cert = lin.brox(&x, t, &mut u).unwrap();
    let step: Vec<f64> = u.iter().zip(&x).map(|(a, b)| a - b).collect();
    LinearCase {
        name,
        step_norm: check.norm(&tensor(step, dims)).unwrap(),
        dual: check.dual_norm(&gt).unwrap(),
        x,
        u,
        cert,
        euclid,
    }
}

/// The norms of lmo-core (some scaled) on a 3×4 `g`.
fn linear_cases(g: &[f64], t: f64) -> Vec<LinearCase> {
    macro_rules! case {
        ($name:expr, $euclid:expr, $norm:expr) => {
            linear_case($name, $euclid, $norm, $norm, g, &[3, 4], t)
        };
    }
    vec![
        case!("frobenius", true, Frobenius::new()),
        case!(
            "frobenius ×3",
            true,
            Frobenius::new().with_scale(3.0).unwrap()
        ),
        case!("vector-rms", true, VectorRms::new()),
        case!("sign-inf", false, SignInf::new()),
        case!(
            "sign-inf ×0.5",
            false,
            SignInf::new().with_scale(0.5).unwrap()
        ),
        case!("l1", false, L1::new()),
        case!("col-norm", false, ColNorm::<f64>::new()),
        case!("row-norm", false, RowNorm::<f64>::new()),
        case!("spectral", false, Spectral::<Nd64>::new()),
    ]
}

/// `g` with distinct entry magnitudes and distinct column and row norms:
/// no `lmo(g)` of a non-Euclidean norm here is parallel to it.
fn g34() -> Vec<f64> {
    vec![
        1.0, -2.0, 0.5, 3.0, //
        -0.25, 4.0, 1.5, -1.0, //
        2.5, 0.75, -3.5, 0.125,
    ]
}

/// The Euclidean multiplier of the linear oracle, when reported, satisfies
/// its definition `c ≥ 0`, `c·(x − u) = ∇f(u) = g` (Second Brox theorem);
/// it is reported for the Euclidean norms, whose LMO is parallel to `−g`,
/// and not for the others, where `x − u = −t·lmo(g)` is not parallel to
/// this `g`, so that no such `c` exists.
#[test]
fn linear_multiplier_satisfies_the_second_brox_theorem() {
    let g = g34();
    for t in [0.3, 2.0] {
        for LinearCase {
            name,
            x,
            u,
            cert,
            euclid,
            ..
        } in linear_cases(&g, t)
        {
            match cert.multiplier {
                Some(c) => {
                    assert!(c >= 0.0, "{name}: c = {c}");
                    for i in 0..g.len() {
                        let lhs = c * (x[i] - u[i]);
                        assert!(
                            (lhs - g[i]).abs()
                                <= 1e-12 * (1.0 + g[i].abs()) * (1.0 + x[i].abs() / t),
                            "{name}, t = {t}: c(x − u)_{i} = {lhs} ≠ g_{i} = {}",
                            g[i]
                        );
                    }
                }
                None => assert!(!euclid, "{name}: the Euclidean multiplier is missing"),
            }
        }
    }
    // A g parallel to its sign vector: over the ℓ∞ ball the Euclidean
    // multiplier exists (c = |g_i|/t) and is reported.
    let gs = vec![2.0, -2.0, 2.0, -2.0];
    let LinearCase { x, u, cert, .. } = linear_case(
        "sign-inf",
        false,
        SignInf::new(),
        SignInf::new(),
        &gs,
        &[4],
        0.5,
    );
    let c = cert.multiplier.expect("sign(g) ∥ g");
    assert!((c - 4.0).abs() <= 1e-12);
    for i in 0..4 {
        assert!((c * (x[i] - u[i]) - gs[i]).abs() <= 1e-12 * (1.0 + x[i].abs()));
    }
}

/// The ball multiplier of the linear oracle satisfies its definition in
/// every norm: `μ = ‖g‖_*` (the norm's own dual norm, computed here) and
/// `w = −g/μ ∈ ∂‖·‖(u − x)`, i.e. `‖w‖_* = 1` and
/// `<w, u − x> = ‖u − x‖ = t` (the norm's own `‖·‖`, computed here).
#[test]
fn linear_ball_multiplier_is_the_kkt_multiplier_in_any_norm() {
    let g = g34();
    let t = 0.7;
    for LinearCase {
        name,
        x,
        u,
        cert,
        step_norm,
        dual,
        ..
    } in linear_cases(&g, t)
    {
        let mu = cert.ball_multiplier.expect("the linear oracle knows μ");
        assert!(
            (mu - dual).abs() <= 1e-12 * dual,
            "{name}: μ = {mu}, ‖g‖_* = {dual}"
        );
        assert!(
            (step_norm - t).abs() <= 1e-12 * t,
            "{name}: ‖u − x‖ = {step_norm}"
        );
        let w_step: f64 = -g
            .iter()
            .zip(u.iter().zip(&x))
            .map(|(a, (u, x))| a * (u - x))
            .sum::<f64>()
            / mu;
        assert!(
            (w_step - step_norm).abs() <= 1e-12 * t,
            "{name}: <w, u − x> = {w_step}"
        );
        assert!(cert.boundary);
    }
    // g = 0: u = x, μ = c = 0.
    let LinearCase { x, u, cert, .. } = linear_case(
        "sign-inf",
        false,
        SignInf::new(),
        SignInf::new(),
        &[0.0; 4],
        &[4],
        1.0,
    );
    assert_eq!(x, u);
    assert_eq!(
        (cert.multiplier, cert.ball_multiplier, cert.boundary),
        (Some(0.0), Some(0.0), false)
    );
}

/// For Euclidean-ball oracles the two multipliers agree, `μ = c·‖u − x‖`,
/// and `μ` satisfies `∇f(u) + μ·(u − x)/‖u − x‖ = 0` on the sphere (the
/// subgradient of ‖·‖₂ there) and `μ = 0`, `∇f(u) = 0` inside.
#[test]
fn euclidean_ball_multiplier_matches_the_gradient() {
    let mut rng = StdRng::seed_from_u64(5);
    let n = 6;
    let m = gauss(&mut rng, n * n);
    let a: Vec<f64> = (0..n * n)
        .map(|ij| {
            (0..n)
                .map(|k| m[k * n + ij / n] * m[k * n + ij % n])
                .sum::<f64>()
                + if ij / n == ij % n { 0.5 } else { 0.0 }
        })
        .collect();
    let b = gauss(&mut rng, n);
    let mut oracles: Vec<Box<dyn Brox>> = vec![
        Box::new(Distance::new(gauss(&mut rng, n)).unwrap()),
        Box::new(Quadratic::new(a, b).unwrap()),
    ];
    let x: Vec<f64> = gauss(&mut rng, n).iter().map(|v| 3.0 * v).collect();
    for o in oracles.iter_mut() {
        for t in [0.1, 1.0, 100.0] {
            let mut u = vec![0.0; n];
            let cert = o.brox(&x, t, &mut u).unwrap();
            let mut grad = vec![0.0; n];
            assert!(o.gradient(&u, &mut grad));
            let step: Vec<f64> = u.iter().zip(&x).map(|(a, b)| a - b).collect();
            let sn = nrm(&step);
            let mu = cert.ball_multiplier.unwrap();
            let c = cert.multiplier.unwrap();
            assert!((mu - c * sn).abs() <= 1e-12 * (1.0 + mu));
            let scale = 1.0 + nrm(&grad);
            if cert.boundary {
                for i in 0..n {
                    assert!(
                        (grad[i] + mu * step[i] / sn).abs() <= 1e-8 * scale,
                        "t = {t}"
                    );
                }
            } else {
                assert_eq!(mu, 0.0);
                assert!(nrm(&grad) <= 1e-8 * scale, "t = {t}");
            }
        }
    }
}

/// Radius schedules: typed errors instead of an index panic or a silent
/// invalid radius.
#[test]
fn radii_reject_empty_and_invalid_schedules() {
    assert!(matches!(
        Radii::Sequence(vec![]).at(0),
        Err(BroxError::InvalidInput(_))
    ));
    assert!(matches!(
        Radii::Sequence(vec![]).validate(),
        Err(BroxError::InvalidInput(_))
    ));
    assert!(matches!(
        Radii::FiniteConvergence {
            distance: 1.0,
            steps: 0
        }
        .at(3),
        Err(BroxError::InvalidInput(_))
    ));
    assert_eq!(
        Radii::Constant(-1.0).at(0),
        Err(BroxError::InvalidRadius(-1.0))
    );
    assert!(matches!(
        Radii::Sequence(vec![1.0, f64::NAN]).validate(),
        Err(BroxError::InvalidRadius(_))
    ));
    // Valid schedules: the last radius repeats; D/√K.
    let seq = Radii::Sequence(vec![1.0, 0.5]);
    assert_eq!(
        (seq.at(0), seq.at(1), seq.at(7)),
        (Ok(1.0), Ok(0.5), Ok(0.5))
    );
    assert_eq!(
        Radii::FiniteConvergence {
            distance: 3.0,
            steps: 9
        }
        .at(4),
        Ok(1.0)
    );
}

/// BPM checks the whole radius schedule before the first oracle call: an
/// invalid radius late in the sequence is an error with the observer never
/// called (nothing was computed), not an error after some iterations.
#[test]
fn bpm_validates_the_schedule_before_iterating() {
    let mut d = Distance::new(vec![10.0, 0.0]).unwrap();
    let mut calls = 0;
    let r = bpm(
        &mut d,
        &[0.0, 0.0],
        &Radii::Sequence(vec![0.5, 0.5, -1.0]),
        &Stop {
            max_iter: 5,
            interior_step: true,
        },
        |_| calls += 1,
    );
    assert_eq!(r, Err(BroxError::InvalidRadius(-1.0)));
    assert_eq!(calls, 0);
    let r = bpm(
        &mut d,
        &[0.0, 0.0],
        &Radii::Sequence(vec![]),
        &Stop::default(),
        |_| calls += 1,
    );
    assert!(matches!(r, Err(BroxError::InvalidInput(_))));
    assert_eq!(calls, 0);
}

/// Found by the `trs` fuzz target: the hard case's completion
/// `τ = √(t² − ‖y‖²)` formed `t²`, which overflows for `t` near 1e300 while
/// the step itself (`|s| = t`) is representable.
#[test]
fn trs_hard_case_near_the_top_of_the_range_is_finite() {
    for eigen in [false, true] {
        for (a, g, t) in [
            (vec![-1e300], vec![0.0], 1e300),
            (vec![-1.0, 0.0, 0.0, 2.0], vec![0.0, 1.0], 1e200),
        ] {
            let n = g.len();
            let trs = if eigen {
                Trs::with_eigen(&a, n).unwrap()
            } else {
                Trs::new(&a, n).unwrap()
            };
            let sol = trs.solve(&g, t).unwrap();
            assert!(
                sol.s.iter().all(|v| v.is_finite()),
                "eigen {eigen}: {:?}",
                sol.s
            );
            let top = sol.s.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let norm = top * sol.s.iter().map(|v| (v / top).powi(2)).sum::<f64>().sqrt();
            assert!(
                (norm / t - 1.0).abs() < 1e-12,
                "eigen {eigen}: ‖s‖/t = {}",
                norm / t
            );
        }
    }
}
