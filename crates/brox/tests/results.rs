//! SPEC §4, one test per statement, on random instances: First and Second
//! Brox theorems, Results 1–7, the envelope of f = x², and the exact
//! trust-region subproblem (KKT certificate, hard case, n up to 200).

use brox::oracles::{Distance, L1Distance, Linear, Quadratic, SeparableBox, SmoothConvex};
use brox::{Brox, BroxError, Radii, Stop, Trs, bpm, envelope};
use lmo_core::{Frobenius, SignInf, Spectral};
use lmo_ndarray::Nd64;
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};

fn gauss(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}
fn dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}
fn nrm(a: &[f64]) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// A random SPD quadratic `½zᵀAz − bᵀz` with its minimizer `x* = A⁻¹b`
/// (A = MᵀM + I, b = A·x*) and minimum.
fn spd(rng: &mut StdRng, n: usize) -> (Quadratic, Vec<f64>, Vec<f64>) {
    let m = gauss(rng, n * n);
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            a[i * n + j] = (0..n).map(|k| m[k * n + i] * m[k * n + j]).sum::<f64>()
                + if i == j { 1.0 } else { 0.0 };
        }
    }
    let xs = gauss(rng, n);
    let b: Vec<f64> = (0..n)
        .map(|i| (0..n).map(|j| a[i * n + j] * xs[j]).sum())
        .collect();
    (Quadratic::new(a.clone(), b).unwrap(), xs, a)
}

