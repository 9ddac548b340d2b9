//! Properties of SPEC §3: the unconstrained step solves the ball-constrained
//! linear problem, the constrained step stays in the ball, radius policies
//! match their formulas, the estimator recovers known (L0, L1), Gluon meets
//! its deterministic rate; plus errors, state and parallelism.

mod common;

use gluon_optim::{
    Config, GroupConfig, Label, LipschitzEstimator, LmoGroup, Mode, NonFinitePolicy, NormSpec,
    OptError, OptState, Optimizer, Orth, Point, Radius, Schedule, fit_envelope,
};
use lmo_core::LmoError;
use lmo_ndarray::Nd64;
use lmo_problems::{Mlp, Problem};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;

fn norms() -> Vec<NormSpec> {
    vec![
        NormSpec::Frobenius,
        NormSpec::Spectral(Orth::Exact),
        NormSpec::RmsToRms(Orth::Exact),
        NormSpec::Sign,
        NormSpec::L1,
        NormSpec::ColNorm,
        NormSpec::RowNorm,
        NormSpec::VectorRms,
    ]
}

fn group(norm: NormSpec, radius: Radius, beta: f64, mode: Mode) -> LmoGroup {
    LmoGroup::new(norm, radius).beta(beta).mode(mode)
}

fn one_block(g: LmoGroup) -> Config {
    let mut c = Config::new().group(Label::Hidden, GroupConfig::Lmo(g));
    c.parallel = false;
    c
}

fn mat(m: usize, n: usize, v: &[f64]) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(&[m, n]), v.to_vec()).unwrap()
}

