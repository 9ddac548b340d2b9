//! Optimizer state loading (`Optimizer::load_state`) from arbitrary JSON
//! and from a valid checkpoint with fuzzed fields (version, counters,
//! shapes, buffer counts and lengths, values: NaN, ±Inf, beyond f32's
//! range), into an f32 optimizer:
//! - no panic;
//! - a refused state leaves the optimizer's state bit-identical;
//! - an accepted state is finite in f32 and the next step, with finite
//!   gradients, keeps parameters finite.
#![no_main]

use gluon_optim::{Label, OptState, Optimizer, presets};
use libfuzzer_sys::fuzz_target;
use lmo_fuzz::{Input, finite};
use lmo_ndarray::Nd32;
use ndarray::{ArrayD, IxDyn};

fn model() -> (Vec<Label>, Vec<ArrayD<f32>>) {
    let t = |d: &[usize]| {
        let n: usize = d.iter().product();
        let v = (0..n).map(|k| 0.1 * (k % 7) as f32 - 0.2).collect();
        ArrayD::from_shape_vec(IxDyn(d), v).expect("n = product of dims")
    };
    (
        vec![Label::Hidden, Label::Vector, Label::Embedding],
        vec![t(&[4, 3]), t(&[4]), t(&[5, 2])],
    )
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let (labels, mut params) = model();
    let mut opt = Optimizer::<Nd32>::new(presets::muon(0.02, 1e-3), labels, &params)
        .expect("a valid model");
    let grads: Vec<ArrayD<f32>> = params.iter().map(|p| p.mapv(|v| 0.5 - v)).collect();
    opt.step(&mut params, &grads).expect("a finite step");
    let state: OptState = if inp.byte() % 2 == 0 {
        let rest: Vec<u8> = std::iter::from_fn(|| inp.more().then(|| inp.byte())).collect();
        match serde_json::from_slice(&rest) {
            Ok(s) => s,
            Err(_) => return,
        }
    } else {
        let mut s = opt.state();
        while inp.more() {
            match inp.below(7) {
                0 => s.version = inp.byte() as u32,
                1 => s.step = inp.bits64().to_bits(),
                2 => s.skipped = inp.byte() as u64,
                3 => {
                    let b = inp.below(s.blocks.len() + 1);
                    if let Some(b) = s.blocks.get_mut(b) {
                        b.shape = inp.dims(6);
                    } else {
                        s.blocks.pop();
                    }
                }
                4 => {
                    let b = inp.below(s.blocks.len().max(1));
                    if let Some(b) = s.blocks.get_mut(b) {
                        if inp.byte() % 2 == 0 {
                            b.buffers.pop();
                        } else {
                            b.buffers.push(vec![0.0; inp.below(16)]);
                        }
                    }
                }
                5 => {
                    let b = inp.below(s.blocks.len().max(1));
                    if let Some(buf) = s.blocks.get_mut(b).and_then(|b| b.buffers.first_mut()) {
                        buf.truncate(inp.below(buf.len() + 1));
                    }
                }
                _ => {
                    let b = inp.below(s.blocks.len().max(1));
                    let v = inp.value();
                    if let Some(buf) = s.blocks.get_mut(b).and_then(|b| b.buffers.last_mut())
                        && !buf.is_empty()
                    {
                        let i = inp.below(buf.len());
                        buf[i] = v;
                    }
                }
            }
        }
        s
    };
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!("state {state:?}");
    }
    let before = serde_json::to_string(&opt.state()).expect("serializable");
    match opt.load_state(&state) {
        Err(_) => {
            let after = serde_json::to_string(&opt.state()).expect("serializable");
            assert_eq!(before, after, "a refused state changed the optimizer");
        }
        Ok(()) => {
            let got = opt.state();
            assert!(
                got.blocks.iter().flat_map(|b| &b.buffers).flatten().all(|v| (*v as f32).is_finite()),
                "an accepted state is not finite in f32"
            );
            let r = opt.step(&mut params, &grads);
            if r.is_ok() {
                assert!(params.iter().all(finite), "a step from a loaded state gave NaN/Inf");
            }
        }
    }
});
