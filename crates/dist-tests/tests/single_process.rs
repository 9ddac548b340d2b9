//! The sharded-step checks at world size 1 (`SingleProcess`): the same
//! code `mpirun -np N dist-check` runs on every rank.

use lmo_comm::SingleProcess;

#[test]
fn sharded_step_equals_the_optimizer_in_one_process() {
    lmo_dist_tests::equivalence(&SingleProcess);
}

#[test]
fn checkpoints_move_between_the_sharded_and_the_plain_optimizer() {
    let dir = std::env::temp_dir().join(format!("lmo-dist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("state.json");
    lmo_dist_tests::checkpoints(&SingleProcess, Some((&f, true)));
    lmo_dist_tests::checkpoints(&SingleProcess, Some((&f, false)));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn faults_are_refused_and_change_nothing() {
    lmo_dist_tests::faults(&SingleProcess);
}

#[test]
fn one_rank_holds_the_whole_state() {
    lmo_dist_tests::memory(&SingleProcess);
}

#[test]
fn an_lmo_failure_is_refused_and_the_run_stays_in_step() {
    lmo_dist_tests::lmo_failure(&SingleProcess);
}
