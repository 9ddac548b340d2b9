//! The peers' side of a benchmark run: the environment their processes get
//! (full speed, whatever the machine sets for everyone else), the kernels
//! they report using, and the verdict whether a ratio against them may be
//! printed.
//!
//! Some machines set `OPENBLAS_CORETYPE=Haswell` and `OPENBLAS_L2_SIZE` for
//! every process (old OpenBLAS builds crash on some CPUs without them).
//! They pin numpy's and scipy's OpenBLAS to its AVX2 kernel, about half the
//! sgemm rate of its AVX-512 kernel on an AVX-512 CPU, so a ratio against
//! such a peer flatters us. The peers' processes run without them (only
//! theirs: our runner, the tests and CI keep the machine's environment),
//! report the kernel they really dispatch to (`peers.py`'s `peer_kernels`
//! line), and a ratio against a peer below the CPU's SIMD level is refused
//! unless `--allow-slow-peer` is given.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// Variables removed from every peer process's environment.
pub const HANDICAPS: &[&str] = &["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"];

/// The command for one peer process: `program args…` with `envs` (thread
/// counts), and without [`HANDICAPS`] (removed last, so neither the
/// inherited environment nor `envs` can bring them back).
pub fn command<I, S>(program: impl AsRef<OsStr>, args: I, envs: &[(&str, &str)]) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(program);
    c.args(args).envs(envs.iter().copied());
    for v in HANDICAPS {
        c.env_remove(v);
    }
    c
}

/// The same for a shell line in a bundle's `run.sh`: `env -u …` before the
/// program.
pub fn shell_prefix() -> String {
    let mut s = String::from("env");
    for v in HANDICAPS {
        s += &format!(" -u {v}");
    }
    s
}

/// SIMD levels, lowest first; `Unknown` sorts below everything (a kernel
/// nobody could name is not known to be at full speed).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Unknown,
    Sse,
    Avx,
    Avx2,
    Avx512,
}

impl Level {
    /// The best level a CPU with these `/proc/cpuinfo` flags runs.
    pub fn of_cpu(flags: &[&str]) -> Level {
        if flags.contains(&"avx512f") {
            Level::Avx512
        } else if flags.contains(&"avx2") && flags.contains(&"fma") {
            Level::Avx2
        } else if flags.contains(&"avx") {
            Level::Avx
        } else {
            Level::Sse
        }
    }
    /// The level a name (as [`Level::name`] writes it) stands for.
    pub fn parse(name: &str) -> Option<Level> {
        [
            Level::Unknown,
            Level::Sse,
            Level::Avx,
            Level::Avx2,
            Level::Avx512,
        ]
        .into_iter()
        .find(|l| l.name() == name)
    }
    pub fn name(self) -> &'static str {
        match self {
            Level::Unknown => "unknown",
            Level::Sse => "sse",
            Level::Avx => "avx",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }
}

/// One library a peer runs its work on, as `peers.py` probed it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Component {
    /// What the library does for the peer ("BLAS", "f32 matmul (MKL)", …).
    pub what: String,
    /// Library and version.
    pub api: String,
    /// The kernel or ISA the library reports (OpenBLAS core name, MKL's or
    /// oneDNN's ISA line, ATen's CPU capability).
    pub kernel: String,
    pub level: Level,
    pub threads: Option<u64>,
}

/// A peer's kernels and the verdict on them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct PeerKernels {
    pub components: Vec<Component>,
    /// `None`: at full speed on this CPU with the requested threads; else
    /// why not.
    pub below: Option<String>,
}

/// Judges every peer's components against the CPU's level and the thread
/// count every side was given.
pub fn judge(
    reported: BTreeMap<String, Vec<Component>>,
    cpu: Level,
    threads: u64,
) -> BTreeMap<String, PeerKernels> {
    reported
        .into_iter()
        .map(|(peer, components)| {
            let mut why = vec![];
            for c in &components {
                if c.level < cpu {
                    why.push(format!(
                        "{} runs {} ({}) on this {} CPU",
                        c.what,
                        c.kernel,
                        c.level.name(),
                        cpu.name()
                    ));
                }
                match c.threads {
                    Some(t) if t != threads => {
                        why.push(format!("{} uses {t} threads, not {threads}", c.what))
                    }
                    None => why.push(format!("{}: thread count unknown", c.what)),
                    _ => {}
                }
            }
            let below = (!why.is_empty()).then(|| why.join("; "));
            (peer, PeerKernels { components, below })
        })
        .collect()
}

