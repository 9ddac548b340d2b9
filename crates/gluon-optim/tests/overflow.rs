//! Large finite inputs (the error contract: finite input never yields
//! NaN/Inf, bad input is a typed error that changes nothing):
//! - AdamW in f32: a gradient entry whose square would overflow the second
//!   moment (`|g| > √MAX/2`) is refused like a non-finite one (or skipped
//!   under `Skip`), and below the bound the first step moves every entry by
//!   exactly `lr` (bias-corrected `m̂ = g`, `v̂ = g²`: `Δ = −lr·g/(|g| + ε)`,
//!   Loshchilov & Hutter, Algorithm 2);
//! - weight decay whose factor `1 − t·λ` would reach 0 or below is refused
//!   when the optimizer is built.

use gluon_optim::{
    AdamWGroup, Config, GroupConfig, Label, LmoGroup, NonFinitePolicy, NormSpec, OptError,
    OptState, Optimizer, Radius, presets,
};
use lmo_core::LmoError;
use lmo_ndarray::Nd32;
use ndarray::{ArrayD, IxDyn};

fn adamw(policy: NonFinitePolicy) -> Config {
    presets::adamw(AdamWGroup {
        lr: 1e-2,
        weight_decay: 0.0,
        ..Default::default()
    })
    .non_finite(policy)
}

fn tensor(v: &[f32]) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap()
}

#[test]
fn adamw_in_f32_refuses_a_gradient_its_second_moment_cannot_hold() {
    let x0 = tensor(&[1.0, -2.0, 3.0, 0.5]);
    let labels = vec![Label::Vector, Label::Vector];
    let params = vec![x0.clone(), x0.clone()];
    // 3e19² = 9e38 > f32::MAX: v̂ = g² would be Inf and the step vanish;
    // 1e21: already (1−β₂)·g² = 1e39 overflows v itself.
    for big in [3e19f32, -1e21] {
        let g_ok = tensor(&[1.0, 1.0, 1.0, 1.0]);
        let g_big = tensor(&[1.0, big, 1.0, 1.0]);
        let grads = vec![g_ok, g_big];
        let mut opt =
            Optimizer::<Nd32>::new(adamw(NonFinitePolicy::Error), labels.clone(), &params).unwrap();
        let (mut x, state) = (params.clone(), opt.state());
        assert_eq!(
            opt.step(&mut x, &grads).err(),
            Some(OptError::NonFiniteGradient { block: 1 })
        );
        assert_eq!(x, params);
        assert_eq!(opt.state(), state);
        let mut skip =
            Optimizer::<Nd32>::new(adamw(NonFinitePolicy::Skip), labels.clone(), &params).unwrap();
        assert!(skip.step(&mut x, &grads).unwrap().skipped);
        assert_eq!(x, params);
        assert_eq!(skip.skipped(), 1);
    }
}

#[test]
fn adamw_in_f32_steps_exactly_lr_up_to_the_bound() {
    // The largest entries allowed (9e18 < √MAX/2 ≈ 9.22e18) and tiny ones:
    // the first bias-corrected step is −lr·sign(g) (|g| ≫ ε = 1e-8).
    let g = tensor(&[9e18, -9e18, 1e-3, -4e10]);
    let x0 = tensor(&[1.0, -2.0, 3.0, 0.5]);
    let mut opt = Optimizer::<Nd32>::new(
        adamw(NonFinitePolicy::Error),
        vec![Label::Vector],
        std::slice::from_ref(&x0),
    )
    .unwrap();
    let mut x = vec![x0.clone()];
    for k in 0..3 {
        let before = x[0].clone();
        opt.step(&mut x, std::slice::from_ref(&g)).unwrap();
        for ((a, b), gi) in x[0].iter().zip(&before).zip(&g) {
            assert!(a.is_finite());
            // A constant gradient: m̂ = g and v̂ = g² at every step.
            let want = b - 1e-2 * gi.signum();
            assert!((a - want).abs() <= 1e-6, "step {k}: {a} vs {want}");
        }
    }
    let state = opt.state();
    assert!(
        state.blocks[0]
            .buffers
            .iter()
            .flatten()
            .all(|v| v.is_finite())
    );
}

#[test]
fn weight_decay_that_would_flip_the_weights_is_refused() {
    let x = vec![ArrayD::<f32>::ones(IxDyn(&[3, 2]))];
    let lmo = |radius: Radius, wd: f64| {
        Config::new().group(
            Label::Hidden,
            GroupConfig::Lmo(LmoGroup::new(NormSpec::Frobenius, radius).weight_decay(wd)),
        )
    };
    let adam = |lr: f64, wd: f64| {
        presets::adamw(AdamWGroup {
            lr,
            weight_decay: wd,
            ..Default::default()
        })
    };
    let label = |c: &Config| {
        if c.groups.contains_key(&Label::Hidden) {
            Label::Hidden
        } else {
            Label::Vector
        }
    };
    for (cfg, ok) in [
        (lmo(Radius::Constant(0.1), 9.9), true),
        (lmo(Radius::Constant(0.1), 10.0), false),
        (lmo(Radius::Theory { t0: 0.5 }, 1.9), true),
        (lmo(Radius::Theory { t0: 0.5 }, 2.0), false),
        (lmo(Radius::Adaptive { l0: 1.0, l1: 5.0 }, 4.9), true),
        // L0 = 0: t = 1/L1 exactly, so λ = L1 would zero the weights.
        (lmo(Radius::Adaptive { l0: 0.0, l1: 5.0 }, 5.0), false),
        (lmo(Radius::Adaptive { l0: 1.0, l1: 5.0 }, 5.5), false),
        (lmo(Radius::Adaptive { l0: 1.0, l1: 0.0 }, 0.1), false),
        (adam(0.1, 9.0), true),
        (adam(0.1, 10.0), false),
    ] {
        let l = label(&cfg);
        let r = Optimizer::<Nd32>::new(cfg.clone(), vec![l], &x);
        assert_eq!(r.is_ok(), ok, "{cfg:?}");
        if let Err(e) = r {
            assert!(
                matches!(
                    e,
                    OptError::Lmo {
                        block: usize::MAX,
                        error: LmoError::InvalidHyperParameter(_)
                    }
                ),
                "{e:?}"
            );
        }
    }
}