fn dot(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    (a * b).sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// β = 0, constant radius t: X⁺ = argmin{<G, Z> : ‖Z − X‖ ≤ t}, checked
    /// against random feasible Z, and exactly: for G ≠ 0 the step attains
    /// the bound, <G, X⁺ − X> = −t‖G‖_* and ‖X⁺ − X‖ = t (every norm here
    /// is exact); for G = 0 it is 0.
    #[test]
    fn unconstrained_step_solves_the_ball_problem(
        (m, n, x, g, dirs) in (1usize..6, 1usize..6).prop_flat_map(|(m, n)| (
            Just(m), Just(n),
            prop::collection::vec(-2.0f64..2.0, m * n),
            prop::collection::vec(-1.0f64..1.0, m * n),
            prop::collection::vec(prop::collection::vec(-1.0f64..1.0, m * n), 8),
        )),
        t in 0.01f64..2.0, which in 0usize..8,
    ) {
        let spec = norms()[which].clone();
        let cfg = one_block(group(spec.clone(), Radius::Constant(t), 0.0, Mode::Unconstrained));
        let x0 = mat(m, n, &x);
        let gt = mat(m, n, &g);
        let mut params = vec![x0.clone()];
        let mut opt = Optimizer::<Nd64>::new(cfg, vec![Label::Hidden], &params).unwrap();
        opt.step(&mut params, std::slice::from_ref(&gt)).unwrap();
        let mut norm = spec.build::<Nd64>(1.0).unwrap();
        let step = &params[0] - &x0;
        let step_norm = norm.norm(&step).unwrap();
        prop_assert!(step_norm <= t * (1.0 + 1e-9));
        let dual = norm.dual_norm(&gt).unwrap();
        let ip = dot(&gt, &step);
        if g.iter().any(|&v| v != 0.0) {
            prop_assert!(
                (ip + t * dual).abs() <= 1e-9 * t * dual,
                "{spec:?}: <G, X⁺ − X> = {ip}, −t‖G‖_* = {}", -t * dual
            );
            prop_assert!(
                (step_norm - t).abs() <= 1e-9 * t,
                "{spec:?}: ‖X⁺ − X‖ = {step_norm}, t = {t}"
            );
        } else {
            prop_assert!(step.iter().all(|&v| v == 0.0), "{spec:?}: G = 0 must not move X");
        }
        let best = dot(&gt, &params[0]);
        for d in &dirs {
            let d = mat(m, n, d);
            let dn = norm.norm(&d).unwrap();
            if dn == 0.0 { continue; }
            let z = &x0 + &(&d * (t / dn));
            prop_assert!(best <= dot(&gt, &z) + 1e-9 * (1.0 + best.abs()), "{best} > {}", dot(&gt, &z));
        }
    }

    /// Constrained (Frank–Wolfe) steps from inside the ball stay inside
    /// (β = 0.5); with β = 0 each step is exactly
    /// X⁺ = (1−γ)·X + γ·ρ·lmo(G), γ = min(t, 1), entry by entry.
    #[test]
    fn constrained_step_stays_in_the_ball(
        seeds in prop::collection::vec(prop::collection::vec(-3.0f64..3.0, 12), 6),
        t in 0.0f64..1.5, rho in 0.1f64..5.0, which in 0usize..8,
    ) {
        let spec = norms()[which].clone();
        let mut norm = spec.build::<Nd64>(1.0).unwrap();
        let x0 = mat(3, 4, &seeds[0]);
        let x0n = norm.norm(&x0).unwrap();
        let start = if x0n > 0.0 { &x0 * (0.9 * rho / x0n) } else { x0 };
        let gamma = t.min(1.0);
        for beta in [0.5, 0.0] {
            let cfg = one_block(group(spec.clone(), Radius::Constant(t), beta, Mode::Constrained { rho }));
            let mut params = vec![start.clone()];
            let mut opt = Optimizer::<Nd64>::new(cfg, vec![Label::Hidden], &params).unwrap();
            for g in &seeds[1..] {
                let gt = mat(3, 4, g);
                let before = params[0].clone();
                opt.step(&mut params, std::slice::from_ref(&gt)).unwrap();
                prop_assert!(norm.norm(&params[0]).unwrap() <= rho * (1.0 + 1e-9));
                if beta == 0.0 {
                    let mut d = gt.clone();
                    norm.lmo(&gt, &mut d).unwrap();
                    for (k, ((&x, &x1), &dk)) in before.iter().zip(&params[0]).zip(&d).enumerate() {
                        let want = (1.0 - gamma) * x + gamma * rho * dk;
                        prop_assert!(
                            (x1 - want).abs() <= 1e-12 * (1.0 + want.abs()),
                            "{spec:?} γ={gamma} ρ={rho}: entry {k} = {x1}, want {want}"
                        );
                    }
                }
            }
        }
    }

    /// The reported radius equals each policy's formula, and the saved
    /// momentum follows M_j = β_j·M_{j−1} + (1−β_j)·G_j (M_{−1} = 0) with
    /// the configured β = 0 (constant, adaptive: M = G) or, for the theory
    /// schedule, 1 − β_j = 1/√(j+1) whatever β is configured (0.3 here).
    /// Steps alternate two different gradients, so M is not just G.
    #[test]
    fn radius_policies_match_their_formulas(
        ga in prop::collection::vec(-2.0f64..2.0, 6), gb in prop::collection::vec(-2.0f64..2.0, 6),
        k in 0u64..5, l0 in 0.0f64..3.0, l1 in 0.1f64..3.0,
        t in 0.01f64..1.0, which in 0usize..8,
    ) {
        let spec = norms()[which].clone();
        let grads = [mat(2, 3, &ga), mat(2, 3, &gb)];
        // β = 0: M = the last gradient, G_k.
        let last_g = &grads[(k % 2) as usize];
        let dual = spec.build::<Nd64>(1.0).unwrap().dual_norm(last_g).unwrap();
        let adaptive = if dual == 0.0 { 0.0 } else { dual / (l0 + l1 * dual) };
        for (radius, want) in [
            (Radius::Constant(t), t),
            (Radius::Theory { t0: t }, t / ((k + 1) as f64).powf(0.75)),
            (Radius::Adaptive { l0, l1 }, adaptive),
        ] {
            let theory = matches!(radius, Radius::Theory { .. });
            let beta = if theory { 0.3 } else { 0.0 };
            let cfg = one_block(group(spec.clone(), radius, beta, Mode::Unconstrained));
            let mut params = vec![mat(2, 3, &[0.0; 6])];
            let mut opt = Optimizer::<Nd64>::new(cfg, vec![Label::Hidden], &params).unwrap();
            let mut last = 0.0;
            let mut m = [0.0f64; 6];
            for j in 0..=k {
                let gj = &grads[(j % 2) as usize];
                last = opt.step(&mut params, std::slice::from_ref(gj)).unwrap().blocks[0].radius;
                let one_minus_beta = if theory { 1.0 / ((j + 1) as f64).sqrt() } else { 1.0 };
                for (mi, gi) in m.iter_mut().zip(gj.iter()) {
                    *mi = (1.0 - one_minus_beta) * *mi + one_minus_beta * gi;
                }
                let state = opt.state();
                prop_assert_eq!(state.blocks.len(), 1);
                let saved = &state.blocks[0].buffers[0];
                prop_assert_eq!(saved.len(), 6);
                for (i, (&s, &w)) in saved.iter().zip(&m).enumerate() {
                    prop_assert!(
                        (s - w).abs() <= 1e-12 * (1.0 + w.abs()),
                        "{radius:?} step {j}: M[{i}] = {s}, want {w}"
                    );
                }
            }
            prop_assert!((last - want).abs() <= 1e-12 * (1.0 + want), "{radius:?}: {last} vs {want}");
        }
    }
}