/// The peer an implementation name belongs to: `numpy-sgemm` → `numpy`,
/// `torch.optim.Muon-bf16` → `torch`.
pub fn peer_of(imp: &str) -> &str {
    imp.split(['-', '.']).next().unwrap_or(imp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_processes_run_without_the_handicaps_and_keep_the_rest() {
        // The machine's variables arrive through the inherited environment
        // or, here, through `envs` (a stand-in that does not need to touch
        // this process's environment): either way the peer must not see them.
        let envs = [
            ("OPENBLAS_CORETYPE", "Haswell"),
            ("OPENBLAS_L2_SIZE", "1048576"),
            ("OPENBLAS_NUM_THREADS", "2"),
        ];
        let script = "echo ${OPENBLAS_CORETYPE-unset},${OPENBLAS_L2_SIZE-unset},${OPENBLAS_NUM_THREADS-unset}";
        let out = command("sh", ["-c", script], &envs).output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "unset,unset,2");
        // And the bundle's shell line does the same (and leaves the
        // thread count alone).
        let line = format!(
            "OPENBLAS_CORETYPE=Haswell OPENBLAS_L2_SIZE=1 OPENBLAS_NUM_THREADS=3 {} sh -c '{script}'",
            shell_prefix()
        );
        let out = Command::new("sh").args(["-c", &line]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "unset,unset,3");
    }

    fn comp(what: &str, kernel: &str, level: Level, threads: Option<u64>) -> Component {
        Component {
            what: what.into(),
            api: "openblas 0.3.30".into(),
            kernel: kernel.into(),
            level,
            threads,
        }
    }

    #[test]
    fn a_peer_below_the_cpu_or_on_other_threads_is_judged_slow() {
        let mut rep = BTreeMap::new();
        rep.insert(
            "numpy".to_string(),
            vec![comp("BLAS", "Haswell", Level::Avx2, Some(2))],
        );
        rep.insert(
            "scipy".to_string(),
            vec![comp("BLAS", "SkylakeX", Level::Avx512, Some(2))],
        );
        rep.insert(
            "torch".to_string(),
            vec![comp("ATen", "AVX512", Level::Avx512, Some(1))],
        );
        let j = judge(rep.clone(), Level::Avx512, 2);
        assert!(j["numpy"].below.as_deref().unwrap().contains("Haswell"));
        assert_eq!(j["scipy"].below, None);
        assert!(j["torch"].below.as_deref().unwrap().contains("1 threads"));
        // On an AVX2-only CPU the AVX2 kernel is full speed.
        let j = judge(rep, Level::Avx2, 2);
        assert_eq!(j["numpy"].below, None);
        // A kernel nobody could name is not taken as full speed.
        let mut rep = BTreeMap::new();
        rep.insert(
            "numpy".to_string(),
            vec![comp("BLAS", "?", Level::Unknown, None)],
        );
        assert!(judge(rep, Level::Sse, 2)["numpy"].below.is_some());
    }

    #[test]
    fn cpu_levels_and_peer_names() {
        assert_eq!(Level::of_cpu(&["avx2", "fma", "avx512f"]), Level::Avx512);
        assert_eq!(Level::of_cpu(&["avx", "avx2", "fma"]), Level::Avx2);
        assert_eq!(Level::of_cpu(&["sse2"]), Level::Sse);
        for l in [
            Level::Unknown,
            Level::Sse,
            Level::Avx,
            Level::Avx2,
            Level::Avx512,
        ] {
            assert_eq!(Level::parse(l.name()), Some(l));
        }
        assert_eq!(Level::parse("avx1024"), None);
        assert_eq!(peer_of("numpy-sgemm"), "numpy");
        assert_eq!(peer_of("torch.optim.Muon-bf16"), "torch");
        assert_eq!(peer_of("scipy"), "scipy");
    }
}
