//! Launching a test binary under `mpirun` (Open MPI) with a deadline.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Whether `mpirun` runs here. Without it a test reports a skip; with
/// `LMO_EXPECT_MPI=1` (CI installs Open MPI) this panics instead, so that
/// the test fails where MPI is required.
pub fn have_mpirun() -> bool {
    let found = Command::new("mpirun")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found && std::env::var("LMO_EXPECT_MPI").as_deref() == Ok("1") {
        panic!("LMO_EXPECT_MPI=1 but mpirun is not on the PATH");
    }
    found
}

/// Runs `mpirun --oversubscribe -np n exe args…` (allowed as root) and
/// waits at most `deadline`; returns the exit code (`None`: killed by a
/// signal) and the ranks' combined output. Panics, with the output so far,
/// when the job is still running at the deadline (a hang is a failure).
pub fn mpirun(exe: &Path, n: usize, args: &[&str], deadline: Duration) -> (Option<i32>, String) {
    static RUN: AtomicUsize = AtomicUsize::new(0);
    let id = RUN.fetch_add(1, Ordering::SeqCst);
    let out = std::env::temp_dir().join(format!("lmo-mpirun-{}-{id}.log", std::process::id()));
    let log = std::fs::File::create(&out).expect("log file");
    let mut child = Command::new("mpirun")
        .args(["--oversubscribe", "-np", &n.to_string()])
        .arg(exe)
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("mpirun starts");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    let Some(status) = status else {
        panic!("mpirun -np {n} {args:?} still running after {deadline:?}:\n{text}");
    };
    (status.code(), text)
}
