//! Issue 17 for the polar factors: subnormal and overflowing input, empty
//! matrices and bad arguments.
//!
//! - The Newton–Schulz normalization `X = G/(‖G‖_F·(1+δ) + ε)` of a
//!   subnormal `G` (f32 ≈ 1e-40, f64 ≈ 1e-310, bf16) or of a `G` whose
//!   Frobenius norm overflows is finite, and with ε = 0 the map is exactly
//!   scale-invariant (SPEC §2: `polar(c·G) = polar(G)`, `c > 0`): the
//!   reference is the same matrix scaled into the normal range by an exact
//!   power of two. With the default ε the output is finite and has
//!   `σ_max ≤ 1`.
//! - The spectral LMO with a converged iteration on a subnormal matrix
//!   attains the exact dual (nuclear) norm: `<G, lmo(G)> = −‖G‖_*`.
//! - Exact polar factors (faer, Jacobi) are scale-invariant on subnormal
//!   input and their singular values positively homogeneous.
//! - Empty matrices: every polar factor and the spectral norms with every
//!   orthogonalizer give 0 or `Ok` with nothing written, never NaN.
//! - An empty custom coefficient list never panics; bad arguments of the
//!   exact polar factor are typed errors with the output untouched.

use lmo_core::{Backend, ExactPolar, LmoError, Norm, Orthogonalizer, Scalar, Spectral};
use lmo_ndarray::{Nd32, Nd64, NdBf16, NdScalar, round_bf16};
use ndarray::{ArrayD, IxDyn};
use orthogonalize::{
    BatchPolar, CoefficientSet, FaerPolar, NewtonSchulz, NewtonSchulzBf16, Normalization, NsConfig,
};
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};

fn gaussian(seed: u64, m: usize, n: usize) -> ArrayD<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    ArrayD::from_shape_fn(IxDyn(&[m, n]), |_| StandardNormal.sample(&mut rng))
}

fn up<S: Scalar>(x: &ArrayD<S>) -> ArrayD<f64> {
    x.mapv(|v| v.as_f64())
}

fn fro(x: &ArrayD<f64>) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// `x·2^k` in two exact halves (2^1030 itself is not an f64).
fn pow2(x: f64, k: i32) -> f64 {
    x * 2f64.powi(k / 2) * 2f64.powi(k - k / 2)
}

fn sigma_max(x: &ArrayD<f64>) -> f64 {
    FaerPolar::new().singular_values::<Nd64>(x).unwrap()[0]
}

fn sets() -> Vec<CoefficientSet> {
    vec![
        CoefficientSet::MuonQuintic,
        CoefficientSet::Cubic,
        CoefficientSet::PolarExpress,
        CoefficientSet::ModdedNanogpt,
        CoefficientSet::Custom(vec![[2.0, -1.5, 0.5], [1.5, -0.5, 0.0]]),
    ]
}

fn no_eps(cfg: NsConfig) -> NsConfig {
    let delta = cfg.coefficients.default_delta();
    cfg.with_normalization(Normalization::Frobenius { delta, eps: 0.0 })
}

/// A pair (`g`, `c·g`) with `c = 2^k` and the entries of `g` of size
/// `scale`, both exactly as the backend stores them (`store`).
fn scaled_pair<S: NdScalar>(
    m: usize,
    n: usize,
    seed: u64,
    scale: f64,
    k: i32,
    store: fn(ArrayD<S>) -> ArrayD<S>,
) -> (ArrayD<S>, ArrayD<S>) {
    let g = store(gaussian(seed, m, n).mapv(|x| S::of(x * scale)));
    let c = up(&g).mapv(|x| S::of(pow2(x, k)));
    assert_eq!(up(&c).mapv(|x| pow2(x, -k)), up(&g), "scaling not exact");
    (g, c)
}

