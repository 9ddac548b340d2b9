//! Issue 17: magnitudes at the bottom of the floating-point range and
//! empty tensors, for every norm of lmo-core on Nd32, Nd64 and NdBf16.
//!
//! - Subnormal input (f32 ≈ 1e-40, f64 ≈ 1e-310): norms, dual norms and
//!   LMOs are finite and obey positive homogeneity (SPEC §1: a norm is
//!   positively homogeneous, so `‖c·G‖ = c‖G‖`, `‖c·G‖_* = c‖G‖_*` and
//!   `lmo(c·G) = lmo(G)` for `c > 0`). The reference is the same matrix
//!   scaled up by an exact power of two `c = 2^K` into the normal range
//!   (scaling a subnormal up by a power of two is exact), so every value
//!   of the tiny input is checked against an independent computation on
//!   ordinary numbers.
//! - ±0 input: `lmo(0) = 0`, norms 0, never NaN.
//! - Mixed huge and tiny blocks: finite, `‖lmo(G)‖ = 1`,
//!   `<G, lmo(G)> = −‖G‖_*`, and every nonzero column (row) of the
//!   col-norm (row-norm) LMO has ℓ2 norm `s` (SPEC §1, rows 6–7).
//! - Empty tensors (0×n, n×0, 0×0, length 0): every norm, dual norm and
//!   LMO gives exactly 0 (or `UnsupportedRank` for a matrix norm on a
//!   vector), never NaN or a panic, and leaves the (empty) output as it is.

use lmo_core::num_traits::{Float, Zero};
use lmo_core::{
    AdamWStep, Backend, ColNorm, Frobenius, L1, LmoError, Norm, RowNorm, Scalar, SignInf, Spectral,
    VectorRms,
};
use lmo_core::{Shape, Trans};
use lmo_ndarray::{Nd32, Nd64, NdBf16, NdScalar, round_bf16};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;

/// A backend on `ArrayD<S>` tensors.
trait NdLike: Backend<Tensor = ArrayD<<Self as Backend>::Scalar>>
where
    Self::Scalar: NdScalar,
{
    /// Rounds a tensor to what the backend stores (bf16 for NdBf16).
    fn store(x: ArrayD<Self::Scalar>) -> ArrayD<Self::Scalar>;
}
impl NdLike for Nd32 {
    fn store(x: ArrayD<f32>) -> ArrayD<f32> {
        x
    }
}
impl NdLike for Nd64 {
    fn store(x: ArrayD<f64>) -> ArrayD<f64> {
        x
    }
}
impl NdLike for NdBf16 {
    fn store(mut x: ArrayD<f32>) -> ArrayD<f32> {
        round_bf16(&mut x);
        x
    }
}

