//! `cargo xtask bench [SUITE…] [--quick] [--reps N] [--threads T]
//! [--peers numpy,torch|none] [--json PATH] [--compare OLD.json]`
//!
//! Runs our side (the `lmo-bench` binary, release build) and the peers
//! (`bench/peers/peers.py` in a venv with pinned numpy/PyTorch, installed on
//! first use under `target/bench/venv`) case by case in the same run, with
//! the same thread count, then prints a table of medians, spreads, ratios
//! and % of the measured sgemm roofline, writes a JSON file with raw
//! samples and machine facts, and SVG/PNG plots under `target/bench/`.
//!
//! GPU: `cargo xtask bench gpu` runs the CUDA suites where Rust and a GPU
//! are on one machine. Where the GPU machine has no Rust, `--bundle DIR`
//! builds everything here into DIR (the runner, the peers script and a
//! `run.sh` with every case); run `DIR/run.sh > gpu.jsonl` there (PYTHON=
//! a python with PyTorch), then `cargo xtask bench --import gpu.jsonl`
//! here prints the tables and writes the JSON and plots.

mod dist;
mod peers;
mod plot;
mod suites;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::{cargo, root, step};

/// One measurement: a case run by one implementation.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Record {
    pub suite: String,
    pub case: String,
    #[serde(rename = "impl")]
    pub imp: String,
    pub flops: f64,
    pub samples_s: Vec<f64>,
    /// Relative KKT residual of the solution (trust-region suite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kkt_residual: Option<f64>,
}

impl Record {
    pub fn median(&self) -> f64 {
        median_of(self.samples_s.clone())
    }
    /// (max − min) / median.
    pub fn spread(&self) -> f64 {
        let lo = self.samples_s.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = self.samples_s.iter().copied().fold(0.0, f64::max);
        (hi - lo) / self.median()
    }
    pub fn gflops(&self) -> f64 {
        self.flops / self.median() / 1e9
    }
}

#[derive(Serialize, Deserialize, Debug, Default)]
pub struct Report {
    pub command: String,
    pub machine: BTreeMap<String, String>,
    pub versions: BTreeMap<String, String>,
    pub roofline_sgemm_gflops: Option<f64>,
    /// Whose sgemm set the roofline (the best of any side in this run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roofline_sgemm_by: Option<String>,
    /// The kernels each peer reported using, and whether they run at full
    /// speed on this CPU (see `peers.rs`).
    #[serde(default)]
    pub peers: BTreeMap<String, peers::PeerKernels>,
    /// `--allow-slow-peer`: ratios against slow peers printed (marked).
    #[serde(default)]
    pub allow_slow_peer: bool,
    /// The best measured bf16 GEMM rate on the GPU (the GPU tables' 100%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roofline_gpu_bf16_gflops: Option<f64>,
    pub skipped: Vec<String>,
    pub results: Vec<Record>,
}

struct Opts {
    suites: Vec<String>,
    quick: bool,
    reps: usize,
    threads: usize,
    peers: Vec<String>,
    json: PathBuf,
    compare: Option<PathBuf>,
    /// Only the cases of these shapes (the gemm roofline always runs).
    shapes: Option<Vec<String>>,
    /// Idle seconds before each timed process.
    settle: f64,
    /// Write a self-contained runner into this folder instead of running.
    bundle: Option<PathBuf>,
    /// Build the report from these JSON lines instead of running.
    import: Option<PathBuf>,
    /// Print ratios against peers whose kernels are below the CPU's level.
    allow_slow_peer: bool,
}

const USAGE: &str = "usage: cargo xtask bench [SUITE…] [--quick] [--reps N] [--threads T]
                         [--peers numpy,scipy,torch|none] [--json PATH] [--compare OLD.json]
                         [--shapes 768x768,…] [--settle SECONDS]
                         [--bundle DIR | --import LINES.jsonl] [--allow-slow-peer]
suites: gemm orth brox step (default: these four), gpu (CUDA; --bundle DIR
for a GPU machine without Rust, then --import its output), dist (alone:
`cargo xtask bench dist [--quick] [--reps N] [--presets muon,muon-bf16]`,
the sharded step at 1 and 2 MPI ranks; needs Open MPI).
Peers (default numpy,scipy,torch; --quick: numpy,scipy; gemm and orth
have numpy and torch, brox scipy, step torch), each in its own process, run without
OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE; a ratio against a peer whose kernel is
below this CPU's SIMD level (or whose thread count differs) is refused
unless --allow-slow-peer (then marked).
Output: target/bench/{bench.json,*.svg,*.png}";

