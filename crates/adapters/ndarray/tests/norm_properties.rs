//! Property tests of SPEC §1 for every norm on the ndarray backend, in f32
//! and f64:
//! - for `G ≠ 0`: `‖lmo(G)‖ = 1` and `<G, lmo(G)> = −‖G‖_*` (the value the
//!   LMO returns and the inner product recomputed from its output);
//! - `‖G‖_* ≥ <G, d>` for random `d` with `‖d‖ = 1` (definition of the dual);
//! - the scale law `‖X‖' = ‖X‖/s`, `‖G‖'_* = s‖G‖_*`, `lmo' = s·lmo`;
//! - `lmo(0) = 0` returning 0; non-finite input is an error that leaves the
//!   output untouched; shape and rank errors; invalid scales.
//!
//! Plus independent closed-form references for the spectral/nuclear norm of
//! 2×2 matrices.

use lmo_core::{
    Backend, ColNorm, Frobenius, L1, LmoError, Norm, RowNorm, Scalar, SignInf, Spectral, VectorRms,
};
use lmo_ndarray::{NdBackend, NdScalar};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;

/// A norm under test, flagged `true` if it is a matrix (rank-2 only) norm.
type Flagged<S> = (bool, Box<dyn Norm<NdBackend<S>>>);

/// The norms under test, each with scale `s`.
fn all_norms<S: NdScalar>(s: f64) -> Vec<Flagged<S>> {
    vec![
        (false, Box::new(Frobenius::new().with_scale(s).unwrap())),
        (true, Box::new(Spectral::new().with_scale(s).unwrap())),
        (
            true,
            Box::new(Spectral::new().rms_to_rms().with_scale(s).unwrap()),
        ),
        (false, Box::new(SignInf::new().with_scale(s).unwrap())),
        (false, Box::new(L1::new().with_scale(s).unwrap())),
        (true, Box::new(ColNorm::<S>::new().with_scale(s).unwrap())),
        (true, Box::new(RowNorm::<S>::new().with_scale(s).unwrap())),
        (false, Box::new(VectorRms::new().with_scale(s).unwrap())),
    ]
}

/// One entry: zero with probability 1/5, else a uniform mantissa times 10^e.
fn entry() -> impl Strategy<Value = f64> {
    prop_oneof![
        1 => Just(0.0),
        4 => (-1.0f64..1.0, -3i32..=3).prop_map(|(m, e)| m * 10f64.powi(e)),
    ]
}

/// A random m×n matrix (1 ≤ m, n ≤ 7) with, sometimes, a zeroed row or column.
fn matrix() -> impl Strategy<Value = (usize, usize, Vec<f64>)> {
    (1usize..=7, 1usize..=7)
        .prop_flat_map(|(m, n)| {
            (
                Just(m),
                Just(n),
                prop::collection::vec(entry(), m * n),
                0usize..4,
                0usize..7,
            )
        })
        .prop_map(|(m, n, mut v, kill, which)| {
            match kill {
                0 => (0..m).for_each(|i| v[i * n + which % n] = 0.0),
                1 => (0..n).for_each(|j| v[(which % m) * n + j] = 0.0),
                _ => {}
            }
            (m, n, v)
        })
}