#[test]
fn schedules_match_their_formulas() {
    assert_eq!(Schedule::Constant.at(7), 1.0);
    assert_eq!(Schedule::Warmup { warmup: 4 }.at(1), 0.5);
    assert_eq!(Schedule::Warmup { warmup: 4 }.at(9), 1.0);
    let c = Schedule::Cosine {
        total: 10,
        floor: 0.1,
    };
    assert!(
        (c.at(0) - 1.0).abs() < 1e-15
            && (c.at(5) - 0.55).abs() < 1e-12
            && (c.at(99) - 0.1).abs() < 1e-15
    );
    let l = Schedule::LinearDecay {
        total: 4,
        floor: 0.0,
    };
    assert_eq!((l.at(0), l.at(1), l.at(4), l.at(9)), (1.0, 0.75, 0.0, 0.0));
    let wc = Schedule::WarmupCosine {
        warmup: 2,
        total: 12,
        floor: 0.0,
    };
    assert_eq!(wc.at(0), 0.5);
    assert!((wc.at(7) - 0.5).abs() < 1e-12);
}

#[test]
fn quantile_fit_leaves_about_one_minus_tau_above() {
    // L̂ = 1 + 2g + noise in [0, 1): the τ-quantile line is 1 + τ + 2g.
    let pts: Vec<Point> = (0..300)
        .map(|k| {
            let g = (k % 37) as f64 / 10.0;
            let u = ((k * 7919) % 1000) as f64 / 1000.0;
            Point {
                k: k as u64,
                g,
                lhat: 1.0 + 2.0 * g + u,
                step: 1e-3,
                align: 1.0,
            }
        })
        .collect();
    for tau in [0.5, 0.9] {
        let f = gluon_optim::fit_quantile(&pts, tau).unwrap();
        assert!((f.above - (1.0 - tau)).abs() < 0.03, "τ = {tau}: {f:?}");
        assert!(
            (f.l1 - 2.0).abs() < 0.1 && (f.l0 - (1.0 + tau)).abs() < 0.15,
            "τ = {tau}: {f:?}"
        );
    }
    assert_eq!(gluon_optim::fit_quantile(&pts, 1.0), fit_envelope(&pts));
    assert_eq!(gluon_optim::fit_quantile(&pts, 0.0), None);
}

