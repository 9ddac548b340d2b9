//! The Broximal Point Method against subgradient descent and the proximal
//! point method on a nonsmooth convex function, `f(x) = ‖x − c‖₁` in R²
//! (the talk's picture; SPEC §4).
//!
//! ```text
//! cargo run --release --example bpm [-- T]
//! ```
//!
//! All three move by comparable amounts per step: BPM with radius `t`
//! (`x_{k+1} = brox_f^t(x_k)`, exact), subgradient descent with step
//! `t·g/‖g‖` for a subgradient g, and the proximal point method with
//! `γ = t/√2` (so its first step also has length t here). Prints the
//! iterates and `f − f*`, checks Result 4 (BPM reaches the minimizer within
//! `⌈‖x0 − x*‖²/t²⌉` steps), and plots `f − f*` to `target/bpm/`.

use brox::oracles::L1Distance;
use brox::{Brox, Radii, Stop, bpm};
use lmo_examples::plot_losses;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let t: f64 = match std::env::args().nth(1) {
        None => 0.6,
        Some(s) => s
            .parse()
            .ok()
            .filter(|t: &f64| t.is_finite() && *t > 0.0)
            .ok_or("T: a number > 0")?,
    };
    let c = [1.0, -0.5];
    let x0 = [-3.0, 2.5];
    let f = |x: &[f64]| (x[0] - c[0]).abs() + (x[1] - c[1]).abs();
    let steps = 25;
    let d0 = ((x0[0] - c[0]).powi(2) + (x0[1] - c[1]).powi(2)).sqrt();
    let bound = (d0 * d0 / (t * t)).ceil() as usize;

    // BPM through the exact ℓ1-distance oracle.
    let mut oracle = L1Distance::new(c.to_vec())?;
    let run = bpm(
        &mut oracle,
        &x0,
        &Radii::Constant(t),
        &Stop {
            max_iter: steps,
            interior_step: false,
        },
        |_| {},
    )?;
    let mut xs_bpm = vec![x0.to_vec()];
    let mut x = x0.to_vec();
    let mut u = vec![0.0; 2];
    for _ in 0..steps {
        oracle.brox(&x, t, &mut u)?;
        x.copy_from_slice(&u);
        xs_bpm.push(x.clone());
    }
    assert_eq!(xs_bpm.last(), Some(&run.x));

    // Subgradient descent with normalized steps of length t.
    let mut xs_gd = vec![x0.to_vec()];
    let mut x = x0.to_vec();
    for _ in 0..steps {
        let g: Vec<f64> = x.iter().zip(&c).map(|(a, b)| (a - b).signum()).collect();
        let gn = (g[0] * g[0] + g[1] * g[1]).sqrt();
        if gn > 0.0 {
            x.iter_mut().zip(&g).for_each(|(xi, gi)| *xi -= t * gi / gn);
        }
        xs_gd.push(x.clone());
    }

    // Proximal point: prox_{γf}(x) = c + soft-threshold(x − c, γ).
    let gamma = t / 2f64.sqrt();
    let mut xs_ppm = vec![x0.to_vec()];
    let mut x = x0.to_vec();
    for _ in 0..steps {
        x.iter_mut().zip(&c).for_each(|(xi, ci)| {
            let d = *xi - ci;
            *xi = ci + d.signum() * (d.abs() - gamma).max(0.0);
        });
        xs_ppm.push(x.clone());
    }

    println!("f(x) = ‖x − c‖₁, c = {c:?}, x0 = {x0:?}, t = {t}, f* = 0\n");
    println!("| k | BPM x | BPM f−f* | subgradient x | f−f* | PPM x | f−f* |");
    println!("|---:|---|---:|---|---:|---|---:|");
    for k in 0..=steps.min(14) {
        let p = |v: &Vec<f64>| format!("({:.3}, {:.3})", v[0], v[1]);
        println!(
            "| {k} | {} | {:.2e} | {} | {:.2e} | {} | {:.2e} |",
            p(&xs_bpm[k]),
            f(&xs_bpm[k]),
            p(&xs_gd[k]),
            f(&xs_gd[k]),
            p(&xs_ppm[k]),
            f(&xs_ppm[k])
        );
    }
    let first_exact = |xs: &[Vec<f64>]| xs.iter().position(|x| f(x) == 0.0);
    println!(
        "\nexact minimizer reached at step: BPM {:?}, subgradient {:?}, PPM {:?}",
        first_exact(&xs_bpm),
        first_exact(&xs_gd),
        first_exact(&xs_ppm)
    );
    println!("Result 4 bound ⌈‖x0 − x*‖²/t²⌉ = {bound}");
    let bpm_steps = first_exact(&xs_bpm).ok_or("BPM did not reach the minimizer")?;
    if bpm_steps > bound {
        return Err(
            format!("BPM took {bpm_steps} steps, more than the Result 4 bound {bound}").into(),
        );
    }
    let gap = |xs: &[Vec<f64>]| xs.iter().map(|x| f(x)).collect::<Vec<f64>>();
    let curves = vec![
        (format!("BPM (t = {t})"), gap(&xs_bpm)),
        (format!("subgradient, step {t}"), gap(&xs_gd)),
        (format!("proximal point, γ = {gamma:.3}"), gap(&xs_ppm)),
    ];
    for p in plot_losses(
        std::path::Path::new("target/bpm"),
        "bpm",
        "f(x) − f* on ‖x − c‖₁ (zeros: exact minimizer)",
        &curves,
    )? {
        println!("plot: {}", p.display());
    }
    Ok(())
}
