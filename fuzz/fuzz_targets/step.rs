//! One optimizer step (SPEC §3) with every preset, f32 and f64, both
//! non-finite policies, fuzzed shapes (empty dims, a convolution kernel
//! flattened by the presets) and gradients (NaN, ±Inf, subnormals, huge),
//! sometimes one of the wrong shape:
//! - no panic;
//! - an error (or a skip) leaves parameters and state bit-identical;
//! - a step taken keeps parameters finite.
#![no_main]

use gluon_optim::{Config, Label, NonFinitePolicy, Optimizer, presets};
use libfuzzer_sys::fuzz_target;
use lmo_fuzz::{Input, finite, same_bits};
use lmo_ndarray::{Nd32, Nd64};
use ndarray::ArrayD;

fn config(pick: usize, policy: NonFinitePolicy) -> Config {
    let c = match pick {
        0 => presets::muon(0.02, 3e-4),
        1 => presets::scion(1.0 / 4096.0, false),
        2 => presets::scion(1.0 / 4096.0, true),
        3 => presets::gluon((0.0, 70.0), (0.0, 1.3), 0.9),
        4 => presets::normalized_sgd(0.1, 0.9),
        5 => presets::sign_sgd(0.01, 0.9),
        _ => presets::adamw(Default::default()),
    };
    c.non_finite(policy)
}

/// One to three steps on the backend `$b` (scalar `$s`); a macro because
/// the optimizer's bounds name the backend's tensor type, which a generic
/// scalar leaves unnormalized.
macro_rules! run {
    ($name:ident, $b:ty, $s:ty) => {
        fn $name(inp: &mut Input) {
            let cast = |v: f64| v as $s;
            let policy = if inp.byte() % 2 == 0 {
                NonFinitePolicy::Error
            } else {
                NonFinitePolicy::Skip
            };
            let cfg = config(inp.below(7), policy);
            let (m, n) = (inp.below(5), inp.below(5));
            let labels = vec![Label::Hidden, Label::Hidden, Label::Vector, Label::Embedding, Label::Head];
            let dims: [Vec<usize>; 5] = [vec![m, n], vec![2, 2, 2, 2], vec![m], vec![3, n], vec![n, 3]];
            let mut params: Vec<ArrayD<$s>> = dims
                .iter()
                .map(|d| {
                    let t = inp.tensor64(d);
                    t.mapv(|v| cast(if v.is_finite() && v.abs() < 1e6 { v } else { 0.5 }))
                })
                .collect();
            let Ok(mut opt) = Optimizer::<$b>::new(cfg, labels, &params) else {
                return;
            };
            for _ in 0..1 + inp.below(3) {
                let mut grads: Vec<ArrayD<$s>> =
                    dims.iter().map(|d| inp.tensor64(d).mapv(cast)).collect();
                if inp.below(8) == 0 {
                    let i = inp.below(grads.len());
                    let d = inp.dims(3);
                    grads[i] = inp.tensor64(&d).mapv(cast);
                }
                let (before, state) = (params.clone(), opt.state());
                match opt.step(&mut params, &grads) {
                    Err(_) => {
                        assert!(params.iter().zip(&before).all(|(a, b)| same_bits(a, b)));
                        assert_eq!(opt.state(), state, "a refused step changed the state");
                    }
                    Ok(r) if r.skipped => {
                        assert!(params.iter().zip(&before).all(|(a, b)| same_bits(a, b)));
                    }
                    Ok(_) => assert!(params.iter().all(finite), "a step gave NaN/Inf parameters"),
                }
            }
        }
    };
}

run!(run64, Nd64, f64);
run!(run32, Nd32, f32);

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    if inp.byte() % 2 == 0 {
        run64(&mut inp);
    } else {
        run32(&mut inp);
    }
});
