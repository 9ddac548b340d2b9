//! The open norm seam: a group with `NormSpec::Custom(name)` steps with the
//! user norm a `NormRegistry` builds; wrapping a built-in norm this way
//! reproduces the built-in group's trajectory bit for bit; a name the
//! registry lacks (or an empty one) is refused at construction.

mod common;

use common::{TOY_RADII, setup};
use gluon_optim::{
    Config, GroupConfig, Label, LipschitzEstimator, NormRegistry, NormSpec, OptError, Optimizer,
    presets,
};
use lmo_core::{LmoError, Norm, SignInf};
use lmo_ndarray::Nd64;
use lmo_problems::{Mlp, Problem};

/// Scion with every sign (ℓ∞) group renamed to the custom norm "my-sign".
fn scion_custom() -> (Config, Config) {
    let builtin = presets::scion_with(0.01, false, TOY_RADII);
    let mut custom = builtin.clone();
    for g in custom.groups.values_mut() {
        if let GroupConfig::Lmo(l) = g
            && l.norm == NormSpec::Sign
        {
            l.norm = NormSpec::Custom("my-sign".into());
        }
    }
    (builtin, custom)
}

fn registry() -> NormRegistry<Nd64> {
    NormRegistry::new().with("my-sign", |_dims, s| {
        let n: Box<dyn Norm<Nd64> + Send> = Box::new(SignInf::new().with_scale(s)?);
        Ok(n)
    })
}

#[test]
fn a_custom_norm_wrapping_a_builtin_reproduces_its_trajectory() {
    let p = Mlp::new(7);
    let (builtin, custom) = scion_custom();
    assert_ne!(builtin, custom);
    let (labels, init) = setup(&p);
    let mut a = Optimizer::<Nd64>::new(builtin, labels.clone(), &init).unwrap();
    let mut b = Optimizer::<Nd64>::with_norms(custom, labels, &init, &registry()).unwrap();
    let (mut pa, mut pb, mut g) = (init.clone(), init.clone(), init.clone());
    for _ in 0..8 {
        p.loss_grad(&pa, &mut g);
        let ra = a.step(&mut pa, &g).unwrap().clone();
        p.loss_grad(&pb, &mut g);
        let rb = b.step(&mut pb, &g).unwrap().clone();
        assert_eq!(ra, rb);
    }
    assert_eq!(pa, pb);
    assert_eq!(a.state(), b.state());
}

#[test]
fn unknown_or_empty_custom_names_are_refused() {
    let p = Mlp::new(7);
    let (_, custom) = scion_custom();
    let (labels, init) = setup(&p);
    // No registry: the first block with the custom norm is named.
    let e = Optimizer::<Nd64>::new(custom.clone(), labels.clone(), &init).err();
    let first = labels
        .iter()
        .position(|l| matches!(l, Label::Embedding | Label::Head))
        .unwrap();
    assert_eq!(
        e,
        Some(OptError::Lmo {
            block: first,
            error: LmoError::InvalidHyperParameter(
                "a group names a custom norm the registry does not have"
            )
        })
    );
    assert_eq!(
        LipschitzEstimator::<Nd64>::new(&custom, &labels, &init).err(),
        e,
        "the estimator refuses the same block for the same reason"
    );
    assert!(LipschitzEstimator::<Nd64>::with_norms(&custom, &labels, &init, &registry()).is_ok());
    // An empty name fails validation.
    let mut empty = custom;
    for g in empty.groups.values_mut() {
        if let GroupConfig::Lmo(l) = g
            && matches!(l.norm, NormSpec::Custom(_))
        {
            l.norm = NormSpec::Custom(String::new());
        }
    }
    assert_eq!(
        Optimizer::<Nd64>::with_norms(empty, labels, &init, &registry()).err(),
        Some(OptError::Lmo {
            block: usize::MAX,
            error: LmoError::InvalidHyperParameter("a custom norm needs a name")
        })
    );
    // A custom norm is built only through a registry.
    assert_eq!(
        NormSpec::Custom("x".into()).build::<Nd64>(1.0).err(),
        Some(LmoError::InvalidHyperParameter(
            "a custom norm is built through a NormRegistry (Optimizer::with_norms)"
        ))
    );
}
