//! The ndarray backend's GEMM, syrk and transpose against naive triple
//! loops in f64 (an independent reference), for both precisions, every
//! transpose combination, β ∈ {0, 1, other}, non-contiguous inputs, and
//! sizes on both sides of the recursive syrk's leaf size.

use lmo_core::{Backend, Scalar, Shape, Trans};
use lmo_ndarray::{NdBackend, NdScalar};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;

fn pseudo(m: usize, n: usize, seed: u64) -> Vec<f64> {
    // A small LCG: deterministic, no extra dependency.
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..m * n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

fn t<S: NdScalar>(m: usize, n: usize, v: &[f64]) -> ArrayD<S> {
    ArrayD::from_shape_vec(IxDyn(&[m, n]), v.iter().map(|&x| S::of(x)).collect()).unwrap()
}

/// Naive `α·op(a)·op(b) + β·c` in f64, row-major.
#[allow(clippy::too_many_arguments)]
fn naive(
    alpha: f64,
    a: &[f64],
    (am, an): (usize, usize),
    ta: bool,
    b: &[f64],
    (bm, bn): (usize, usize),
    tb: bool,
    beta: f64,
    c: &[f64],
) -> Vec<f64> {
    let (m, k) = if ta { (an, am) } else { (am, an) };
    let n = if tb { bm } else { bn };
    let at = |i: usize, p: usize| if ta { a[p * an + i] } else { a[i * an + p] };
    let bt = |p: usize, j: usize| if tb { b[j * bn + p] } else { b[p * bn + j] };
    (0..m * n)
        .map(|ij| {
            let (i, j) = (ij / n, ij % n);
            alpha * (0..k).map(|p| at(i, p) * bt(p, j)).sum::<f64>() + beta * c[ij]
        })
        .collect()
}

/// max |got − want| / max(1, max |want|); a NaN difference counts as +∞.
fn max_rel_err<S: NdScalar>(got: &ArrayD<S>, want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1.0f64, |a, &b| a.max(b.abs()));
    got.iter().zip(want).fold(0.0f64, |a, (&g, &w)| {
        let d = (g.as_f64() - w).abs();
        a.max(if d.is_nan() { f64::INFINITY } else { d / scale })
    })
}

fn gemm_case<S: NdScalar>(
    (m, n, k): (usize, usize, usize),
    ta: bool,
    tb: bool,
    beta: f64,
    seed: u64,
    tol: f64,
) {
    let (ash, bsh) = (
        if ta { (k, m) } else { (m, k) },
        if tb { (n, k) } else { (k, n) },
    );
    let (av, bv, cv) = (
        pseudo(ash.0, ash.1, seed),
        pseudo(bsh.0, bsh.1, seed + 1),
        pseudo(m, n, seed + 2),
    );
    let a = t::<S>(ash.0, ash.1, &av);
    let b = t::<S>(bsh.0, bsh.1, &bv);
    let mut c = t::<S>(m, n, &cv);
    let fl = |x: bool| if x { Trans::Yes } else { Trans::No };
    NdBackend::<S>::gemm(S::of(0.75), &a, fl(ta), &b, fl(tb), S::of(beta), &mut c);
    let want = naive(0.75, &av, ash, ta, &bv, bsh, tb, beta, &cv);
    let e = max_rel_err(&c, &want);
    assert!(
        e < tol,
        "gemm {m}x{n}x{k} ta={ta} tb={tb} beta={beta}: err {e}"
    );
}