/// Nd64 without its own `scale_cols_mut` / `scale_rows_mut`: runs the
/// default implementations of `Backend`, which backends without an
/// in-place override (CUDA, libtorch) use.
struct Plain;
#[rustfmt::skip]
impl Backend for Plain {
    type Scalar = f64;
    type Tensor = ArrayD<f64>;
    fn shape(t: &ArrayD<f64>) -> Shape { Nd64::shape(t) }
    fn zeros_like(t: &ArrayD<f64>) -> ArrayD<f64> { Nd64::zeros_like(t) }
    fn all_finite(t: &ArrayD<f64>) -> bool { Nd64::all_finite(t) }
    fn dot(x: &ArrayD<f64>, y: &ArrayD<f64>) -> f64 { Nd64::dot(x, y) }
    fn argmax_abs(x: &ArrayD<f64>) -> (usize, f64) { Nd64::argmax_abs(x) }
    fn sum_abs(x: &ArrayD<f64>) -> f64 { Nd64::sum_abs(x) }
    fn norm2(x: &ArrayD<f64>) -> f64 { Nd64::norm2(x) }
    fn col_norms(x: &ArrayD<f64>, o: &mut [f64]) { Nd64::col_norms(x, o) }
    fn row_norms(x: &ArrayD<f64>, o: &mut [f64]) { Nd64::row_norms(x, o) }
    fn fill(x: &mut ArrayD<f64>, v: f64) { Nd64::fill(x, v) }
    fn set(x: &mut ArrayD<f64>, k: usize, v: f64) { Nd64::set(x, k, v) }
    fn scale(a: f64, x: &ArrayD<f64>, o: &mut ArrayD<f64>) { Nd64::scale(a, x, o) }
    fn sign(a: f64, x: &ArrayD<f64>, o: &mut ArrayD<f64>) { Nd64::sign(a, x, o) }
    fn scale_mut(a: f64, x: &mut ArrayD<f64>) { Nd64::scale_mut(a, x) }
    fn axpby(a: f64, x: &ArrayD<f64>, b: f64, y: &mut ArrayD<f64>) { Nd64::axpby(a, x, b, y) }
    fn scale_cols(x: &ArrayD<f64>, s: &[f64], o: &mut ArrayD<f64>) { Nd64::scale_cols(x, s, o) }
    fn scale_rows(x: &ArrayD<f64>, s: &[f64], o: &mut ArrayD<f64>) { Nd64::scale_rows(x, s, o) }
    fn gemm(al: f64, a: &ArrayD<f64>, ta: Trans, b: &ArrayD<f64>, tb: Trans, be: f64, c: &mut ArrayD<f64>) {
        Nd64::gemm(al, a, ta, b, tb, be, c)
    }
    fn transpose_into(a: f64, x: &ArrayD<f64>, o: &mut ArrayD<f64>) { Nd64::transpose_into(a, x, o) }
    fn zeros(like: &ArrayD<f64>, shape: Shape) -> ArrayD<f64> { Nd64::zeros(like, shape) }
    fn adamw(p: &mut ArrayD<f64>, g: &ArrayD<f64>, m: &mut ArrayD<f64>, v: &mut ArrayD<f64>, h: &AdamWStep<f64>) {
        Nd64::adamw(p, g, m, v, h)
    }
    fn copy_to_slice(x: &ArrayD<f64>, o: &mut [f64]) { Nd64::copy_to_slice(x, o) }
    fn copy_from_slice(s: &[f64], o: &mut ArrayD<f64>) { Nd64::copy_from_slice(s, o) }
}
impl NdLike for Plain {
    fn store(x: ArrayD<f64>) -> ArrayD<f64> {
        x
    }
}

/// A norm under test, flagged `true` if it is a matrix (rank-2 only) norm.
type Flagged<B> = (bool, Box<dyn Norm<B>>);

/// Every norm of lmo-core (the spectral ones with the exact polar factor;
/// the orthogonalize crate tests them with Newton–Schulz), scale `s`.
fn all_norms<B>(s: f64) -> Vec<Flagged<B>>
where
    B: NdLike,
    B::Scalar: NdScalar,
{
    vec![
        (false, Box::new(Frobenius::new().with_scale(s).unwrap())),
        (true, Box::new(Spectral::<B>::new().with_scale(s).unwrap())),
        (
            true,
            Box::new(Spectral::<B>::new().rms_to_rms().with_scale(s).unwrap()),
        ),
        (false, Box::new(SignInf::new().with_scale(s).unwrap())),
        (false, Box::new(L1::new().with_scale(s).unwrap())),
        (
            true,
            Box::new(ColNorm::<B::Scalar>::new().with_scale(s).unwrap()),
        ),
        (
            true,
            Box::new(RowNorm::<B::Scalar>::new().with_scale(s).unwrap()),
        ),
        (false, Box::new(VectorRms::new().with_scale(s).unwrap())),
    ]
}

/// Precision-dependent constants of the tiny-magnitude tests.
struct Prec {
    /// The magnitude the random matrices are multiplied by (subnormal).
    tiny: f64,
    /// `K` with `tiny·2^K ≈ 1`: the exact power-of-two reference scaling.
    k: i32,
    /// The smallest subnormal (spacing of the subnormal grid).
    ulp_sub: f64,
    /// Relative tolerance of the comparisons.
    rtol: f64,
}

