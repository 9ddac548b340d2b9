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
