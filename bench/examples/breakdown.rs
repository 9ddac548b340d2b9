//! Per-operation timing of one Newton–Schulz step on the ndarray backend
//! (f32): the two Gram products (syrk), the GEMM `B·X`, a full GEMM for
//! comparison and the elementwise passes.
//!
//! ```text
//! cargo run --release -p lmo-bench --example breakdown -- 2048
//! ```

use std::time::Instant;

use lmo_core::{Backend, Trans};
use lmo_ndarray::Nd32;
use ndarray::{ArrayD, IxDyn};

fn time(name: &str, f: &mut dyn FnMut()) {
    f();
    let reps = 5;
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    println!(
        "{name:<28} {:>9.2} ms",
        t.elapsed().as_secs_f64() / reps as f64 * 1e3
    );
}

fn main() {
    let n: usize = match std::env::args().nth(1).map(|s| s.parse()) {
        None => 1024,
        Some(Ok(n)) if n > 0 => n,
        _ => {
            eprintln!("usage: breakdown [N > 0]");
            std::process::exit(2);
        }
    };
    let x = ArrayD::<f32>::from_shape_fn(IxDyn(&[n, n]), |ix| {
        ((ix[0] * 7 + ix[1] * 3) % 11) as f32 / 11.0 - 0.5
    });
    let mut a = ArrayD::<f32>::zeros(IxDyn(&[n, n]));
    let mut b = a.clone();
    let mut y = a.clone();
    println!("one NS step on {n}×{n}, f32, {} threads", rayon_threads());
    time("syrk A = X·Xᵀ", &mut || Nd32::syrk(1.0, &x, 0.0, &mut a));
    time("syrk B += c·A·A", &mut || {
        Nd32::syrk(0.5, &a, 1.0, &mut b)
    });
    time("gemm Y += B·X", &mut || {
        Nd32::gemm(1.0, &b, Trans::No, &x, Trans::No, 1.0, &mut y)
    });
    time("gemm (reference, full)", &mut || {
        Nd32::gemm(1.0, &x, Trans::No, &x, Trans::Yes, 0.0, &mut a)
    });
    time("scale Y = a·X", &mut || Nd32::scale(0.5, &x, &mut y));
    time("norm2", &mut || {
        std::hint::black_box(Nd32::norm2(&x));
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