/// The three convex test functions with a unique minimizer: (oracle, x*).
fn instances(seed: u64, n: usize) -> Vec<(Box<dyn Brox>, Vec<f64>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let c = gauss(&mut rng, n);
    let c2 = gauss(&mut rng, n);
    let (q, xs, _) = spd(&mut rng, n);
    vec![
        (Box::new(Distance::new(c.clone()).unwrap()), c),
        (Box::new(L1Distance::new(c2.clone()).unwrap()), c2),
        (Box::new(q), xs),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn first_and_second_brox_theorems(seed: u64, n in 1usize..8, t in 0.05f64..4.0) {
        let mut rng = StdRng::seed_from_u64(seed ^ 1);
        let x = gauss(&mut rng, n).iter().map(|v| 2.0 * v).collect::<Vec<_>>();
        for (mut o, xs) in instances(seed, n) {
            let mut u = vec![0.0; n];
            let cert = o.brox(&x, t, &mut u).unwrap();
            let fstar = o.value(&xs);
            if dist(&x, &xs) <= t {
                // Argmin ∩ B(x, t) ≠ ∅ ⇒ brox ⊆ Argmin.
                prop_assert!((o.value(&u) - fstar).abs() <= 1e-9 * (1.0 + fstar.abs()));
            } else {
                prop_assert!((dist(&u, &x) - t).abs() <= 1e-9 * t, "‖u−x‖ = {} ≠ t = {t}", dist(&u, &x));
                prop_assert!(cert.boundary);
            }
            // Second theorem: c ≥ 0 with c(x − u) ∈ ∂f(u).
            if let Some(c) = cert.multiplier {
                prop_assert!(c >= -1e-12);
                let mut g = vec![0.0; n];
                if o.gradient(&u, &mut g) {
                    for i in 0..n {
                        prop_assert!((c * (x[i] - u[i]) - g[i]).abs() <= 1e-7 * (1.0 + g[i].abs()));
                    }
                } else {
                    // ∂‖· − x*‖₁(u): sign(u_i − x*_i) where u_i ≠ x*_i, else [−1, 1].
                    for i in 0..n {
                        let v = c * (x[i] - u[i]);
                        if (u[i] - xs[i]).abs() > 1e-12 {
                            prop_assert!((v - (u[i] - xs[i]).signum()).abs() <= 1e-9);
                        } else {
                            prop_assert!(v.abs() <= 1.0 + 1e-9);
                        }
                    }
                }
            }
        }
    }

    /// Results 1, 2, 3 and 5 along BPM runs with random radii.
    #[test]
    fn results_1_2_3_5_along_bpm(seed: u64, n in 1usize..8, radii in prop::collection::vec(0.05f64..1.5, 12)) {
        let mut rng = StdRng::seed_from_u64(seed ^ 2);
        let x0 = gauss(&mut rng, n).iter().map(|v| 3.0 * v).collect::<Vec<_>>();
        for (mut o, xs) in instances(seed, n) {
            let fstar = o.value(&xs);
            let mut x = x0.clone();
            let mut u = vec![0.0; n];
            for &t in &radii {
                o.brox(&x, t, &mut u).unwrap();
                let (dk, dk1) = (dist(&x, &xs), dist(&u, &xs));
                let tol = 1e-8 * (1.0 + dk * dk);
                if dk <= t {
                    prop_assert!((o.value(&u) - fstar).abs() <= 1e-8 * (1.0 + fstar.abs()), "Result 1");
                } else {
                    prop_assert!((dist(&u, &x) - t).abs() <= 1e-9 * t, "Result 2");
                    prop_assert!(dk1 * dk1 <= dk * dk - t * t + tol, "Result 3: {} > {}", dk1 * dk1, dk * dk - t * t);
                    let (fk, fk1) = (o.value(&x) - fstar, o.value(&u) - fstar);
                    prop_assert!(fk1 <= fk / (1.0 + t / dk1) + 1e-9 * (1.0 + fk), "Result 5");
                }
                x.copy_from_slice(&u);
            }
        }
    }

    /// Result 4: Σ t_k² ≥ ‖x0 − x*‖² ⇒ x_K ∈ Argmin f, with the constant
    /// radius D/√K.
    #[test]
    fn result_4_finite_convergence(seed: u64, n in 1usize..8, k in 1usize..20) {
        let mut rng = StdRng::seed_from_u64(seed ^ 3);
        let x0 = gauss(&mut rng, n);
        for (mut o, xs) in instances(seed, n) {
            let d = dist(&x0, &xs) * (1.0 + 1e-9);
            let r = bpm(o.as_mut(), &x0, &Radii::FiniteConvergence { distance: d, steps: k },
                        &Stop { max_iter: k, interior_step: false }, |_| {}).unwrap();
            let fstar = o.value(&xs);
            prop_assert!((o.value(&r.x) - fstar).abs() <= 1e-7 * (1.0 + fstar.abs()), "f(x_K) − f* = {}", o.value(&r.x) - fstar);
        }
    }

    /// Results 6 and 7 for differentiable f (SPD quadratic, and log-sum-exp
    /// through the inexact projected-gradient oracle).
    #[test]
    fn results_6_and_7(seed: u64, n in 1usize..7, radii in prop::collection::vec(0.05f64..1.0, 10)) {
        let mut rng = StdRng::seed_from_u64(seed ^ 4);
        let x0 = gauss(&mut rng, n);
        let (q, xs, _) = spd(&mut rng, n);
        let lse = SmoothConvex::new(
            n,
            |z: &[f64]| z.iter().map(|v| 2.0 * v.cosh()).sum::<f64>().ln(),
            |z: &[f64], g: &mut [f64]| {
                let s: f64 = z.iter().map(|v| 2.0 * v.cosh()).sum();
                g.iter_mut().zip(z).for_each(|(g, v)| *g = 2.0 * v.sinh() / s);
            },
            1.0,
        ).unwrap();
        let lse_star = vec![0.0; n];
        let cases: Vec<(Box<dyn Brox>, Vec<f64>, f64)> = vec![(Box::new(q), xs, 1e-9), (Box::new(lse), lse_star, 1e-6)];
        for (mut o, xs, tol) in cases {
            let fstar = o.value(&xs);
            let r = bpm(o.as_mut(), &x0, &Radii::Sequence(radii.clone()), &Stop { max_iter: radii.len(), interior_step: true }, |_| {}).unwrap();
            let mut g = vec![0.0; n];
            o.gradient(&x0, &mut g);
            let mut prev = nrm(&g);
            let mut weighted = 0.0;
            let mut tsum = 0.0;
            for it in &r.history {
                let gn = it.grad_norm.unwrap();
                prop_assert!(gn <= prev + tol * (1.0 + prev), "Result 6: {gn} > {prev}");
                prev = gn;
                weighted += it.t * gn;
                tsum += it.t;
            }
            // Result 7: Σ t_k‖∇f(x_{k+1})‖ / Σ t_k ≤ (f(x0) − f*)/Σ t_k.
            prop_assert!(weighted / tsum <= (o.value(&x0) - fstar) / tsum + tol * (1.0 + weighted), "Result 7");
        }
    }

    /// The trust-region subproblem on random symmetric matrices (any
    /// inertia): the KKT certificate, and no random feasible point is better.
    #[test]
    fn trs_kkt_on_random_symmetric(seed: u64, n in 1usize..40, t in 0.01f64..10.0) {
        let mut rng = StdRng::seed_from_u64(seed);
        let m = gauss(&mut rng, n * n);
        let a: Vec<f64> = (0..n * n).map(|ij| 0.5 * (m[ij] + m[(ij % n) * n + ij / n])).collect();
        let g = gauss(&mut rng, n);
        let trs = Trs::new(&a, n).unwrap();
        let sol = trs.solve(&g, t).unwrap();
        prop_assert!(sol.kkt_residual <= 1e-10, "residual {}", sol.kkt_residual);
        prop_assert!(sol.lambda >= 0.0);
        // A + λI ⪰ 0, checked independently of the solver's path.
        let lmin = faer::Mat::from_fn(n, n, |i, j| a[i * n + j]).self_adjoint_eigenvalues(faer::Side::Lower).unwrap()[0];
        prop_assert!(lmin + sol.lambda >= -1e-10 * (1.0 + lmin.abs()), "λ_min {lmin} + λ {}", sol.lambda);
        // Both paths agree.
        let eig = Trs::with_eigen(&a, n).unwrap().solve(&g, t).unwrap();
        prop_assert!((eig.value - sol.value).abs() <= 1e-9 * (1.0 + sol.value.abs()));
        prop_assert!(sol.norm <= t * (1.0 + 1e-10));
        prop_assert!(sol.lambda * (t - sol.norm) <= 1e-9 * (1.0 + sol.lambda * t));
        let model = |s: &[f64]| {
            let as_: Vec<f64> = (0..n).map(|i| (0..n).map(|j| a[i * n + j] * s[j]).sum()).collect();
            0.5 * s.iter().zip(&as_).map(|(x, y)| x * y).sum::<f64>() + s.iter().zip(&g).map(|(x, y)| x * y).sum::<f64>()
        };
        for _ in 0..50 {
            let d = gauss(&mut rng, n);
            let r: f64 = rand_distr::Uniform::new(0.0, 1.0).unwrap().sample(&mut rng);
            let s: Vec<f64> = d.iter().map(|v| v * t * r.sqrt() / nrm(&d)).collect();
            prop_assert!(sol.value <= model(&s) + 1e-9 * (1.0 + sol.value.abs()));
        }
    }
}

/// Hard-case instances built on purpose: A = Q·diag(λ)·Qᵀ with λ_1 < 0
/// and g ⟂ q_1 small enough that ‖s(−λ_1)‖ < t: the solution must still
/// reach the boundary through q_1, with λ = −λ_1.
#[test]
fn trs_hard_case() {
    let mut rng = StdRng::seed_from_u64(9);
    for n in [2usize, 5, 30, 120, 200] {
        // Q from the eigenvectors of a random symmetric matrix.
        let m = gauss(&mut rng, n * n);
        let sym: Vec<f64> = (0..n * n)
            .map(|ij| m[ij] + m[(ij % n) * n + ij / n])
            .collect();
        let q = faer::Mat::from_fn(n, n, |i, j| sym[i * n + j])
            .self_adjoint_eigen(faer::Side::Lower)
            .unwrap()
            .U()
            .to_owned();
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
        // g = small combination of q_2.. (⟂ q_1).
        let g: Vec<f64> = (0..n)
            .map(|i| (1..n).map(|k| 0.01 * q[(i, k)]).sum())
            .collect();
        let t = 3.0;
        let sol = Trs::new(&a, n).unwrap().solve(&g, t).unwrap();
        if n > 1 {
            assert!(sol.hard_case, "n = {n}: hard case not detected");
        }
        assert!(
            (sol.lambda - 2.0).abs() < 1e-9,
            "n = {n}: λ = {}",
            sol.lambda
        );
        assert!(
            (sol.norm - t).abs() < 1e-9 * t,
            "n = {n}: ‖s‖ = {}",
            sol.norm
        );
        assert!(
            sol.kkt_residual <= 1e-10,
            "n = {n}: residual {}",
            sol.kkt_residual
        );
    }
}

#[test]
fn trs_large_random_indefinite() {
    let mut rng = StdRng::seed_from_u64(21);
    for n in [100usize, 200] {
        let m = gauss(&mut rng, n * n);
        let a: Vec<f64> = (0..n * n)
            .map(|ij| 0.5 * (m[ij] + m[(ij % n) * n + ij / n]))
            .collect();
        let g = gauss(&mut rng, n);
        for t in [0.1, 1.0, 10.0] {
            let lmin = faer::Mat::from_fn(n, n, |i, j| a[i * n + j])
                .self_adjoint_eigenvalues(faer::Side::Lower)
                .unwrap()[0];
            for trs in [Trs::new(&a, n).unwrap(), Trs::with_eigen(&a, n).unwrap()] {
                let sol = trs.solve(&g, t).unwrap();
                assert!(
                    sol.kkt_residual <= 1e-10,
                    "n = {n}, t = {t}: {}",
                    sol.kkt_residual
                );
                assert!(lmin < 0.0 && sol.lambda + lmin >= -1e-10);
                assert!((sol.norm - t).abs() <= 1e-10 * t);
            }
        }
    }
}

#[test]
fn envelope_of_x_squared() {
    // f(x) = x² = ½·2·x² ⇒ N_f^t(x) = (|x| − t)₊², ∇N = 2(|x| − t)₊·sign(x).
    let mut q = Quadratic::new(vec![2.0], vec![0.0]).unwrap();
    for x in [-3.0f64, -0.5, 0.0, 0.2, 1.0, 2.5] {
        for t in [0.1, 0.7, 2.0] {
            let (v, g) = envelope(&mut q, &[x], t).unwrap();
            let want = (x.abs() - t).max(0.0).powi(2);
            assert!((v - want).abs() < 1e-12, "x = {x}, t = {t}: {v} vs {want}");
            let gw = 2.0 * (x.abs() - t).max(0.0) * x.signum();
            assert!((g.unwrap()[0] - gw).abs() < 1e-9);
        }
    }
}

/// `v` as an f64 tensor of shape `dims` (row-major).
fn tensor(v: Vec<f64>, dims: &[usize]) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(dims), v).expect("length matches the shape")
}