#[test]
fn envelope_fit_recovers_a_known_line() {
    // Points on and below L̂ = 2 + 3g: the fit is that line, none above.
    let pts: Vec<Point> = (0..40)
        .map(|k| {
            let g = 0.1 * k as f64;
            let below = if k % 3 == 0 {
                0.0
            } else {
                0.5 * ((k * 7 % 5) as f64) / 5.0
            };
            Point {
                k,
                g,
                lhat: 2.0 + 3.0 * g - below,
                step: 1e-3,
                align: 1.0,
            }
        })
        .collect();
    let f = fit_envelope(&pts).unwrap();
    assert!(
        (f.l0 - 2.0).abs() < 1e-12 && (f.l1 - 3.0).abs() < 1e-12,
        "{f:?}"
    );
    assert_eq!(f.above, 0.0);
    assert!((f.radius(1.0) - 0.2).abs() < 1e-12);
}

/// f(x) = Σ_j (e^{x_j} − x_j): ∇f = e^x − 1, ∇²f = diag(e^x) and
/// e^{x_j} = 1 + (e^{x_j} − 1) ≤ 1 + ‖∇f‖₂: (L0, L1) = (1, 1) in the
/// Euclidean norm, tight as x → 0⁺ along one coordinate.
fn expsum(x: &ArrayD<f64>, g: &mut ArrayD<f64>) -> f64 {
    g.assign(&x.mapv(|v| v.exp() - 1.0));
    x.iter().map(|v| v.exp() - v).sum()
}

#[test]
fn estimator_recovers_l0_l1_on_a_known_function() {
    // A slow normalized-gradient run on a 1-D block from x = 2 down to 0:
    // consecutive iterates give L̂ ≈ e^x = 1 + g.
    let cfg = one_block(group(
        NormSpec::Frobenius,
        Radius::Constant(0.01),
        0.0,
        Mode::Unconstrained,
    ));
    let mut params = vec![ArrayD::from_elem(IxDyn(&[1, 1]), 2.0)];
    let mut grads = params.clone();
    let mut opt = Optimizer::<Nd64>::new(cfg.clone(), vec![Label::Hidden], &params).unwrap();
    let mut est = LipschitzEstimator::<Nd64>::new(&cfg, &[Label::Hidden], &params).unwrap();
    for _ in 0..190 {
        expsum(&params[0], &mut grads[0]);
        est.observe(&params, &grads).unwrap();
        opt.step(&mut params, &grads).unwrap();
    }
    let f = est.fit(0).unwrap();
    assert!(
        (f.l0 - 1.0).abs() < 0.05 && (f.l1 - 1.0).abs() < 0.05,
        "{f:?}"
    );
    assert!(est.to_csv().lines().count() > 100);
    assert!(est.to_json().contains("\"fit\""));
}

#[test]
fn deterministic_gluon_meets_the_spec_bound() {
    // Two blocks, Euclidean norms, (L0, L1) = (1, 1) each (see `expsum`).
    // SPEC §3: K ≥ 2Δ0(Σ L0/ε² + max L1/ε) ⇒ min_k Σ_i ‖∇_i f(X^k)‖ ≤ ε.
    let cfg = one_block(group(
        NormSpec::Frobenius,
        Radius::Adaptive { l0: 1.0, l1: 1.0 },
        0.0,
        Mode::Unconstrained,
    ));
    let x0 = [mat(1, 3, &[1.5, -1.0, 0.5]), mat(1, 3, &[2.0, 0.3, -2.0])];
    let mut params = x0.to_vec();
    let mut grads = params.clone();
    let fstar = 6.0;
    let f0: f64 = params
        .iter()
        .zip(grads.iter_mut())
        .map(|(x, g)| expsum(x, g))
        .sum();
    let eps = 0.05;
    let k_bound = (2.0 * (f0 - fstar) * (2.0 / (eps * eps) + 1.0 / eps)).ceil() as usize;
    let mut opt = Optimizer::<Nd64>::new(cfg, vec![Label::Hidden, Label::Hidden], &params).unwrap();
    let mut best = f64::INFINITY;
    for _ in 0..k_bound {
        let total: f64 = params
            .iter()
            .zip(grads.iter_mut())
            .map(|(x, g)| {
                expsum(x, g);
                common::fro(g)
            })
            .sum();
        best = best.min(total);
        if best <= eps {
            break;
        }
        opt.step(&mut params, &grads).unwrap();
    }
    assert!(best <= eps, "min_k Σ‖∇f‖ = {best} > ε after K = {k_bound}");
}