/// Newton–Schulz on `g` (subnormal or with an overflowing norm) against
/// the exactly rescaled `reference`, for every coefficient set.
fn ns_is_scale_invariant<B>(
    g: &ArrayD<B::Scalar>,
    reference: &ArrayD<B::Scalar>,
    tol: f64,
    tiny: bool,
) where
    B: Backend<Tensor = ArrayD<<B as Backend>::Scalar>>,
    B::Scalar: NdScalar,
{
    for set in sets() {
        let name = set.name();
        // ε = 0: exactly scale-invariant.
        let mut ns = NewtonSchulz::<B>::new(no_eps(NsConfig::new(set.clone()))).unwrap();
        let mut got = g.clone();
        let mut want = g.clone();
        ns.run(g, &mut got).unwrap();
        ns.run(reference, &mut want).unwrap();
        let (got, want) = (up(&got), up(&want));
        assert!(got.iter().all(|x| x.is_finite()), "{name}: {got:?}");
        let err = fro(&(&got - &want)) / fro(&want);
        assert!(err < tol, "{name}: polar(c·G) vs polar(G): {err}");
        // Default ε (1e-7): finite; on tiny input σ_max ≤ 1 (the update
        // shrinks, as in the reference implementation), on huge input ε
        // is negligible.
        let mut ns = NewtonSchulz::<B>::new(NsConfig::new(set.clone())).unwrap();
        let mut out = g.clone();
        ns.run(g, &mut out).unwrap();
        let out = up(&out);
        assert!(out.iter().all(|x| x.is_finite()), "{name} ε: {out:?}");
        if tiny {
            assert!(sigma_max(&out) <= 1.0 + 1e-6, "{name} ε: σ_max > 1");
        } else {
            let err = fro(&(&out - &want)) / fro(&want);
            assert!(err < tol, "{name} ε: {err}");
        }
    }
}

fn keep<S>(x: ArrayD<S>) -> ArrayD<S> {
    x
}

fn to_bf16(mut x: ArrayD<f32>) -> ArrayD<f32> {
    round_bf16(&mut x);
    x
}

#[test]
fn newton_schulz_on_subnormal_input_is_finite_and_scale_invariant() {
    for (m, n) in [(5, 8), (8, 5)] {
        let (g, c) = scaled_pair::<f64>(m, n, 1, 1e-310, 1030, keep);
        ns_is_scale_invariant::<Nd64>(&g, &c, 1e-10, true);
        let (g, c) = scaled_pair::<f32>(m, n, 2, 1e-40, 133, keep);
        ns_is_scale_invariant::<Nd32>(&g, &c, 2e-4, true);
        let (g, c) = scaled_pair::<f32>(m, n, 3, 1e-40, 133, to_bf16);
        ns_is_scale_invariant::<NdBf16>(&g, &c, 0.08, true);
    }
}

#[test]
fn newton_schulz_on_an_overflowing_frobenius_norm_is_finite_and_scale_invariant() {
    // Entries near the top of the range: every entry is finite, ‖G‖_F is not.
    for (m, n) in [(5, 8), (8, 5)] {
        let (c, g) = scaled_pair::<f64>(m, n, 4, 1.0, 1022, keep);
        assert!(Nd64::norm2(&g).is_infinite());
        ns_is_scale_invariant::<Nd64>(&g, &c, 1e-10, false);
        let (c, g) = scaled_pair::<f32>(m, n, 5, 1.0, 126, keep);
        assert!(Nd32::norm2(&g).is_infinite());
        ns_is_scale_invariant::<Nd32>(&g, &c, 2e-4, false);
    }
}

#[test]
fn bf16_mixed_precision_on_subnormal_input_is_finite() {
    let (g, c) = scaled_pair::<f32>(6, 9, 6, 1e-40, 133, to_bf16);
    let cfg = no_eps(NsConfig::muon());
    let mut ns = NewtonSchulzBf16::<Nd32>::new(cfg).unwrap();
    let (mut got, mut want) = (g.clone(), g.clone());
    ns.run(&g, &mut got).unwrap();
    ns.run(&c, &mut want).unwrap();
    let (got, want) = (up(&got), up(&want));
    assert!(got.iter().all(|x| x.is_finite()), "{got:?}");
    assert!(fro(&(&got - &want)) / fro(&want) < 0.08);
}

