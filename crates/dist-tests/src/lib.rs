//! The checks of the sharded step (`gluon_optim::ShardedOptimizer`),
//! written once over any [`Communicator`]: run in one process by this
//! crate's tests (world size 1) and on every rank of `mpirun -np N
//! dist-check` (feature `mpi`).
//!
//! Each check panics with a message on failure (under MPI a panicking rank
//! ends the job with a non-zero exit status).
//!
//! - [`equivalence`]: 20 sharded steps equal 20 single-process steps bit
//!   for bit (Muon with Nesterov and weight decay, Scion with a warm-up
//!   schedule, Gluon's adaptive radius, AdamW; f32 and f64), with
//!   gradients that differ per rank and are averaged, and the same report
//!   on every rank.
//! - [`checkpoints`]: a state saved by the single-process optimizer loads
//!   into the sharded one and the other way round; both continue the
//!   uninterrupted run; a state file written by another world size loads.
//! - [`faults`]: a NaN gradient or a shape error on one rank gives every
//!   rank an error (or a skip) and changes nothing anywhere.
//! - [`lmo_failure`]: an LMO failing inside one owner's step is refused on
//!   every rank, and the run stays in step with the single process.
//! - [`memory`]: per-rank optimizer state at most 1/N of the
//!   single-process state plus the largest block's.
//!
//! Gradients are dyadic (k/64, |k| ≤ 512): their sums over ranks are
//! exact in any order, so the all-reduce's reduction order cannot change
//! the average and the single-process reference can form it locally.

use gluon_optim::{
    AdamWGroup, Config, GroupConfig, Label, NonFinitePolicy, OptError, Optimizer, Schedule,
    ShardError, ShardedOptimizer, presets,
};
use lmo_comm::{Communicator, Reduce};
use lmo_core::{Bf16Storage, LmoError, Scalar};
use lmo_ndarray::{Nd32, Nd64};
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// The test model: hidden matrices of three shapes (two stacked), an
/// embedding, a head and two vectors.
pub fn spec() -> Vec<(Label, Vec<usize>)> {
    vec![
        (Label::Hidden, vec![24, 16]),
        (Label::Hidden, vec![16, 40]),
        (Label::Hidden, vec![24, 16]),
        (Label::Hidden, vec![32, 32]),
        (Label::Embedding, vec![30, 16]),
        (Label::Head, vec![30, 16]),
        (Label::Vector, vec![16]),
        (Label::Vector, vec![40]),
    ]
}

/// The configurations the sharded step must reproduce.
pub fn configs() -> Vec<(&'static str, Config)> {
    let mut muon = presets::muon(0.05, 0.01);
    if let Some(GroupConfig::Lmo(g)) = muon.groups.get_mut(&Label::Hidden) {
        g.nesterov = true;
        g.weight_decay = 0.1;
    }
    vec![
        ("muon+nesterov+wd", muon),
        (
            "scion+warmup",
            presets::scion(0.01, false).schedule(Schedule::Warmup { warmup: 5 }),
        ),
        (
            "gluon-adaptive",
            presets::gluon((0.5, 2.0), (0.5, 1.0), 0.9),
        ),
        ("adamw", presets::adamw(AdamWGroup::default())),
    ]
}

fn labels() -> Vec<Label> {
    spec().into_iter().map(|s| s.0).collect()
}

/// Dyadic values k/64, |k| ≤ 512, from `seed`.
fn dyadic(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| rng.random_range(-512i32..=512) as f64 / 64.0)
        .collect()
}

fn tensors<S: Scalar>(seed: u64) -> Vec<ArrayD<S>> {
    spec()
        .iter()
        .enumerate()
        .map(|(i, (_, d))| {
            let n = d.iter().product();
            let v: Vec<S> = dyadic(seed * 1000 + i as u64, n)
                .into_iter()
                .map(S::of)
                .collect();
            ArrayD::from_shape_vec(IxDyn(d), v).expect("shape")
        })
        .collect()
}

/// Rank `r`'s gradients at step `k`.
fn grads<S: Scalar>(k: u64, r: usize) -> Vec<ArrayD<S>> {
    tensors::<S>(7 + 31 * k + 100_003 * r as u64)
}

