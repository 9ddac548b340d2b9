//! The native bf16 kernel (`vdpbf16ps`) against an f64 reference on the
//! same bf16-rounded inputs: every entry within the bf16 storage rounding
//! of the exact product plus the f32 accumulation bound. Skipped (with a
//! message) on CPUs without AVX-512 BF16.

use lmo_core::{Backend, Trans};
use lmo_ndarray::{Bf16Kernel, NdBf16, bf16_kernel, native, round_bf16};
use ndarray::{Array2, ArrayD, Ix2, IxDyn};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn native() -> bool {
    if bf16_kernel() == Bf16Kernel::Avx512Bf16 {
        return true;
    }
    // The CPU says it has the instructions (and nobody forced the emulated
    // kernel): then not choosing the native kernel is a failure.
    let cpu_has = std::fs::read_to_string("/proc/cpuinfo")
        .is_ok_and(|s| s.split_whitespace().any(|f| f == "avx512_bf16"));
    let forced = std::env::var("LMO_BF16_KERNEL").is_ok_and(|v| v == "emulated");
    assert!(
        !cpu_has || forced,
        "/proc/cpuinfo lists avx512_bf16 but the bf16 kernel is {}",
        bf16_kernel()
    );
    lmo_testkit::skip(&format!(
        "the native bf16 kernel checks (kernel here: {}, native: {})",
        bf16_kernel(),
        native::available(native::Kind::Bf16)
    ));
    false
}

fn rand_bf16(rng: &mut StdRng, r: usize, c: usize, scale: f32) -> ArrayD<f32> {
    let mut x = ArrayD::from_shape_fn(IxDyn(&[r, c]), |_| scale * rng.random_range(-1.0..1.0f32));
    round_bf16(&mut x);
    x
}

fn m2(x: &ArrayD<f32>) -> Array2<f64> {
    x.view()
        .into_dimensionality::<Ix2>()
        .unwrap()
        .mapv(f64::from)
}

/// |c − (α·A·B + β·C₀)| ≤ 2⁻⁸·|exact| (storage rounding) + 2·k·2⁻²⁴·(|α|·|A|·|B| + |β·C₀|)
/// (f32 accumulation, Higham 2002, Thm 3.5), entry by entry.
#[allow(clippy::too_many_arguments)]
fn check(
    what: &str,
    got: &ArrayD<f32>,
    alpha: f64,
    a: &Array2<f64>,
    b: &Array2<f64>,
    beta: f64,
    c0: &Array2<f64>,
) {
    let exact = alpha * a.dot(b) + beta * c0;
    let mag = alpha.abs() * a.mapv(f64::abs).dot(&b.mapv(f64::abs)) + (beta * c0).mapv(f64::abs);
    let k = a.ncols() as f64;
    let got = m2(got);
    assert_eq!(got.dim(), exact.dim(), "{what}: shape");
    for ((idx, &g), (&e, &s)) in got.indexed_iter().zip(exact.iter().zip(mag.iter())) {
        let tol = e.abs() * 2f64.powi(-8) + 2.0 * (k + 2.0) * 2f64.powi(-24) * s;
        assert!(
            (g - e).abs() <= tol,
            "{what}: entry {idx:?}: {g} vs exact {e} (tol {tol:e})"
        );
        assert_eq!(
            g as f32,
            half::bf16::from_f32(g as f32).to_f32(),
            "{what}: not bf16"
        );
    }
}

#[test]
fn gemm_matches_f64_on_edge_shapes_and_layouts() {
    if !native() {
        return;
    }
    let mut rng = StdRng::seed_from_u64(7);
    // Sizes straddle MR = 12, NR = 32, MC = 96, KC and odd inner lengths.
    let dims = [1, 2, 11, 13, 31, 33, 97, 200, 513];
    for (t, &(m, k, n)) in [
        (1, 1, 1),
        (13, 1, 33),
        (12, 2, 32),
        (97, 31, 65),
        (33, 513, 11),
        (200, 300, 97),
        (130, 1100, 70),
    ]
    .iter()
    .chain(
        dims.iter()
            .map(|&d| (d, 2 * d + 1, d + 5))
            .collect::<Vec<_>>()
            .iter(),
    )
    .enumerate()
    {
        for (ta, tb) in [
            (Trans::No, Trans::No),
            (Trans::No, Trans::Yes),
            (Trans::Yes, Trans::No),
            (Trans::Yes, Trans::Yes),
        ] {
            let a = match ta {
                Trans::No => rand_bf16(&mut rng, m, k, 1.0),
                Trans::Yes => rand_bf16(&mut rng, k, m, 1.0),
            };
            let b = match tb {
                Trans::No => rand_bf16(&mut rng, k, n, 3.0),
                Trans::Yes => rand_bf16(&mut rng, n, k, 3.0),
            };
            let c0 = rand_bf16(&mut rng, m, n, 2.0);
            let (alpha, beta) = [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)][t % 3];
            let mut c = c0.clone();
            if beta == 0.0 {
                c.fill(f32::NAN); // β = 0 must not read C
            }
            NdBf16::gemm(alpha, &a, ta, &b, tb, beta, &mut c);
            let am = if ta == Trans::Yes {
                m2(&a).reversed_axes()
            } else {
                m2(&a)
            };
            let bm = if tb == Trans::Yes {
                m2(&b).reversed_axes()
            } else {
                m2(&b)
            };
            let what = format!("gemm {m}×{k}·{k}×{n} {ta:?}/{tb:?} α={alpha} β={beta}");
            check(&what, &c, alpha as f64, &am, &bm, beta as f64, &m2(&c0));
            // The fused form out = α·A·B + β·src (src ≠ out) gives the same.
            let mut out = ArrayD::from_elem(c0.raw_dim(), f32::NAN);
            NdBf16::gemm_from(alpha, &a, ta, &b, tb, beta, &c0, &mut out);
            check(
                &format!("{what} (gemm_from)"),
                &out,
                alpha as f64,
                &am,
                &bm,
                beta as f64,
                &m2(&c0),
            );
        }
    }
}