/// An integer option's value, ≥ 1.
fn at_least_one(flag: &str, v: &str) -> Result<usize, String> {
    v.parse()
        .ok()
        .filter(|&n: &usize| n >= 1)
        .ok_or_else(|| format!("{flag} {v:?}: an integer ≥ 1"))
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut o = Opts {
        suites: vec![],
        quick: false,
        reps: 0,
        threads: cores,
        peers: vec![],
        json: root().join("target/bench/bench.json"),
        compare: None,
        shapes: None,
        settle: -1.0,
        bundle: None,
        import: None,
        allow_slow_peer: false,
    };
    let mut peers_set = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--quick" => o.quick = true,
            "--allow-slow-peer" => o.allow_slow_peer = true,
            "--reps" => o.reps = at_least_one(a, &val()?)?,
            "--threads" => o.threads = at_least_one(a, &val()?)?,
            "--peers" => {
                peers_set = true;
                o.peers = val()?
                    .split(',')
                    .filter(|p| *p != "none")
                    .map(String::from)
                    .collect();
            }
            "--json" => o.json = PathBuf::from(val()?),
            "--bundle" => o.bundle = Some(PathBuf::from(val()?)),
            "--import" => o.import = Some(PathBuf::from(val()?)),
            "--compare" => o.compare = Some(PathBuf::from(val()?)),
            "--shapes" => o.shapes = Some(val()?.split(',').map(String::from).collect()),
            "--settle" => {
                o.settle = val()?
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s >= 0.0)
                    .ok_or("--settle: seconds ≥ 0")?
            }
            "-h" | "--help" => {
                let list: Vec<String> = suites::all()
                    .iter()
                    .map(|s| format!("  {:<6} {}", s.name, s.about))
                    .collect();
                return Err(format!("{USAGE}\n{}", list.join("\n")));
            }
            x if x.starts_with('-') => return Err(format!("unknown option {x}\n{USAGE}")),
            x => o.suites.push(x.to_string()),
        }
    }
    let known: Vec<&str> = suites::all().iter().map(|s| s.name).collect();
    for s in &o.suites {
        if !known.contains(&s.as_str()) {
            return Err(format!("unknown suite {s:?}; known: {}", known.join(", ")));
        }
    }
    if o.suites.is_empty() {
        // The GPU suite only when asked for.
        o.suites = known
            .iter()
            .filter(|s| **s != "gpu")
            .map(|s| s.to_string())
            .collect();
    }
    if o.reps == 0 {
        o.reps = if o.quick { 2 } else { 5 };
    }
    if o.settle < 0.0 {
        // After a heavy process (a 4096³ GEMM) this 2-core VM runs the next
        // few seconds measurably slower (seen: 768² NS5 f32 69 ms instead of
        // 53 ms for its first reps); an idle pause before every timed process
        // keeps that from landing on whoever runs next.
        o.settle = if o.quick { 0.0 } else { 5.0 };
    }
    if !peers_set && o.suites.iter().any(|s| s == "gpu") {
        // The GPU suites' peers are PyTorch on CUDA.
        o.peers = vec!["torch".into()];
    } else if !peers_set {
        // The quick run (CI) exercises numpy and scipy only: PyTorch's
        // wheel and its CUDA dependencies are ~5 GB.
        o.peers = if o.quick {
            vec!["numpy".into(), "scipy".into()]
        } else {
            vec!["numpy".into(), "scipy".into(), "torch".into()]
        };
    }
    Ok(o)
}

/// Machine facts for the report, and the CPU's SIMD level.
fn cpuinfo() -> (BTreeMap<String, String>, peers::Level) {
    let mut m = BTreeMap::new();
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if let Some(l) = info.lines().find(|l| l.starts_with("model name")) {
        m.insert(
            "cpu".into(),
            l.split(':').nth(1).unwrap_or("").trim().to_string(),
        );
    }
    let flags: Vec<&str> = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    for f in ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"] {
        m.insert(f.into(), flags.contains(&f).to_string());
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    m.insert("cores".into(), cores.to_string());
    let level = peers::Level::of_cpu(&flags);
    m.insert("simd_level".into(), level.name().into());
    (m, level)
}

