//! `mpirun -np 2` and `-np 3` of `dist-check` (feature `mpi`): every check
//! of the sharded step on every rank, a state file written at world size 2
//! resumed at world size 3, and a rank that exits early ending the job
//! (never a hang).
//!
//! Without `mpirun` on the PATH the test reports a skip; with
//! `LMO_EXPECT_MPI=1` (CI) it fails instead.
#![cfg(feature = "mpi")]

use std::time::Duration;

use lmo_testkit::have_mpirun;

/// `mpirun -np n dist-check args…` with a deadline.
fn mpirun(n: usize, args: &[&str], deadline: Duration) -> (Option<i32>, String) {
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_dist-check"));
    lmo_testkit::mpirun(exe, n, args, deadline)
}

#[test]
fn sharded_step_under_mpirun_2_and_3_ranks() {
    if !have_mpirun() {
        lmo_testkit::skip("everything (no mpirun on the PATH)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("lmo-dist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let state = dir.join("state-world2.json");
    let state = state.to_str().expect("utf-8 path");
    let limit = Duration::from_secs(300);
    let (code, text) = mpirun(2, &["--save", state], limit);
    println!("{text}");
    assert_eq!(code, Some(0), "mpirun -np 2 failed:\n{text}");
    assert!(
        text.contains("dist-check (world 2): all checks passed"),
        "{text}"
    );
    let (code, text) = mpirun(3, &["--load", state], limit);
    println!("{text}");
    assert_eq!(code, Some(0), "mpirun -np 3 failed:\n{text}");
    assert!(
        text.contains("(another world size) resumes exactly"),
        "{text}"
    );
    assert!(
        text.contains("dist-check (world 3): all checks passed"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn a_rank_that_exits_early_ends_the_job() {
    if !have_mpirun() {
        lmo_testkit::skip("everything (no mpirun on the PATH)");
        return;
    }
    let (code, text) = mpirun(2, &["--exit-early"], Duration::from_secs(60));
    assert_ne!(code, Some(0), "the job went on without a rank:\n{text}");
    assert!(
        !text.contains("finished an all-reduce without its peer"),
        "{text}"
    );
    assert!(text.contains("rank 1 exits early"), "{text}");
}
