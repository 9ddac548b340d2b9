//! Accuracy of every coefficient set × steps × precision against the exact
//! polar factor (faer SVD in f64), on Gaussian and ill-conditioned matrices.
//! Writes the markdown table to stdout (docs/orthogonalize.md embeds it):
//!
//! ```text
//! cargo run --release -p orthogonalize --example accuracy_table [-- SIZE]
//! ```
//!
//! Columns: the interval `[σ_min, σ_max]` of the output's singular values
//! and the relative error `‖X − U·Vᵀ‖_F / ‖U·Vᵀ‖_F`.

mod common;

use common::{gaussian, run};
use lmo_core::{Backend, Trans};
use lmo_ndarray::{Nd32, Nd64, NdBf16};
use ndarray::{ArrayD, IxDyn};
use orthogonalize::{CoefficientSet, FaerPolar, NsConfig};
use rand::{SeedableRng, rngs::StdRng};

/// `Q·diag(σ)·P` with σ log-spaced from 1 down to `1/cond`.
fn conditioned(rng: &mut StdRng, n: usize, cond: f64) -> ArrayD<f64> {
    let mut q = gaussian(rng, n, n);
    let mut p = gaussian(rng, n, n);
    let (gq, gp) = (q.clone(), p.clone());
    FaerPolar::new().run::<Nd64>(&gq, &mut q).unwrap();
    FaerPolar::new().run::<Nd64>(&gp, &mut p).unwrap();
    let s = ArrayD::from_shape_fn(IxDyn(&[n, n]), |ix| {
        if ix[0] == ix[1] {
            cond.powf(-(ix[0] as f64) / (n - 1) as f64)
        } else {
            0.0
        }
    });
    let mut qs = ArrayD::zeros(IxDyn(&[n, n]));
    Nd64::gemm(1.0, &q, Trans::No, &s, Trans::No, 0.0, &mut qs);
    let mut g = ArrayD::zeros(IxDyn(&[n, n]));
    Nd64::gemm(1.0, &qs, Trans::No, &p, Trans::No, 0.0, &mut g);
    g
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("SIZE: integer"))
        .unwrap_or(256);
    let mut rng = StdRng::seed_from_u64(2025);
    let inputs: Vec<(String, ArrayD<f64>)> = vec![
        (
            format!("Gaussian {n}×{}", 2 * n),
            gaussian(&mut rng, n, 2 * n),
        ),
        (format!("cond 1e2 {n}²"), conditioned(&mut rng, n, 1e2)),
        (format!("cond 1e4 {n}²"), conditioned(&mut rng, n, 1e4)),
        (format!("cond 1e6 {n}²"), conditioned(&mut rng, n, 1e6)),
    ];
    let mut faer = FaerPolar::new();
    let exact: Vec<ArrayD<f64>> = inputs
        .iter()
        .map(|(_, g)| {
            let mut p = g.clone();
            faer.run::<Nd64>(g, &mut p).unwrap();
            p
        })
        .collect();
    let configs: Vec<NsConfig> = vec![
        NsConfig::muon(),
        NsConfig::muon().with_steps(10),
        NsConfig::new(CoefficientSet::ModdedNanogpt),
        NsConfig::polar_express(),
        NsConfig::polar_express().with_steps(8),
        NsConfig::polar_express().with_steps(12),
        NsConfig::new(CoefficientSet::Cubic).with_steps(10),
        NsConfig::new(CoefficientSet::Cubic),
        NsConfig::new(CoefficientSet::Cubic).with_steps(40),
    ];
    print!("| set | steps | precision |");
    for (name, _) in &inputs {
        print!(" {name}: σ interval / rel. error |");
    }
    println!();
    print!("|---|---:|---|");
    for _ in &inputs {
        print!("---|");
    }
    println!();
    for cfg in &configs {
        for prec in ["f64", "f32", "bf16"] {
            print!("| {} | {} | {prec} |", cfg.coefficients.name(), cfg.steps);
            for ((_, g), ex) in inputs.iter().zip(&exact) {
                let (out, _) = match prec {
                    "f64" => run::<Nd64>(cfg, g, false),
                    "f32" => run::<Nd32>(cfg, g, false),
                    _ => run::<NdBf16>(cfg, g, true),
                };
                let s = faer.singular_values::<Nd64>(&out).unwrap();
                let diff: f64 = (&out - ex).iter().map(|v| v * v).sum::<f64>().sqrt();
                let norm: f64 = ex.iter().map(|v| v * v).sum::<f64>().sqrt();
                print!(
                    " [{:.3}, {:.3}] / {:.1e} |",
                    s[s.len() - 1],
                    s[0],
                    diff / norm
                );
            }
            println!();
        }
    }
}