fn capture(cmd: &mut Command) -> Option<String> {
    let o = cmd.output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Makes sure `target/bench/venv` has the requested peers; returns the
/// venv's python, or why it cannot.
fn peers_python(peers: &[String]) -> Result<PathBuf, String> {
    let venv = root().join("target/bench/venv");
    let py = venv.join("bin/python");
    // threadpoolctl reports the BLAS kernel numpy and scipy really use.
    let modules: Vec<&str> = peers
        .iter()
        .map(String::as_str)
        .chain(["threadpoolctl"])
        .collect();
    let check = format!("import {}", modules.join(", "));
    if py.exists()
        && Command::new(&py)
            .args(["-c", &check])
            .output()
            .is_ok_and(|o| o.status.success())
    {
        return Ok(py);
    }
    eprintln!(
        "==> installing peers ({}) into {} (first use)",
        modules.join(", "),
        venv.display()
    );
    if !py.exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err("python3 -m venv failed (is python3 with venv installed?)".into());
        }
    }
    let reqs = std::fs::read_to_string(root().join("bench/peers/requirements.txt"))
        .map_err(|e| format!("bench/peers/requirements.txt: {e}"))?;
    let pins: Vec<&str> = reqs
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter(|l| modules.iter().any(|m| l.starts_with(&format!("{m}=="))))
        .collect();
    let status = Command::new(&py)
        .args(["-m", "pip", "install", "--quiet", "--no-cache-dir"])
        .args(&pins)
        .status()
        .map_err(|e| format!("pip: {e}"))?;
    if !status.success() {
        return Err(format!("pip install {} failed", pins.join(" ")));
    }
    Ok(py)
}

/// The records of a runner's JSON lines; versions, skip lines and peer
/// kernel reports go into `report` (kernels unjudged: see `finish`).
fn parse_lines(out: &str, report: &mut Report, source: &str) -> Vec<Record> {
    let mut recs = vec![];
    for line in out.lines().filter(|l| l.starts_with('{')) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(vs) = v.get("versions").and_then(|v| v.as_object()) {
            for (k, val) in vs {
                report
                    .versions
                    .insert(k.clone(), val.as_str().unwrap_or("").to_string());
            }
        } else if let Some(pk) = v.get("peer_kernels") {
            let Ok(map) =
                serde_json::from_value::<BTreeMap<String, Vec<peers::Component>>>(pk.clone())
            else {
                report
                    .skipped
                    .push(format!("{source}: unreadable peer_kernels line"));
                continue;
            };
            // Every process reports its peer's kernels: keep each distinct
            // component, so a process that ran slower than the others is
            // judged too.
            for (peer, components) in map {
                let have = &mut report.peers.entry(peer).or_default().components;
                for c in components {
                    if !have.contains(&c) {
                        have.push(c);
                    }
                }
            }
        } else if let Some(m) = v.get("peer_machine") {
            // The machine the peers ran on (a bundle's output is read back
            // elsewhere): judged against its CPU and thread count.
            for (k, key) in [
                ("simd_level", "peer_simd_level"),
                ("threads", "peer_threads"),
            ] {
                if let Some(x) = m.get(k) {
                    let x = x.as_str().map(String::from).unwrap_or(x.to_string());
                    report.machine.insert(key.into(), x);
                }
            }
        } else if let Some(what) = v.get("skip") {
            let why = v.get("why").and_then(|w| w.as_str()).unwrap_or("");
            let msg = format!("{source}: {} skipped: {why}", what.as_str().unwrap_or("?"));
            if !report.skipped.contains(&msg) {
                report.skipped.push(msg);
            }
        } else if let Ok(r) = serde_json::from_value::<Record>(v) {
            recs.push(r);
        }
    }
    recs
}

