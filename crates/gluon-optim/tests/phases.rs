//! The phased step (SPEC §3 in four phases): a step assembled from phases
//! computed on separate optimizers ("ranks", each owning some blocks and
//! handing its directions to the other) equals `Optimizer::step` bit for
//! bit, for every preset; phase calls out of order are refused and change
//! nothing.

mod common;

use common::{all_presets, setup};
use gluon_optim::{OptError, Optimizer};
use lmo_core::LmoError;
use lmo_ndarray::Nd64;
use lmo_problems::{Mlp, Problem, Quadratic};
use ndarray::ArrayD;

/// Bits of every parameter and state value.
fn bits(params: &[ArrayD<f64>], opt: &Optimizer<Nd64>) -> Vec<u64> {
    let mut v: Vec<u64> = params
        .iter()
        .flat_map(|t| t.iter().map(|x| x.to_bits()))
        .collect();
    for b in opt.state().blocks {
        v.extend(b.buffers.iter().flatten().map(|x| x.to_bits()));
    }
    v
}

/// Two ranks: rank r computes the directions of blocks i with i % 2 == r,
/// then each hands its directions to the other.
fn sharded_equals_step(p: &dyn Problem, steps: usize) {
    for (name, cfg) in all_presets() {
        for parallel in [false, true] {
            let mut cfg = cfg.clone();
            cfg.parallel = parallel;
            let (labels, init) = setup(p);
            let mut whole = Optimizer::<Nd64>::new(cfg.clone(), labels.clone(), &init).unwrap();
            let mut ranks = [
                Optimizer::<Nd64>::new(cfg.clone(), labels.clone(), &init).unwrap(),
                Optimizer::<Nd64>::new(cfg.clone(), labels.clone(), &init).unwrap(),
            ];
            let mut pw = init.clone();
            let mut pr = [init.clone(), init.clone()];
            let mut g = init.clone();
            for k in 0..steps {
                p.loss_grad(&pw, &mut g);
                let want = whole.step(&mut pw, &g).unwrap().clone();
                for r in 0..2 {
                    assert!(ranks[r].begin_step(&pr[r], &g).unwrap());
                    ranks[r].compute_directions(|i| i % 2 == r).unwrap();
                }
                // The exchange: the owner's direction goes to the other rank.
                for i in 0..labels.len() {
                    let [r0, r1] = &mut ranks;
                    let (owner, other) = if i % 2 == 0 { (r0, r1) } else { (r1, r0) };
                    if let Some((d, dual)) = owner.direction(i) {
                        other.set_direction(i, &d.clone(), dual).unwrap();
                    }
                }
                for r in 0..2 {
                    let got = ranks[r].finish_step(&mut pr[r], &g).unwrap();
                    assert_eq!(got, &want, "{name} parallel={parallel} step {k} rank {r}");
                    assert_eq!(
                        bits(&pr[r], &ranks[r]),
                        bits(&pw, &whole),
                        "{name} parallel={parallel} step {k} rank {r}"
                    );
                }
            }
            assert_eq!(ranks[0].steps(), steps as u64);
        }
    }
}

#[test]
fn a_step_assembled_from_phases_on_two_ranks_equals_step_bit_for_bit() {
    sharded_equals_step(&Mlp::new(7), 6);
    sharded_equals_step(&Quadratic::new(3), 6);
}

