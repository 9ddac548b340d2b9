//! Timing of the two exact TRS paths on the benchmark instance:
//! `cargo run --release -p lmo-bench --example trs_probe -- 1000`.
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
    for _ in 0..2 {
        let t = Instant::now();
        let s = brox::Trs::new(&a, n).unwrap().solve(&g, 1.0).unwrap();
        println!(
            "cholesky path: {:.1} ms, λ = {:.4}, eigen used: {}",
            t.elapsed().as_secs_f64() * 1e3,
            s.lambda,
            s.lambda_min.is_some()
        );
        let t = Instant::now();
        let s = brox::Trs::with_eigen(&a, n)
            .unwrap()
            .solve(&g, 1.0)
            .unwrap();
        println!(
            "eigen path:    {:.1} ms, λ = {:.4}",
            t.elapsed().as_secs_f64() * 1e3,
            s.lambda
        );
        let t = Instant::now();
        let m = faer::Mat::from_fn(n, n, |i, j| a[i * n + j] + if i == j { 20.0 } else { 0.0 });
        let _ = m.llt(faer::Side::Lower);
        println!("one cholesky:  {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    }
}