#[test]
fn linear_and_box_oracles() {
    // Linear f over the ℓ∞ ball: brox = x − t·sign(g); over a spectral ball:
    // x − t·UVᵀ; over the Euclidean ball: x − t·g/‖g‖.
    let g = vec![1.0, -2.0, 0.0, 3.0];
    let x = vec![0.5; 4];
    let mut u = vec![0.0; 4];
    let mut lin = Linear::<Nd64, _>::new(tensor(g.clone(), &[4]), SignInf::new()).unwrap();
    lin.brox(&x, 0.25, &mut u).unwrap();
    assert_eq!(u, vec![0.25, 0.75, 0.5, 0.25]);
    let mut sp =
        Linear::<Nd64, _>::new(tensor(vec![3.0, 0.0, 0.0, -2.0], &[2, 2]), Spectral::new())
            .unwrap();
    let c = sp.brox(&x, 1.0, &mut u).unwrap();
    assert_eq!(u, vec![-0.5, 0.5, 0.5, 1.5]);
    // μ = ‖g‖_* = nuclear norm; x − u = diag(1, −1) is not parallel to g,
    // so no Euclidean c with c·(x − u) = g exists.
    assert!((c.ball_multiplier.unwrap() - 5.0).abs() < 1e-12);
    assert_eq!(c.multiplier, None);
    let mut fr = Linear::<Nd64, _>::new(tensor(g.clone(), &[4]), Frobenius::new()).unwrap();
    fr.brox(&x, 1.0, &mut u).unwrap();
    assert!((dist(&u, &x) - 1.0).abs() < 1e-12);
    // Separable box: f = Σ (z_i − c_i)⁴ (convex), minimizers c.
    let cmin = vec![1.0, -1.0, 0.3];
    let mut bx = SeparableBox::new(cmin.clone(), |z: &[f64]| {
        z.iter()
            .zip([1.0, -1.0, 0.3])
            .map(|(a, b)| (a - b).powi(4))
            .sum()
    })
    .unwrap();
    let mut u3 = vec![0.0; 3];
    let cert = bx.brox(&[0.0, 0.0, 0.0], 0.5, &mut u3).unwrap();
    assert_eq!(u3, vec![0.5, -0.5, 0.3]);
    assert!(cert.boundary);
}

