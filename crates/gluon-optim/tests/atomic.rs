//! A step is atomic (SPEC §3 and the crate's error contract): an LMO that
//! fails in any block, here the last one, sequential or in parallel,
//! leaves parameters, momenta, AdamW moments and counters bit-identical,
//! so retrying the step gives exactly what a run without the failure
//! gives; and a tensor its group's norm is not defined on is refused when
//! the optimizer is built, not at the first step.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::setup;
use gluon_optim::{
    Config, GroupConfig, Label, LmoGroup, NormRegistry, NormSpec, OptError, Optimizer, Radius,
    View, presets,
};
use lmo_core::{Frobenius, LmoError, Norm};
use lmo_ndarray::Nd64;
use lmo_problems::{Mlp, Problem};
use ndarray::{ArrayD, IxDyn};

/// Frobenius, except that its LMO refuses while `fail` is set.
struct Flaky {
    inner: Frobenius,
    fail: Arc<AtomicBool>,
}

const REFUSED: LmoError = LmoError::InvalidHyperParameter("flaky: told to fail");

impl Norm<Nd64> for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }
    fn norm(&mut self, x: &ArrayD<f64>) -> Result<f64, LmoError> {
        Norm::<Nd64>::norm(&mut self.inner, x)
    }
    fn dual_norm(&mut self, g: &ArrayD<f64>) -> Result<f64, LmoError> {
        Norm::<Nd64>::dual_norm(&mut self.inner, g)
    }
    fn lmo(&mut self, g: &ArrayD<f64>, out: &mut ArrayD<f64>) -> Result<f64, LmoError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(REFUSED);
        }
        Norm::<Nd64>::lmo(&mut self.inner, g, out)
    }
}

fn registry(fail: &Arc<AtomicBool>) -> NormRegistry<Nd64> {
    let fail = fail.clone();
    NormRegistry::new().with("flaky", move |_dims, s| {
        let n: Box<dyn Norm<Nd64> + Send> = Box::new(Flaky {
            inner: Frobenius::new().with_scale(s)?,
            fail: fail.clone(),
        });
        Ok(n)
    })
}

/// Muon (hidden layers: spectral, Nesterov; the rest AdamW) with the last
/// block moved to a "flaky" LMO group, with or without Nesterov there.
fn config(parallel: bool, nesterov: bool) -> Config {
    let mut c = presets::muon(0.1, 0.05).group(
        Label::Other("flaky".into()),
        GroupConfig::Lmo(
            LmoGroup::new(NormSpec::Custom("flaky".into()), Radius::Constant(0.05))
                .beta(0.9)
                .nesterov(nesterov),
        ),
    );
    c.parallel = parallel;
    c
}

#[test]
fn a_failure_in_the_last_block_changes_nothing_and_a_retry_matches_a_clean_run() {
    let p = Mlp::new(11);
    for parallel in [false, true] {
        for nesterov in [false, true] {
            let (mut labels, init) = setup(&p);
            let last = labels.len() - 1;
            labels[last] = Label::Other("flaky".into());
            let fail = Arc::new(AtomicBool::new(false));
            let never = Arc::new(AtomicBool::new(false));
            let cfg = config(parallel, nesterov);
            let mut opt =
                Optimizer::<Nd64>::with_norms(cfg.clone(), labels.clone(), &init, &registry(&fail))
                    .unwrap();
            let mut clean =
                Optimizer::<Nd64>::with_norms(cfg, labels, &init, &registry(&never)).unwrap();
            let (mut x, mut y, mut g) = (init.clone(), init.clone(), init.clone());
            for k in 0..6 {
                p.loss_grad(&x, &mut g);
                if k % 2 == 1 {
                    // Snapshot everything that outlives a step, fail, compare.
                    let (params, state) = (x.clone(), opt.state());
                    let (steps, skipped) = (opt.steps(), opt.skipped());
                    fail.store(true, Ordering::SeqCst);
                    let e = opt.step(&mut x, &g).err();
                    fail.store(false, Ordering::SeqCst);
                    assert_eq!(
                        e,
                        Some(OptError::Lmo {
                            block: last,
                            error: REFUSED
                        }),
                        "parallel {parallel}, nesterov {nesterov}, step {k}"
                    );
                    assert_eq!(x, params, "parameters changed by a failed step");
                    assert_eq!(opt.state(), state, "state changed by a failed step");
                    assert_eq!((opt.steps(), opt.skipped()), (steps, skipped));
                    // The phased API: a failure in compute_directions, then
                    // abandon, leaves the same.
                    assert!(opt.begin_step(&x, &g).unwrap());
                    fail.store(true, Ordering::SeqCst);
                    assert!(opt.compute_directions(|_| true).is_err());
                    fail.store(false, Ordering::SeqCst);
                    assert_eq!(opt.state(), state, "state changed by a failed phase 2");
                    assert!(opt.begin_step(&x, &g).unwrap());
                    opt.abandon_step();
                    assert_eq!(opt.state(), state, "state changed by an abandoned step");
                }
                let a = opt.step(&mut x, &g).unwrap().clone();
                let b = clean.step(&mut y, &g).unwrap().clone();
                assert_eq!(a, b, "parallel {parallel}, nesterov {nesterov}, step {k}");
                assert_eq!(x, y, "a retried step differs from a clean one");
            }
            assert_eq!(opt.state(), clean.state());
            // The run moved: momenta are not still zero.
            assert!(
                opt.state().blocks[last].buffers[0]
                    .iter()
                    .any(|&v| v != 0.0)
            );
        }
    }
}