const F32: Prec = Prec {
    tiny: 1e-40,
    k: 133,
    ulp_sub: f32::from_bits(1) as f64,
    rtol: 1e-4,
};
const F64: Prec = Prec {
    tiny: 1e-310,
    k: 1030,
    ulp_sub: f64::from_bits(1),
    rtol: 1e-10,
};
const BF16: Prec = Prec {
    tiny: 1e-40,
    k: 133,
    ulp_sub: f32::from_bits(1) as f64,
    rtol: 1.6e-2,
};

/// `x·2^k` in two exact halves (2^1030 itself is not an f64).
fn pow2(x: f64, k: i32) -> f64 {
    x * 2f64.powi(k / 2) * 2f64.powi(k - k / 2)
}

fn up<S: Scalar>(x: &ArrayD<S>) -> ArrayD<f64> {
    x.mapv(|v| v.as_f64())
}

/// One entry: zero (either sign) with probability 1/5, else a uniform
/// mantissa times 10^e.
fn entry() -> impl Strategy<Value = f64> {
    prop_oneof![
        1 => prop_oneof![Just(0.0), Just(-0.0)],
        4 => (-1.0f64..1.0, -2i32..=2).prop_map(|(m, e)| m * 10f64.powi(e)),
    ]
}

/// A random m×n matrix (1 ≤ m, n ≤ 6) with, sometimes, a zeroed row or column.
fn matrix() -> impl Strategy<Value = (usize, usize, Vec<f64>)> {
    (1usize..=6, 1usize..=6)
        .prop_flat_map(|(m, n)| {
            (
                Just(m),
                Just(n),
                prop::collection::vec(entry(), m * n),
                0usize..4,
                0usize..6,
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

/// `|got·2^K − want| ≤ rtol·|want| + abs`.
fn homogeneous(got_tiny: f64, want: f64, k: i32, rtol: f64, abs: f64) -> bool {
    let got = pow2(got_tiny, k);
    got.is_finite() && (got - want).abs() <= rtol * want.abs() + abs
}

/// Positive homogeneity between a subnormal matrix and its exact
/// power-of-two scaling, for every norm (see the module doc).
fn tiny_is_homogeneous<B>(
    m: usize,
    n: usize,
    v: &[f64],
    s: f64,
    p: &Prec,
) -> Result<(), TestCaseError>
where
    B: NdLike,
    B::Scalar: NdScalar,
{
    let tiny = B::store(ArrayD::from_shape_fn(IxDyn(&[m, n]), |ix| {
        B::Scalar::of(v[ix[0] * n + ix[1]] * p.tiny)
    }));
    // The reference: the same stored values times 2^K, exactly.
    let big: ArrayD<B::Scalar> = up(&tiny).mapv(|x| B::Scalar::of(pow2(x, p.k)));
    prop_assert_eq!(up(&big).mapv(|x| pow2(x, -p.k)), up(&tiny));
    let nonzero = tiny.iter().any(|x| *x != B::Scalar::zero());
    // Rounding on the subnormal grid, seen at the reference's scale: a few
    // roundings per entry, amplified by the scale at most.
    let abs = pow2(p.ulp_sub, p.k) * (m * n + 4) as f64 * (1.0 + s) * 4.0;
    for (_, mut norm) in all_norms::<B>(s) {
        let name = norm.name();
        let mut dt = ArrayD::from_elem(tiny.raw_dim(), B::Scalar::of(7.0));
        let mut db = dt.clone();
        let ipt = norm.lmo(&tiny, &mut dt).unwrap().as_f64();
        let ipb = norm.lmo(&big, &mut db).unwrap().as_f64();
        prop_assert!(
            dt.iter().all(|x| x.is_finite()),
            "{name}: lmo of a subnormal matrix is not finite: {dt:?}"
        );
        for (x, y) in up(&dt).iter().zip(up(&db).iter()) {
            prop_assert!(
                (x - y).abs() <= p.rtol * (1.0 + y.abs()),
                "{name}: lmo(tiny) {x} vs lmo(2^K·tiny) {y}"
            );
        }
        prop_assert!(
            homogeneous(ipt, ipb, p.k, p.rtol, abs),
            "{name}: <g,lmo(g)> {ipt} ·2^K vs {ipb}"
        );
        let (nt, nb) = (
            norm.norm(&tiny).unwrap().as_f64(),
            norm.norm(&big).unwrap().as_f64(),
        );
        prop_assert!(
            homogeneous(nt, nb, p.k, p.rtol, abs),
            "{name}: norm {nt} ·2^K vs {nb}"
        );
        let (ut, ub) = (
            norm.dual_norm(&tiny).unwrap().as_f64(),
            norm.dual_norm(&big).unwrap().as_f64(),
        );
        prop_assert!(
            homogeneous(ut, ub, p.k, p.rtol, abs),
            "{name}: dual {ut} ·2^K vs {ub}"
        );
        let dn = norm.norm(&dt).unwrap().as_f64();
        if nonzero {
            prop_assert!(
                (dn - 1.0).abs() <= 4.0 * p.rtol,
                "{name}: ‖lmo(tiny)‖ = {dn}"
            );
        } else {
            prop_assert!(ipt == 0.0 && dn == 0.0, "{name}: lmo(0) must be 0");
        }
    }
    Ok(())
}

/// ±0 matrices: every norm, dual norm and LMO is exactly 0.
fn signed_zeros<B>(m: usize, n: usize, signs: &[bool]) -> Result<(), TestCaseError>
where
    B: NdLike,
    B::Scalar: NdScalar,
{
    let z = ArrayD::from_shape_fn(IxDyn(&[m, n]), |ix| {
        let neg = signs[(ix[0] * n + ix[1]) % signs.len()];
        B::Scalar::of(if neg { -0.0 } else { 0.0 })
    });
    for (_, mut norm) in all_norms::<B>(3.0) {
        let name = norm.name();
        let mut d = ArrayD::from_elem(z.raw_dim(), B::Scalar::of(7.0));
        let ip = norm.lmo(&z, &mut d).unwrap();
        prop_assert!(ip == B::Scalar::zero(), "{name}: <0, lmo(0)> = {ip}");
        prop_assert!(
            d.iter().all(|x| *x == B::Scalar::zero()),
            "{name}: lmo(±0) = {d:?}"
        );
        prop_assert!(norm.norm(&z).unwrap() == B::Scalar::zero(), "{name}");
        prop_assert!(norm.dual_norm(&z).unwrap() == B::Scalar::zero(), "{name}");
    }
    Ok(())
}

/// A 4×5 matrix with a huge block (rows 0–1, columns 0–1) and a tiny block
/// (rows 2–3, columns 2–4), zero elsewhere: columns and rows of both sizes.
fn mixed<B>(huge: f64, tiny: f64)
where
    B: NdLike,
    B::Scalar: NdScalar,
{
    let g = B::store(ArrayD::from_shape_fn(IxDyn(&[4, 5]), |ix| {
        let (i, j) = (ix[0], ix[1]);
        let w = 1.0 + ((i * 5 + j) % 7) as f64 / 7.0;
        let sign = if (i + 2 * j) % 3 == 0 { -1.0 } else { 1.0 };
        B::Scalar::of(if i < 2 && j < 2 {
            sign * w * huge
        } else if i >= 2 && j >= 2 {
            sign * w * tiny
        } else {
            0.0
        })
    }));
    assert!(g.iter().all(|x| x.is_finite()));
    let s = 1.5;
    for (_, mut norm) in all_norms::<B>(s) {
        let name = norm.name();
        let mut d = ArrayD::from_elem(g.raw_dim(), B::Scalar::of(7.0));
        let ip = norm.lmo(&g, &mut d).unwrap().as_f64();
        let dual = norm.dual_norm(&g).unwrap().as_f64();
        let nrm = norm.norm(&g).unwrap().as_f64();
        assert!(
            ip.is_finite() && dual.is_finite() && nrm.is_finite(),
            "{name}: ip {ip}, dual {dual}, norm {nrm}"
        );
        assert!(
            d.iter().all(|x| x.is_finite()),
            "{name}: lmo not finite: {d:?}"
        );
        let tol = 1e-2;
        assert!(
            (ip + dual).abs() <= tol * dual,
            "{name}: <g,lmo> {ip} vs -dual {dual}"
        );
        let dot = B::dot(&g, &d).as_f64();
        assert!((dot - ip).abs() <= tol * dual, "{name}: dot {dot} vs {ip}");
        let dn = norm.norm(&d).unwrap().as_f64();
        assert!((dn - 1.0).abs() <= tol, "{name}: ‖lmo(g)‖ = {dn}");
    }
    // Col/row norms: every nonzero column (row) of the LMO has ℓ2 norm s,
    // the tiny ones included (the huge and the tiny block are normalized
    // separately).
    let d64 = |mut norm: Box<dyn Norm<B>>| {
        let mut d = g.clone();
        norm.lmo(&g, &mut d).unwrap();
        up(&d)
    };
    let g64 = up(&g);
    let dc = d64(Box::new(ColNorm::<B::Scalar>::new().with_scale(s).unwrap()));
    for (gc, dcol) in g64.columns().into_iter().zip(dc.columns()) {
        if gc.iter().any(|x| *x != 0.0) {
            let l2 = dcol.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!((l2 - s).abs() <= 1e-2 * s, "col-norm: column norm {l2}");
        }
    }
    let dr = d64(Box::new(RowNorm::<B::Scalar>::new().with_scale(s).unwrap()));
    for (gr, drow) in g64.rows().into_iter().zip(dr.rows()) {
        if gr.iter().any(|x| *x != 0.0) {
            let l2 = drow.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!((l2 - s).abs() <= 1e-2 * s, "row-norm: row norm {l2}");
        }
    }
}

/// Every norm on every empty shape: exactly 0, or `UnsupportedRank(1)` for
/// a matrix norm on a vector; never NaN, never a panic.
fn empty_shapes<B>()
where
    B: NdLike,
    B::Scalar: NdScalar,
{
    for dims in [&[0usize, 3][..], &[3, 0], &[0, 0], &[0], &[0, 2, 3, 3]] {
        let g = ArrayD::<B::Scalar>::zeros(IxDyn(dims));
        for s in [1.0, 0.25] {
            for (is_matrix, mut norm) in all_norms::<B>(s) {
                let name = norm.name();
                let mut out = g.clone();
                if is_matrix && dims.len() != 2 {
                    let e = Err(LmoError::UnsupportedRank(dims.len()));
                    assert_eq!(norm.norm(&g), e, "{name} {dims:?}");
                    assert_eq!(norm.dual_norm(&g), e, "{name} {dims:?}");
                    assert_eq!(norm.lmo(&g, &mut out), e, "{name} {dims:?}");
                    assert_eq!(norm.check_shape(&B::shape(&g)), e.map(|_| ()));
                } else {
                    let zero = Ok(B::Scalar::zero());
                    assert_eq!(norm.norm(&g), zero, "{name} {dims:?} norm");
                    assert_eq!(norm.dual_norm(&g), zero, "{name} {dims:?} dual");
                    assert_eq!(norm.lmo(&g, &mut out), zero, "{name} {dims:?} lmo");
                    assert_eq!(norm.check_shape(&B::shape(&g)), Ok(()));
                }
                assert_eq!(out.shape(), dims, "{name}: out reshaped");
            }
        }
    }
}

macro_rules! suite {
    ($modname:ident, $b:ty, $p:expr) => {
        mod $modname {
            use super::*;

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(128))]

                #[test]
                fn subnormal_input_is_finite_and_positively_homogeneous(
                    (m, n, v) in matrix(), s in 0.1f64..10.0
                ) {
                    tiny_is_homogeneous::<$b>(m, n, &v, s, &$p)?;
                }

                #[test]
                fn signed_zero_input_gives_zero(
                    (m, n) in (1usize..=6, 1usize..=6),
                    signs in prop::collection::vec(any::<bool>(), 1..8)
                ) {
                    signed_zeros::<$b>(m, n, &signs)?;
                }
            }

            #[test]
            fn every_norm_on_every_empty_shape_is_zero_or_a_typed_error() {
                empty_shapes::<$b>();
            }
        }
    };
}

suite!(f32_backend, Nd32, F32);
suite!(f64_backend, Nd64, F64);
suite!(bf16_backend, NdBf16, BF16);
suite!(default_in_place_ops, Plain, F64);

#[test]
fn mixed_huge_and_tiny_blocks_f32() {
    mixed::<Nd32>(1e30, 1e-40);
}

#[test]
fn mixed_huge_and_tiny_blocks_f64() {
    mixed::<Nd64>(1e300, 1e-310);
}

#[test]
fn mixed_huge_and_tiny_blocks_with_the_default_in_place_ops() {
    mixed::<Plain>(1e300, 1e-310);
}

#[test]
fn mixed_huge_and_tiny_blocks_bf16() {
    mixed::<NdBf16>(1e30, 1e-40);
}

/// Tensors of rank above 4 are reported by `Backend::shape` as one flat
/// rank-4 shape `[len, 1, 1, 1]`, so two of them with the same length but
/// different dimensions pass the shape check of the entrywise norms. The
/// LMO must then work in logical row-major order (the Backend convention)
/// rather than panic; matrix norms refuse them.
fn rank_five<B>()
where
    B: NdLike,
    B::Scalar: NdScalar,
{
    let g = ArrayD::from_shape_fn(IxDyn(&[2, 3, 1, 1, 2]), |ix| {
        B::Scalar::of((ix[0] * 6 + ix[1] * 2 + ix[4]) as f64 - 5.5)
    });
    let flat = g.iter().copied().collect::<Vec<_>>();
    let flat = ArrayD::from_shape_vec(IxDyn(&[flat.len()]), flat).unwrap();
    for (is_matrix, mut norm) in all_norms::<B>(2.0) {
        let name = norm.name();
        let mut out = ArrayD::from_elem(IxDyn(&[3, 2, 1, 2, 1]), B::Scalar::of(7.0));
        if is_matrix {
            assert_eq!(norm.lmo(&g, &mut out), Err(LmoError::UnsupportedRank(4)));
            continue;
        }
        let ip = norm.lmo(&g, &mut out).unwrap();
        let mut want = flat.clone();
        let ipf = norm.lmo(&flat, &mut want).unwrap();
        assert_eq!(ip, ipf, "{name}");
        let got: Vec<_> = out.iter().copied().collect();
        assert_eq!(got, want.iter().copied().collect::<Vec<_>>(), "{name}");
        assert_eq!(B::dot(&g, &out), B::dot(&flat, &want), "{name}");
    }
    // The elementwise update of the optimizers, in the same order.
    let mut y = ArrayD::from_elem(IxDyn(&[1, 1, 1, 12, 1]), B::Scalar::of(1.0));
    B::axpby(B::Scalar::of(2.0), &g, B::Scalar::of(-1.0), &mut y);
    let want: Vec<_> = flat
        .iter()
        .map(|&v| B::Scalar::of(2.0) * v - B::Scalar::of(1.0))
        .collect();
    assert_eq!(y.iter().copied().collect::<Vec<_>>(), want);
}

#[test]
fn rank_five_tensors_work_in_flat_order_or_are_refused() {
    rank_five::<Nd32>();
    rank_five::<Nd64>();
    rank_five::<NdBf16>();
}

/// Normal but small norms with a large scale: `s/‖g‖` overflows although
/// every entry of `lmo(g) = −s·g/‖g‖` is at most `s` (the normalization
/// must come before the factor `s`). Column/row norms 1.5e-38 and 1.8e-38
/// (f32 normal), `s = 16`: `s/‖g‖ ≈ 1e39 > f32::MAX`.
#[test]
fn large_scale_over_a_small_normal_norm_stays_finite() {
    let v = [1.0, 0.0, 0.0, 1.2];
    let p = Prec {
        tiny: 1.5e-38,
        k: 126,
        ..F32
    };
    tiny_is_homogeneous::<Nd32>(2, 2, &v, 16.0, &p).unwrap();
    tiny_is_homogeneous::<NdBf16>(
        2,
        2,
        &v,
        16.0,
        &Prec {
            rtol: BF16.rtol,
            ..p
        },
    )
    .unwrap();
}