fn mlp_opt(cfg: Config) -> (Mlp, Vec<Label>, Vec<ArrayD<f64>>, Optimizer<Nd64>) {
    let p = Mlp::new(3);
    let (labels, params) = common::setup(&p);
    let opt = Optimizer::<Nd64>::new(cfg, labels.clone(), &params).unwrap();
    (p, labels, params, opt)
}

#[test]
fn non_finite_gradients_leave_everything_untouched() {
    for (name, cfg) in common::all_presets() {
        let (p, _, mut params, mut opt) = mlp_opt(cfg.clone());
        let mut grads = params.clone();
        for _ in 0..3 {
            p.loss_grad(&params, &mut grads);
            opt.step(&mut params, &grads).unwrap();
        }
        let (before_p, before_s) = (params.clone(), opt.state());
        grads[2][[1, 1]] = f64::NAN;
        assert_eq!(
            opt.step(&mut params, &grads).unwrap_err(),
            OptError::NonFiniteGradient { block: 2 },
            "{name}"
        );
        assert_eq!(params, before_p, "{name}");
        assert_eq!(opt.state(), before_s, "{name}");
        // Skip policy: counted, nothing else changes.
        let (_, _, mut params2, mut opt2) = mlp_opt(cfg.non_finite(NonFinitePolicy::Skip));
        let before = params2.clone();
        let r = opt2.step(&mut params2, &grads).unwrap();
        assert!(r.skipped);
        assert_eq!((opt2.skipped(), opt2.steps()), (1, 0));
        assert_eq!(params2, before);
    }
}

#[test]
fn bad_input_is_rejected_before_anything_changes() {
    let (p, labels, mut params, mut opt) = mlp_opt(common::all_presets()[1].1.clone());
    let mut grads = params.clone();
    p.loss_grad(&params, &mut grads);
    let before = params.clone();
    assert!(params.len() > 5);
    assert_eq!(
        opt.step(&mut params, &grads[..5]).err(),
        Some(OptError::CountMismatch {
            expected: params.len(),
            found: 5
        })
    );
    let mut wrong = grads.clone();
    let dims = params[2].shape().to_vec();
    assert_eq!(dims.len(), 2);
    assert_ne!(dims, [32, 31]);
    wrong[2] = ArrayD::zeros(IxDyn(&[32, 31]));
    assert_eq!(
        opt.step(&mut params, &wrong).err(),
        Some(OptError::Lmo {
            block: 2,
            error: LmoError::ShapeMismatch {
                expected: (dims[0], dims[1]),
                found: (32, 31)
            }
        })
    );
    assert_eq!(params, before);
    assert_eq!(opt.steps(), 0);
    // Labels without a group, invalid hyper-parameters.
    let only_hidden = Config::new().group(
        Label::Hidden,
        common::all_presets()[1].1.groups[&Label::Hidden].clone(),
    );
    let missing = labels
        .iter()
        .find(|l| **l != Label::Hidden)
        .cloned()
        .unwrap();
    assert_eq!(
        Optimizer::<Nd64>::new(only_hidden, labels.clone(), &params).err(),
        Some(OptError::NoGroup(missing))
    );
    // Each configuration error names the check that refused it.
    for (bad, why) in [
        (
            group(
                NormSpec::Sign,
                Radius::Constant(-1.0),
                0.0,
                Mode::Unconstrained,
            ),
            "radius must be",
        ),
        (
            group(
                NormSpec::Sign,
                Radius::Constant(0.1),
                1.0,
                Mode::Unconstrained,
            ),
            "β",
        ),
        (
            group(
                NormSpec::Sign,
                Radius::Adaptive { l0: 0.0, l1: 0.0 },
                0.0,
                Mode::Unconstrained,
            ),
            "adaptive radius",
        ),
        (
            group(
                NormSpec::Sign,
                Radius::Constant(0.1),
                0.0,
                Mode::Constrained { rho: 0.0 },
            ),
            "ρ",
        ),
    ] {
        match Optimizer::<Nd64>::new(one_block(bad), vec![Label::Hidden], &params[2..3]) {
            Err(OptError::Lmo {
                block: usize::MAX,
                error: LmoError::InvalidHyperParameter(msg),
            }) => assert!(msg.contains(why), "{why}: {msg}"),
            other => panic!("{why}: {:?}", other.err()),
        }
    }
}