#[test]
fn phase_calls_out_of_order_are_refused_and_change_nothing() {
    let p = Mlp::new(7);
    let (name, cfg) = all_presets()
        .into_iter()
        .find(|(n, _)| *n == "muon")
        .unwrap();
    let (labels, mut params) = setup(&p);
    let mut g = params.clone();
    p.loss_grad(&params, &mut g);
    let mut opt = Optimizer::<Nd64>::new(cfg, labels.clone(), &params).unwrap();
    let before = bits(&params, &opt);
    let phase = |r: Result<_, OptError>| matches!(r, Err(OptError::Phase(_)));
    assert!(phase(opt.compute_directions(|_| true)), "{name}");
    assert!(phase(opt.finish_step(&mut params, &g).map(|_| ())));
    assert!(phase(opt.set_direction(0, &params[0].clone(), 1.0)));
    assert_eq!(bits(&params, &opt), before);
    // Begun, but not every direction is there: finish refuses, params kept.
    assert!(opt.begin_step(&params, &g).unwrap());
    assert!(phase(opt.begin_step(&params, &g).map(|_| ())));
    assert!(phase(opt.step(&mut params, &g).map(|_| ())));
    let hidden = labels
        .iter()
        .position(|l| *l == gluon_optim::Label::Hidden)
        .unwrap();
    opt.compute_directions(|i| i != hidden).unwrap();
    let (kept, state) = (params.clone(), opt.state());
    assert!(phase(opt.finish_step(&mut params, &g).map(|_| ())));
    assert_eq!(params, kept);
    assert_eq!(opt.state(), state);
    // Mid-step: no state load, no block beyond the last.
    assert!(phase(opt.load_state(&state)));
    assert_eq!(
        opt.set_direction(usize::MAX, &params[0].clone(), 1.0),
        Err(OptError::NoBlock(usize::MAX))
    );
    // A bad handed-in direction: wrong shape, NaN, negative dual.
    let wrong = ArrayD::zeros(ndarray::IxDyn(&[1, 1]));
    let dims = params[hidden].shape().to_vec();
    assert_eq!(dims.len(), 2);
    assert_eq!(
        opt.set_direction(hidden, &wrong, 1.0),
        Err(OptError::Lmo {
            block: hidden,
            error: LmoError::ShapeMismatch {
                expected: (dims[0], dims[1]),
                found: (1, 1)
            }
        })
    );
    let mut nan = params[hidden].clone();
    nan.fill(f64::NAN);
    let non_finite = Err(OptError::Lmo {
        block: hidden,
        error: LmoError::NonFinite,
    });
    assert_eq!(opt.set_direction(hidden, &nan, 1.0), non_finite);
    // A dual norm that is no norm (negative, NaN) is refused the same way.
    let ok_dir = params[hidden].clone();
    assert_eq!(opt.set_direction(hidden, &ok_dir, -1.0), non_finite);
    assert_eq!(opt.set_direction(hidden, &ok_dir, f64::NAN), non_finite);
    // An AdamW block takes no direction.
    let adam_block = labels
        .iter()
        .position(|l| *l != gluon_optim::Label::Hidden)
        .unwrap();
    assert!(matches!(
        opt.set_direction(adam_block, &params[adam_block].clone(), 1.0),
        Err(OptError::Phase(_))
    ));
    assert!(opt.direction(hidden).is_none());
    assert_eq!(opt.steps(), 0);
    // NaN gradients for the AdamW blocks at finish (not those begin_step
    // checked) are refused, and change nothing.
    opt.compute_directions(|i| i == hidden).unwrap();
    let adam = labels
        .iter()
        .position(|l| *l != gluon_optim::Label::Hidden)
        .unwrap();
    let mut bad = g.clone();
    bad[adam].fill(f64::NAN);
    assert_eq!(
        opt.finish_step(&mut params, &bad).map(|_| ()),
        Err(OptError::NonFiniteGradient { block: adam })
    );
    assert_eq!(params, kept);
    // Handed in properly, the step completes.
    opt.finish_step(&mut params, &g).unwrap();
    assert_eq!(opt.steps(), 1);
    assert_ne!(params, kept);
}

#[test]
fn a_skipped_phased_step_is_counted_at_finish_and_changes_nothing() {
    let p = Mlp::new(7);
    let (_, mut cfg) = all_presets()
        .into_iter()
        .find(|(n, _)| *n == "gluon")
        .unwrap();
    cfg.non_finite = gluon_optim::NonFinitePolicy::Skip;
    let (labels, mut params) = setup(&p);
    let mut g = params.clone();
    p.loss_grad(&params, &mut g);
    g[0].fill(f64::NAN);
    let mut opt = Optimizer::<Nd64>::new(cfg, labels, &params).unwrap();
    let before = bits(&params, &opt);
    assert!(!opt.begin_step(&params, &g).unwrap());
    assert!(matches!(
        opt.compute_directions(|_| true),
        Err(OptError::Phase(_))
    ));
    let r = opt.finish_step(&mut params, &g).unwrap();
    assert!(r.skipped);
    assert_eq!(opt.skipped(), 1);
    assert_eq!(opt.steps(), 0);
    assert_eq!(bits(&params, &opt), before);
    // The next step starts afresh.
    p.loss_grad(&params, &mut g);
    opt.step(&mut params, &g).unwrap();
    assert_eq!(opt.steps(), 1);
}