#[test]
fn bad_input_is_rejected() {
    let mut d = Distance::new(vec![0.0, 1.0]).unwrap();
    let mut out = vec![7.0, 7.0];
    assert_eq!(
        d.brox(&[0.0, 0.0], 0.0, &mut out),
        Err(BroxError::InvalidRadius(0.0))
    );
    assert_eq!(
        d.brox(&[0.0, 0.0], -1.0, &mut out),
        Err(BroxError::InvalidRadius(-1.0))
    );
    assert!(matches!(
        d.brox(&[0.0, 0.0], f64::NAN, &mut out),
        Err(BroxError::InvalidRadius(_))
    ));
    assert_eq!(
        d.brox(&[f64::NAN, 0.0], 1.0, &mut out),
        Err(BroxError::NonFinite)
    );
    assert_eq!(
        d.brox(&[0.0], 1.0, &mut out),
        Err(BroxError::DimensionMismatch {
            expected: 2,
            found: 1
        })
    );
    assert_eq!(out, vec![7.0, 7.0]);
    assert!(matches!(
        Quadratic::new(vec![1.0, 2.0, 3.0, 1.0], vec![0.0, 0.0]),
        Err(BroxError::InvalidInput(_))
    ));
    assert!(matches!(
        Trs::new(&[1.0, 2.0], 2),
        Err(BroxError::DimensionMismatch { .. })
    ));
    let r = bpm(
        &mut d,
        &[0.0],
        &Radii::Constant(1.0),
        &Stop::default(),
        |_| {},
    );
    assert!(matches!(r, Err(BroxError::DimensionMismatch { .. })));
}
