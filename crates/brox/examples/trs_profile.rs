//! Times the phases of one exact TRS solve on the benchmark's n = 1000
//! instance (integer-hash matrix, t = 1): `cargo run --release -p brox
//! --example trs_profile -- [n]`.
use std::time::Instant;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let v =
        |k: usize| ((k as u64).wrapping_mul(2654435761) % (1u64 << 32)) as f64 / 4294967296.0 - 0.5;
    let a: Vec<f64> = (0..n * n)
        .map(|ij| v(ij) + v((ij % n) * n + ij / n))
        .collect();
    let g: Vec<f64> = (0..n)
        .map(|i| ((i * 40503 + 12345) % 65536) as f64 / 65536.0 - 0.5)
        .collect();
    for _ in 0..3 {
        let t0 = Instant::now();
        let trs = brox::Trs::new(&a, n).unwrap();
        let t1 = Instant::now();
        let s = trs.solve(&g, 1.0).unwrap();
        let t2 = Instant::now();
        println!(
            "n = {n}: new {:.2} ms, solve {:.2} ms (λ = {:.6}, KKT {:.1e}, eigen path: {})",
            (t1 - t0).as_secs_f64() * 1e3,
            (t2 - t1).as_secs_f64() * 1e3,
            s.lambda,
            s.kkt_residual,
            s.lambda_min.is_some()
        );
    }
}
