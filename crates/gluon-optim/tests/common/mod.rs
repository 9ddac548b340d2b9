//! Shared helpers: toy problems mapped onto optimizer labels, presets with
//! learning rates suited to them.
#![allow(dead_code)]

use gluon_optim::{AdamWGroup, Config, Label, presets};
use lmo_problems::{Problem, Role};
use ndarray::ArrayD;

pub fn label(r: Role) -> Label {
    match r {
        Role::Hidden => Label::Hidden,
        Role::Embedding => Label::Embedding,
        Role::Head => Label::Head,
        Role::Vector => Label::Vector,
    }
}

pub fn setup(p: &dyn Problem) -> (Vec<Label>, Vec<ArrayD<f64>>) {
    p.init().into_iter().map(|(r, t)| (label(r), t)).unzip()
}

/// Scion radii for models with d_in of a few units to a few tens.
pub const TOY_RADII: presets::ScionRadii = presets::ScionRadii {
    hidden: 10.0,
    embedding_head: 10.0,
    vector: 1.0,
};

/// Every preset, sequential (so trajectories are reproducible run to run).
pub fn all_presets() -> Vec<(&'static str, Config)> {
    let mut v = vec![
        (
            "adamw",
            presets::adamw(AdamWGroup {
                lr: 0.05,
                weight_decay: 0.0,
                ..Default::default()
            }),
        ),
        ("muon", presets::muon(0.1, 0.05)),
        ("scion-uscg", presets::scion_with(0.01, false, TOY_RADII)),
        ("scion-scg", presets::scion_with(0.01, true, TOY_RADII)),
        ("gluon", presets::gluon((0.5, 2.0), (0.5, 2.0), 0.9)),
        ("normalized-sgd", presets::normalized_sgd(0.2, 0.9)),
        ("sign-sgd", presets::sign_sgd(0.02, 0.0)),
    ];
    for (_, c) in v.iter_mut() {
        c.parallel = false;
    }
    v
}

/// Runs `steps` steps; returns the loss before each step and the final
/// parameters.
pub fn run(p: &dyn Problem, cfg: Config, steps: usize) -> (Vec<f64>, Vec<ArrayD<f64>>) {
    let (labels, mut params) = setup(p);
    let mut grads = params.clone();
    let mut opt = gluon_optim::Optimizer::<lmo_ndarray::Nd64>::new(cfg, labels, &params).unwrap();
    let mut losses = vec![];
    for _ in 0..steps {
        losses.push(p.loss_grad(&params, &mut grads));
        opt.step(&mut params, &grads).unwrap();
    }
    (losses, params)
}

pub fn fro(x: &ArrayD<f64>) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}
