//! The one-sided Jacobi SVD behind `ExactPolar` (issue 17): bad lengths and
//! non-finite entries are typed errors that leave the workspace (and the
//! output) as they were, and subnormal f64 input gives finite, positively
//! homogeneous singular values and the same polar factor as the input
//! scaled into the normal range by an exact power of two.

use lmo_core::{JacobiSvd, LmoError};

/// A fixed 3×4 matrix with distinct singular values.
fn sample() -> Vec<f64> {
    (0..12)
        .map(|k| ((k * 7 % 11) as f64 - 5.0) * 0.25 + if k % 5 == 0 { 1.0 } else { 0.0 })
        .collect()
}

#[test]
fn bad_lengths_and_non_finite_entries_are_typed_errors() {
    let a = sample();
    let mut svd = JacobiSvd::new();
    svd.compute(&a, 3, 4).unwrap();
    let (smax, nuc) = (svd.sigma_max(), svd.nuclear());
    assert_eq!(
        svd.compute(&a[..11], 3, 4),
        Err(LmoError::ShapeMismatch {
            expected: (3, 4),
            found: (1, 11)
        })
    );
    assert!(matches!(
        svd.compute(&a, usize::MAX, 2),
        Err(LmoError::ShapeMismatch { .. })
    ));
    let mut bad = a.clone();
    bad[5] = f64::INFINITY;
    assert_eq!(svd.compute(&bad, 3, 4), Err(LmoError::NonFinite));
    bad[5] = f64::NAN;
    assert_eq!(svd.compute(&bad, 3, 4), Err(LmoError::NonFinite));
    // The last successful decomposition is still there.
    assert_eq!((svd.sigma_max(), svd.nuclear()), (smax, nuc));
    let mut out = vec![7.0f64; 13];
    assert_eq!(
        svd.polar_into(1e-12, &mut out),
        Err(LmoError::ShapeMismatch {
            expected: (3, 4),
            found: (1, 13)
        })
    );
    assert!(out.iter().all(|&v| v == 7.0), "out written on error");
    let mut out = vec![0.0f64; 12];
    svd.polar_into(1e-12, &mut out).unwrap();
    // polar(A)·polar(A)ᵀ = I₃ for a full-rank 3×4 matrix.
    for i in 0..3 {
        for j in 0..3 {
            let d: f64 = (0..4).map(|k| out[i * 4 + k] * out[j * 4 + k]).sum();
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((d - want).abs() < 1e-13, "({i},{j}): {d}");
        }
    }
    // Empty matrices: no singular values, an empty polar factor.
    svd.compute::<f64>(&[], 0, 5).unwrap();
    assert_eq!((svd.sigma_max(), svd.nuclear()), (0.0, 0.0));
    svd.polar_into::<f64>(1e-12, &mut []).unwrap();
}

#[test]
fn subnormal_f64_input_is_positively_homogeneous() {
    let a = sample();
    // tiny = a·2^-1040 (subnormal, exact: the entries are multiples of
    // 2^-2 with few bits), reference = a itself.
    let c = 2f64.powi(-520);
    let tiny: Vec<f64> = a.iter().map(|&x| x * c * c).collect();
    assert!(tiny.iter().all(|&x| x == 0.0 || !x.is_normal()));
    assert_eq!(
        tiny.iter().map(|&x| x / c / c).collect::<Vec<_>>(),
        a,
        "not exact"
    );
    for (m, n) in [(3, 4), (4, 3)] {
        let mut st = JacobiSvd::new();
        let mut sa = JacobiSvd::new();
        st.compute(&tiny, m, n).unwrap();
        sa.compute(&a, m, n).unwrap();
        let vt: Vec<f64> = st.singular_values().collect();
        let va: Vec<f64> = sa.singular_values().collect();
        for (x, y) in vt.iter().zip(&va) {
            assert!(x.is_finite(), "{vt:?}");
            // σ is itself subnormal: one rounding on the subnormal grid
            // (2^-1074), i.e. 2^-34 at the reference scale.
            assert!(
                (x / c / c - y).abs() <= 1e-12 * y + 2f64.powi(-33),
                "σ {x} vs {y}"
            );
        }
        let (mut pt, mut pa) = (vec![0.0f64; 12], vec![0.0f64; 12]);
        st.polar_into(1e-12, &mut pt).unwrap();
        sa.polar_into(1e-12, &mut pa).unwrap();
        for (x, y) in pt.iter().zip(&pa) {
            assert!((x - y).abs() < 1e-12, "polar {x} vs {y}");
        }
        // f32 subnormals (normal in f64) as well.
        let t32: Vec<f32> = a.iter().map(|&x| (x * 2f64.powi(-140)) as f32).collect();
        assert!(t32.iter().all(|&x| x == 0.0 || !x.is_normal()));
        st.compute(&t32, m, n).unwrap();
        let v32: Vec<f64> = st.singular_values().collect();
        for (x, y) in v32.iter().zip(&va) {
            assert!(
                (x * 2f64.powi(140) - y).abs() <= 1e-12 * y,
                "f32 σ {x} vs {y}"
            );
        }
    }
}
