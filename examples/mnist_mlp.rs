//! MNIST: a 784 → 128 → 128 → 10 ReLU MLP trained with AdamW, Muon, Scion
//! and Gluon; reports test accuracy per optimizer.
//!
//! ```text
//! cargo xtask data mnist                                  # once: fetches the data
//! cargo run --release --example mnist_mlp [-- --epochs N]
//! ```
//!
//! Protocol: the last 5,000 training images are a validation split; each of
//! AdamW, Muon and Scion trains with 3 learning rates and keeps the one with
//! the best validation accuracy; Gluon's radii come from (L0, L1) fitted on
//! a 60-step probe (τ = 0.9 quantile). Minibatch 128, f64, same seed and
//! batch order for everyone. Test accuracy is on the 10,000 test images.

use std::path::Path;
use std::time::Instant;

use gluon_optim::{AdamWGroup, Config, Label, Optimizer, presets};
use lmo_examples::{Probe, gluon_with, plot_losses, probe_fits};
use lmo_ndarray::Nd64;
use ndarray::{Array2, ArrayD, Axis, Ix1, Ix2, IxDyn, s};
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
use rand_distr::{Distribution, StandardNormal};

const BATCH: usize = 128;
const DIR: &str = "target/data/mnist";

fn read_idx(path: &Path, want_magic: u32) -> Result<(Vec<usize>, Vec<u8>), String> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "{}: {e} — run `cargo xtask data mnist` first",
            path.display()
        )
    })?;
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if bytes.len() < 8 || be(0) != want_magic {
        return Err(format!(
            "{}: not an idx file with magic {want_magic:#x}",
            path.display()
        ));
    }
    let ndim = (want_magic & 0xff) as usize;
    let dims: Vec<usize> = (0..ndim).map(|d| be(4 + 4 * d) as usize).collect();
    let data = bytes[4 + 4 * ndim..].to_vec();
    if data.len() != dims.iter().product::<usize>() {
        return Err(format!(
            "{}: size does not match its header",
            path.display()
        ));
    }
    Ok((dims, data))
}

struct Split {
    x: Array2<f64>,
    y: Vec<usize>,
}

fn load(images: &str, labels: &str) -> Result<Split, String> {
    let (d, px) = read_idx(&Path::new(DIR).join(images), 0x0803)?;
    let (_, lb) = read_idx(&Path::new(DIR).join(labels), 0x0801)?;
    let x = Array2::from_shape_vec(
        (d[0], d[1] * d[2]),
        px.iter()
            .map(|&v| (v as f64 / 255.0 - 0.1307) / 0.3081)
            .collect(),
    )
    .map_err(|e| e.to_string())?;
    Ok(Split {
        x,
        y: lb.into_iter().map(usize::from).collect(),
    })
}

fn labels() -> Vec<Label> {
    vec![
        Label::Embedding,
        Label::Vector,
        Label::Hidden,
        Label::Vector,
        Label::Head,
        Label::Vector,
    ]
}

fn init(seed: u64) -> Vec<ArrayD<f64>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w = |m: usize, n: usize| {
        let s = (2.0 / n as f64).sqrt(); // He init for ReLU
        ArrayD::from_shape_fn(IxDyn(&[m, n]), |_| {
            let z: f64 = StandardNormal.sample(&mut rng);
            s * z
        })
    };
    let (w1, w2, w3) = (w(128, 784), w(128, 128), w(10, 128));
    let b = |n: usize| ArrayD::zeros(IxDyn(&[n]));
    vec![w1, b(128), w2, b(128), w3, b(10)]
}

fn m2(x: &ArrayD<f64>) -> ndarray::ArrayView2<'_, f64> {
    x.view().into_dimensionality::<Ix2>().expect("matrix")
}
fn v1(x: &ArrayD<f64>) -> ndarray::ArrayView1<'_, f64> {
    x.view().into_dimensionality::<Ix1>().expect("vector")
}