fn tensor<S: NdScalar>(m: usize, n: usize, v: &[f64]) -> ArrayD<S> {
    ArrayD::from_shape_vec(IxDyn(&[m, n]), v.iter().map(|&x| S::of(x)).collect()).unwrap()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

fn lmo_identities<S: NdScalar>(
    m: usize,
    n: usize,
    v: &[f64],
    s: f64,
    tol: f64,
) -> Result<(), TestCaseError> {
    type B<S> = NdBackend<S>;
    let g = tensor::<S>(m, n, v);
    let nonzero = v.iter().any(|&x| x != 0.0);
    for (_, mut norm) in all_norms::<S>(s) {
        let name = norm.name();
        let mut d = B::<S>::zeros_like(&g);
        let ip = norm.lmo(&g, &mut d).unwrap().as_f64();
        let dual = norm.dual_norm(&g).unwrap().as_f64();
        let recomputed = B::<S>::dot(&g, &d).as_f64();
        let dn = norm.norm(&d).unwrap().as_f64();
        prop_assert!(dual >= 0.0, "{name}: dual {dual} < 0");
        prop_assert!(
            close(ip, -dual, tol),
            "{name}: <g,lmo> = {ip}, -dual = {}",
            -dual
        );
        prop_assert!(
            close(recomputed, ip, tol),
            "{name}: recomputed {recomputed} vs {ip}"
        );
        if nonzero {
            prop_assert!(close(dn, 1.0, tol), "{name}: ||lmo(g)|| = {dn}");
        } else {
            prop_assert!(ip == 0.0 && dn == 0.0, "{name}: lmo(0) must be 0");
            prop_assert!(
                d.iter().all(|x| *x == S::zero()),
                "{name}: lmo(0) must be 0"
            );
        }
    }
    Ok(())
}

fn dual_is_sup<S: NdScalar>(
    m: usize,
    n: usize,
    g: &[f64],
    d: &[f64],
    tol: f64,
) -> Result<(), TestCaseError> {
    let g = tensor::<S>(m, n, g);
    let d = tensor::<S>(m, n, d);
    for (_, mut norm) in all_norms::<S>(1.7) {
        let dn = norm.norm(&d).unwrap();
        if dn == S::zero() {
            continue;
        }
        let unit = d.mapv(|x| x / dn);
        let ip = NdBackend::<S>::dot(&g, &unit).as_f64();
        let dual = norm.dual_norm(&g).unwrap().as_f64();
        prop_assert!(
            ip <= dual + tol * (1.0 + dual),
            "{}: <g,d> = {ip} > dual {dual}",
            norm.name()
        );
    }
    Ok(())
}

fn scale_law<S: NdScalar>(
    m: usize,
    n: usize,
    v: &[f64],
    s: f64,
    tol: f64,
) -> Result<(), TestCaseError> {
    let g = tensor::<S>(m, n, v);
    for ((_, mut a), (_, mut b)) in all_norms::<S>(1.0).into_iter().zip(all_norms::<S>(s)) {
        let name = a.name();
        let (na, nb) = (a.norm(&g).unwrap().as_f64(), b.norm(&g).unwrap().as_f64());
        prop_assert!(close(nb, na / s, tol), "{name}: norm {nb} vs {}", na / s);
        let (da, db) = (
            a.dual_norm(&g).unwrap().as_f64(),
            b.dual_norm(&g).unwrap().as_f64(),
        );
        prop_assert!(close(db, s * da, tol), "{name}: dual {db} vs {}", s * da);
        let mut la = g.clone();
        let mut lb = g.clone();
        a.lmo(&g, &mut la).unwrap();
        b.lmo(&g, &mut lb).unwrap();
        for (x, y) in la.iter().zip(lb.iter()) {
            prop_assert!(
                close(y.as_f64(), s * x.as_f64(), tol),
                "{name}: lmo {y} vs s*{x}"
            );
        }
    }
    Ok(())
}

fn bad_input<S: NdScalar>(m: usize, n: usize, v: &[f64], k: usize, bad: f64) {
    let mut g = tensor::<S>(m, n, v);
    let flat = k % (m * n);
    g.as_slice_mut().unwrap()[flat] = S::of(bad);
    for (is_matrix, mut norm) in all_norms::<S>(1.0) {
        let name = norm.name();
        let mut out = ArrayD::from_elem(IxDyn(&[m, n]), S::of(7.0));
        assert_eq!(norm.lmo(&g, &mut out), Err(LmoError::NonFinite), "{name}");
        assert!(
            out.iter().all(|x| *x == S::of(7.0)),
            "{name}: output was written"
        );
        assert_eq!(norm.norm(&g), Err(LmoError::NonFinite), "{name}");
        assert_eq!(norm.dual_norm(&g), Err(LmoError::NonFinite), "{name}");
        // Shape mismatch: error, output untouched.
        let mut wrong = ArrayD::from_elem(IxDyn(&[m, n + 1]), S::of(7.0));
        let ok = tensor::<S>(m, n, v);
        assert!(
            matches!(
                norm.lmo(&ok, &mut wrong),
                Err(LmoError::ShapeMismatch { .. })
            ),
            "{name}"
        );
        assert!(
            wrong.iter().all(|x| *x == S::of(7.0)),
            "{name}: output was written"
        );
        // Matrix norms reject vectors (never flatten silently).
        let vec = ArrayD::from_elem(IxDyn(&[m * n]), S::one());
        let mut vout = vec.clone();
        if is_matrix {
            assert_eq!(
                norm.lmo(&vec, &mut vout),
                Err(LmoError::UnsupportedRank(1)),
                "{name}"
            );
            assert_eq!(norm.norm(&vec), Err(LmoError::UnsupportedRank(1)), "{name}");
        } else {
            assert!(norm.lmo(&vec, &mut vout).is_ok(), "{name}");
        }
    }
}

macro_rules! precision_suite {
    ($modname:ident, $s:ty, $tol:expr) => {
        mod $modname {
            use super::*;

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(256))]

                #[test]
                fn lmo_attains_minus_dual_and_has_unit_norm(
                    (m, n, v) in matrix(), s in 0.1f64..10.0
                ) {
                    lmo_identities::<$s>(m, n, &v, s, $tol)?;
                }

                #[test]
                fn dual_norm_bounds_every_unit_direction(
                    (m, n, g, d) in (1usize..=6, 1usize..=6).prop_flat_map(|(m, n)| (
                        Just(m), Just(n),
                        prop::collection::vec(entry(), m * n),
                        prop::collection::vec(-1.0f64..1.0, m * n),
                    ))
                ) {
                    dual_is_sup::<$s>(m, n, &g, &d, $tol)?;
                }

                #[test]
                fn scale_law_holds((m, n, v) in matrix(), s in 0.05f64..20.0) {
                    scale_law::<$s>(m, n, &v, s, $tol)?;
                }

                #[test]
                fn zero_input_gives_zero((m, n) in (1usize..=7, 1usize..=7)) {
                    lmo_identities::<$s>(m, n, &vec![0.0; m * n], 2.0, $tol)?;
                }

                #[test]
                fn non_finite_and_shape_errors(
                    (m, n, v) in matrix(), k in 0usize..64,
                    bad in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)]
                ) {
                    bad_input::<$s>(m, n, &v, k, bad);
                }
            }

            #[test]
            fn huge_and_tiny_entries_stay_finite() {
                // Entries near the top and bottom of the range: norms and
                // LMOs must neither overflow nor underflow to NaN.
                for mag in [1e30f64, 1e-30] {
                    let v: Vec<f64> = (0..12).map(|k| mag * ((k as f64) - 5.5)).collect();
                    let g = tensor::<$s>(3, 4, &v);
                    for (_, mut norm) in all_norms::<$s>(1.0) {
                        let mut d = g.clone();
                        let ip = norm.lmo(&g, &mut d).unwrap();
                        assert!(ip.is_finite(), "{}", norm.name());
                        assert!(d.iter().all(|x| x.is_finite()), "{}", norm.name());
                        let dn = norm.norm(&d).unwrap().as_f64();
                        assert!(close(dn, 1.0, $tol), "{}: {dn}", norm.name());
                    }
                }
            }
        }
    };
}

