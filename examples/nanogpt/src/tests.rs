//! The tiny model trains on the embedded text, and checkpoint → resume
//! repeats the uninterrupted run's losses exactly.

use super::*;
use lmo_comm::SingleProcess;

fn setup(out: &Path, extra: &[&str]) -> Setup {
    let mut argv = vec![
        "nanogpt",
        "--device",
        "cpu",
        "--quiet",
        "--batch",
        "8",
        "--eval-batches",
        "2",
        "--probe-steps",
        "6",
    ];
    let o = out.to_str().unwrap().to_string();
    argv.extend_from_slice(&["--out", &o]);
    argv.extend_from_slice(extra);
    prepare(Args::parse_from(argv), &SingleProcess).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nanogpt-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Every optimizer lowers the training loss of the tiny model within 30
/// steps (from ≈ ln(vocab) at initialization).
#[test]
fn a_few_steps_decrease_the_loss() {
    let out = tmp("decrease");
    let s = setup(&out, &["--steps", "30", "--eval-every", "30"]);
    let mut probe = None;
    for name in ["adamw", "muon", "scion", "gluon"] {
        let (cfg, hyper) = optimizer_config(&s, name, &mut probe, &SingleProcess).unwrap();
        let r = train(&s, name, &hyper, cfg, vec![], &SingleProcess).unwrap();
        let init = (s.gpt.vocab as f64).ln();
        assert!(
            r.final_val < init - 0.5,
            "{name}: val {} vs ln(vocab) {init}",
            r.final_val
        );
    }
    assert!(out.join("probe_points.csv").exists());
    std::fs::remove_dir_all(&out).ok();
}

/// 12 steps straight, or 12 steps stopped after 6 (a checkpoint) and
/// resumed (model, optimizer state, progress and Gluon's fits reloaded, as
/// a new process would): the same losses, bit for bit.
#[test]
fn checkpoint_resume_repeats_the_losses() {
    for name in ["muon", "gluon"] {
        let run = |out: &Path, extra: &[&str]| {
            let mut a = vec!["--steps", "12", "--eval-every", "3"];
            a.extend_from_slice(extra);
            let s = setup(out, &a);
            let mut probe = None;
            let (cfg, hyper) = optimizer_config(&s, name, &mut probe, &SingleProcess).unwrap();
            let fits = probe.clone().unwrap_or_default();
            (
                train(&s, name, &hyper, cfg, fits, &SingleProcess).unwrap(),
                probe.is_some(),
            )
        };
        let (a, b) = (
            tmp(&format!("full-{name}")),
            tmp(&format!("resumed-{name}")),
        );
        let (full, _) = run(&a, &[]);
        let (part, _) = run(&b, &["--stop-after", "6"]);
        assert_eq!(part.evals.len(), 2);
        let (resumed, probed) = run(&b, &["--resume"]);
        assert!(
            !probed,
            "{name}: resuming must reuse the saved fits, not probe again"
        );
        let losses = |r: &RunResult| -> Vec<(u64, f64, f64)> {
            r.evals
                .iter()
                .map(|e| (e.step, e.train_loss, e.val_loss))
                .collect()
        };
        assert_eq!(losses(&full), losses(&resumed), "{name}");
        let log = std::fs::read_to_string(b.join(name).join("log.csv")).unwrap();
        assert_eq!(log.lines().count(), 13, "{name}: header + 12 steps");
        std::fs::remove_dir_all(&a).ok();
        std::fs::remove_dir_all(&b).ok();
    }
}

/// Out-of-range numeric options are refused with the flag and its range
/// named, before the output folder exists (`--steps 0` used to run one
/// step silently, `--batch 0` to give a NaN loss).
#[test]
fn bad_numeric_options_are_refused_before_any_output() {
    let out = tmp("bad-options");
    for (flag, value, says) in [
        ("--steps", "0", "≥ 1"),
        ("--batch", "0", "≥ 1"),
        ("--batch", "-4", "≥ 1"),
        ("--eval-every", "0", "≥ 1"),
        ("--eval-batches", "0", "≥ 1"),
        ("--stop-after", "0", "≥ 1"),
        ("--threads", "0", "≥ 1"),
        ("--probe-steps", "1", "≥ 2"),
        ("--lr-adamw", "0", "> 0"),
        ("--lr-muon", "-0.02", "> 0"),
        ("--lr-muon-adam", "NaN", "> 0"),
        ("--lr-scion", "inf", "> 0"),
    ] {
        let o = out.to_str().unwrap();
        let kv = format!("{flag}={value}"); // `=`: clap takes "-4" as a value
        let argv = ["nanogpt", "--device", "cpu", "--out", o, &kv];
        let err = match prepare(Args::try_parse_from(argv).unwrap(), &SingleProcess) {
            Ok(_) => panic!("{flag} {value} accepted"),
            Err(e) => e,
        };
        assert!(
            err.starts_with(flag) && err.contains(says),
            "{flag} {value}: {err}"
        );
        assert!(!out.exists(), "{flag} {value}: output folder created");
    }
    // Without Gluon the probe length does not matter.
    let o = out.to_str().unwrap();
    let argv = [
        "nanogpt",
        "--device",
        "cpu",
        "--out",
        o,
        "--optimizers",
        "adamw",
        "--probe-steps",
        "0",
    ];
    assert!(validate(&Args::parse_from(argv)).is_ok());
}