type Tensors = Vec<ArrayD<f32>>;

/// An f32 AdamW optimizer on one vector after one step: the initial
/// parameters, the gradient, the optimizer, the parameters and its state.
fn adamw_after_one_step() -> (Tensors, Tensors, Optimizer<Nd32>, Tensors, OptState) {
    let x0 = vec![tensor(&[1.0, -2.0, 3.0, 0.5])];
    let g = vec![tensor(&[0.5, 0.5, -0.5, 0.5])];
    let mut opt =
        Optimizer::<Nd32>::new(adamw(NonFinitePolicy::Error), vec![Label::Vector], &x0).unwrap();
    let mut x = x0.clone();
    opt.step(&mut x, &g).unwrap();
    let good = opt.state();
    (x0, g, opt, x, good)
}

#[test]
fn a_checkpoint_with_adamw_moments_its_step_cannot_produce_is_refused() {
    // AdamW's moments are weighted averages of past g and g²: v ≥ 0 and,
    // under the gradient bound, |m| ≤ √MAX/2, v ≤ MAX/4. A state outside
    // that (a negative v makes √v̂ NaN) is refused and changes nothing.
    let (_, g, mut opt, mut x, good) = adamw_after_one_step();
    for (buf, value) in [(1, -8.0), (1, 1e38), (0, 1e19)] {
        let mut bad = good.clone();
        bad.blocks[0].buffers[buf][0] = value;
        assert!(
            matches!(opt.load_state(&bad), Err(OptError::BadState(_))),
            "buffer {buf} = {value}"
        );
        assert_eq!(opt.state(), good);
    }
    // At the bounds the next step stays finite.
    let mut edge = good.clone();
    edge.blocks[0].buffers[0][0] = 9e18;
    edge.blocks[0].buffers[1][0] = 8e37;
    opt.load_state(&edge).unwrap();
    opt.step(&mut x, &g).unwrap();
    assert!(x[0].iter().all(|v| v.is_finite()), "{x:?}");
}

#[test]
fn step_counters_beyond_two_to_the_53_are_refused_and_large_ones_step_exactly() {
    // Found by the `state` fuzz target: a checkpoint at step 2^32 − 1 made
    // AdamW's bias correction β^(k+1) with an exponent truncated to i32
    // (negative), and the next step NaN.
    let (x0, g, mut opt, mut x, good) = adamw_after_one_step();
    for (step, skipped) in [(u64::MAX, 0), ((1 << 53) + 1, 0), (0, u64::MAX)] {
        let mut bad = good.clone();
        (bad.step, bad.skipped) = (step, skipped);
        assert!(matches!(opt.load_state(&bad), Err(OptError::BadState(_))));
        assert_eq!(opt.state(), good);
    }
    // Late in a run the bias corrections are 1: m̂ = m, v̂ = v.
    for step in [u32::MAX as u64, 1 << 40, 1 << 53] {
        let mut late = good.clone();
        late.step = step;
        opt.load_state(&late).unwrap();
        let before = x[0].clone();
        opt.step(&mut x, &g).unwrap();
        let s = opt.state();
        let (m, v) = (&s.blocks[0].buffers[0], &s.blocks[0].buffers[1]);
        for i in 0..4 {
            let want = before[i] - 1e-2 * (m[i] / (v[i].sqrt() + 1e-8)) as f32;
            assert!(
                (x[0][i] - want).abs() <= 1e-6,
                "step {step}: {} vs {want}",
                x[0][i]
            );
        }
        opt.load_state(&good).unwrap();
        x = x0.clone();
        opt.step(&mut x, &g).unwrap();
    }
}

#[test]
fn a_dual_norm_beyond_the_range_is_refused_not_turned_into_nan() {
    // ℓ∞ LMO with the adaptive radius: ‖G‖_* = Σ|G| of two f32 entries at
    // 3e38 is beyond f32's range; t = Inf/(L0 + L1·Inf) would be NaN and
    // every parameter NaN. Refused, and the step changes nothing.
    let cfg = Config::new().group(
        Label::Hidden,
        GroupConfig::Lmo(LmoGroup::new(
            NormSpec::Sign,
            Radius::Adaptive { l0: 1.0, l1: 2.0 },
        )),
    );
    let x0 = vec![ArrayD::<f32>::ones(IxDyn(&[2, 2]))];
    let g = vec![ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![3e38f32, -3e38, 1.0, 0.0]).unwrap()];
    let mut opt = Optimizer::<Nd32>::new(cfg, vec![Label::Hidden], &x0).unwrap();
    let mut x = x0.clone();
    let state = opt.state();
    assert_eq!(
        opt.step(&mut x, &g).err(),
        Some(OptError::Lmo {
            block: 0,
            error: LmoError::NonFinite
        })
    );
    assert_eq!(x, x0);
    assert_eq!(opt.state(), state);
    assert_eq!(opt.steps(), 0);
}
