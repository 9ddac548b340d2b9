//! `cargo xtask bench dist`: the sharded step on GPT-2-style shapes at
//! 1 rank × 1 thread against 2 ranks × 1 thread each (`mpirun`, Open MPI),
//! with the bytes each step moves and the α–β model's exchange time.

use std::process::Command;

use crate::{cargo, root, step};

const USAGE: &str = "usage: cargo xtask bench dist [--quick] [--reps N] [--presets muon,muon-bf16]";

/// One `dist-bench` line's figures.
struct Run {
    ranks: u64,
    step: f64,
    compute: f64,
    exchange: f64,
    calls: u64,
    bytes: u64,
    model: f64,
    alpha: f64,
    beta: f64,
}

fn median(v: &serde_json::Value) -> f64 {
    let mut x: Vec<f64> = v
        .as_array()
        .map(|a| a.iter().filter_map(|y| y.as_f64()).collect())
        .unwrap_or_default();
    x.sort_by(f64::total_cmp);
    x.get(x.len() / 2).copied().unwrap_or(f64::NAN)
}

fn parse(line: &str) -> Result<Run, String> {
    let j: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("dist-bench output {line:?}: {e}"))?;
    let u = |k: &str| j[k].as_u64().unwrap_or(0);
    let f = |k: &str| j[k].as_f64().unwrap_or(f64::NAN);
    Ok(Run {
        ranks: u("ranks"),
        step: median(&j["step_s"]),
        compute: median(&j["compute_s"]),
        exchange: median(&j["exchange_s"]),
        calls: u("calls_per_step"),
        bytes: u("bytes_per_step"),
        model: f("model_exchange_s"),
        alpha: f("alpha_s"),
        beta: f("beta_s_per_byte"),
    })
}

/// Runs the benchmark; writes every line to `target/bench/dist.jsonl`.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut quick = false;
    let mut reps = 3usize;
    let mut presets = vec!["muon".to_string(), "muon-bf16".to_string()];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--reps" => {
                reps = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&r| r > 0)
                    .ok_or("--reps: a positive integer")?
            }
            "--presets" => {
                presets = it
                    .next()
                    .ok_or("--presets: a list")?
                    .split(',')
                    .map(String::from)
                    .collect()
            }
            _ => return Err(USAGE.to_string()),
        }
    }
    if !crate::have_mpi() {
        return Err(
            "bench dist needs Open MPI (apt-get install openmpi-bin libopenmpi-dev libclang-dev)"
                .into(),
        );
    }
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "lmo-dist-tests",
        "--features",
        "mpi",
        "--bin",
        "dist-bench",
    ]);
    step("build dist-bench (release)", c)?;
    let bin = root().join("target/release/dist-bench");
    let (layers, width) = if quick { ("2", "64") } else { ("12", "768") };
    let mut lines = Vec::new();
    let mut table = Vec::new();
    for preset in &presets {
        let mut runs = Vec::new();
        for ranks in [1, 2] {
            eprintln!(
                "==> dist-bench {preset}: {ranks} rank(s) × 1 thread, GPT-2 {layers}×{width}"
            );
            let out = Command::new("mpirun")
                .args(["--oversubscribe", "-np", &ranks.to_string()])
                .arg(&bin)
                .args(["--layers", layers, "--width", width, "--reps"])
                .arg(reps.to_string())
                .args(["--preset", preset])
                .env("RAYON_NUM_THREADS", "1")
                .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
                .output()
                .map_err(|e| format!("mpirun: {e}"))?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if !out.status.success() {
                return Err(format!(
                    "dist-bench at {ranks} ranks failed:\n{text}{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let line = text
                .lines()
                .find(|l| l.starts_with('{'))
                .ok_or_else(|| format!("no result line from dist-bench:\n{text}"))?;
            runs.push(parse(line)?);
            lines.push(line.to_string());
        }
        table.push((preset.clone(), runs));
    }
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let out = dir.join("dist.jsonl");
    std::fs::write(&out, lines.join("\n") + "\n").map_err(|e| e.to_string())?;
    println!(
        "| preset | ranks | step (s) | owned blocks' compute (s, slowest rank) | exchange (s) | collectives/step | MB/step (rank 0) | α–β model exchange (s) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (preset, runs) in &table {
        for r in runs {
            println!(
                "| {preset} | {} | {:.3} | {:.3} | {:.4} | {} | {:.1} | {:.4} |",
                r.ranks,
                r.step,
                r.compute,
                r.exchange,
                r.calls,
                r.bytes as f64 / 1e6,
                r.model
            );
        }
        if let [one, two] = runs.as_slice() {
            println!(
                "| {preset} | 2 vs 1 | {:.2}× | {:.2}× | | | | α = {:.1} µs, β = {:.2} GB/s |",
                two.step / one.step,
                two.compute / one.compute,
                two.alpha * 1e6,
                if two.beta > 0.0 {
                    1e-9 / two.beta
                } else {
                    f64::INFINITY
                }
            );
        }
    }
    println!("command: cargo xtask bench dist {}", args.join(" "));
    println!("lines: {}", out.display());
    Ok(())
}