precision_suite!(f32_backend, f32, 2e-4);
precision_suite!(f64_backend, f64, 1e-10);

#[test]
fn invalid_scales_are_rejected() {
    for s in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = Some(LmoError::InvalidHyperParameter(
            "norm scale must be finite and > 0",
        ));
        assert_eq!(Frobenius::new().with_scale(s).err(), e);
        assert_eq!(SignInf::new().with_scale(s).err(), e);
        assert_eq!(L1::new().with_scale(s).err(), e);
        assert_eq!(VectorRms::new().with_scale(s).err(), e);
        assert_eq!(ColNorm::<f64>::new().with_scale(s).err(), e);
        assert_eq!(RowNorm::<f64>::new().with_scale(s).err(), e);
        assert_eq!(Spectral::<NdBackend<f64>>::new().with_scale(s).err(), e);
    }
}

proptest! {
    /// Independent reference: for a 2×2 matrix with Frobenius norm F and
    /// determinant Δ, σ₁ + σ₂ = √(F² + 2|Δ|) and σ₁ − σ₂ = √(F² − 2|Δ|).
    #[test]
    fn spectral_and_nuclear_match_2x2_closed_form(v in prop::collection::vec(-10.0f64..10.0, 4)) {
        let g = tensor::<f64>(2, 2, &v);
        let f2: f64 = v.iter().map(|x| x * x).sum();
        let det = (v[0] * v[3] - v[1] * v[2]).abs();
        let sum = (f2 + 2.0 * det).sqrt();
        let diff = (f2 - 2.0 * det).max(0.0).sqrt();
        let mut sp = Spectral::<NdBackend<f64>>::new();
        prop_assert!(close(sp.dual_norm(&g).unwrap(), sum, 1e-12));
        prop_assert!(close(sp.norm(&g).unwrap(), (sum + diff) / 2.0, 1e-7));
        // RMS→RMS on 2×2 is the plain spectral norm (m = n).
        let mut rms = Spectral::<NdBackend<f64>>::new().rms_to_rms();
        prop_assert!(close(rms.dual_norm(&g).unwrap(), sum, 1e-12));
    }
}

