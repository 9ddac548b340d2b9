//! `NewtonSchulzBf16`: the bf16 iteration on f32 tensors equals
//! `NewtonSchulz<NdBf16>` on the bf16-rounded input, bit for bit, and
//! leaves `out` untouched on bad input.

use lmo_core::LmoError;
use lmo_ndarray::{Nd32, Nd64, NdBf16, round_bf16};
use ndarray::{ArrayD, IxDyn};
use orthogonalize::{NewtonSchulz, NewtonSchulzBf16, NsConfig};

fn input(m: usize, n: usize) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(&[m, n]), |ix| {
        ((ix[0] * 131 + ix[1] * 71) % 97) as f32 / 97.0 - 0.5 + 1e-3 * ix[0] as f32
    })
}

#[test]
fn equals_ndbf16_on_the_rounded_input() {
    for &(m, n) in &[(30, 50), (70, 20), (1, 9), (64, 64)] {
        let g = input(m, n);
        let mut gr = g.clone();
        round_bf16(&mut gr);
        let mut want = ArrayD::zeros(g.raw_dim());
        NewtonSchulz::<NdBf16>::new(NsConfig::muon())
            .unwrap()
            .run(&gr, &mut want)
            .unwrap();
        let mut got = ArrayD::zeros(g.raw_dim());
        let mut ns = NewtonSchulzBf16::<Nd32>::muon().unwrap();
        ns.run(&g, &mut got).unwrap();
        assert_eq!(got, want, "{m}×{n}");
        // Reuse with the same and with another shape.
        ns.run(&g, &mut got).unwrap();
        assert_eq!(got, want, "{m}×{n} second call");
        let mut other = ArrayD::zeros(IxDyn(&[3, 4]));
        ns.run(&input(3, 4), &mut other).unwrap();
    }
}

#[test]
fn bad_input_leaves_out_untouched() {
    let mut ns = NewtonSchulzBf16::<Nd32>::muon().unwrap();
    let mut g = input(8, 12);
    g[[3, 4]] = f32::NAN;
    let mut out = ArrayD::from_elem(IxDyn(&[8, 12]), 7.0f32);
    assert_eq!(ns.run(&g, &mut out), Err(LmoError::NonFinite));
    assert!(out.iter().all(|&v| v == 7.0));
    let mut wrong = ArrayD::from_elem(IxDyn(&[12, 8]), 7.0f32);
    assert!(matches!(
        ns.run(&input(8, 12), &mut wrong),
        Err(LmoError::ShapeMismatch { .. })
    ));
    assert!(wrong.iter().all(|&v| v == 7.0));
    // Zero matrix → zero, huge entries → finite.
    let mut z = ArrayD::from_elem(IxDyn(&[5, 6]), 1.0f32);
    ns.run(&ArrayD::zeros(IxDyn(&[5, 6])), &mut z).unwrap();
    assert!(z.iter().all(|&v| v == 0.0));
    let mut h = ArrayD::zeros(IxDyn(&[8, 12]));
    ns.run(&input(8, 12).mapv(|v| v * 1e30), &mut h).unwrap();
    assert!(h.iter().all(|v| v.is_finite()) && h.iter().any(|&v| v != 0.0));
}

#[test]
fn a_backend_without_a_bf16_path_is_refused_at_construction() {
    // Nd64 declares `OFFERS_BF16 = false` (lmo_core::Bf16Storage).
    assert!(matches!(
        NewtonSchulzBf16::<Nd64>::muon(),
        Err(LmoError::InvalidHyperParameter(_))
    ));
    // On NdBf16 itself the bf16 path is plain Newton–Schulz on the input.
    let g = input(12, 20);
    let mut want = ArrayD::zeros(g.raw_dim());
    NewtonSchulz::<NdBf16>::new(NsConfig::muon())
        .unwrap()
        .run(&g, &mut want)
        .unwrap();
    let mut got = ArrayD::zeros(g.raw_dim());
    NewtonSchulzBf16::<NdBf16>::muon()
        .unwrap()
        .run(&g, &mut got)
        .unwrap();
    assert_eq!(got, want);
}