/// Logits of a batch.
fn forward(
    p: &[ArrayD<f64>],
    x: &ndarray::ArrayView2<f64>,
) -> (Array2<f64>, Array2<f64>, Array2<f64>) {
    let h1 = (x.dot(&m2(&p[0]).t()) + v1(&p[1])).mapv(|v| v.max(0.0));
    let h2 = (h1.dot(&m2(&p[2]).t()) + v1(&p[3])).mapv(|v| v.max(0.0));
    let z = h2.dot(&m2(&p[4]).t()) + v1(&p[5]);
    (h1, h2, z)
}

/// Mean softmax cross-entropy of a batch and its gradient.
fn loss_grad(
    p: &[ArrayD<f64>],
    x: &ndarray::ArrayView2<f64>,
    y: &[usize],
    g: &mut [ArrayD<f64>],
) -> f64 {
    let (h1, h2, mut d3) = forward(p, x);
    let n = y.len() as f64;
    let mut loss = 0.0;
    for (i, mut row) in d3.rows_mut().into_iter().enumerate() {
        let mx = row.fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        row.mapv_inplace(|v| (v - mx).exp());
        let s = row.sum();
        row.mapv_inplace(|v| v / s);
        loss -= row[y[i]].ln();
        row[y[i]] -= 1.0;
        row.mapv_inplace(|v| v / n);
    }
    g[4].assign(&d3.t().dot(&h2).into_dyn());
    g[5].assign(&d3.sum_axis(Axis(0)).into_dyn());
    let d2 = d3.dot(&m2(&p[4])) * h2.mapv(|v| if v > 0.0 { 1.0 } else { 0.0 });
    g[2].assign(&d2.t().dot(&h1).into_dyn());
    g[3].assign(&d2.sum_axis(Axis(0)).into_dyn());
    let d1 = d2.dot(&m2(&p[2])) * h1.mapv(|v| if v > 0.0 { 1.0 } else { 0.0 });
    g[0].assign(&d1.t().dot(x).into_dyn());
    g[1].assign(&d1.sum_axis(Axis(0)).into_dyn());
    loss / n
}

fn accuracy(p: &[ArrayD<f64>], d: &Split, rows: std::ops::Range<usize>) -> f64 {
    let mut ok = 0;
    for start in rows.clone().step_by(1000) {
        let end = (start + 1000).min(rows.end);
        let (_, _, z) = forward(p, &d.x.slice(s![start..end, ..]));
        for (i, r) in z.rows().into_iter().enumerate() {
            let arg = r
                .iter()
                .enumerate()
                .fold(0, |b, (k, &v)| if v > r[b] { k } else { b });
            ok += usize::from(arg == d.y[start + i]);
        }
    }
    ok as f64 / rows.len() as f64
}

/// Minibatch order: the same for every optimizer (seeded per epoch).
fn batches(n: usize, epochs: usize) -> Vec<Vec<usize>> {
    let mut out = vec![];
    for e in 0..epochs {
        let mut idx: Vec<usize> = (0..n).collect();
        idx.shuffle(&mut StdRng::seed_from_u64(1000 + e as u64));
        out.extend(
            idx.chunks(BATCH)
                .filter(|c| c.len() == BATCH)
                .map(|c| c.to_vec()),
        );
    }
    out
}

fn gather(d: &Split, idx: &[usize]) -> (Array2<f64>, Vec<usize>) {
    (
        d.x.select(Axis(0), idx),
        idx.iter().map(|&i| d.y[i]).collect(),
    )
}

struct Trained {
    params: Vec<ArrayD<f64>>,
    losses: Vec<f64>,
    seconds: f64,
}

