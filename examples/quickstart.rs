//! Quickstart: train a small MLP (2 → 32 → 32 → 2, tanh, two-spirals data,
//! generated on the spot) with AdamW, Muon, Scion and Gluon, and compare.
//!
//! ```text
//! cargo run --release --example quickstart [-- --steps N]
//! ```
//!
//! Fairness: AdamW, Muon and Scion each get the best learning rate of a
//! 4-point grid (by final loss); Gluon gets no learning rate at all — its
//! radii `t_i = ‖M_i‖_*/(L0_i + L1_i·‖M_i‖_*)` come from (L0, L1) fitted on a
//! short probe run (SPEC §3). The table reports final loss, accuracy, the
//! steps each needs to reach AdamW's final loss, and wall time; the loss
//! curves go to `target/quickstart/loss.{svg,png}`.

use std::collections::BTreeMap;

use gluon_optim::{AdamWGroup, Config, presets};
use indicatif::{ProgressBar, ProgressStyle};
use lmo_examples::{Probe, Run, gluon_with, plot_losses, probe_fits, setup, train};
use lmo_problems::{Mlp, Problem};

/// Quantile level of the (L0, L1) fit: about 10% of the probe's points
/// may lie above the line (the Gluon paper's penalized fit).
const TAU: f64 = 0.9;

/// Scion radii sized for this model (d_in of 2 and 32, not 50k).
const RADII: presets::ScionRadii = presets::ScionRadii {
    hidden: 10.0,
    embedding_head: 10.0,
    vector: 1.0,
};

fn parse_steps() -> Result<usize, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(300),
        [flag, n] if flag == "--steps" => match n.parse::<usize>() {
            Ok(n) if (10..=100_000).contains(&n) => Ok(n),
            _ => Err(format!("--steps: an integer in 10..=100000, got {n:?}")),
        },
        _ => Err("usage: quickstart [--steps N]".into()),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps = parse_steps()?;
    let p = Mlp::new(3);
    println!(
        "quickstart: 2→32→32→2 tanh MLP on 256 two-spirals points, {steps} full-batch steps, f64, CPU\n"
    );

    let grids: Vec<(&str, Vec<(f64, Config)>)> = vec![
        (
            "AdamW",
            [0.003, 0.01, 0.03, 0.1]
                .map(|lr| {
                    (
                        lr,
                        presets::adamw(AdamWGroup {
                            lr,
                            weight_decay: 0.0,
                            ..Default::default()
                        }),
                    )
                })
                .to_vec(),
        ),
        (
            "Muon",
            [0.02, 0.05, 0.1, 0.2]
                .map(|lr| (lr, presets::muon(lr, 0.03)))
                .to_vec(),
        ),
        (
            "Scion",
            [0.003, 0.01, 0.03, 0.1]
                .map(|lr| (lr, presets::scion_with(lr, false, RADII)))
                .to_vec(),
        ),
    ];
    let runs_total = grids.iter().map(|g| g.1.len()).sum::<usize>() + 1;
    let bar = ProgressBar::new((runs_total * steps) as u64);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} steps {elapsed_precise} {msg}",
    )?);
    let mut best: BTreeMap<&str, (f64, Run)> = BTreeMap::new();
    for (name, grid) in grids {
        for (lr, cfg) in grid {
            bar.set_message(format!("{name} lr={lr}"));
            let run = train(&p, cfg, steps, |_, _| bar.inc(1))?;
            if best
                .get(name)
                .is_none_or(|(_, b)| run.final_loss() < b.final_loss())
            {
                best.insert(name, (lr, run));
            }
        }
    }
    bar.suspend(|| println!("Gluon: fitting (L0, L1) (τ = 0.9 quantile) along 40 probe steps of Scion, in Gluon's norms"));
    let norms = presets::gluon((0.0, 1.0), (0.0, 1.0), 0.9);
    let (labels, init) = setup(&p);
    let fits = bar.suspend(|| {
        probe_fits(
            &labels,
            init,
            |x, g| {
                p.loss_grad(x, g);
            },
            Probe {
                optimizer: presets::scion_with(0.01, false, RADII),
                norms: &norms,
                steps: 40,
                tau: TAU,
                csv: std::path::Path::new("target/quickstart/probe_points.csv"),
            },
        )
    })?;
    bar.set_message("Gluon (theory radii)");
    let gluon = train(&p, gluon_with(&fits, 0.9)?, steps, |_, _| bar.inc(1))?;
    bar.finish_and_clear();
    println!();

    let target = best["AdamW"].1.final_loss();
    let adam_steps = best["AdamW"].1.steps_to(target).unwrap_or(steps);
    println!("target: AdamW's final loss {target:.3e} (reached at step {adam_steps})\n");
    println!(
        "| optimizer | lr (best of 4) | final loss | accuracy | steps to target | vs AdamW | time |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut rows: Vec<(String, String, &Run)> = ["AdamW", "Muon", "Scion"]
        .iter()
        .map(|n| (n.to_string(), format!("{}", best[n].0), &best[n].1))
        .collect();
    rows.push(("Gluon (probe fit)".into(), "none".into(), &gluon));
    let mut curves = vec![];
    for (name, lr, run) in &rows {
        let to = run.steps_to(target);
        println!(
            "| {name} | {lr} | {:.3e} | {:.1}% | {} | {} | {:.2} s |",
            run.final_loss(),
            100.0 * p.accuracy(&run.params),
            to.map_or("not reached".into(), |s| s.to_string()),
            to.map_or("–".into(), |s| format!(
                "{:.2}×",
                s as f64 / adam_steps as f64
            )),
            run.seconds
        );
        curves.push((name.clone(), run.losses.clone()));
    }
    let files = plot_losses(
        std::path::Path::new("target/quickstart"),
        "loss",
        "two-spirals MLP: training loss",
        &curves,
    )?;
    println!();
    for f in files {
        println!("plot: {}", f.display());
    }
    println!("probe points (block, label, k, ‖∇f‖_*, L̂): target/quickstart/probe_points.csv");
    Ok(())
}