pub fn run(args: &[String]) -> Result<(), String> {
    if args.first().map(String::as_str) == Some("dist") {
        return dist::run(&args[1..]);
    }
    let o = parse(args)?;
    let t0 = Instant::now();
    if let Some(lines) = &o.import {
        return import(&o, lines, args);
    }
    let gpu = o.suites.iter().any(|s| s == "gpu");
    let mut c = cargo();
    c.args(["build", "--release", "--quiet", "-p", "lmo-bench"]);
    if gpu {
        // cuda-emu: the suites can smoke-run on the CPU kernel emulator
        // (LMO_BENCH_EMULATE=1, used by `cargo xtask gpu-plumbing`).
        c.args(["--features", "cuda,cuda-emu"]);
    }
    step("build lmo-bench (release)", c)?;
    let ours_bin = root().join("target/release/lmo-bench");
    let (machine, _) = cpuinfo();
    let mut report = Report {
        command: format!("cargo xtask bench {}", args.join(" ")),
        machine,
        allow_slow_peer: o.allow_slow_peer,
        ..Default::default()
    };
    report
        .machine
        .insert("threads".into(), o.threads.to_string());
    if let Some(v) = capture(Command::new("rustc").arg("--version")) {
        report.versions.insert("rustc".into(), v);
    }
    if let Some(v) =
        capture(
            Command::new("git")
                .current_dir(root())
                .args(["rev-parse", "--short", "HEAD"]),
        )
    {
        report.versions.insert("git".into(), v);
    }
    let python = if o.peers.is_empty() || o.bundle.is_some() {
        None
    } else {
        match peers_python(&o.peers) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("warning: peers unavailable, our side still runs: {e}");
                report
                    .skipped
                    .push(format!("peers ({}): {e}", o.peers.join(",")));
                None
            }
        }
    };
    let threads = o.threads.to_string();
    let envs = [
        ("RAYON_NUM_THREADS", threads.as_str()),
        ("OMP_NUM_THREADS", threads.as_str()),
        ("OPENBLAS_NUM_THREADS", threads.as_str()),
        ("MKL_NUM_THREADS", threads.as_str()),
    ];
    // The roofline needs the gemm suite; run it first whenever asked for
    // any suite.
    let mut order: Vec<suites::Suite> = suites::all();
    if !o.suites.iter().any(|s| s == "gemm") {
        eprintln!("note: running the gemm suite too (the roofline)");
    }
    order.retain(|s| s.name == "gemm" || o.suites.iter().any(|x| x == s.name));
    let cases: Vec<(String, suites::Case)> = order
        .iter()
        .flat_map(|s| {
            (s.cases)(o.quick, o.reps)
                .into_iter()
                .map(move |c| (s.name.to_string(), c))
        })
        .filter(|(suite, c)| {
            // `--shapes` keeps the cases of those shapes; the roofline stays.
            suite == "gemm"
                || o.shapes.as_ref().is_none_or(|want| {
                    c.ours
                        .windows(2)
                        .any(|w| w[0] == "--shapes" && want.contains(&w[1]))
                })
        })
        .collect();
    if cases.iter().all(|(suite, _)| suite == "gemm") && o.suites.iter().any(|s| s != "gemm") {
        return Err(format!(
            "--shapes {:?} matches no case of {}",
            o.shapes.as_deref().unwrap_or_default(),
            o.suites.join(", ")
        ));
    }
    if let Some(dir) = &o.bundle {
        return bundle(&o, dir, &ours_bin, &cases);
    }
    let bar = ProgressBar::new(cases.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed_precise} {msg}")
            .map_err(|e| e.to_string())?,
    );
    for (_, case) in &cases {
        bar.set_message(format!("{} (ours)", case.label));
        std::thread::sleep(std::time::Duration::from_secs_f64(o.settle));
        let out = Command::new(&ours_bin)
            .args(&case.ours)
            .envs(envs)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "lmo-bench {:?} failed: {}",
                case.ours,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let recs = parse_lines(&String::from_utf8_lossy(&out.stdout), &mut report, "ours");
        report.results.extend(recs);
        let Some(py) = &python else {
            bar.inc(1);
            continue;
        };
        let Some(pargs) = &case.peers else {
            bar.inc(1);
            continue;
        };
        for peer in o
            .peers
            .iter()
            .filter(|p| case.peer_impls.contains(&p.as_str()))
        {
            bar.set_message(format!("{} ({peer})", case.label));
            std::thread::sleep(std::time::Duration::from_secs_f64(o.settle));
            let peers_py = root().join("bench/peers/peers.py");
            let mut pa: Vec<&OsStr> = vec![peers_py.as_os_str()];
            pa.extend(pargs.iter().map(OsStr::new));
            pa.extend(["--threads", &threads, "--impls", peer].map(OsStr::new));
            let out = peers::command(py, pa, &envs)
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                report.skipped.push(format!(
                    "{peer} {}: failed: {}",
                    case.label,
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                ));
            }
            let recs = parse_lines(&String::from_utf8_lossy(&out.stdout), &mut report, peer);
            report.results.extend(recs);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    finish(&o, report, t0)
}

/// Judges the peers' kernels against the machine the peers reported
/// running on (`peer_machine` lines), else `level` and `threads`.
fn judge_peers(report: &mut Report, level: peers::Level, threads: u64) {
    let level = report
        .machine
        .get("peer_simd_level")
        .and_then(|l| peers::Level::parse(l))
        .unwrap_or(level);
    let threads = report
        .machine
        .get("peer_threads")
        .and_then(|t| t.parse().ok())
        .unwrap_or(threads);
    report.peers = peers::judge(
        std::mem::take(&mut report.peers)
            .into_iter()
            .map(|(p, k)| (p, k.components))
            .collect(),
        level,
        threads,
    );
}