#[test]
fn save_load_continue_is_bit_identical() {
    for (name, cfg) in common::all_presets() {
        let (p, labels, mut params, mut opt) = mlp_opt(cfg.clone());
        let mut grads = params.clone();
        for _ in 0..4 {
            p.loss_grad(&params, &mut grads);
            opt.step(&mut params, &grads).unwrap();
        }
        let saved = serde_json::to_string(&opt.state()).unwrap();
        let saved_params = params.clone();
        for _ in 0..4 {
            p.loss_grad(&params, &mut grads);
            opt.step(&mut params, &grads).unwrap();
        }
        let mut resumed = Optimizer::<Nd64>::new(cfg, labels, &saved_params).unwrap();
        let state: OptState = serde_json::from_str(&saved).unwrap();
        resumed.load_state(&state).unwrap();
        let mut p2 = saved_params;
        for _ in 0..4 {
            p.loss_grad(&p2, &mut grads);
            resumed.step(&mut p2, &grads).unwrap();
        }
        assert_eq!(p2, params, "{name}: resumed trajectory differs");
        let mut bad = state.clone();
        bad.version = 99;
        assert!(matches!(
            resumed.load_state(&bad),
            Err(OptError::BadState(_))
        ));
    }
}

/// A state value finite in f64 but not in the backend's f32 (1e39) is
/// refused, and the optimizer's state is unchanged.
#[test]
fn state_values_must_fit_the_backend_scalar() {
    use lmo_ndarray::Nd32;
    let params = vec![
        ArrayD::<f32>::zeros(IxDyn(&[4, 3])),
        ArrayD::zeros(IxDyn(&[3])),
    ];
    let labels = vec![Label::Hidden, Label::Vector];
    let mut opt =
        Optimizer::<Nd32>::new(gluon_optim::presets::muon(0.05, 0.01), labels, &params).unwrap();
    let before = opt.state();
    let mut bad = before.clone();
    bad.blocks[1].buffers[1][2] = 1e39;
    assert!(matches!(opt.load_state(&bad), Err(OptError::BadState(_))));
    assert_eq!(opt.state(), before);
    bad.blocks[1].buffers[1][2] = 1e30;
    opt.load_state(&bad).unwrap();
    assert_eq!(opt.state().blocks[1].buffers[1][2] as f32, 1e30f32);
}

#[test]
fn parallel_blocks_equal_sequential_bit_for_bit() {
    for (name, cfg) in common::all_presets() {
        let mut par = cfg.clone();
        par.parallel = true;
        let (a, _) = common::run(&Mlp::new(3), cfg, 8);
        let (b, _) = common::run(&Mlp::new(3), par, 8);
        assert_eq!(a, b, "{name}");
    }
}