/// The average over `n` ranks of [`grads`], as a single process forms it:
/// the exact sum times `1/n`.
fn average<S: Scalar>(k: u64, n: usize) -> Vec<ArrayD<S>> {
    let mut sum = grads::<S>(k, 0);
    for r in 1..n {
        for (a, b) in sum.iter_mut().zip(grads::<S>(k, r)) {
            *a = &*a + &b;
        }
    }
    let inv = S::of(1.0 / n as f64);
    for a in &mut sum {
        a.mapv_inplace(|x| x * inv);
    }
    sum
}

/// Whether every rank holds the same `params` (an all-gather of a
/// fingerprint of their bits).
pub fn replicas_agree<C: Communicator, S: Scalar>(comm: &C, params: &[ArrayD<S>]) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in params {
        for &x in p.iter() {
            for b in x.as_f64().to_bits().to_le_bytes() {
                h ^= b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    let mut all = vec![0u64; comm.size()];
    comm.all_gather(&[h], &mut all).expect("all-gather");
    all.iter().all(|&x| x == h)
}

fn say<C: Communicator>(comm: &C, what: &str) {
    if comm.rank() == 0 {
        println!("dist-check (world {}): {what}", comm.size());
    }
}

/// 20 sharded steps against 20 single-process steps, bit for bit, in f32
/// and f64, for every configuration of [`configs`], with the gradients
/// averaged on every rank (even steps) or onto their owners (odd steps).
pub fn equivalence<C: Communicator>(comm: &C) {
    for (name, cfg) in configs() {
        equivalence_in::<Nd32, f32, C>(comm, name, &cfg);
        equivalence_in::<Nd64, f64, C>(comm, name, &cfg);
        say(
            comm,
            &format!("{name}: 20 steps equal the single process (f32, f64)"),
        );
    }
}

fn equivalence_in<B, S, C>(comm: &C, name: &str, cfg: &Config)
where
    B: Bf16Storage<Scalar = S, Tensor = ArrayD<S>>,
    S: Scalar + Reduce,
    C: Communicator,
{
    let n = comm.size();
    let mut pr: Vec<ArrayD<S>> = tensors(1);
    let mut ps = pr.clone();
    let mut reference = Optimizer::<B>::new(cfg.clone(), labels(), &pr).expect("reference");
    let mut sharded =
        ShardedOptimizer::<B, &C>::new(cfg.clone(), labels(), &ps, comm).expect("sharded");
    for k in 0..20 {
        let avg = average::<S>(k, n);
        let own = grads::<S>(k, comm.rank());
        let mut mine = own.clone();
        // Even steps: the all-reduce average on every rank; odd steps: the
        // reduce onto each block's owner (the others keep their own).
        if k % 2 == 0 {
            sharded.average_gradients(&mut mine).expect("average");
            assert!(mine == avg, "{name}: averaged gradients differ at step {k}");
        } else {
            sharded.reduce_gradients(&mut mine).expect("reduce");
            for (i, g) in mine.iter().enumerate() {
                let want = match sharded.owners()[i] == comm.rank() {
                    true => &avg[i],
                    false => &own[i],
                };
                assert!(
                    g == want,
                    "{name}: reduced gradient {i} differs at step {k}"
                );
            }
        }
        let want = reference
            .step(&mut pr, &avg)
            .expect("reference step")
            .clone();
        let got = sharded.step(&mut ps, &mine).expect("sharded step");
        assert_eq!(got, &want, "{name}: reports differ at step {k}");
        assert!(ps == pr, "{name}: parameters differ at step {k}");
    }
    assert!(replicas_agree(comm, &ps), "{name}: replicas differ");
}

/// One optimizer step on `p` with gradients `g`.
type StepFn<'a> = dyn FnMut(&mut Vec<ArrayD<f64>>, &[ArrayD<f64>]) + 'a;

/// Steps `ks` of a run with the same gradients on every rank.
fn run(opt: &mut StepFn<'_>, p: &mut Vec<ArrayD<f64>>, ks: std::ops::Range<u64>) {
    for k in ks {
        opt(p, &grads::<f64>(k, 0));
    }
}

/// Save and load across world sizes (Gluon, f64, the same gradients on
/// every rank so that the trajectory does not depend on the world size).
/// `file`: with `save`, rank 0 writes the sharded state after 5 steps
/// there; without, a state found there (written by another world size) is
/// loaded and continued.
pub fn checkpoints<C: Communicator>(comm: &C, file: Option<(&std::path::Path, bool)>) {
    let cfg = presets::gluon((0.5, 2.0), (0.5, 1.0), 0.9);
    // The uninterrupted single-process run, and its state after 5 steps.
    let mut p10: Vec<ArrayD<f64>> = tensors(2);
    let mut single = Optimizer::<Nd64>::new(cfg.clone(), labels(), &p10).expect("single");
    run(
        &mut |p, g| {
            single.step(p, g).expect("step");
        },
        &mut p10,
        0..5,
    );
    let (s5, p5) = (single.state(), p10.clone());
    run(
        &mut |p, g| {
            single.step(p, g).expect("step");
        },
        &mut p10,
        5..10,
    );

    // Single-process state → sharded.
    let mut p = p5.clone();
    let mut sh =
        ShardedOptimizer::<Nd64, &C>::new(cfg.clone(), labels(), &p, comm).expect("sharded");
    sh.load_state(&s5).expect("load at world size N");
    run(
        &mut |p, g| {
            sh.step(p, g).expect("step");
        },
        &mut p,
        5..10,
    );
    assert!(p == p10, "single → sharded: resumed run differs");

    // Sharded state → single process.
    let mut p = tensors::<f64>(2);
    let mut sh =
        ShardedOptimizer::<Nd64, &C>::new(cfg.clone(), labels(), &p, comm).expect("sharded");
    run(
        &mut |p, g| {
            sh.step(p, g).expect("step");
        },
        &mut p,
        0..5,
    );
    let state = sh.state().expect("gather");
    assert!(
        state == s5,
        "the gathered state is not the single-process one"
    );
    let mut one = Optimizer::<Nd64>::new(cfg.clone(), labels(), &p).expect("single");
    one.load_state(&state).expect("load at world size 1");
    run(
        &mut |p, g| {
            one.step(p, g).expect("step");
        },
        &mut p,
        5..10,
    );
    assert!(p == p10, "sharded → single: resumed run differs");
    say(
        comm,
        "checkpoints: world size 1 ↔ N, resumed runs repeat the uninterrupted one",
    );

    match file {
        Some((path, true)) => {
            if comm.rank() == 0 {
                let json = serde_json::to_string(&state).expect("serialize");
                std::fs::write(path, json).expect("write the state file");
            }
            comm.barrier().expect("barrier");
            say(comm, &format!("checkpoints: wrote {}", path.display()));
        }
        Some((path, false)) => {
            let json = std::fs::read_to_string(path).expect("read the state file");
            let saved: gluon_optim::OptState = serde_json::from_str(&json).expect("parse");
            let mut p = p5.clone();
            let mut sh =
                ShardedOptimizer::<Nd64, &C>::new(cfg, labels(), &p, comm).expect("sharded");
            sh.load_state(&saved)
                .expect("load a state of another world size");
            run(
                &mut |p, g| {
                    sh.step(p, g).expect("step");
                },
                &mut p,
                5..10,
            );
            assert!(
                p == p10,
                "a state from another world size resumes differently"
            );
            say(
                comm,
                &format!(
                    "checkpoints: {} (another world size) resumes exactly",
                    path.display()
                ),
            );
        }
        None => {}
    }
}

/// A NaN gradient, a shape error and a bad state on the last rank only.
pub fn faults<C: Communicator>(comm: &C) {
    let last = comm.size() - 1;
    let me = comm.rank();
    for policy in [NonFinitePolicy::Error, NonFinitePolicy::Skip] {
        let cfg = presets::muon(0.05, 0.01).non_finite(policy);
        let mut p: Vec<ArrayD<f32>> = tensors(3);
        let mut sh = ShardedOptimizer::<Nd32, &C>::new(cfg, labels(), &p, comm).expect("sharded");
        sh.step(&mut p, &grads::<f32>(0, 0)).expect("a good step");
        let (before, state) = (p.clone(), sh.state().expect("state"));
        // NaNs on two ranks in different blocks: the lowest block everywhere.
        let mut g = grads::<f32>(1, 0);
        if me == last {
            g[5][[3, 2]] = f32::NAN;
        }
        if me == 0 {
            g[6][[4]] = f32::INFINITY;
        }
        let r = sh.step(&mut p, &g).map(|r| r.skipped);
        match policy {
            NonFinitePolicy::Error => assert_eq!(
                r,
                Err(ShardError::Opt(OptError::NonFiniteGradient { block: 5 })),
                "rank {me}: a NaN on rank {last}"
            ),
            NonFinitePolicy::Skip => {
                assert_eq!(r, Ok(true), "rank {me}: a NaN on rank {last} under Skip");
                assert_eq!((sh.skipped(), sh.steps()), (1, 1));
            }
        }
        assert!(p == before, "rank {me}: a refused step changed parameters");
        // Only the skip counter moves.
        let mut state = state;
        if policy == NonFinitePolicy::Skip {
            state.skipped += 1;
        }
        assert!(
            sh.state().expect("state") == state,
            "rank {me}: state changed"
        );
        // A shape error on the last rank.
        let mut g = grads::<f32>(1, 0);
        if me == last {
            g[1] = ArrayD::zeros(IxDyn(&[40, 16]));
        }
        let d1 = p[1].shape().to_vec();
        assert!(d1.len() == 2 && d1 != [40, 16]);
        let want = if me == last {
            ShardError::Opt(OptError::Lmo {
                block: 1,
                error: LmoError::ShapeMismatch {
                    expected: (d1[0], d1[1]),
                    found: (40, 16),
                },
            })
        } else {
            ShardError::Peer { rank: last }
        };
        assert_eq!(
            sh.step(&mut p, &g).map(|r| r.skipped),
            Err(want),
            "rank {me}: a shape error on rank {last}"
        );
        // A wrong gradient count on the last rank, for average_gradients.
        let mut g = grads::<f32>(1, 0);
        if me == last {
            g.pop();
        }
        let g_before = g.clone();
        let n = p.len();
        let count_error = if me == last {
            ShardError::Opt(OptError::CountMismatch {
                expected: n,
                found: n - 1,
            })
        } else {
            ShardError::Peer { rank: last }
        };
        assert_eq!(
            sh.average_gradients(&mut g),
            Err(count_error.clone()),
            "rank {me}: count error"
        );
        assert!(
            g == g_before,
            "rank {me}: a refused average changed gradients"
        );
        assert!(p == before, "rank {me}: a refused step changed parameters");
        // The same for reduce_gradients.
        assert_eq!(
            sh.reduce_gradients(&mut g),
            Err(count_error),
            "rank {me}: count error (reduce)"
        );
        assert!(
            g == g_before,
            "rank {me}: a refused reduce changed gradients"
        );
        // A NaN on a rank that does not own the block, reduced onto its
        // owner: the same error (or skip) everywhere, nothing changed.
        let block = 5;
        let owner = sh.owners()[block];
        let other = (owner + 1) % comm.size();
        let mut g = grads::<f32>(1, 0);
        if me == other {
            g[block][[0, 1]] = f32::NAN;
        }
        sh.reduce_gradients(&mut g).expect("reduce");
        let r = sh.step(&mut p, &g).map(|r| r.skipped);
        match policy {
            NonFinitePolicy::Error => assert_eq!(
                r,
                Err(ShardError::Opt(OptError::NonFiniteGradient { block })),
                "rank {me}: a NaN on rank {other}, reduced onto rank {owner}"
            ),
            NonFinitePolicy::Skip => assert_eq!(r, Ok(true), "rank {me}: reduced NaN under Skip"),
        }
        assert!(p == before, "rank {me}: a refused step changed parameters");
        if policy == NonFinitePolicy::Skip {
            state.skipped += 1;
        }
        // A bad state (NaN) on the last rank only: refused everywhere.
        let state = state;
        let mut bad = state.clone();
        if me == last {
            bad.blocks[0].buffers[0][0] = f64::NAN;
        }
        match sh.load_state(&bad) {
            Err(ShardError::Opt(OptError::BadState(why))) if me == last => {
                assert!(why.contains("non-finite"), "rank {me}: {why}")
            }
            Err(ShardError::Peer { rank }) if me != last => assert_eq!(rank, last),
            other => panic!("rank {me}: a bad state on rank {last} gave {other:?}"),
        }
        // A valid state that differs on one rank (all its checks pass
        // there): the fingerprints differ, refused everywhere.
        if comm.size() > 1 {
            let mut other = state.clone();
            if me == last {
                other.blocks[0].buffers[0][0] += 1.0;
            }
            // Every rank sees the fingerprints differ: its own error.
            assert_eq!(
                sh.load_state(&other),
                Err(ShardError::Opt(OptError::BadState(
                    "the ranks were given different states".into()
                ))),
                "rank {me}: states that differ between ranks"
            );
        }
        assert!(
            sh.state().expect("state") == state,
            "rank {me}: state changed"
        );
        assert!(replicas_agree(comm, &p), "replicas differ after the faults");
    }
    say(
        comm,
        "faults: NaN (direct and reduced onto another owner), shape, count and state errors on one rank refused on every rank, nothing changed",
    );
}

/// An LMO that fails inside one owner's step (a user norm refusing an
/// input whose first entry exceeds a threshold, on block 3 only): every
/// rank errors, no parameter and no step counter changes anywhere, and the
/// run continues in step with the single process.
pub fn lmo_failure<C: Communicator>(comm: &C) {
    use gluon_optim::{LmoGroup, NormRegistry, NormSpec, Radius};
    use lmo_core::{Frobenius, Norm};
    struct Picky(Frobenius);
    impl Norm<Nd64> for Picky {
        fn name(&self) -> &'static str {
            "picky"
        }
        fn norm(&mut self, x: &ArrayD<f64>) -> Result<f64, LmoError> {
            Norm::<Nd64>::norm(&mut self.0, x)
        }
        fn dual_norm(&mut self, g: &ArrayD<f64>) -> Result<f64, LmoError> {
            Norm::<Nd64>::dual_norm(&mut self.0, g)
        }
        fn lmo(&mut self, g: &ArrayD<f64>, out: &mut ArrayD<f64>) -> Result<f64, LmoError> {
            if g.iter().next().is_some_and(|&x| x > 100.0) {
                return Err(LmoError::InvalidHyperParameter(
                    "picky: first entry above 100",
                ));
            }
            Norm::<Nd64>::lmo(&mut self.0, g, out)
        }
    }
    let norms = || {
        NormRegistry::<Nd64>::new().with("picky", |_d, s| {
            let n: Box<dyn Norm<Nd64> + Send> = Box::new(Picky(Frobenius::new().with_scale(s)?));
            Ok(n)
        })
    };
    let picky = Label::Other("picky".into());
    let cfg = presets::muon(0.05, 0.01).group(
        picky.clone(),
        GroupConfig::Lmo(
            LmoGroup::new(NormSpec::Custom("picky".into()), Radius::Constant(0.1)).beta(0.9),
        ),
    );
    let mut labels = labels();
    labels[3] = picky;
    let mut pr: Vec<ArrayD<f64>> = tensors(4);
    let mut ps = pr.clone();
    let mut single =
        Optimizer::<Nd64>::with_norms(cfg.clone(), labels.clone(), &pr, &norms()).expect("single");
    let mut sh = ShardedOptimizer::<Nd64, &C>::with_norms(cfg, labels, &ps, comm, &norms())
        .expect("sharded");
    let good = grads::<f64>(0, 0);
    single.step(&mut pr, &good).expect("good step");
    sh.step(&mut ps, &good).expect("good step");
    let mut bad = grads::<f64>(1, 0);
    bad[3][[0, 0]] = 1e6; // the momentum's first entry is then above 100
    let before = ps.clone();
    let state = single.state();
    let refused = OptError::Lmo {
        block: 3,
        error: LmoError::InvalidHyperParameter("picky: first entry above 100"),
    };
    assert_eq!(
        single.step(&mut pr, &bad).map(|r| r.skipped),
        Err(refused.clone())
    );
    let owner = sh.owners()[3];
    let want = if comm.rank() == owner {
        ShardError::Opt(refused)
    } else {
        ShardError::Peer { rank: owner }
    };
    assert_eq!(
        sh.step(&mut ps, &bad).map(|r| r.skipped),
        Err(want),
        "rank {}: an LMO failure on rank {owner}",
        comm.rank()
    );
    assert!(ps == before, "an abandoned step changed parameters");
    assert_eq!(sh.steps(), 1, "an abandoned step advanced the counter");
    // Steps are atomic: the failed step changed no momentum on any rank
    // (nor in one process), so both states are the one before it, and the
    // run continues in lockstep with the single process.
    assert!(single.state() == state, "a failed step changed the state");
    assert!(
        sh.state().expect("state") == state,
        "a failed sharded step changed the state"
    );
    for k in 0..5u64 {
        let g = grads::<f64>(2 + k, 0);
        single
            .step(&mut pr, &g)
            .expect("a good step after the failure");
        sh.step(&mut ps, &g).expect("a good step after the failure");
        assert!(ps == pr, "parameters differ after an abandoned step");
    }
    assert_eq!(sh.steps(), single.steps());
    assert!(
        sh.state().expect("state") == single.state(),
        "state differs"
    );
    assert!(replicas_agree(comm, &ps), "replicas differ");
    say(
        comm,
        "LMO failure on one owner: refused everywhere, nothing changed anywhere, continues as one process",
    );
}

/// Per-rank optimizer state against the single-process state: at most
/// `total/N + largest block` values, on a GPT-2-like stack of hidden
/// matrices with AdamW for the rest (Muon).
pub fn memory<C: Communicator>(comm: &C) {
    let mut labels = Vec::new();
    let mut params = Vec::new();
    for layer in 0..6 {
        for d in [[64usize, 192], [64, 64], [64, 256], [256, 64]] {
            labels.push(Label::Hidden);
            params.push(ArrayD::<f32>::zeros(IxDyn(&d)));
        }
        let _ = layer;
        for _ in 0..4 {
            labels.push(Label::Vector);
            params.push(ArrayD::<f32>::zeros(IxDyn(&[64])));
        }
    }
    labels.push(Label::Embedding);
    params.push(ArrayD::zeros(IxDyn(&[500, 64])));
    let cfg = presets::muon(0.02, 3e-4);
    let single = Optimizer::<Nd32>::new(cfg.clone(), labels.clone(), &params).expect("single");
    let total: usize = single
        .state()
        .blocks
        .iter()
        .map(|b| b.buffers.iter().map(Vec::len).sum::<usize>())
        .sum();
    let largest = single
        .state()
        .blocks
        .iter()
        .map(|b| b.buffers.iter().map(Vec::len).sum::<usize>())
        .max()
        .unwrap_or(0);
    let sh = ShardedOptimizer::<Nd32, &C>::new(cfg, labels, &params, comm).expect("sharded");
    let mine = sh.state_len();
    let bound = total / comm.size() + largest;
    assert!(
        mine <= bound,
        "rank {}: {mine} state values > {total}/{} + {largest}",
        comm.rank(),
        comm.size()
    );
    let mut all = vec![0u64; comm.size()];
    comm.all_gather(&[mine as u64], &mut all).expect("gather");
    assert_eq!(
        all.iter().sum::<u64>() as usize,
        total,
        "state lost or duplicated"
    );
    say(
        comm,
        &format!("memory: per-rank state {all:?} of {total} (bound {bound} each)"),
    );
}

/// Every check, in order (what `dist-check` runs on each rank).
pub fn all<C: Communicator>(comm: &C, file: Option<(&std::path::Path, bool)>) {
    equivalence(comm);
    checkpoints(comm, file);
    faults(comm);
    lmo_failure(comm);
    memory(comm);
}
