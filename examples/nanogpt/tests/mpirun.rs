//! Data-parallel NanoGPT under `mpirun` (feature `mpi`): at 2 and 3 ranks
//! the run repeats the single-process one up to the rounding of the
//! gradient average, the replicas stay bit-identical, a checkpoint written
//! at 2 ranks resumes at 3, and bad launches give clear errors.
//!
//! Without `mpirun` on the PATH the test reports a skip; with
//! `LMO_EXPECT_MPI=1` (CI) it fails instead.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use lmo_testkit::have_mpirun;

/// Two runs of the same data agree to this (absolute, on losses ≈ 3): the
/// ranks' gradients are averaged in another order than one process's
/// batch mean, a difference of about 1e-7 per step.
const TOL: f64 = 1e-4;

/// `mpirun -np n nanogpt` of a 12-step tiny run with a global batch of
/// `batch` sequences.
fn nanogpt(n: usize, out: &Path, batch: &str, extra: &[&str]) -> (Option<i32>, String) {
    let o = out.to_str().expect("utf-8 path");
    let mut args = vec![
        "--device",
        "cpu",
        "--quiet",
        "--steps",
        "12",
        "--eval-every",
        "4",
        "--eval-batches",
        "2",
        "--optimizers",
        "muon,gluon",
        "--probe-steps",
        "4",
        "--batch",
        batch,
        "--threads",
        "1",
        "--out",
        o,
    ];
    args.extend_from_slice(extra);
    let exe = Path::new(env!("CARGO_BIN_EXE_nanogpt"));
    lmo_testkit::mpirun(exe, n, &args, Duration::from_secs(300))
}

/// `(optimizer, step, val loss)` of every evaluation in `summary.json`.
fn evals(out: &Path) -> Vec<(String, u64, f64)> {
    let text = std::fs::read_to_string(out.join("summary.json")).expect("summary.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let mut all = vec![];
    for r in v["results"].as_array().expect("results") {
        let name = r["optimizer"].as_str().expect("name").to_string();
        for e in r["evals"].as_array().expect("evals") {
            all.push((
                name.clone(),
                e["step"].as_u64().expect("step"),
                e["val_loss"].as_f64().expect("val"),
            ));
        }
    }
    all
}

fn assert_close(a: &[(String, u64, f64)], b: &[(String, u64, f64)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: {a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!((&x.0, x.1), (&y.0, y.1), "{what}");
        assert!(
            (x.2 - y.2).abs() < TOL,
            "{what}: {} step {}: {} vs {}",
            x.0,
            x.1,
            x.2,
            y.2
        );
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nanogpt-mpi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn data_parallel_runs_repeat_the_single_process_run() {
    if !have_mpirun() {
        lmo_testkit::skip("everything (no mpirun on the PATH)");
        return;
    }
    let one = tmp("one");
    let (code, text) = nanogpt(1, &one, "6", &[]);
    assert_eq!(code, Some(0), "1 rank:\n{text}");
    let reference = evals(&one);
    assert_eq!(reference.len(), 6, "{reference:?}");
    // The losses fall (the run trains).
    assert!(reference[2].2 < reference[0].2 && reference[5].2 < reference[3].2);
    for n in [2, 3] {
        let out = tmp(&format!("ranks{n}"));
        let ranks = n.to_string();
        let (code, text) = nanogpt(n, &out, "6", &["--ranks", &ranks]);
        assert_eq!(code, Some(0), "{n} ranks:\n{text}");
        for name in ["muon", "gluon"] {
            let line = format!("{name}: parameters identical on all {n} ranks");
            assert!(text.contains(&line), "{line:?} missing:\n{text}");
        }
        assert_close(&reference, &evals(&out), &format!("{n} ranks vs 1"));
        std::fs::remove_dir_all(&out).ok();
    }
    // Stopped after 6 steps at 2 ranks, resumed at 3: the uninterrupted run.
    let resumed = tmp("resumed");
    let (code, text) = nanogpt(2, &resumed, "6", &["--stop-after", "6"]);
    assert_eq!(code, Some(0), "2 ranks, stop after 6:\n{text}");
    let (code, text) = nanogpt(3, &resumed, "6", &["--resume"]);
    assert_eq!(code, Some(0), "3 ranks, resumed:\n{text}");
    for name in ["muon", "gluon"] {
        let line = format!("{name}: resumed from");
        assert!(text.contains(&line), "{line:?} missing:\n{text}");
    }
    assert!(
        !text.contains("probing (L0, L1)"),
        "resuming must reuse Gluon's saved fits:\n{text}"
    );
    assert_close(
        &reference,
        &evals(&resumed),
        "saved at 2 ranks, resumed at 3",
    );
    std::fs::remove_dir_all(&resumed).ok();
    std::fs::remove_dir_all(&one).ok();
}

#[test]
fn bad_launches_are_refused_with_the_fix() {
    if !have_mpirun() {
        lmo_testkit::skip("everything (no mpirun on the PATH)");
        return;
    }
    let out = tmp("bad");
    let (code, text) = nanogpt(2, &out, "7", &[]);
    assert_ne!(code, Some(0), "{text}");
    assert!(
        text.contains("--batch 7 does not split over 2 ranks"),
        "{text}"
    );
    let (code, text) = nanogpt(2, &out, "6", &["--ranks", "3"]);
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("MPI started 2 rank(s)"), "{text}");
    std::fs::remove_dir_all(&out).ok();
}