fn syrk_case<S: NdScalar>(k: usize, l: usize, beta: f64, seed: u64, tol: f64) {
    let xv = pseudo(k, l, seed);
    let x = t::<S>(k, l, &xv);
    // A symmetric starting c so that β·c stays symmetric.
    let r = pseudo(k, k, seed + 3);
    let cv: Vec<f64> = (0..k * k)
        .map(|ij| r[ij] + r[(ij % k) * k + ij / k])
        .collect();
    let mut c = t::<S>(k, k, &cv);
    NdBackend::<S>::syrk(S::of(-1.5), &x, S::of(beta), &mut c);
    let want = naive(-1.5, &xv, (k, l), false, &xv, (k, l), true, beta, &cv);
    let e = max_rel_err(&c, &want);
    assert!(e < tol, "syrk {k}x{l} beta={beta}: err {e}");
    // Exactly symmetric: the upper triangle is a copy of the lower one.
    for i in 0..k {
        for j in 0..i {
            assert_eq!(c[[i, j]], c[[j, i]]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn gemm_matches_naive(
        m in 1usize..40, n in 1usize..40, k in 0usize..40,
        ta: bool, tb: bool, beta in prop_oneof![Just(0.0), Just(1.0), Just(-0.5)], seed: u64,
    ) {
        gemm_case::<f64>((m, n, k), ta, tb, beta, seed, 1e-13);
        gemm_case::<f32>((m, n, k), ta, tb, beta, seed, 2e-5);
    }

    #[test]
    fn syrk_matches_naive_small(k in 1usize..40, l in 0usize..40, beta in prop_oneof![Just(0.0), Just(1.0), Just(2.0)], seed: u64) {
        syrk_case::<f64>(k, l, beta, seed, 1e-13);
        syrk_case::<f32>(k, l, beta, seed, 2e-5);
    }
}

#[test]
fn syrk_recursive_blocks_match_naive() {
    // Above the leaf size (256) the product is split into GEMM blocks; on
    // AVX-512 CPUs the f32 product runs on the native kernel, whose inner
    // blocks are 512 long and row blocks 96 high (edges on both sides).
    for (k, l) in [
        (257, 5),
        (300, 64),
        (520, 33),
        (700, 3),
        (97, 1100),
        (200, 513),
    ] {
        syrk_case::<f64>(k, l, 0.0, k as u64, 1e-13);
        syrk_case::<f32>(k, l, 1.0, l as u64, 2e-5);
    }
}

#[test]
fn gemm_large_and_non_contiguous() {
    gemm_case::<f32>((300, 270, 290), false, true, 0.0, 9, 2e-5);
    gemm_case::<f64>((300, 270, 290), true, false, 1.0, 10, 1e-13);
    // A transposed owned array (column-major memory) as input.
    let v = pseudo(30, 20, 4);
    let a = t::<f64>(30, 20, &v).reversed_axes(); // 20×30, non-standard layout
    let b = t::<f64>(30, 20, &pseudo(30, 20, 5));
    let mut c = ArrayD::zeros(IxDyn(&[20, 20]));
    NdBackend::<f64>::gemm(1.0, &a, Trans::No, &b, Trans::No, 0.0, &mut c);
    let want = naive(
        1.0,
        &v,
        (30, 20),
        true,
        &pseudo(30, 20, 5),
        (30, 20),
        false,
        0.0,
        &[0.0; 400],
    );
    assert!(max_rel_err(&c, &want) < 1e-13);
}

#[test]
fn transpose_and_zeros() {
    let v = pseudo(3, 5, 1);
    let x = t::<f64>(3, 5, &v);
    let mut o = NdBackend::<f64>::zeros(&x, Shape::matrix(5, 3));
    NdBackend::<f64>::transpose_into(2.0, &x, &mut o);
    for i in 0..3 {
        for j in 0..5 {
            assert_eq!(o[[j, i]], 2.0 * v[i * 5 + j]);
        }
    }
    assert_eq!(
        NdBackend::<f32>::zeros(&t::<f32>(1, 1, &[1.0]), Shape::vector(4)).shape(),
        [4]
    );
}

/// `gemm_sym_from`: `α·a·bᵀ + β·src` for a product the caller knows to be
/// symmetric, against the naive product: `b = a` (any `k × l`) and two
/// commuting symmetric matrices (`a = S`, `b = S²`); sizes on both sides of
/// the recursion's leaf and of the native kernel's blocks; the result is
/// exactly symmetric.
fn sym_case<B>(k: usize, l: usize, beta: f64, seed: u64, tol: f64)
where
    B: Backend<Tensor = ArrayD<<B as Backend>::Scalar>>,
    B::Scalar: NdScalar,
{
    let sym = |v: &[f64], k: usize| -> Vec<f64> {
        (0..k * k)
            .map(|ij| v[ij] + v[(ij % k) * k + ij / k])
            .collect()
    };
    let src = sym(&pseudo(k, k, seed + 7), k);
    let s = sym(&pseudo(k, k, seed + 8), k);
    let s2 = naive(
        1.0,
        &s,
        (k, k),
        false,
        &s,
        (k, k),
        false,
        0.0,
        &vec![0.0; k * k],
    );
    let x = pseudo(k, l, seed + 9);
    for (av, bv, (m, n)) in [(&x, &x, (k, l)), (&s, &s2, (k, k))] {
        let (a, b) = (t::<B::Scalar>(m, n, av), t::<B::Scalar>(m, n, bv));
        let sr = t::<B::Scalar>(k, k, &src);
        let mut out = t::<B::Scalar>(k, k, &vec![7.0; k * k]);
        B::gemm_sym_from(
            B::Scalar::of(-0.75),
            &a,
            &b,
            B::Scalar::of(beta),
            &sr,
            &mut out,
        );
        let want = naive(-0.75, av, (m, n), false, bv, (m, n), true, beta, &src);
        let e = max_rel_err(&out, &want);
        assert!(e < tol, "gemm_sym_from {k}x{n} beta={beta}: err {e}");
        for i in 0..k {
            for j in 0..i {
                assert_eq!(out[[i, j]], out[[j, i]]);
            }
        }
    }
}

#[test]
fn gemm_sym_from_matches_naive() {
    for (k, l) in [(1, 3), (5, 1), (37, 20), (257, 5), (300, 64), (520, 33)] {
        for beta in [0.0, 1.0, -2.0] {
            sym_case::<lmo_ndarray::Nd64>(k, l, beta, k as u64, 1e-12);
            sym_case::<lmo_ndarray::Nd32>(k, l, beta, l as u64, 5e-5);
            sym_case::<lmo_ndarray::NdBf16>(k, l, beta, 3, 3e-2);
        }
    }
}

/// The reductions on strided (non-contiguous) arrays, whose path differs
/// from the slice kernels: a NaN entry makes the norm, the max magnitude
/// and the sum NaN (a `max`-based scaling must not skip it: Newton–Schulz
/// checks its input only when `norm2` is not finite), and finite entries
/// give the values of the contiguous copy.
fn strided_reductions<S: NdScalar>() {
    use ndarray::s;
    let mut a = t::<S>(6, 8, &pseudo(6, 8, 21));
    a.slice_collapse(s![.., ..;2]);
    assert!(a.as_slice_memory_order().is_none(), "strided");
    let c = a.to_owned().as_standard_layout().to_owned();
    type B<S> = NdBackend<S>;
    let (na, nc) = (B::<S>::norm2(&a).as_f64(), B::<S>::norm2(&c).as_f64());
    assert!((na - nc).abs() <= 1e-6 * nc, "{na} vs {nc}");
    assert_eq!(B::<S>::max_abs(&a), B::<S>::max_abs(&c));
    for bad in [S::nan(), S::infinity()] {
        for at in [[0, 0], [5, 3], [2, 1]] {
            let mut x = a.clone();
            x[IxDyn(&at)] = bad;
            let (n, m) = (B::<S>::norm2(&x), B::<S>::max_abs(&x));
            assert!(!n.is_finite() && !m.is_finite(), "{at:?}: {n:?} {m:?}");
            if bad.is_nan() {
                assert!(n.is_nan() && m.is_nan(), "{at:?}: {n:?} {m:?}");
            }
            // NaN next to zeros: still NaN (a fold with `max` gives 0).
            let mut z = x.clone();
            z.fill(S::zero());
            z[IxDyn(&at)] = bad;
            assert!(!B::<S>::norm2(&z).is_finite(), "{at:?}");
            assert!(!B::<S>::all_finite(&z));
        }
    }
}

#[test]
fn strided_reductions_propagate_nan() {
    strided_reductions::<f32>();
    strided_reductions::<f64>();
}
