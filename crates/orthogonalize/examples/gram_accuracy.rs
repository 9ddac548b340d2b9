//! Gram Newton–Schulz against plain Newton–Schulz and the exact polar
//! factor (faer SVD in f64), per coefficient set × steps × precision, on
//! Gaussian and conditioned inputs and a stress set (condition number up to
//! 1e6, rank-deficient, scaled by 1e±30, wide and tall). Writes the
//! markdown table to stdout (docs/orthogonalize.md embeds it) and a summary
//! line with the worst Gram/plain error ratio, the number of rows beyond
//! 1.1× and the guard's fallbacks:
//!
//! ```text
//! cargo run --release -p orthogonalize --example gram_accuracy [-- SIZE [EVERY]]
//! ```
//!
//! `EVERY` (0 for none) overrides the default restarts
//! ([`NsConfig::default_restarts`]) with one before every `EVERY`-th step,
//! to compare spacings. Every row uses ε = 0 in the normalization (so the
//! 1e±30 rows measure the iteration, not the guard ε). The error is
//! `‖X·V_r − U_r‖_F / √r` on the input's `r` nonzero singular directions
//! (`G = U_r·Σ·V_rᵀ`; for a full-rank input this is `‖X − U·Vᵀ‖_F/‖U·Vᵀ‖_F`
//! measured on the row space): a rank-deficient input stored in bf16 gains
//! rounding noise in its null space, which any polar factor maps to
//! singular values near 1, so that part is not an error of either form.
//! "σ_max" is the output's largest singular value (a diverged run shows
//! there).

mod common;

use common::{gaussian, run};
use lmo_core::{Backend, Trans};
use lmo_ndarray::{Nd32, Nd64, NdBf16};
use ndarray::{ArrayD, IxDyn};
use orthogonalize::{CoefficientSet, FaerPolar, Normalization, NsConfig};
use rand::{SeedableRng, rngs::StdRng};

/// An `m × r` matrix with orthonormal columns.
fn orthonormal(rng: &mut StdRng, m: usize, r: usize) -> ArrayD<f64> {
    let g = gaussian(rng, m, r);
    let mut q = g.clone();
    FaerPolar::new().run::<Nd64>(&g, &mut q).unwrap();
    q
}

/// `scale·U·diag(σ)·Vᵀ` (`m × n`, rank `r`), σ log-spaced from 1 to `1/cond`.
fn conditioned(
    rng: &mut StdRng,
    m: usize,
    n: usize,
    r: usize,
    cond: f64,
    scale: f64,
) -> ArrayD<f64> {
    let u = orthonormal(rng, m, r);
    let v = orthonormal(rng, n, r);
    let mut us = u.clone();
    for j in 0..r {
        let s = if r == 1 {
            1.0
        } else {
            cond.powf(-(j as f64) / (r - 1) as f64)
        };
        for i in 0..m {
            us[[i, j]] *= s * scale;
        }
    }
    let mut g = ArrayD::zeros(IxDyn(&[m, n]));
    Nd64::gemm(1.0, &us, Trans::No, &v, Trans::Yes, 0.0, &mut g);
    g
}