#[test]
fn rms_to_rms_scale_on_rectangular() {
    // For a d_out×d_in = 2×8 matrix, ‖X‖_{RMS→RMS} = √(8/2)·σ_max.
    let v: Vec<f64> = (0..16).map(|k| ((k * 7 % 5) as f64) - 2.0).collect();
    let x = tensor::<f64>(2, 8, &v);
    let s = Spectral::<NdBackend<f64>>::new().norm(&x).unwrap();
    let r = Spectral::<NdBackend<f64>>::new()
        .rms_to_rms()
        .norm(&x)
        .unwrap();
    assert!(close(r, 2.0 * s, 1e-12));
}

/// One norm's expected values on one input, for scale 1: `‖G‖`, `‖G‖_*`
/// and the entries of `lmo(G)` (row-major).
struct Expected<'a> {
    norm: f64,
    dual: f64,
    lmo: &'a [f64],
}

/// Checks `norm` (built with scale `s`) against the SPEC §1 closed form
/// `want` (for scale 1) through the scale law: `‖G‖/s`, `s·‖G‖_*`,
/// `s·lmo(G)` entry by entry, and the returned `<G, lmo(G)> = −s·‖G‖_*`.
fn check_closed_form<S: NdScalar>(
    norm: &mut dyn Norm<NdBackend<S>>,
    dims: &[usize],
    g: &[f64],
    s: f64,
    want: &Expected<'_>,
    tol: f64,
) {
    let name = norm.name();
    let gt = ArrayD::from_shape_vec(IxDyn(dims), g.iter().map(|&x| S::of(x)).collect()).unwrap();
    let got = norm.norm(&gt).unwrap().as_f64();
    assert!(
        close(got, want.norm / s, tol),
        "{name} s={s}: ‖G‖ = {got}, want {}",
        want.norm / s
    );
    let got = norm.dual_norm(&gt).unwrap().as_f64();
    assert!(
        close(got, s * want.dual, tol),
        "{name} s={s}: ‖G‖_* = {got}, want {}",
        s * want.dual
    );
    let mut d = ArrayD::from_elem(IxDyn(dims), S::of(7.0));
    let ip = norm.lmo(&gt, &mut d).unwrap().as_f64();
    assert!(
        close(ip, -s * want.dual, tol),
        "{name} s={s}: <G, lmo> = {ip}, want {}",
        -s * want.dual
    );
    assert_eq!(d.len(), want.lmo.len(), "{name}");
    for (k, (x, w)) in d.iter().zip(want.lmo).enumerate() {
        assert!(
            close(x.as_f64(), s * w, tol),
            "{name} s={s}: lmo entry {k} = {x}, want {}",
            s * w
        );
    }
}