fn train(cfg: Config, d: &Split, order: &[Vec<usize>]) -> Result<Trained, String> {
    let mut params = init(7);
    let mut grads = params.clone();
    let mut opt = Optimizer::<Nd64>::new(cfg, labels(), &params).map_err(|e| e.to_string())?;
    let mut losses = Vec::with_capacity(order.len());
    let t = Instant::now();
    for b in order {
        let (x, y) = gather(d, b);
        losses.push(loss_grad(&params, &x.view(), &y, &mut grads));
        opt.step(&mut params, &grads).map_err(|e| e.to_string())?;
    }
    Ok(Trained {
        params,
        losses,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Mean of each window of `w` values (for plotting noisy minibatch losses).
fn smooth(v: &[f64], w: usize) -> Vec<f64> {
    v.chunks(w)
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let epochs = match args.as_slice() {
        [] => 2,
        [f, n] if f == "--epochs" => n
            .parse::<usize>()
            .ok()
            .filter(|&e| (1..=50).contains(&e))
            .ok_or("--epochs: 1..=50")?,
        _ => return Err("usage: mnist_mlp [--epochs N]".into()),
    };
    let train_all = load("train-images-idx3-ubyte", "train-labels-idx1-ubyte")?;
    let test = load("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?;
    let n_train = train_all.y.len() - 5000;
    let order = batches(n_train, epochs);
    println!(
        "MNIST: 784→128→128→10 ReLU MLP, {n_train} train / 5000 val / {} test, batch {BATCH}, {epochs} epochs ({} steps), f64\n",
        test.y.len(),
        order.len()
    );
    let radii = presets::ScionRadii {
        hidden: 50.0,
        embedding_head: 300.0,
        vector: 1.0,
    };
    let grids: Vec<(&str, Vec<(f64, Config)>)> = vec![
        (
            "AdamW",
            [3e-4, 1e-3, 3e-3]
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
            [0.01, 0.02, 0.05]
                .map(|lr| (lr, presets::muon(lr, 1e-3)))
                .to_vec(),
        ),
        (
            "Scion",
            [2.5e-4, 1e-3, 4e-3]
                .map(|lr| (lr, presets::scion_with(lr, false, radii)))
                .to_vec(),
        ),
    ];
    println!("| optimizer | lr | val acc | test acc | final train loss (last 50 batches) | time |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut curves = vec![];
    let val = n_train..train_all.y.len();
    for (name, grid) in grids {
        let mut best: Option<(f64, f64, Trained)> = None;
        for (lr, cfg) in grid {
            let t = train(cfg, &train_all, &order)?;
            let acc = accuracy(&t.params, &train_all, val.clone());
            eprintln!("  {name} lr={lr}: val {:.2}%", 100.0 * acc);
            if best.as_ref().is_none_or(|b| acc > b.1) {
                best = Some((lr, acc, t));
            }
        }
        let (lr, acc, t) = best.expect("non-empty grid");
        report(name, &format!("{lr}"), acc, &t, &test, &mut curves);
    }
    println!("\nGluon: fitting (L0, L1) (τ = 0.9) on a 60-step probe of Scion (lr 1e-3):");
    let norms = presets::gluon((0.0, 1.0), (0.0, 1.0), 0.9);
    let probe_order = &order[..60];
    let mut step = 0;
    let fits = probe_fits(
        &labels(),
        init(7),
        |p, g| {
            let (x, y) = gather(&train_all, &probe_order[step.min(59)]);
            step += 1;
            loss_grad(p, &x.view(), &y, g);
        },
        Probe {
            optimizer: presets::scion_with(1e-3, false, radii),
            norms: &norms,
            steps: 60,
            tau: 0.9,
            csv: Path::new("target/mnist/probe_points.csv"),
        },
    )?;
    let t = train(gluon_with(&fits, 0.9)?, &train_all, &order)?;
    let acc = accuracy(&t.params, &train_all, val);
    println!();
    report("Gluon (probe fit)", "none", acc, &t, &test, &mut curves);
    for f in plot_losses(
        Path::new("target/mnist"),
        "loss",
        "MNIST MLP: minibatch loss (mean of 20)",
        &curves,
    )? {
        println!("plot: {}", f.display());
    }
    Ok(())
}

fn report(
    name: &str,
    lr: &str,
    val: f64,
    t: &Trained,
    test: &Split,
    curves: &mut Vec<(String, Vec<f64>)>,
) {
    let tail = &t.losses[t.losses.len().saturating_sub(50)..];
    println!(
        "| {name} | {lr} | {:.2}% | {:.2}% | {:.4} | {:.1} s |",
        100.0 * val,
        100.0 * accuracy(&t.params, test, 0..test.y.len()),
        tail.iter().sum::<f64>() / tail.len() as f64,
        t.seconds
    );
    curves.push((name.to_string(), smooth(&t.losses, 20)));
}