/// `‖X·V_r − U_r‖_F / √r`.
fn rel(out: &ArrayD<f64>, (u, v): &(ArrayD<f64>, ArrayD<f64>)) -> f64 {
    let (m, r) = (u.shape()[0], u.shape()[1]);
    let mut xv = ArrayD::zeros(IxDyn(&[m, r]));
    Nd64::gemm(1.0, out, Trans::No, v, Trans::No, 0.0, &mut xv);
    let diff: f64 = (&xv - u).iter().map(|d| d * d).sum::<f64>().sqrt();
    if diff.is_finite() {
        diff / (r as f64).sqrt()
    } else {
        f64::INFINITY
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|s| s.parse().expect("SIZE: integer"))
        .unwrap_or(128);
    let every: Option<usize> = args.next().map(|s| s.parse().expect("EVERY: integer"));
    let mut rng = StdRng::seed_from_u64(2026);
    let inputs: Vec<(String, ArrayD<f64>)> = vec![
        (
            format!("Gaussian {n}×{}", 4 * n),
            gaussian(&mut rng, n, 4 * n),
        ),
        (
            format!("Gaussian {}×{n}", 4 * n),
            gaussian(&mut rng, 4 * n, n),
        ),
        (
            format!("cond 1e2 {n}×{}", 4 * n),
            conditioned(&mut rng, n, 4 * n, n, 1e2, 1.0),
        ),
        (
            format!("cond 1e4 {n}×{}", 4 * n),
            conditioned(&mut rng, n, 4 * n, n, 1e4, 1.0),
        ),
        (
            format!("cond 1e6 {n}×{}", 4 * n),
            conditioned(&mut rng, n, 4 * n, n, 1e6, 1.0),
        ),
        (
            format!("rank {} {n}×{}", n / 4, 4 * n),
            conditioned(&mut rng, n, 4 * n, n / 4, 10.0, 1.0),
        ),
        (
            format!("rank 1 {n}×{}", 4 * n),
            conditioned(&mut rng, n, 4 * n, 1, 1.0, 1.0),
        ),
        (
            format!("1e30·cond 1e2 {}×{n}", 4 * n),
            conditioned(&mut rng, 4 * n, n, n, 1e2, 1e30),
        ),
        (
            format!("1e-30·cond 1e2 {n}×{}", 4 * n),
            conditioned(&mut rng, n, 4 * n, n, 1e2, 1e-30),
        ),
        (
            format!("cond 1e6 {n}²"),
            conditioned(&mut rng, n, n, n, 1e6, 1.0),
        ),
    ];
    let mut faer = FaerPolar::new();
    let exact: Vec<(ArrayD<f64>, ArrayD<f64>)> = inputs.iter().map(|(_, g)| range(g)).collect();
    let configs: Vec<NsConfig> = vec![
        NsConfig::muon(),
        NsConfig::muon().with_steps(8),
        NsConfig::new(CoefficientSet::ModdedNanogpt),
        NsConfig::polar_express(),
        NsConfig::polar_express().with_steps(8),
        NsConfig::new(CoefficientSet::Cubic).with_steps(12),
    ]
    .into_iter()
    .map(|c| {
        let delta = c.coefficients.default_delta();
        c.with_normalization(Normalization::Frobenius { delta, eps: 0.0 })
    })
    .collect();
    let gram = |c: &NsConfig| match every {
        Some(e) => c
            .clone()
            .gram_with_restarts((1..c.steps).filter(|i| e > 0 && i % e == 0).collect()),
        None => c.clone().gram(),
    };
    println!(
        "| set | steps | precision | restarts | input | plain error | Gram error | Gram/plain | σ_max plain / Gram | fallbacks |"
    );
    println!("|---|---:|---|---|---|---:|---:|---:|---:|---:|");
    let (mut worst, mut beyond, mut falls, mut rows, mut broken, mut over) =
        (0f64, 0, 0u64, 0, 0, 0);
    // Per (set, steps, precision): worst ratio, rows beyond 1.1×, fallbacks.
    let mut summary: Vec<(String, f64, usize, u64)> = Vec::new();
    for cfg in &configs {
        let g_cfg = gram(cfg);
        let restarts = match &g_cfg.form {
            orthogonalize::NsForm::Gram { restarts } => format!("{restarts:?}"),
            _ => unreachable!(),
        };
        for prec in ["f64", "f32", "bf16"] {
            let mut group = (
                format!(
                    "| {} | {} | {prec} | {restarts} |",
                    cfg.coefficients.name(),
                    cfg.steps
                ),
                0f64,
                0usize,
                0u64,
            );
            for ((name, g), ex) in inputs.iter().zip(&exact) {
                let go = |c: &NsConfig| match prec {
                    "f64" => run::<Nd64>(c, g, false),
                    "f32" => run::<Nd32>(c, g, false),
                    _ => run::<NdBf16>(c, g, true),
                };
                let (p, _) = go(cfg);
                let (q, fb) = go(&g_cfg);
                let (ep, eq) = (rel(&p, ex), rel(&q, ex));
                let ratio = eq / ep;
                let sp = faer.singular_values::<Nd64>(&p).unwrap()[0];
                let sq = faer.singular_values::<Nd64>(&q).unwrap()[0];
                rows += 1;
                falls += fb;
                // Diverged: non-finite, or σ_max 1.5× beyond the plain form's.
                if !eq.is_finite() || sq > sp * 1.5 {
                    broken += 1;
                }
                if sq > sp * 1.05 {
                    over += 1;
                }
                if ratio > 1.1 {
                    beyond += 1;
                    group.2 += 1;
                }
                worst = worst.max(ratio);
                group.1 = group.1.max(ratio);
                group.3 += fb;
                println!(
                    "| {} | {} | {prec} | {restarts} | {name} | {ep:.2e} | {eq:.2e} | {ratio:.3} | {sp:.3} / {sq:.3} | {fb} |",
                    cfg.coefficients.name(),
                    cfg.steps
                );
            }
            summary.push(group);
        }
    }
    println!(
        "\n| set | steps | precision | restarts | worst Gram/plain | rows > 1.1× (of {}) | fallbacks |",
        inputs.len()
    );
    println!("|---|---:|---|---|---:|---:|---:|");
    for (head, w, b, f) in &summary {
        println!("{head} {w:.2} | {b} | {f} |");
    }
    println!(
        "\nrows {rows}, worst Gram/plain {worst:.3}, rows beyond 1.1× {beyond}, \
         Gram diverged (non-finite or σ_max > 1.5× plain's) {broken}, \
         σ_max > 1.05× plain's {over}, guard fallbacks {falls}"
    );
}

/// `(U_r, V_r)`: the singular vectors of `g`'s nonzero singular values
/// (relative threshold 1e-10), from faer's SVD in f64.
fn range(g: &ArrayD<f64>) -> (ArrayD<f64>, ArrayD<f64>) {
    let (m, n) = (g.shape()[0], g.shape()[1]);
    let gm = faer::Mat::<f64>::from_fn(m, n, |i, j| g[[i, j]]);
    let svd = gm.thin_svd().expect("SVD of a finite matrix");
    let s = svd.S().column_vector();
    let r = (0..s.nrows()).filter(|&i| s[i] > s[0] * 1e-10).count();
    let u = ArrayD::from_shape_fn(IxDyn(&[m, r]), |ix| svd.U()[(ix[0], ix[1])]);
    let v = ArrayD::from_shape_fn(IxDyn(&[n, r]), |ix| svd.V()[(ix[0], ix[1])]);
    (u, v)
}
