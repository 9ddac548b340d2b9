//! Polar factors (SPEC §2) of arbitrary matrices (empty dims, NaN, ±Inf,
//! subnormals, ±0; f32 and f64): Newton–Schulz with every built-in
//! coefficient set and a fuzzed custom list and step count, and the exact
//! factors (lmo-core's one-sided Jacobi `ExactPolar`, orthogonalize's
//! `FaerPolar`):
//! - no panic; a bad configuration (empty custom list, zero steps,
//!   non-finite coefficients) is a typed error when built;
//! - non-finite input: a typed error, the output untouched;
//! - finite input: a finite output (built-in sets and exact factors) with,
//!   at the set's own step count, singular values at most about 1 (checked
//!   through the Frobenius bound `‖O‖_F ≤ 1.5·√min(m, n)`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lmo_core::{ExactPolar, Orthogonalizer};
use lmo_fuzz::{Input, finite, same_bits};
use lmo_ndarray::{NdBackend, NdScalar};
use ndarray::ArrayD;
use orthogonalize::{CoefficientSet, FaerPolar, NewtonSchulz, NsConfig};

fn run<S: NdScalar + Into<f64>>(inp: &mut Input, g: ArrayD<S>) {
    type B<S> = NdBackend<S>;
    let pick = inp.below(7);
    let mut banded = pick != 4;
    let mut o: Box<dyn Orthogonalizer<B<S>>> = match pick {
        0..=4 => {
            let set = match pick {
                0 => CoefficientSet::MuonQuintic,
                1 => CoefficientSet::Cubic,
                2 => CoefficientSet::PolarExpress,
                3 => CoefficientSet::ModdedNanogpt,
                _ => {
                    let k = inp.below(4);
                    CoefficientSet::Custom(
                        (0..k)
                            .map(|_| [inp.value(), inp.value(), inp.value()])
                            .collect(),
                    )
                }
            };
            // The set's own step count (held to the band below) or any.
            let cfg = NsConfig::new(set);
            let cfg = if inp.byte() % 2 == 0 {
                cfg
            } else {
                let steps = inp.below(12);
                banded = false;
                cfg.with_steps(steps)
            };
            match NewtonSchulz::<B<S>>::new(cfg) {
                Ok(ns) => Box::new(ns),
                Err(_) => return, // refused configuration: nothing to run
            }
        }
        5 => Box::new(ExactPolar::<B<S>>::new()),
        _ => Box::new(FaerPolar::new()),
    };
    let sentinel = g.mapv(|_| S::of(7.0));
    let mut out = sentinel.clone();
    match o.polar(&g, &mut out) {
        Err(_) => assert!(same_bits(&out, &sentinel), "an error wrote the output"),
        Ok(()) => {
            assert!(finite(&g), "non-finite input accepted");
            // A custom list may be any polynomial, growing without bound:
            // only the built-in sets and the exact factors are held to a
            // finite, bounded output.
            if pick == 4 {
                return;
            }
            assert!(finite(&out), "finite input gave a non-finite polar factor");
            let (m, n) = (g.shape()[0], g.shape()[1]);
            let k = m.min(n) as f64;
            let fro: f64 = out.iter().map(|&v| v.into() * v.into()).sum::<f64>().sqrt();
            // Exact factors have singular values 0 or 1; Newton–Schulz's
            // with its set's own step count stay within the set's band
            // (fewer or more steps may pass through larger values).
            if banded {
                assert!(fro <= 1.5 * k.sqrt() + 1e-3, "‖O‖_F = {fro} for {m}×{n}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let dims = [inp.below(9), inp.below(9)];
    if inp.byte() % 2 == 0 {
        let g = inp.tensor64(&dims);
        run(&mut inp, g);
    } else {
        let g = inp.tensor32(&dims);
        run(&mut inp, g);
    }
});