/// The spectral LMO with a converged iteration (ε = 0) on a subnormal
/// matrix attains the exact nuclear norm, and with the default ε stays
/// finite inside the unit ball.
fn spectral_lmo_attains_dual<B>(g: &ArrayD<B::Scalar>, tol: f64)
where
    B: Backend<Tensor = ArrayD<<B as Backend>::Scalar>>,
    B::Scalar: NdScalar,
{
    let dual = Spectral::<B>::new().dual_norm(g).unwrap().as_f64();
    assert!(dual > 0.0 && dual.is_finite(), "dual {dual}");
    for rms in [false, true] {
        let cfg = no_eps(NsConfig::new(CoefficientSet::PolarExpress).with_steps(10));
        let mut sp = Spectral::with_orthogonalizer(NewtonSchulz::<B>::new(cfg).unwrap());
        let mut exact = Spectral::<B>::new();
        if rms {
            sp = sp.rms_to_rms();
            exact = exact.rms_to_rms();
        }
        let mut d = g.clone();
        let ip = sp.lmo(g, &mut d).unwrap().as_f64();
        let dual = exact.dual_norm(g).unwrap().as_f64();
        assert!(
            d.iter().all(|x| x.as_f64().is_finite()) && ip.is_finite(),
            "rms {rms}: {d:?}"
        );
        assert!(
            (ip + dual).abs() <= tol * dual,
            "rms {rms}: <g,lmo> {ip} vs −‖g‖_* {}",
            -dual
        );
        let dn = exact.norm(&d).unwrap().as_f64();
        assert!((dn - 1.0).abs() <= tol, "rms {rms}: ‖lmo‖ = {dn}");
        // Default ε: finite and ‖D‖ ≤ 1.
        let mut sp = Spectral::with_orthogonalizer(NewtonSchulz::<B>::muon());
        let mut d = g.clone();
        let ip = sp.lmo(g, &mut d).unwrap().as_f64();
        assert!(d.iter().all(|x| x.as_f64().is_finite()) && ip.is_finite());
        assert!(Spectral::<B>::new().norm(&d).unwrap().as_f64() <= 1.0 + 1e-6);
    }
}

#[test]
fn spectral_lmo_with_newton_schulz_on_subnormal_input_attains_the_dual_norm() {
    for (m, n) in [(4, 7), (7, 4)] {
        let (g, _) = scaled_pair::<f64>(m, n, 7, 1e-310, 1030, keep);
        spectral_lmo_attains_dual::<Nd64>(&g, 1e-6);
        let (g, _) = scaled_pair::<f32>(m, n, 8, 1e-40, 133, keep);
        spectral_lmo_attains_dual::<Nd32>(&g, 1e-3);
        let (g, _) = scaled_pair::<f32>(m, n, 9, 1e-39, 126, to_bf16);
        spectral_lmo_attains_dual::<NdBf16>(&g, 0.05);
    }
}

#[test]
fn exact_polar_factors_on_subnormal_input_are_scale_invariant() {
    for (m, n) in [(5, 8), (8, 5)] {
        let (g, c) = scaled_pair::<f64>(m, n, 10, 1e-310, 1030, keep);
        let (mut pg, mut pc) = (g.clone(), g.clone());
        FaerPolar::new().run::<Nd64>(&g, &mut pg).unwrap();
        FaerPolar::new().run::<Nd64>(&c, &mut pc).unwrap();
        assert!(fro(&(&pg - &pc)) < 1e-10, "faer polar");
        ExactPolar::<Nd64>::new().polar(&g, &mut pg).unwrap();
        ExactPolar::<Nd64>::new().polar(&c, &mut pc).unwrap();
        assert!(fro(&(&pg - &pc)) < 1e-10, "jacobi polar");
        let sg = FaerPolar::new().singular_values::<Nd64>(&g).unwrap();
        let sc = FaerPolar::new().singular_values::<Nd64>(&c).unwrap();
        for (a, b) in sg.iter().zip(&sc) {
            let a = pow2(*a, 1030);
            assert!((a - b).abs() <= 1e-10 * b, "σ: {a} vs {b}");
        }
        // Spectral and nuclear norms through the Jacobi SVD.
        let mut sp = Spectral::<Nd64>::new();
        let (ng, nc) = (sp.norm(&g).unwrap(), sp.norm(&c).unwrap());
        assert!(
            (pow2(ng, 1030) - nc).abs() <= 1e-10 * nc,
            "σ_max {ng} vs {nc}"
        );
        let (dg, dc) = (sp.dual_norm(&g).unwrap(), sp.dual_norm(&c).unwrap());
        assert!(
            (pow2(dg, 1030) - dc).abs() <= 1e-10 * dc,
            "nuclear {dg} vs {dc}"
        );
    }
}