/// Roofline, tables, JSON, plots, comparison.
fn finish(o: &Opts, mut report: Report, t0: Instant) -> Result<(), String> {
    judge_peers(&mut report, cpuinfo().1, o.threads as u64);
    if let Some(best) = report
        .results
        .iter()
        .filter(|r| r.suite == "gemm" && r.imp.ends_with("sgemm"))
        .max_by(|a, b| a.gflops().total_cmp(&b.gflops()))
    {
        report.roofline_sgemm_gflops = Some(best.gflops());
        report.roofline_sgemm_by = Some(format!("{} at {}", best.imp, best.case));
    }
    report.roofline_gpu_bf16_gflops = report
        .results
        .iter()
        .filter(|r| r.suite == "gpu-gemm")
        .map(Record::gflops)
        .reduce(f64::max);
    print!("{}", render_tables(&report));
    if let Some(dir) = o.json.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&o.json, json).map_err(|e| format!("{}: {e}", o.json.display()))?;
    println!("\nraw samples and machine facts: {}", o.json.display());
    let plot_dir = root().join("target/bench");
    for p in plot::write_all(&report, &plot_dir)? {
        println!("plot: {}", p.display());
    }
    if let Some(old) = &o.compare {
        compare(&report, old)?;
    }
    eprintln!("bench done in {:.0}s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// The distinct values in first-seen order.
pub fn unique<'a>(it: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = vec![];
    for x in it {
        if !v.contains(&x) {
            v.push(x);
        }
    }
    v
}

fn fmt_ms(s: f64) -> String {
    if s >= 1.0 {
        format!("{:.2} s", s)
    } else {
        format!("{:.2} ms", s * 1e3)
    }
}

