//! Per-operation timing of one Newton–Schulz step on the ndarray backend
//! (f32, or bf16 storage on `NdBf16`'s kernel): the two Gram products
//! (syrk), the GEMM `B·X`, a full GEMM for comparison and the elementwise
//! passes, each with its GFLOP/s.
//!
//! ```text
//! cargo run --release -p lmo-bench --example breakdown -- 2048 [f32|bf16]
//! ```

use std::time::Instant;

use lmo_core::{Backend, Trans};
use lmo_ndarray::{Nd32, NdBf16, bf16_kernel};
use ndarray::{ArrayD, IxDyn};

fn time(name: &str, flops: f64, f: &mut dyn FnMut()) {
    f();
    let reps = 5;
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    let s = t.elapsed().as_secs_f64() / reps as f64;
    if flops > 0.0 {
        println!(
            "{name:<28} {:>9.2} ms {:>7.1} GFLOP/s",
            s * 1e3,
            flops / s / 1e9
        );
    } else {
        println!("{name:<28} {:>9.2} ms", s * 1e3);
    }
}

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "1024".into());
    let dims: Vec<usize> = arg.split('x').map_while(|s| s.parse().ok()).collect();
    let (m, n) = match dims[..] {
        [n] if n > 0 => (n, n),
        [m, n] if m > 0 && n > 0 => (m.min(n), m.max(n)),
        _ => usage(),
    };
    match std::env::args().nth(2).as_deref() {
        None | Some("f32") => run::<Nd32>(m, n, "f32"),
        Some("bf16") => run::<NdBf16>(m, n, &format!("bf16 on {}", bf16_kernel())),
        Some(_) => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: breakdown [N|MxN] [f32|bf16]");
    std::process::exit(2);
}

fn run<B: Backend<Scalar = f32, Tensor = ArrayD<f32>>>(m: usize, n: usize, what: &str) {
    let x = ArrayD::<f32>::from_shape_fn(IxDyn(&[m, n]), |ix| {
        ((ix[0] * 7 + ix[1] * 3) % 11) as f32 / 11.0 - 0.5
    });
    let mut a = ArrayD::<f32>::zeros(IxDyn(&[m, m]));
    let mut b = a.clone();
    let mut y = x.clone();
    println!(
        "one NS step on {m}×{n}, {what}, {} threads",
        rayon_threads()
    );
    let (mf, nf) = (m as f64, n as f64);
    // GFLOP/s of the syrks count the flops actually needed (half a GEMM).
    time("syrk A = X·Xᵀ", mf * mf * nf, &mut || {
        B::syrk(1.0, &x, 0.0, &mut a)
    });
    time("syrk B += c·A·A", mf * mf * mf, &mut || {
        B::syrk(0.5, &a, 1.0, &mut b)
    });
    time("gemm Y += B·X", 2.0 * mf * mf * nf, &mut || {
        B::gemm(1.0, &b, Trans::No, &x, Trans::No, 1.0, &mut y)
    });
    time(
        "gemm (reference, X·Xᵀ full)",
        2.0 * mf * mf * nf,
        &mut || B::gemm(1.0, &x, Trans::No, &x, Trans::Yes, 0.0, &mut a),
    );
    time("scale Y = a·X", 0.0, &mut || B::scale(0.5, &x, &mut y));
    time("norm2", 0.0, &mut || {
        std::hint::black_box(B::norm2(&x));
    });
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}