/// Every polar factor and every spectral norm on every empty shape.
fn empty<B>()
where
    B: Backend<Tensor = ArrayD<<B as Backend>::Scalar>> + lmo_core::Bf16Storage,
    B::Scalar: NdScalar,
    B::Tensor: Send + Sync,
{
    let zero = B::Scalar::of(0.0);
    for dims in [[0usize, 3], [3, 0], [0, 0]] {
        let g = ArrayD::<B::Scalar>::zeros(IxDyn(&dims));
        for set in sets() {
            let mut out = g.clone();
            let cfg = NsConfig::new(set.clone());
            NewtonSchulz::<B>::new(cfg.clone())
                .unwrap()
                .run(&g, &mut out)
                .unwrap();
            let batch = BatchPolar::<B>::new(cfg.clone()).unwrap();
            let gs = vec![g.clone(), ArrayD::zeros(IxDyn(&[2, 2])), g.clone()];
            let mut outs = gs.clone();
            batch.run(&gs, &mut outs).unwrap();
            batch.run(&[], &mut []).unwrap();
            for rms in [false, true] {
                let mut sp =
                    Spectral::with_orthogonalizer(NewtonSchulz::<B>::new(cfg.clone()).unwrap());
                if rms {
                    sp = sp.rms_to_rms();
                }
                assert_eq!(sp.norm(&g), Ok(zero), "{dims:?} rms {rms}");
                assert_eq!(sp.dual_norm(&g), Ok(zero), "{dims:?} rms {rms}");
                assert_eq!(sp.lmo(&g, &mut out), Ok(zero), "{dims:?} rms {rms}");
            }
        }
        let mut out = g.clone();
        FaerPolar::new().run::<B>(&g, &mut out).unwrap();
        assert!(
            FaerPolar::new()
                .singular_values::<B>(&g)
                .unwrap()
                .is_empty()
        );
        ExactPolar::<B>::new().polar(&g, &mut out).unwrap();
        if B::OFFERS_BF16 {
            NewtonSchulzBf16::<B>::muon()
                .unwrap()
                .run(&g, &mut out)
                .unwrap();
        }
        assert_eq!(out.shape(), dims);
    }
}

#[test]
fn empty_matrices_give_zero_or_nothing_for_every_polar_factor() {
    empty::<Nd64>();
    empty::<Nd32>();
    empty::<NdBf16>();
}

#[test]
fn an_empty_custom_coefficient_list_never_panics() {
    let set = CoefficientSet::Custom(vec![]);
    // The identity step p(σ) = σ: nothing to apply.
    for i in [0, 1, 7] {
        assert_eq!(set.step(i), [1.0, 0.0, 0.0]);
    }
    assert_eq!(set.default_steps(), 0);
    let cfg = NsConfig::new(set).with_steps(3);
    let e = Err(LmoError::InvalidHyperParameter(
        "custom coefficient list is empty",
    ));
    assert_eq!(cfg.validate(), e);
    assert_eq!(NewtonSchulz::<Nd64>::new(cfg.clone()).err(), e.err());
    assert_eq!(BatchPolar::<Nd64>::new(cfg.clone()).err(), e.err());
    assert_eq!(NewtonSchulzBf16::<Nd32>::new(cfg).err(), e.err());
}

#[test]
fn exact_polar_refuses_bad_arguments_and_leaves_out_untouched() {
    let g = gaussian(11, 3, 4);
    let mut ep = ExactPolar::<Nd64>::new();
    for dims in [&[4usize, 3][..], &[3, 5], &[12]] {
        let mut out = ArrayD::from_elem(IxDyn(dims), 7.0);
        assert!(
            matches!(ep.polar(&g, &mut out), Err(LmoError::ShapeMismatch { .. })),
            "{dims:?}"
        );
        assert!(out.iter().all(|v| *v == 7.0), "{dims:?}: out written");
    }
    let v = ArrayD::from_elem(IxDyn(&[5]), 1.0);
    let mut vo = v.clone();
    assert_eq!(ep.polar(&v, &mut vo), Err(LmoError::UnsupportedRank(1)));
    let mut bad = g.clone();
    bad[[1, 2]] = f64::NAN;
    let mut out = ArrayD::from_elem(IxDyn(&[3, 4]), 7.0);
    assert_eq!(ep.polar(&bad, &mut out), Err(LmoError::NonFinite));
    assert!(out.iter().all(|v| *v == 7.0));
    // And it still works afterwards.
    ep.polar(&g, &mut out).unwrap();
    let mut want = out.clone();
    FaerPolar::new().run::<Nd64>(&g, &mut want).unwrap();
    assert!(fro(&(&out - &want)) < 1e-12);
}