/// Markdown tables: per case, our median, spread, GFLOP/s-equivalent and %
/// of the sgemm roofline, each peer's median and the speedup peer/ours
/// (refused, or marked under `--allow-slow-peer`, where the peer's kernel
/// is below the CPU's; see `peers.rs`).
pub fn render_tables(r: &Report) -> String {
    use std::fmt::Write;
    let mut w = String::new();
    macro_rules! println {
        ($($t:tt)*) => { let _ = writeln!(w, $($t)*); };
    }
    println!(
        "\nmachine: {}",
        r.machine
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "versions: {}",
        r.versions
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    for (peer, k) in &r.peers {
        let comps: Vec<String> = k
            .components
            .iter()
            .map(|c| {
                let t = c.threads.map(|t| t.to_string()).unwrap_or("?".into());
                format!(
                    "{}: {} {} ({}, {t} threads)",
                    c.what,
                    c.api,
                    c.kernel,
                    c.level.name()
                )
            })
            .collect();
        let verdict = match &k.below {
            None => "full speed".to_string(),
            Some(why) if r.allow_slow_peer => format!("SLOW PEER ({why}); ratios marked"),
            Some(why) => format!("SLOW PEER ({why}); ratios refused (--allow-slow-peer)"),
        };
        println!("peer {peer}: {} — {verdict}", comps.join("; "));
    }
    if let Some(p) = r.roofline_sgemm_gflops {
        let by = r.roofline_sgemm_by.as_deref().unwrap_or("?");
        println!("roofline (best measured sgemm of any side): {p:.1} GFLOP/s, {by}");
    }
    if let Some(p) = r.roofline_gpu_bf16_gflops {
        println!("GPU roofline (best measured bf16 GEMM): {p:.1} GFLOP/s");
    }
    for s in &r.skipped {
        println!("skipped: {s}");
    }
    for suite in unique(r.results.iter().map(|x| x.suite.as_str())) {
        let roof = if suite.starts_with("gpu") {
            r.roofline_gpu_bf16_gflops
        } else {
            r.roofline_sgemm_gflops
        };
        let recs: Vec<&Record> = r.results.iter().filter(|x| x.suite == suite).collect();
        let cases = unique(recs.iter().map(|x| x.case.as_str()));
        let mut impls: Vec<&str> = recs.iter().map(|x| x.imp.as_str()).collect();
        impls.sort();
        impls.dedup();
        let ours: Vec<&str> = impls
            .iter()
            .copied()
            .filter(|i| i.starts_with("ours"))
            .collect();
        let peers: Vec<&str> = impls
            .iter()
            .copied()
            .filter(|i| !i.starts_with("ours"))
            .collect();
        println!("\n### {suite}\n");
        let mut head = String::from("| case |");
        let mut rule = String::from("|---|");
        for i in &ours {
            head += &format!(" {i} (spread) | GFLOP/s | % roof |");
            rule += "---:|---:|---:|";
        }
        // The Gram form gets its own ratio column against each peer.
        let gram = ours.contains(&"ours-gram");
        // A whole step next to its LMO phase: the rest is the overhead.
        let overhead = ours.contains(&"ours-step") && ours.contains(&"ours-lmo");
        if overhead {
            head += " overhead (1 − lmo/step) |";
            rule += "---:|";
        }
        for p in &peers {
            head += &format!(" {p} | {p}/ours |");
            rule += "---:|---:|";
            if gram {
                head += &format!(" {p}/ours-gram |");
                rule += "---:|";
            }
        }
        println!("{head}\n{rule}");
        for case in cases {
            let find = |i: &str| recs.iter().find(|x| x.case == case && x.imp == i);
            let mut line = format!("| {case} |");
            for i in &ours {
                match find(i) {
                    Some(x) if x.flops == 0.0 => {
                        let res = x
                            .kkt_residual
                            .map(|r| format!(", KKT {r:.1e}"))
                            .unwrap_or_default();
                        line += &format!(
                            " {} (±{:.0}%{res}) | – | – |",
                            fmt_ms(x.median()),
                            50.0 * x.spread()
                        );
                    }
                    Some(x) => {
                        let pct = roof
                            .map(|p| format!("{:.0}%", 100.0 * x.gflops() / p))
                            .unwrap_or("–".into());
                        line += &format!(
                            " {} (±{:.0}%) | {:.1} | {pct} |",
                            fmt_ms(x.median()),
                            50.0 * x.spread(),
                            x.gflops()
                        );
                    }
                    None => line += " – | – | – |",
                }
            }
            if overhead {
                match (find("ours-step"), find("ours-lmo")) {
                    (Some(st), Some(l)) => {
                        line += &format!(" {:.1}% |", 100.0 * overhead_share(st, l))
                    }
                    _ => line += " – |",
                }
            }
            for p in &peers {
                // Like for like: numpy-sgemm against ours-sgemm, else "ours".
                let suffix = p.split_once('-').map(|(_, s)| format!("ours-{s}"));
                let base = suffix
                    .as_deref()
                    .and_then(&find)
                    .or_else(|| ours.first().and_then(|i| find(i)));
                // A CPU peer without a full-speed verdict gets no ratio.
                let slow = !suite.starts_with("gpu")
                    && r.peers
                        .get(peers::peer_of(p))
                        .is_none_or(|k| k.below.is_some());
                match (find(p), base) {
                    (Some(x), Some(_)) if slow && !r.allow_slow_peer => {
                        line += &format!(" {} | refused (slow peer) |", fmt_ms(x.median()));
                        if gram {
                            line += " refused |";
                        }
                        continue;
                    }
                    (Some(x), Some(b)) => {
                        let res = x
                            .kkt_residual
                            .map(|r| format!(" (KKT {r:.1e})"))
                            .unwrap_or_default();
                        line += &format!(
                            " {}{res} | {:.2}×{} |",
                            fmt_ms(x.median()),
                            x.median() / b.median(),
                            if slow { " (slow peer)" } else { "" }
                        )
                    }
                    (Some(x), None) => line += &format!(" {} | – |", fmt_ms(x.median())),
                    _ => line += " n/a | – |",
                }
                if gram {
                    match (find(p), find("ours-gram")) {
                        (Some(x), Some(g)) => {
                            line += &format!(" {:.2}× |", x.median() / g.median())
                        }
                        _ => line += " – |",
                    }
                }
            }
            println!("{line}");
        }
    }
    w
}

/// `1 − lmo/step`: the share of a step outside its LMO phase, the median
/// over reps where both were timed in the same reps (paired samples, far
/// less noisy than two medians), else from the medians.
fn overhead_share(step: &Record, lmo: &Record) -> f64 {
    let (s, l) = (&step.samples_s, &lmo.samples_s);
    if s.len() != l.len() || s.is_empty() {
        return 1.0 - lmo.median() / step.median();
    }
    median_of(s.iter().zip(l).map(|(s, l)| 1.0 - l / s).collect())
}

/// The median of `v` (the mean of the middle two for an even count).
fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Prints the change of every median against an earlier report and flags
/// changes beyond the noise (the larger relative spread of the two runs, at
/// least 5%).
fn compare(new: &Report, old_path: &Path) -> Result<(), String> {
    let text =
        std::fs::read_to_string(old_path).map_err(|e| format!("{}: {e}", old_path.display()))?;
    let old: Report =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", old_path.display()))?;
    println!("\n### change against {}\n", old_path.display());
    println!(
        "| suite | case | impl | old | new | new/old | verdict |\n|---|---|---|---:|---:|---:|---|"
    );
    let mut regressions = 0;
    for n in &new.results {
        let Some(o) = old
            .results
            .iter()
            .find(|o| o.suite == n.suite && o.case == n.case && o.imp == n.imp)
        else {
            continue;
        };
        let ratio = n.median() / o.median();
        let noise = (0.5 * n.spread()).max(0.5 * o.spread()).max(0.05);
        let verdict = if ratio > 1.0 + noise {
            regressions += 1;
            "REGRESSION"
        } else if ratio < 1.0 - noise {
            "faster"
        } else {
            "within noise"
        };
        println!(
            "| {} | {} | {} | {} | {} | {:.3} | {verdict} |",
            n.suite,
            n.case,
            n.imp,
            fmt_ms(o.median()),
            fmt_ms(n.median()),
            ratio
        );
    }
    println!("\n{regressions} regression(s) beyond the noise");
    Ok(())
}

/// `--bundle DIR`: the runner binary, the peers script and `run.sh` (every
/// case, ours then peers, JSON lines on stdout) for a machine without Rust.
fn bundle(
    o: &Opts,
    dir: &Path,
    ours_bin: &Path,
    cases: &[(String, suites::Case)],
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::copy(ours_bin, dir.join("lmo-bench")).map_err(io)?;
    std::fs::copy(root().join("bench/peers/peers.py"), dir.join("peers.py")).map_err(io)?;
    let quote = |a: &[String]| {
        a.iter()
            .map(|x| format!("'{x}'"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut sh = String::from(
        "#!/usr/bin/env bash\n\
         # Written by `cargo xtask bench --bundle`: every case, ours then the\n\
         # peers, as JSON lines on stdout (progress on stderr). PYTHON: a\n\
         # python with PyTorch (default python3). Read the output back with\n\
         # `cargo xtask bench --import FILE`.\n\
         set -u\ncd \"$(dirname \"$0\")\"\nPY=${PYTHON:-python3}\n",
    );
    sh += &format!(
        "echo '{{\"versions\":{{\"bundle_git\":\"{}\"}}}}'\n",
        capture(
            Command::new("git")
                .current_dir(root())
                .args(["rev-parse", "--short", "HEAD"])
        )
        .unwrap_or_default()
    );
    sh += "smi=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)\n\
           echo \"{\\\"versions\\\":{\\\"nvidia_smi\\\":\\\"${smi:-none}\\\",\\\"cores\\\":\\\"$(nproc)\\\"}}\"\n";
    let threads = o.threads.to_string();
    for (_, c) in cases {
        sh += &format!(
            "echo '== {}' >&2\n./lmo-bench {}\n",
            c.label,
            quote(&c.ours)
        );
        if let Some(p) = &c.peers {
            for peer in o
                .peers
                .iter()
                .filter(|x| c.peer_impls.contains(&x.as_str()))
            {
                sh += &format!(
                    "{} \"$PY\" peers.py {} --threads {threads} --impls {peer}\n",
                    peers::shell_prefix(),
                    quote(p),
                );
            }
        }
    }
    let run = dir.join("run.sh");
    std::fs::write(&run, sh).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    }
    println!(
        "bundle: {} ({} cases). On the GPU machine: {}/run.sh > gpu.jsonl; here: cargo xtask bench --import gpu.jsonl",
        dir.display(),
        cases.len(),
        dir.display()
    );
    Ok(())
}

/// `--import FILE`: the report of JSON lines written by a bundle's run.sh.
fn import(o: &Opts, lines: &Path, args: &[String]) -> Result<(), String> {
    let text = std::fs::read_to_string(lines).map_err(|e| format!("{}: {e}", lines.display()))?;
    let mut report = Report {
        command: format!("cargo xtask bench {}", args.join(" ")),
        allow_slow_peer: o.allow_slow_peer,
        ..Default::default()
    };
    report
        .machine
        .insert("imported_from".into(), lines.display().to_string());
    let recs = parse_lines(&text, &mut report, "bundle");
    if recs.is_empty() {
        return Err(format!(
            "{}: no measurements (only skip/version lines?)",
            lines.display()
        ));
    }
    report.results = recs;
    finish(o, report, Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(imp: &str, s: f64) -> Record {
        Record {
            suite: "orth".into(),
            case: "muon/f32/64x64".into(),
            imp: imp.into(),
            flops: 1e9,
            samples_s: vec![s, s],
            kkt_residual: None,
        }
    }

    fn report(numpy_below: Option<&str>) -> Report {
        let mut r = Report {
            results: vec![rec("ours", 1.0), rec("numpy", 2.0), rec("torch", 3.0)],
            ..Default::default()
        };
        r.peers.insert(
            "numpy".into(),
            peers::PeerKernels {
                components: vec![],
                below: numpy_below.map(String::from),
            },
        );
        r
    }

    fn row(t: &str) -> &str {
        t.lines()
            .find(|l| l.starts_with("| muon/f32/64x64"))
            .unwrap()
    }

    #[test]
    fn ratios_against_slow_or_unchecked_peers_are_refused_unless_allowed() {
        // numpy at full speed: its ratio printed; torch never reported its
        // kernels: refused.
        let t = render_tables(&report(None));
        assert!(row(&t).contains("| 2.00× |"), "{t}");
        assert!(row(&t).contains("3.00 s | refused (slow peer) |"), "{t}");
        // numpy on an AVX2 kernel of an AVX-512 CPU: refused, and the
        // header says why.
        let t = render_tables(&report(Some("BLAS runs Haswell (avx2)")));
        assert!(!row(&t).contains('×'), "{t}");
        assert!(t.contains("peer numpy:  — SLOW PEER (BLAS runs Haswell (avx2)); ratios refused"));
        // --allow-slow-peer: printed, marked.
        let mut r = report(Some("BLAS runs Haswell (avx2)"));
        r.allow_slow_peer = true;
        let t = render_tables(&r);
        assert!(row(&t).contains("| 2.00× (slow peer) |"), "{t}");
    }

    #[test]
    fn overhead_is_the_step_beyond_its_lmo_phase() {
        // A 2 s step whose LMOs take 1.8 s: 10 % overhead.
        let mut step = rec("ours-step", 2.0);
        let mut lmo = rec("ours-lmo", 1.8);
        for x in [&mut step, &mut lmo] {
            x.suite = "step-overhead".into();
            x.flops = 0.0;
        }
        let r = Report {
            results: vec![step, lmo],
            ..Default::default()
        };
        let t = render_tables(&r);
        assert!(t.contains("overhead (1 − lmo/step)"), "{t}");
        assert!(row(&t).ends_with("| 10.0% |"), "{t}");
        // Paired reps: the median of the per-rep shares (20 %, 10 %, 5 %),
        // not the ratio of the medians (1 − 1.8/2.0).
        let (mut step, mut lmo) = (r.results[0].clone(), r.results[1].clone());
        step.samples_s = vec![1.0, 2.0, 4.0];
        lmo.samples_s = vec![0.8, 1.8, 3.8];
        assert!((overhead_share(&step, &lmo) - 0.1).abs() < 1e-12);
        lmo.samples_s = vec![0.95, 1.6, 3.6];
        assert!((overhead_share(&step, &lmo) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn peers_are_judged_on_their_own_machine_and_by_their_slowest_process() {
        let line = |k: &str, threads: u64| {
            format!(
                r#"{{"peer_kernels": {{"numpy": [{{"what": "BLAS", "api": "openblas", "kernel": "{k}", "level": "{}", "threads": {threads}}}]}}}}"#,
                if k == "Haswell" { "avx2" } else { "avx512" }
            )
        };
        // Read back from an AVX2 machine: Haswell is its best kernel, even
        // where this machine (here: said to be AVX-512) has more.
        let mut r = Report::default();
        let text = format!(
            "{}\n{}\n",
            r#"{"peer_machine": {"simd_level": "avx2", "threads": 2}}"#,
            line("Haswell", 2)
        );
        parse_lines(&text, &mut r, "numpy");
        judge_peers(&mut r, peers::Level::Avx512, 8);
        assert_eq!(r.peers["numpy"].below, None, "{:?}", r.peers);
        // Two processes on this AVX-512 machine, one of them handicapped:
        // the peer is judged slow.
        let mut r = Report::default();
        parse_lines(&line("SkylakeX", 2), &mut r, "numpy");
        parse_lines(&line("Haswell", 2), &mut r, "numpy");
        parse_lines(&line("SkylakeX", 2), &mut r, "numpy");
        assert_eq!(r.peers["numpy"].components.len(), 2);
        judge_peers(&mut r, peers::Level::Avx512, 2);
        assert!(
            r.peers["numpy"]
                .below
                .as_deref()
                .unwrap()
                .contains("Haswell")
        );
    }
}
