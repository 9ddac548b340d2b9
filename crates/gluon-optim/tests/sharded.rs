//! Block ownership of the sharded step: the longest-processing-time rule
//! (Graham 1969) puts every block on one rank, deterministically, with
//! every rank's load at most the average plus the largest block.

use gluon_optim::assign_owners;
use proptest::prelude::*;

proptest! {
    #[test]
    fn lpt_loads_are_within_one_block_of_the_average(
        costs in proptest::collection::vec(0u128..1_000_000, 0..60),
        size in 1usize..9,
    ) {
        let owner = assign_owners(&costs, size);
        prop_assert_eq!(owner.len(), costs.len());
        prop_assert!(owner.iter().all(|&r| r < size));
        let mut load = vec![0u128; size];
        for (i, &r) in owner.iter().enumerate() {
            load[r] += costs[i];
        }
        let total: u128 = costs.iter().sum();
        let largest = costs.iter().copied().max().unwrap_or(0);
        for l in &load {
            prop_assert!(*l * size as u128 <= total + largest * size as u128);
        }
        prop_assert_eq!(assign_owners(&costs, size), owner);
    }
}

#[test]
fn equal_blocks_go_round_robin_and_one_rank_owns_all() {
    assert_eq!(assign_owners(&[5, 5, 5, 5, 5], 2), vec![0, 1, 0, 1, 0]);
    assert_eq!(assign_owners(&[9, 1, 4], 1), vec![0, 0, 0]);
    // Largest first: 9 to rank 0, 4 to rank 1, 1 to rank 1.
    assert_eq!(assign_owners(&[9, 1, 4], 2), vec![0, 1, 1]);
}

/// At one rank the sharded step is the plain optimizer's step in place
/// (bit for bit), plus four one-element agreements: three status
/// all-reduces of 2 f64 and the report's all-reduce of 2 f64 per block;
/// no broadcast, no staging.
#[test]
fn one_rank_steps_in_place_with_four_small_collectives() {
    use gluon_optim::{Label, Optimizer, ShardedOptimizer, presets};
    use lmo_comm::{Counted, SingleProcess, Traffic};
    use lmo_ndarray::Nd64;
    use ndarray::{ArrayD, IxDyn};
    let shapes = [vec![6usize, 4], vec![4, 9], vec![4], vec![10, 4]];
    let labels = vec![
        Label::Hidden,
        Label::Hidden,
        Label::Vector,
        Label::Embedding,
    ];
    let make = |seed: f64| -> Vec<ArrayD<f64>> {
        shapes
            .iter()
            .map(|s| ArrayD::from_shape_fn(IxDyn(s), |i| (seed * (1 + i[0]) as f64).sin()))
            .collect()
    };
    let cfg = presets::muon(0.05, 0.01);
    let (mut pa, mut pb) = (make(1.0), make(1.0));
    let comm = Counted::new(SingleProcess);
    let mut sh = ShardedOptimizer::<Nd64, _>::new(cfg.clone(), labels.clone(), &pa, &comm).unwrap();
    let mut one = Optimizer::<Nd64>::new(cfg, labels, &pb).unwrap();
    let built = comm.traffic();
    for k in 0..3 {
        let g = make(2.0 + k as f64);
        let before = comm.traffic();
        let r = sh.step(&mut pa, &g).unwrap().clone();
        let after = comm.traffic();
        assert_eq!(
            Traffic {
                calls: after.calls - before.calls,
                bytes: after.bytes - before.bytes,
            },
            Traffic {
                calls: 4,
                bytes: 3 * 16 + 16 * shapes.len() as u64,
            }
        );
        assert_eq!(&r, one.step(&mut pb, &g).unwrap());
        assert_eq!(pa, pb);
    }
    assert!(built.calls > 0, "construction agrees too");
}
