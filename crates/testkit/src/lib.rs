//! Test support for the workspace's test suites (a dev-dependency only):
//! visible skips, the test data and comparisons of backend-against-backend
//! suites ([`randn`], [`nd`], [`rel`]) and (feature `cuda`) the CUDA
//! devices a test runs on, and [`mpirun`] for the tests of data
//! parallelism.
//!
//! A test that cannot run part of its work here (no GPU, no NVRTC, a CPU
//! without a kernel's instructions) reports it with [`skip`]. libtest shows
//! such a test as `ok` and hides its output, so `skip` also appends a line
//! to the file named by [`SKIP_LOG`] when that variable is set: `cargo
//! xtask test` sets it and prints every skip, with its count, at the end
//! of the run. Where the capability is required (the GPU machine's
//! `LMO_EXPECT_GPU=1`, `LMO_EXPECT_NVRTC=1`; `cargo xtask test`'s
//! `LMO_EXPECT_EMU=1` for the CUDA kernel emulator and `LMO_EXPECT_MPI=1`
//! in CI), the tests fail instead of calling this.

use std::io::Write;

mod data;
mod mpi;
pub use data::{nd, randn, rel};
pub use mpi::{have_mpirun, mpirun};

#[cfg(feature = "cuda")]
mod devices;
#[cfg(feature = "cuda")]
pub use devices::cuda_devices;

/// The environment variable naming the file skips are appended to.
pub const SKIP_LOG: &str = "LMO_SKIP_LOG";

/// Reports that the running test skipped `what` (and why): a `SKIPPED:`
/// line on stderr, and a line `binary::test: what` in `$LMO_SKIP_LOG`.
pub fn skip(what: &str) {
    let label = test_label();
    eprintln!("SKIPPED: {label}: {what}");
    if let Some(path) = std::env::var_os(SKIP_LOG)
        && let Err(e) = append(std::path::Path::new(&path), &label, what)
    {
        eprintln!("lmo-testkit: cannot append to {SKIP_LOG}: {e}");
    }
}

/// Appends `label: what` as one line to `log` (one write with O_APPEND:
/// lines from parallel tests do not interleave).
fn append(log: &std::path::Path, label: &str, what: &str) -> std::io::Result<()> {
    let line = format!("{label}: {what}\n");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?
        .write_all(line.as_bytes())
}

/// `binary::test`: the test binary's name without cargo's hash, and the
/// test's name (libtest names each test's thread after it; with one test
/// thread the test runs on `main`).
fn test_label() -> String {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let bin = match exe.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name.to_string()
        }
        _ => exe,
    };
    match std::thread::current().name() {
        Some(t) if t != "main" => format!("{bin}::{t}"),
        _ => bin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_the_binary_and_the_test() {
        let l = test_label();
        assert!(
            l.ends_with("::tests::labels_name_the_binary_and_the_test") || l == "lmo_testkit",
            "{l}"
        );
        assert!(l.starts_with("lmo_testkit"), "{l}");
    }

    #[test]
    fn skips_from_parallel_threads_append_whole_lines() {
        let log = std::env::temp_dir().join(format!("lmo-skips-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&log);
        std::thread::scope(|s| {
            for t in 0..8 {
                let log = &log;
                s.spawn(move || {
                    for k in 0..50 {
                        append(log, &format!("t{t}"), &format!("part {k}")).unwrap();
                    }
                });
            }
        });
        let text = std::fs::read_to_string(&log).unwrap();
        std::fs::remove_file(&log).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 400);
        lines.sort_unstable();
        lines.dedup();
        assert_eq!(lines.len(), 400, "lines lost or interleaved");
        assert!(
            lines
                .iter()
                .all(|l| l.starts_with('t') && l.contains(": part "))
        );
    }
}
