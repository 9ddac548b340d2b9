//! insta snapshots of short trajectories — loss and parameter norms per
//! step, 4 significant digits — for every preset on the three CPU problems
//! (convex quadratic, logistic regression, MLP). CI runs with
//! `INSTA_UPDATE=no`, so a changed trajectory fails loudly; review changes
//! with `cargo insta review`.

mod common;

use common::{all_presets, fro, setup};
use gluon_optim::Optimizer;
use lmo_ndarray::Nd64;
use lmo_problems::{LogisticRegression, Mlp, Problem, Quadratic};

/// 4 significant digits; values below 1e-12, exact zero included (zero up
/// to rounding: whether a sum cancels exactly depends on the CPU's kernels
/// and the summation order), print as `~0`.
fn sig(x: f64) -> String {
    if x.abs() < 1e-12 {
        return "~0".into();
    }
    format!("{x:.4e}")
}

fn trajectory(p: &dyn Problem, steps: usize) -> String {
    let mut out = String::new();
    for (name, cfg) in all_presets() {
        let (labels, mut params) = setup(p);
        let mut grads = params.clone();
        let mut opt = Optimizer::<Nd64>::new(cfg, labels, &params).unwrap();
        out += &format!("== {name}\n");
        for k in 0..steps {
            let loss = p.loss_grad(&params, &mut grads);
            let norms: Vec<String> = params.iter().map(|t| sig(fro(t))).collect();
            out += &format!("{k:>2} loss {} |X| [{}]\n", sig(loss), norms.join(", "));
            opt.step(&mut params, &grads).unwrap();
        }
        out += &format!("final loss {}\n", sig(p.loss_grad(&params, &mut grads)));
    }
    out
}

#[test]
fn quadratic_trajectories() {
    insta::assert_snapshot!(trajectory(&Quadratic::new(1), 12));
}

#[test]
fn logistic_trajectories() {
    insta::assert_snapshot!(trajectory(&LogisticRegression::new(2), 12));
}

#[test]
fn mlp_trajectories() {
    insta::assert_snapshot!(trajectory(&Mlp::new(3), 12));
}

#[test]
fn every_preset_decreases_every_loss() {
    // Not a snapshot: a property every preset must have on these problems
    // with these learning rates — 150 steps lower the loss by 10%.
    for p in [
        &Quadratic::new(1) as &dyn Problem,
        &LogisticRegression::new(2),
        &Mlp::new(3),
    ] {
        for (name, cfg) in all_presets() {
            let (losses, params) = common::run(p, cfg, 150);
            let mut g = params.clone();
            let last = p.loss_grad(&params, &mut g);
            assert!(
                last < 0.9 * losses[0],
                "{name} on {}: {} -> {last}",
                p.name(),
                losses[0]
            );
        }
    }
}
