//! Every norm's norm, dual norm and LMO (SPEC §1) on arbitrary shapes
//! (ranks 0–4, empty dims included) and bit patterns (NaN, ±Inf,
//! subnormals, ±0), in f32 and f64, with valid and invalid scales:
//! - no panic;
//! - NaN/Inf input or a shape the norm does not take: a typed error, and
//!   the LMO's output untouched;
//! - finite input whose norms are representable: finite results, `‖·‖ ≥ 0`,
//!   `<g, lmo(g)> ≤ 0`, a finite direction with `‖lmo(g)‖ ≤ 1` (up to the
//!   orthogonalizer's accuracy).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lmo_core::{
    ColNorm, Frobenius, L1, LmoError, Norm, Pieces, RowNorm, Shape, SignInf, Spectral, VectorRms,
    View,
};
use lmo_fuzz::{Input, finite, max_abs, same_bits};
use lmo_ndarray::{NdBackend, NdScalar};
use ndarray::ArrayD;
use orthogonalize::{NewtonSchulz, NsConfig};

type Dyn<S> = Box<dyn Norm<NdBackend<S>> + Send>;

fn norms<S: NdScalar>(pick: usize, s: f64, dims: &[usize]) -> Result<Dyn<S>, LmoError> {
    Ok(match pick {
        0 => Box::new(Frobenius::new().with_scale(s)?),
        1 => Box::new(Spectral::new().with_scale(s)?),
        2 => Box::new(Spectral::new().rms_to_rms().with_scale(s)?),
        3 => Box::new(
            Spectral::with_orthogonalizer(NewtonSchulz::new(NsConfig::muon())?).with_scale(s)?,
        ),
        4 => Box::new(
            Spectral::with_orthogonalizer(NewtonSchulz::new(NsConfig::polar_express())?)
                .with_scale(s)?,
        ),
        5 => Box::new(SignInf::new().with_scale(s)?),
        6 => Box::new(L1::new().with_scale(s)?),
        7 => Box::new(ColNorm::<S>::new().with_scale(s)?),
        8 => Box::new(RowNorm::<S>::new().with_scale(s)?),
        9 => Box::new(VectorRms::new().with_scale(s)?),
        _ => {
            let view = if pick == 10 { View::Flatten } else { View::Batch };
            let shape = Shape::new(dims)?;
            let parts = view
                .pieces(&shape)?
                .into_iter()
                .map(|p| {
                    let n: Dyn<S> = Box::new(Spectral::new().with_scale(s)?);
                    Ok((p, n))
                })
                .collect::<Result<Vec<_>, LmoError>>()?;
            Box::new(Pieces::new(shape, parts)?)
        }
    })
}

/// Whether the norm is approximate (Newton–Schulz: `‖lmo‖` within its
/// accuracy band rather than 1).
fn inexact(pick: usize) -> bool {
    matches!(pick, 3 | 4)
}

fn run<S: NdScalar + Into<f64>>(inp: &mut Input, x: ArrayD<S>, limit: f64) {
    const SCALES: [f64; 8] = [1.0, 0.5, 1.0 / 64.0, 3000.0, 1e-3, 0.0, -1.0, f64::NAN];
    let s = SCALES[inp.below(SCALES.len())];
    let pick = inp.below(12);
    let dims = x.shape().to_vec();
    let Ok(mut n) = norms::<S>(pick, s, &dims) else {
        return; // invalid scale or view: a typed error, nothing to step
    };
    let clean = finite(&x);
    // Representable: every norm and dual norm of SPEC §1 is at most
    // numel·max|x| times the scale or its inverse (‖·‖' = ‖·‖/s,
    // dual' = s·dual) and the RMS factors √d, below the type's range.
    let numel = x.len().max(1) as f64;
    let grow = s.max(1.0 / s);
    let small = clean && max_abs(&x) * numel * grow * numel.sqrt() < limit;
    let sentinel = x.mapv(|_| S::of(7.0));
    let mut out = sentinel.clone();
    let r = n.lmo(&x, &mut out);
    match &r {
        Err(e) => {
            assert!(same_bits(&out, &sentinel), "{}: error {e:?} wrote the output", n.name());
            if clean {
                assert!(
                    !matches!(e, LmoError::NonFinite),
                    "{}: finite input refused as non-finite",
                    n.name()
                );
            }
        }
        Ok(ip) => {
            assert!(clean, "{}: non-finite input accepted", n.name());
            let ip: f64 = (*ip).into();
            if small {
                assert!(ip.is_finite() && ip <= 0.0, "{}: <g, lmo(g)> = {ip}", n.name());
                assert!(finite(&out), "{}: non-finite direction", n.name());
                let d: f64 = n.norm(&out).expect("norm of the LMO's output").into();
                let band = if inexact(pick) { 1.5 } else { 1.0 + 1e-3 };
                assert!(d <= band, "{}: ‖lmo(g)‖ = {d}", n.name());
            }
        }
    }
    for v in [n.norm(&x), n.dual_norm(&x)] {
        match v {
            Ok(v) => {
                assert!(clean, "{}: non-finite input accepted", n.name());
                let v: f64 = v.into();
                if small {
                    assert!(v.is_finite() && v >= 0.0, "{}: norm {v}", n.name());
                }
            }
            Err(e) => assert!(!clean || !matches!(e, LmoError::NonFinite)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let dims = inp.dims(6);
    if inp.byte() % 2 == 0 {
        let x = inp.tensor64(&dims);
        run(&mut inp, x, 1e300);
    } else {
        let x = inp.tensor32(&dims);
        run(&mut inp, x, 1e36);
    }
});