/// SPEC §1, table row by row, on fixed small inputs with hand-computed
/// values, each at scale 1 and 2.5. Mutual consistency of norm, dual and
/// LMO (the property tests above) cannot tell ℓ1 from ℓ∞, ColNorm from
/// RowNorm, or a VectorRms with the √d on the wrong side; these can.
fn closed_forms<S: NdScalar>(tol: f64) {
    type B<S> = NdBackend<S>;
    // 3×4, distinct nonzero magnitudes; largest |G_jk| = 5 at (2, 3).
    #[rustfmt::skip]
    let g = [
         0.5, -3.0,  2.0,   1.5,
        -1.0,  4.0, -0.25, -2.5,
         3.5, -0.75, 1.25, -5.0,
    ];
    let (m, n) = (3usize, 4usize);
    let at = |j: usize, k: usize| g[j * n + k];
    let fro = g.iter().map(|x| x * x).sum::<f64>().sqrt();
    let sum_abs: f64 = g.iter().map(|x| x.abs()).sum();
    assert_eq!(sum_abs, 25.25);
    assert!(close(fro * fro, 78.1875, 1e-15));
    let col: Vec<f64> = (0..n)
        .map(|k| (0..m).map(|j| at(j, k).powi(2)).sum::<f64>().sqrt())
        .collect();
    let row: Vec<f64> = (0..m)
        .map(|j| (0..n).map(|k| at(j, k).powi(2)).sum::<f64>().sqrt())
        .collect();
    let sign = |x: f64| if x > 0.0 { 1.0 } else { -1.0 };

    let neg_over = |c: f64| g.iter().map(|x| -x / c).collect::<Vec<_>>();
    let fro_lmo = neg_over(fro);
    let sign_lmo: Vec<f64> = g.iter().map(|&x| -sign(x)).collect();
    let mut l1_lmo = vec![0.0; 12];
    l1_lmo[2 * n + 3] = 1.0; // −sign(−5)
    let col_lmo: Vec<f64> = (0..m * n).map(|i| -g[i] / col[i % n]).collect();
    let row_lmo: Vec<f64> = (0..m * n).map(|i| -g[i] / row[i / n]).collect();
    let sd = 12f64.sqrt();
    let rms_lmo = neg_over(fro / sd);

    for s in [1.0, 2.5] {
        let c = |norm: &mut dyn Norm<B<S>>, want: Expected<'_>| {
            check_closed_form::<S>(norm, &[m, n], &g, s, &want, tol)
        };
        c(
            &mut Frobenius::new().with_scale(s).unwrap(),
            Expected {
                norm: fro,
                dual: fro,
                lmo: &fro_lmo,
            },
        );
        c(
            &mut SignInf::new().with_scale(s).unwrap(),
            Expected {
                norm: 5.0,
                dual: 25.25,
                lmo: &sign_lmo,
            },
        );
        c(
            &mut L1::new().with_scale(s).unwrap(),
            Expected {
                norm: 25.25,
                dual: 5.0,
                lmo: &l1_lmo,
            },
        );
        c(
            &mut ColNorm::<S>::new().with_scale(s).unwrap(),
            Expected {
                norm: col.iter().copied().fold(0.0, f64::max),
                dual: col.iter().sum(),
                lmo: &col_lmo,
            },
        );
        c(
            &mut RowNorm::<S>::new().with_scale(s).unwrap(),
            Expected {
                norm: row.iter().copied().fold(0.0, f64::max),
                dual: row.iter().sum(),
                lmo: &row_lmo,
            },
        );
        c(
            &mut VectorRms::new().with_scale(s).unwrap(),
            Expected {
                norm: fro / sd,
                dual: sd * fro,
                lmo: &rms_lmo,
            },
        );
        // VectorRms on a vector b = (3, 4), d = 2: ‖b‖ = 5/√2,
        // ‖b‖_* = 5√2, lmo = −√2·(3, 4)/5.
        let r2 = 2f64.sqrt();
        check_closed_form::<S>(
            &mut VectorRms::new().with_scale(s).unwrap(),
            &[2],
            &[3.0, 4.0],
            s,
            &Expected {
                norm: 5.0 / r2,
                dual: 5.0 * r2,
                lmo: &[-0.6 * r2, -0.8 * r2],
            },
            tol,
        );
        // Zero columns / rows map to zero columns / rows.
        #[rustfmt::skip]
        let z = [
            3.0, 0.0, 1.0,
            4.0, 0.0, 0.0,
            0.0, 0.0, 0.0,
        ];
        check_closed_form::<S>(
            &mut ColNorm::<S>::new().with_scale(s).unwrap(),
            &[3, 3],
            &z,
            s,
            &Expected {
                norm: 5.0,
                dual: 6.0,
                lmo: &[-0.6, 0.0, -1.0, -0.8, 0.0, 0.0, 0.0, 0.0, 0.0],
            },
            tol,
        );
        let r10 = 10f64.sqrt();
        check_closed_form::<S>(
            &mut RowNorm::<S>::new().with_scale(s).unwrap(),
            &[3, 3],
            &z,
            s,
            &Expected {
                norm: 4.0,
                dual: r10 + 4.0,
                lmo: &[-3.0 / r10, 0.0, -1.0 / r10, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            },
            tol,
        );

        // Spectral, on a matrix with a known SVD: H = D·Q with orthogonal
        // rows, Q = the first three Hadamard rows / 2 (orthonormal rows),
        // D = diag(6, 4, 1). So U = I, Σ = D, Vᵀ = Q: σ_max = 6, nuclear
        // 11, polar factor Q, lmo = −Q (and the transpose for 4×3).
        #[rustfmt::skip]
        let q = [
            0.5,  0.5,  0.5,  0.5,
            0.5, -0.5,  0.5, -0.5,
            0.5,  0.5, -0.5, -0.5,
        ];
        let sig = [6.0, 4.0, 1.0];
        let h: Vec<f64> = (0..12).map(|i| sig[i / 4] * q[i]).collect();
        let neg_q: Vec<f64> = q.iter().map(|x| -x).collect();
        let ht: Vec<f64> = (0..12).map(|i| h[(i % 3) * 4 + i / 3]).collect();
        let neg_qt: Vec<f64> = (0..12).map(|i| neg_q[(i % 3) * 4 + i / 3]).collect();
        let sp = Expected {
            norm: 6.0,
            dual: 11.0,
            lmo: &neg_q,
        };
        check_closed_form::<S>(
            &mut Spectral::new().with_scale(s).unwrap(),
            &[3, 4],
            &h,
            s,
            &sp,
            tol,
        );
        let spt = Expected {
            norm: 6.0,
            dual: 11.0,
            lmo: &neg_qt,
        };
        check_closed_form::<S>(
            &mut Spectral::new().with_scale(s).unwrap(),
            &[4, 3],
            &ht,
            s,
            &spt,
            tol,
        );
        // RMS→RMS on d_out×d_in = 3×4: ‖X‖ = √(4/3)·σ_max,
        // ‖G‖_* = √(3/4)·Σσ, lmo = −√(3/4)·U Vᵀ.
        let f = (3.0f64 / 4.0).sqrt();
        let rms_q: Vec<f64> = neg_q.iter().map(|x| f * x).collect();
        check_closed_form::<S>(
            &mut Spectral::new().rms_to_rms().with_scale(s).unwrap(),
            &[3, 4],
            &h,
            s,
            &Expected {
                norm: 6.0 / f,
                dual: 11.0 * f,
                lmo: &rms_q,
            },
            tol,
        );
        // …and on 4×3 the factors invert: √(3/4)·σ_max, √(4/3)·Σσ.
        let rms_qt: Vec<f64> = neg_qt.iter().map(|x| x / f).collect();
        check_closed_form::<S>(
            &mut Spectral::new().rms_to_rms().with_scale(s).unwrap(),
            &[4, 3],
            &ht,
            s,
            &Expected {
                norm: 6.0 * f,
                dual: 11.0 / f,
                lmo: &rms_qt,
            },
            tol,
        );
    }
}

#[test]
fn every_norm_matches_its_spec_closed_form_f64() {
    closed_forms::<f64>(1e-12);
}

#[test]
fn every_norm_matches_its_spec_closed_form_f32() {
    closed_forms::<f32>(1e-5);
}
