//! The sharded step's scaling on GPT-2-style shapes, on every rank of an
//! MPI job (what `cargo xtask bench dist` runs at 1 and 2 ranks):
//!
//! ```text
//! mpirun -np N dist-bench [--layers 12] [--width 768] [--reps 3] [--preset muon|muon-bf16]
//! ```
//!
//! Rank 0 prints one JSON line: per timed step the slowest rank's wall
//! time and its split (checks, owned blocks' compute, exchange), the
//! collectives and payload bytes per step on rank 0 (`lmo_comm::Counted`),
//! and this machine's α (latency of an 8-byte all-reduce) and β (seconds
//! per byte of a 64 MiB broadcast, the fastest of three after a warm-up),
//! measured in the same run, with the exchange time they predict.

use std::time::Instant;

use gluon_optim::{Label, ShardedOptimizer, presets};
use lmo_comm::{Communicator, Counted, MpiComm, ReduceOp};
use lmo_ndarray::Nd32;
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// Per layer the hidden matrices 3d×d, d×d, 4d×d, d×4d and six vectors;
/// token (50257×d, or 8d below width 256) and position (1024×d, or 4d)
/// embeddings: the shapes of `cargo xtask bench step`.
fn gpt2(layers: usize, d: usize) -> (Vec<Label>, Vec<Vec<usize>>) {
    let (vocab, ctx) = if d >= 256 {
        (50257, 1024)
    } else {
        (8 * d, 4 * d)
    };
    let mut labels = vec![Label::Embedding, Label::Embedding];
    let mut shapes = vec![vec![vocab, d], vec![ctx, d]];
    for _ in 0..layers {
        for s in [[3 * d, d], [d, d], [4 * d, d], [d, 4 * d]] {
            labels.push(Label::Hidden);
            shapes.push(s.to_vec());
        }
        for v in [3 * d, d, 4 * d, d, d, d] {
            labels.push(Label::Vector);
            shapes.push(vec![v]);
        }
    }
    (labels, shapes)
}

fn tensors(shapes: &[Vec<usize>], seed: u64, scale: f32) -> Vec<ArrayD<f32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    shapes
        .iter()
        .map(|s| ArrayD::from_shape_fn(IxDyn(s), |_| scale * (rng.random::<f32>() - 0.5)))
        .collect()
}

fn arg(args: &[String], flag: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn main() {
    let comm = MpiComm::init().expect("MPI initializes");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parse = |flag: &str, default: &str| -> usize {
        arg(&args, flag, default)
            .parse()
            .unwrap_or_else(|_| panic!("{flag}: a positive integer"))
    };
    let (layers, width, reps) = (
        parse("--layers", "12"),
        parse("--width", "768"),
        parse("--reps", "3"),
    );
    let preset = arg(&args, "--preset", "muon");
    let cfg = match preset.as_str() {
        "muon" => presets::muon(0.02, 1e-3),
        "muon-bf16" => presets::muon(0.02, 1e-3).with_bf16_polar(),
        other => panic!("--preset: muon or muon-bf16, not {other:?}"),
    };
    let (labels, shapes) = gpt2(layers, width);
    let mut params = tensors(&shapes, 1, 0.04);
    let grads = tensors(&shapes, 2, 0.02);
    let counted = Counted::new(&comm);
    let mut opt = ShardedOptimizer::<Nd32, _>::new(cfg, labels, &params, &counted)
        .expect("sharded optimizer");
    opt.step(&mut params, &grads).expect("warm-up step");
    let mut rows = Vec::new();
    let mut traffic = Vec::new();
    for _ in 0..reps {
        let before = counted.traffic();
        comm.barrier().expect("barrier");
        let t = Instant::now();
        opt.step(&mut params, &grads).expect("step");
        let wall = t.elapsed().as_secs_f64();
        let after = counted.traffic();
        traffic.push((after.calls - before.calls, after.bytes - before.bytes));
        let s = opt.times();
        let mut v = [wall, s.check_s, s.compute_s, s.exchange_s];
        comm.all_reduce(&mut v, ReduceOp::Max).expect("all-reduce");
        rows.push(v);
    }
    // α: an 8-byte all-reduce; β: a 64 MiB broadcast, per byte.
    let mut x = [0.0f64];
    comm.barrier().expect("barrier");
    let t = Instant::now();
    for _ in 0..200 {
        comm.all_reduce(&mut x, ReduceOp::Sum).expect("all-reduce");
    }
    let alpha = t.elapsed().as_secs_f64() / 200.0;
    // The fastest of three broadcasts after a warm-up one (the first
    // touches fresh pages).
    let mut big = vec![0u8; 64 << 20];
    comm.broadcast_bytes(&mut big, 0).expect("broadcast");
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        comm.barrier().expect("barrier");
        let t = Instant::now();
        comm.broadcast_bytes(&mut big, 0).expect("broadcast");
        comm.barrier().expect("barrier");
        best = best.min(t.elapsed().as_secs_f64());
    }
    let beta = if comm.size() > 1 {
        (best - 2.0 * alpha).max(0.0) / big.len() as f64
    } else {
        0.0
    };
    if comm.rank() == 0 {
        let col = |k: usize| -> String {
            rows.iter()
                .map(|r| format!("{:.6e}", r[k]))
                .collect::<Vec<_>>()
                .join(",")
        };
        let (calls, bytes) = traffic.last().copied().unwrap_or_default();
        // The exchange a step's traffic costs under the α–β model.
        let model = calls as f64 * alpha + bytes as f64 * beta;
        println!(
            "{{\"ranks\":{},\"threads\":{},\"layers\":{layers},\"width\":{width},\"preset\":\"{preset}\",\
             \"owned\":{},\"step_s\":[{}],\"check_s\":[{}],\"compute_s\":[{}],\"exchange_s\":[{}],\
             \"calls_per_step\":{calls},\"bytes_per_step\":{bytes},\"alpha_s\":{alpha:.3e},\
             \"beta_s_per_byte\":{beta:.3e},\"model_exchange_s\":{model:.4e}}}",
            comm.size(),
            rayon::current_num_threads(),
            opt.owned().len(),
            col(0),
            col(1),
            col(2),
            col(3),
        );
    }
}