#[test]
fn syrk_matches_f64_and_is_symmetric() {
    if !native() {
        return;
    }
    let mut rng = StdRng::seed_from_u64(8);
    for &(m, k) in &[
        (1, 1),
        (5, 3),
        (12, 40),
        (33, 7),
        (97, 129),
        (250, 600),
        (300, 257),
    ] {
        for &(alpha, beta) in &[(1.0f32, 0.0f32), (-0.75, 1.0)] {
            let x = rand_bf16(&mut rng, m, k, 1.0);
            let s = rand_bf16(&mut rng, m, m, 1.0);
            let c0 = (&s + &s.t()).into_dyn(); // symmetric, as NS's accumulators
            let mut c0 = c0;
            round_bf16(&mut c0);
            let mut c = c0.clone();
            NdBf16::syrk(alpha, &x, beta, &mut c);
            let xm = m2(&x);
            let what = format!("syrk {m}×{k} α={alpha} β={beta}");
            check(
                &what,
                &c,
                alpha as f64,
                &xm,
                &xm.t().to_owned(),
                beta as f64,
                &m2(&c0),
            );
            let cm = m2(&c);
            assert_eq!(cm, cm.t(), "{what}: not symmetric");
        }
    }
}

#[test]
fn native_and_emulated_newton_schulz_agree() {
    if !native() {
        return;
    }
    // One NS5 step sequence on the native kernel vs the same arithmetic in
    // f64 with bf16 rounding after each product: both are bf16-storage
    // numerics; they differ only by f32 summation order, so the outputs
    // agree to a few bf16 ulps.
    let mut rng = StdRng::seed_from_u64(9);
    let (m, n) = (150, 410);
    let g = rand_bf16(&mut rng, m, n, 1.0);
    let (a, b, c) = (3.4445f32, -4.7750f32, 2.0315f32);
    let fro = NdBf16::norm2(&g);
    let mut x = g.clone();
    NdBf16::scale(1.0 / fro, &g, &mut x);
    let mut xr = m2(&x);
    let rb = |v: f64| half::bf16::from_f64(v).to_f64();
    let mut am = ArrayD::zeros(IxDyn(&[m, m]));
    let mut bm = am.clone();
    let mut y = x.clone();
    for _ in 0..5 {
        NdBf16::syrk(1.0, &x, 0.0, &mut am);
        NdBf16::scale(b, &am, &mut bm);
        NdBf16::syrk(c, &am, 1.0, &mut bm);
        NdBf16::scale(a, &x, &mut y);
        NdBf16::gemm(1.0, &bm, Trans::No, &x, Trans::No, 1.0, &mut y);
        std::mem::swap(&mut x, &mut y);
        // Reference.
        let ar = xr.dot(&xr.t()).mapv(rb);
        let br = (ar.mapv(|v| rb(f64::from(b) * v)) + f64::from(c) * ar.dot(&ar)).mapv(rb);
        let yr = xr.mapv(|v| rb(f64::from(a) * v));
        xr = (yr + br.dot(&xr)).mapv(rb);
    }
    let diff = (&m2(&x) - &xr).mapv(f64::abs).fold(0.0f64, |a, &b| {
        a.max(if b.is_nan() { f64::INFINITY } else { b })
    });
    assert!(
        diff < 0.03,
        "native NS5 vs f64-with-bf16-rounding: max |diff| {diff}"
    );
}

#[test]
fn round_bf16_equals_half_on_a_sweep_of_bit_patterns() {
    // Runs on every CPU: the vectorized rounding is bit-identical to
    // `half::bf16::from_f32` (round to nearest even, overflow to ±inf,
    // NaN stays NaN), including the ties and the largest finite values.
    let mut bits: Vec<u32> = (0..=u32::MAX).step_by(40_503).collect();
    bits.extend([
        0x3f80_8000, // tie, even below: stays 1.0
        0x3f81_8000, // tie, odd below: rounds up
        0x7f7f_ffff, // f32::MAX: rounds to inf
        0x7f7f_7fff,
        0x0000_0001, // smallest subnormal
        0x8000_0000,
        0x7f80_0000,
        0x7f80_0001, // signalling NaN with a low payload
        0xffc0_0000,
    ]);
    let vals: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
    let mut x = ArrayD::from_shape_vec(IxDyn(&[vals.len()]), vals.clone()).unwrap();
    round_bf16(&mut x);
    for (&v, &r) in vals.iter().zip(x.iter()) {
        let want = half::bf16::from_f32(v).to_f32();
        if want.is_nan() {
            assert!(r.is_nan(), "{v:e} ({:#x}) → {r}", v.to_bits());
        } else {
            assert_eq!(r.to_bits(), want.to_bits(), "{v:e} ({:#x})", v.to_bits());
        }
    }
}
