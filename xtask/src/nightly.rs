//! The checks that need the nightly toolchain: AddressSanitizer
//! (`cargo xtask asan`), Miri (`cargo xtask miri`) and the fuzz targets
//! (`cargo xtask fuzz`). Each uses its own target directory.

use std::process::Command;
use std::time::Instant;

use super::{root, step};

/// `cargo` of the nightly toolchain (through `rustup run nightly`), at the
/// workspace root, without the stable toolchain's variables (which would
/// leak stable's cargo/rustc into nightly's build).
fn nightly_cargo() -> Command {
    let mut c = Command::new("rustup");
    c.current_dir(root())
        .args(["run", "nightly", "cargo"])
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTUP_TOOLCHAIN");
    c
}

/// The target `cargo xtask asan` names (`-Zbuild-std` needs one).
const ASAN_TARGET: &str = "x86_64-unknown-linux-gnu";

/// `cargo xtask asan`: the tests of the native AVX-512 kernels (lmo-ndarray,
/// lib and integration tests: f32 syrk/GEMM, the bf16 paths) and of the
/// CUDA kernel emulator (lmo-cuda with feature `emu`: lib and integration
/// tests) under AddressSanitizer. Nightly (`cargo +nightly`, through
/// `rustup run nightly`) with `-Zsanitizer=address` and std rebuilt
/// instrumented (`-Zbuild-std`, needs the nightly `rust-src` component);
/// `CFLAGS`/`CXXFLAGS=-fsanitize=address` instrument the emulator's C++
/// (built by the cc crate) too. Its own target directory, `target/asan`.
/// Leak detection stays on (`ASAN_OPTIONS` from the environment applies);
/// NVRTC is kept off the library path (its own leaks are not ours).
pub(crate) fn asan() -> Result<(), String> {
    let t = Instant::now();
    let dir = root().join("target/asan");
    let skips = dir.join("test-skips.log");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::remove_file(&skips);
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has = |f: &str| cpu.split_whitespace().any(|w| w == f);
    let c_flags = "-fsanitize=address -fno-omit-frame-pointer -g";
    let mut c = nightly_cargo();
    c.args(["test", "-Zbuild-std"])
        .args(["--target", ASAN_TARGET, "--no-fail-fast"])
        .args([
            "-p",
            "lmo-ndarray",
            "-p",
            "lmo-cuda",
            "--features",
            "lmo-cuda/emu",
        ])
        .args(["--lib", "--tests"])
        .env("CARGO_TARGET_DIR", &dir)
        .env("RUSTFLAGS", "-Zsanitizer=address")
        .env("CFLAGS", c_flags)
        .env("CXXFLAGS", c_flags)
        // NVRTC (a closed library, found through LD_LIBRARY_PATH after
        // `eval "$(cargo xtask libtorch)"`) leaks a compile's buffers and
        // is unloaded before LeakSanitizer runs, so no suppression can
        // name it: without it the NVRTC compile test skips here (it runs in
        // `cargo xtask test`); the emulator needs no NVRTC.
        .env_remove("LD_LIBRARY_PATH")
        // The emulator must run (a missing one fails its device list).
        .env("LMO_EXPECT_EMU", "1")
        .env("LMO_SKIP_LOG", &skips);
    let r = step(
        "AddressSanitizer: lmo-ndarray (lib, tests) and lmo-cuda --features emu (lib, tests)",
        c,
    );
    let skipped = std::fs::read_to_string(&skips).unwrap_or_default();
    eprintln!(
        "==> asan summary ({:.0}s, target {ASAN_TARGET}, target/asan):",
        t.elapsed().as_secs_f64()
    );
    eprintln!(
        "    native kernels: f32 (AVX-512 F, BW) {}, bf16 (AVX-512 BF16) {}",
        if has("avx512f") && has("avx512bw") {
            "run"
        } else {
            "NOT run (CPU lacks it)"
        },
        if has("avx512_bf16") {
            "run"
        } else {
            "NOT run (CPU lacks it)"
        },
    );
    eprintln!(
        "    tests: lmo-ndarray lib + integration, lmo-cuda (emulator) lib + integration: {}",
        if r.is_ok() {
            "ok, no ASan reports"
        } else {
            "FAILED (see the ASan report / test output above)"
        }
    );
    for l in skipped.lines() {
        eprintln!("    SKIPPED {l}");
    }
    r
}

/// `cargo xtask miri`: lmo-core's tests (unit and integration) under Miri,
/// which reports undefined behaviour (out-of-bounds or misaligned
/// accesses, invalid values, use after free, data races) in the code they
/// run. lmo-core is `no_std` + alloc with no dependencies beyond
/// num-traits, so Miri runs all of it; the crates above call faer, rayon
/// and native kernels, which Miri cannot run in reasonable time (the
/// native kernels are covered by `cargo xtask asan`). Needs the nightly
/// `miri` and `rust-src` components; its own target directory.
pub(crate) fn miri() -> Result<(), String> {
    let mut c = nightly_cargo();
    c.args(["miri", "test", "-p", "lmo-core"])
        .env("CARGO_TARGET_DIR", root().join("target/miri"))
        // Property-free tests, but keep Miri's run short and reproducible.
        .env("MIRIFLAGS", "-Zmiri-strict-provenance");
    step(
        "Miri: lmo-core's tests (cargo +nightly miri test -p lmo-core)",
        c,
    )
}

/// The fuzz targets of `fuzz/` (see `docs/guarantees.md`).
const FUZZ_TARGETS: [&str; 5] = ["norms", "polar", "trs", "state", "step"];

/// `cargo xtask fuzz [SECONDS]`: builds the fuzz targets (`cargo +nightly
/// fuzz build -O`, AddressSanitizer), replays each target's committed
/// corpus (`fuzz/corpus/<target>`: every input must pass) and fuzzes it for
/// SECONDS (default 30) more. New inputs the run finds are written to a
/// scratch corpus under `fuzz/target`, so the committed one changes only by
/// hand (`cargo fuzz cmin`). A crash leaves its input in
/// `fuzz/artifacts/<target>` and fails the command. Needs `cargo-fuzz`
/// (`cargo install cargo-fuzz`).
pub(crate) fn fuzz(args: &[String]) -> Result<(), String> {
    let seconds: u64 = match args.first() {
        None => 30,
        Some(s) => s
            .parse()
            .map_err(|_| format!("cargo xtask fuzz [SECONDS]: not a number: {s}"))?,
    };
    let dir = root().join("fuzz");
    let mut c = nightly_cargo();
    c.current_dir(&dir).args(["fuzz", "build", "-O"]);
    step("cargo +nightly fuzz build -O (AddressSanitizer)", c)?;
    for t in FUZZ_TARGETS {
        let scratch = dir.join("target/scratch-corpus").join(t);
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
        let corpus = dir.join("corpus").join(t);
        let mut c = nightly_cargo();
        c.current_dir(&dir)
            .args(["fuzz", "run", "-O", t])
            .arg(&scratch)
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-rss_limit_mb=4096");
        step(
            &format!("fuzz {t}: replay fuzz/corpus/{t}, then {seconds} s of fuzzing"),
            c,
        )?;
    }
    Ok(())
}
