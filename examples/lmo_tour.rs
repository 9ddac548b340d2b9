//! A tour of the linear minimization oracles of SPEC §1.
//!
//! For a random Gaussian matrix G, every norm's LMO is computed with its
//! certificate: `<G, lmo(G)> = −‖G‖_*` and `‖lmo(G)‖ = 1`, and compared with
//! the best of many random unit directions (the LMO must beat all of them).
//!
//! ```text
//! cargo run --release --example lmo_tour [-- ROWS COLS SEED]
//! ```

use lmo_core::{Backend, ColNorm, Frobenius, L1, Norm, RowNorm, SignInf, Spectral, VectorRms};
use lmo_ndarray::Nd64;
use ndarray::{ArrayD, IxDyn};
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};

fn parse(args: &[String], i: usize, default: u64, what: &str) -> Result<u64, String> {
    match args.get(i) {
        None => Ok(default),
        Some(s) => s
            .parse()
            .map_err(|_| format!("{what} must be a non-negative integer, got {s:?}")),
    }
}

fn gaussian(rng: &mut StdRng, m: usize, n: usize) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(&[m, n]), |_| StandardNormal.sample(rng))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let m = parse(&args, 0, 6, "ROWS")? as usize;
    let n = parse(&args, 1, 4, "COLS")? as usize;
    let seed = parse(&args, 2, 7, "SEED")?;
    if m == 0 || n == 0 || m * n > 1 << 16 {
        return Err(format!("need 1 ≤ ROWS·COLS ≤ 65536, got {m}×{n}").into());
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let g = gaussian(&mut rng, m, n);
    println!("LMO tour on a {m}×{n} Gaussian matrix G (seed {seed}), f64, ndarray backend\n");
    println!("lmo(G) = argmin_{{‖D‖≤1}} <G,D>; certificate: <G,lmo(G)> = −‖G‖_*, ‖lmo(G)‖ = 1\n");
    let norms: Vec<(&str, Box<dyn Norm<Nd64>>)> = vec![
        (
            "‖X‖_F, self-dual, lmo = −G/‖G‖_F",
            Box::new(Frobenius::new()),
        ),
        ("σ_max, dual nuclear, lmo = −UVᵀ", Box::new(Spectral::new())),
        (
            "√(n/m)σ_max, lmo = −√(m/n)UVᵀ",
            Box::new(Spectral::new().rms_to_rms()),
        ),
        (
            "max|X_jk|, dual Σ|G_jk|, lmo = −sign G",
            Box::new(SignInf::new()),
        ),
        ("Σ|X_jk|, dual max|G_jk|, one-hot lmo", Box::new(L1::new())),
        (
            "max col ℓ2, lmo col = −G_:k/‖G_:k‖",
            Box::new(ColNorm::<f64>::new()),
        ),
        (
            "max row ℓ2, lmo row = −G_j:/‖G_j:‖",
            Box::new(RowNorm::<f64>::new()),
        ),
        (
            "‖b‖/√d, dual √d‖g‖, lmo = −√d g/‖g‖",
            Box::new(VectorRms::new()),
        ),
    ];
    let trials = 2000;
    let dirs: Vec<ArrayD<f64>> = (0..trials).map(|_| gaussian(&mut rng, m, n)).collect();
    println!(
        "{:<11} {:<40} {:>9} {:>9} {:>11} {:>9} {:>9} {:>11}",
        "norm", "definition", "‖G‖", "‖G‖_*", "<G,lmo(G)>", "‖lmo‖", "gap", "best rand"
    );
    let mut d = Nd64::zeros_like(&g);
    let mut worst_gap: f64 = 0.0;
    for (what, mut norm) in norms {
        let ip = norm.lmo(&g, &mut d)?;
        let dual = norm.dual_norm(&g)?;
        let gap = (ip + dual).abs() / dual;
        worst_gap = worst_gap.max(gap);
        // The best (most negative) <G, u> over random unit directions u.
        let mut best = f64::INFINITY;
        for r in &dirs {
            let u = r / norm.norm(r)?;
            best = best.min(Nd64::dot(&g, &u));
        }
        println!(
            "{:<11} {:<40} {:>9.4} {:>9.4} {:>11.4} {:>9.6} {:>9.1e} {:>11.4}",
            norm.name(),
            what,
            norm.norm(&g)?,
            dual,
            ip,
            norm.norm(&d)?,
            gap,
            best
        );
    }
    println!(
        "\n(gap = |<G,lmo(G)> + ‖G‖_*| / ‖G‖_*; best rand = min over {trials} random unit D of <G,D>, never below −‖G‖_*)"
    );
    let mut sp = Spectral::<Nd64>::new();
    sp.lmo(&g, &mut d)?;
    println!("\nspectral lmo(G) = −polar(G):\n{:.4}", d);
    let mut dtd = ArrayD::zeros(IxDyn(&[n, n]));
    Nd64::gemm(
        1.0,
        &d,
        lmo_core::Trans::Yes,
        &d,
        lmo_core::Trans::No,
        0.0,
        &mut dtd,
    );
    println!(
        "lmo(G)ᵀ·lmo(G) (the identity for a full-rank G with m ≥ n):\n{:.4}",
        dtd
    );
    println!("\nworst relative certificate gap over all norms: {worst_gap:.1e}");
    if worst_gap > 1e-10 {
        return Err(format!("certificate gap {worst_gap:e} above 1e-10").into());
    }
    Ok(())
}