#[test]
fn a_tensor_its_norm_cannot_take_is_refused_at_construction() {
    // A 4-D convolution kernel and a vector in the spectral (hidden) group:
    // refused by `new`, naming the block and its rank, before any step.
    let conv = ArrayD::<f64>::ones(ndarray::IxDyn(&[4, 3, 3, 3]));
    let bias = ArrayD::<f64>::ones(ndarray::IxDyn(&[4]));
    let w = ArrayD::<f64>::ones(ndarray::IxDyn(&[4, 6]));
    let mut as_is = presets::muon(0.1, 0.05);
    if let Some(GroupConfig::Lmo(g)) = as_is.groups.get_mut(&Label::Hidden) {
        g.view = View::AsIs;
    }
    for (cfg, params, block, rank) in [
        (as_is.clone(), vec![w.clone(), conv.clone()], 1, 4),
        (as_is, vec![bias.clone(), w.clone()], 0, 1),
        // Muon's preset flattens kernels (View::Flatten), never a vector.
        (
            presets::muon(0.1, 0.05),
            vec![w.clone(), bias.clone()],
            1,
            1,
        ),
    ] {
        let labels = vec![Label::Hidden; params.len()];
        let e = Optimizer::<Nd64>::new(cfg, labels, &params).err();
        assert_eq!(
            e,
            Some(OptError::Lmo {
                block,
                error: LmoError::UnsupportedRank(rank)
            })
        );
    }
    let labels = vec![Label::Hidden; 2];
    assert!(
        Optimizer::<Nd64>::new(presets::muon(0.1, 0.05), labels, &[w.clone(), conv.clone()])
            .is_ok()
    );
    // Scion's row/column norms are matrix norms too; sign and Frobenius
    // take any rank.
    for (norm, ok) in [
        (NormSpec::ColNorm, false),
        (NormSpec::RowNorm, false),
        (NormSpec::Sign, true),
        (NormSpec::Frobenius, true),
    ] {
        let cfg = Config::new().group(
            Label::Hidden,
            GroupConfig::Lmo(LmoGroup::new(norm.clone(), Radius::Constant(0.1))),
        );
        let r = Optimizer::<Nd64>::new(cfg, vec![Label::Hidden], std::slice::from_ref(&conv));
        assert_eq!(r.is_ok(), ok, "{norm:?}");
        if let Err(e) = r {
            assert_eq!(
                e,
                OptError::Lmo {
                    block: 0,
                    error: LmoError::UnsupportedRank(4)
                }
            );
        }
    }
}

#[test]
fn a_refused_observation_leaves_the_estimator_as_it_was() {
    // Block 1 of 2 has NaN: before, block 0 had already recorded its point
    // and its previous iterate, so a retry counted it twice.
    use gluon_optim::LipschitzEstimator;
    let w = ArrayD::<f64>::from_shape_fn(IxDyn(&[3, 2]), |i| (i[0] + 2 * i[1]) as f64);
    let b = ArrayD::<f64>::from_elem(IxDyn(&[3]), 0.5);
    let labels = vec![Label::Hidden, Label::Vector];
    let x0 = vec![w.clone(), b.clone()];
    let cfg = presets::muon(0.1, 0.05);
    let mut est = LipschitzEstimator::<Nd64>::new(&cfg, &labels, &x0).unwrap();
    let mut clean = LipschitzEstimator::<Nd64>::new(&cfg, &labels, &x0).unwrap();
    let g0 = vec![w.mapv(|v| v * 0.1), b.mapv(|v| v - 1.0)];
    est.observe(&x0, &g0).unwrap();
    clean.observe(&x0, &g0).unwrap();
    let x1 = vec![w.mapv(|v| v + 0.3), b.mapv(|v| v * 2.0)];
    let g1 = vec![w.mapv(|v| v * 0.2 + 1.0), b.mapv(|v| v + 1.0)];
    let mut bad = g1.clone();
    bad[1][[2]] = f64::NAN;
    assert_eq!(
        est.observe(&x1, &bad).err(),
        Some(OptError::Lmo {
            block: 1,
            error: LmoError::NonFinite
        })
    );
    assert!(
        est.points(0).is_empty(),
        "a refused observation recorded a point"
    );
    est.observe(&x1, &g1).unwrap();
    clean.observe(&x1, &g1).unwrap();
    for i in 0..2 {
        assert_eq!(est.points(i), clean.points(i), "block {i}");
        assert_eq!(est.points(i).len(), 1);
    }
}
