//! The device-resident path on the CPU kernel emulator (feature
//! `cuda-emu`): the commands the GPU would receive (kernel names, launch
//! shapes, argument lists, addresses, strides), run over host memory with
//! the kernels of `cuda_kernels.cu` compiled as C++, against the SPEC
//! formulas and the CPU references. No GPU needed.
//!
//! Tolerances: elementwise kernels in f32 equal the formula evaluated in
//! f32 to 1 ulp-scale (4e-7 relative; NVRTC would contract `a·b + c` into
//! an fma, the emulator does not); in bf16 the formula rounded once per
//! store (exact agreement is expected where the test rounds the same way).
//! f64 reductions: 1e-12 relative (summation order). Polar factors: the
//! same bounds as the host interpreter's test (f32 2e-5, bf16 3e-2, Polar
//! Express in bf16 1e-1).
#![cfg(feature = "cuda-emu")]

use half::bf16;
use lmo_core::{AdamWStep, Backend, Orthogonalizer};
use lmo_ndarray::Nd32;
use ndarray::{ArrayD, IxDyn};
use orthogonalize::cuda::cmd::{Arg, Launch};
use orthogonalize::cuda::emu::{self, EmuPlan, EmuScalars, EmuTensor};
use orthogonalize::cuda::{CudaError, DType, PolarPlan, UpdateCoeffs};
use orthogonalize::{CoefficientSet, NewtonSchulz, NsConfig};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

fn randn(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect()
}

fn rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-30f32, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / scale
}

/// Rounds like a store to `d`.
fn st(d: DType, v: f32) -> f32 {
    match d {
        DType::F32 => v,
        DType::Bf16 => bf16::from_f32(v).to_f32(),
    }
}

fn tensor(v: &[f32], dims: &[usize], d: DType) -> EmuTensor {
    EmuTensor::new(v, dims, d).unwrap()
}

const BOTH: [DType; 2] = [DType::F32, DType::Bf16];

fn tol(d: DType) -> f32 {
    match d {
        DType::F32 => 4e-7,
        // One bf16 rounding of a value computed in another order.
        DType::Bf16 => 2f32.powi(-8),
    }
}

/// Every kernel the CUDA backend loads is compiled into the emulator, for
/// both storages.
#[test]
fn the_emulator_has_every_kernel() {
    assert!(emu::has_every_kernel());
    assert!(!emu::has_kernel("no_such_kernel", DType::F32));
}

/// The launcher refuses what a GPU would silently misread: a wrong
/// argument count, an argument of the wrong kind (an `int` where the
/// kernel takes `long long`), a pointer outside every buffer, launch
/// dimensions beyond CUDA's limits.
#[test]
fn the_launcher_checks_arguments_and_dimensions() {
    let mut x = EmuTensor::zeros(&[8], DType::F32);
    let ptr = x.address();
    let shape = ([1, 1, 1], [32, 1, 1]);
    let fill = |args: &[Arg]| Launch::new("fill", DType::F32, shape, args);
    // fill_f32(float* x, float v, long long n).
    let l = fill(&[Arg::Ptr(8), Arg::F32(1.0), Arg::I64(8)]);
    let e = emu::launch(&l, &mut [&mut x], &mut []).unwrap_err();
    assert!(
        matches!(&e, CudaError::Emulator(m) if m.contains("outside every buffer")),
        "{e}"
    );
    let l = fill(&[Arg::Ptr(ptr), Arg::F32(1.0), Arg::I32(8)]);
    let e = emu::launch(&l, &mut [&mut x], &mut []).unwrap_err();
    assert!(
        matches!(&e, CudaError::Emulator(m) if m.contains("argument 2 passed as i32, the kernel takes i64")),
        "{e}"
    );
    let l = fill(&[Arg::Ptr(ptr), Arg::F32(1.0)]);
    let e = emu::launch(&l, &mut [&mut x], &mut []).unwrap_err();
    assert!(
        matches!(&e, CudaError::Emulator(m) if m.contains("2 arguments passed, the kernel takes 3")),
        "{e}"
    );
    let too_big = Launch::new(
        "fill",
        DType::F32,
        ([1, 70_000, 1], [32, 1, 1]),
        &[Arg::Ptr(ptr), Arg::F32(1.0), Arg::I64(8)],
    );
    let e = emu::launch(&too_big, &mut [&mut x], &mut []).unwrap_err();
    assert!(
        matches!(&e, CudaError::Emulator(m) if m.contains("CUDA limits")),
        "{e}"
    );
    // A block-wide reduction in a block that is not a whole number of
    // warps: the full-mask shuffle would name missing lanes.
    let mut acc = EmuScalars::new(1);
    let ap = acc.address();
    let args = [Arg::Ptr(ptr), Arg::Ptr(ap), Arg::I64(8)];
    let odd = Launch::new("sumsq", DType::F32, ([1, 1, 1], [48, 1, 1]), &args);
    let e = emu::launch(&odd, &mut [&mut x], &mut [&mut acc]).unwrap_err();
    assert!(
        matches!(&e, CudaError::Emulator(m) if m.contains("partial warp")),
        "{e}"
    );
    // The right launch fills x, with any grid (grid-stride loop).
    let l = fill(&[Arg::Ptr(ptr), Arg::F32(2.5), Arg::I64(8)]);
    emu::launch(&l, &mut [&mut x], &mut []).unwrap();
    assert_eq!(x.to_host(), vec![2.5; 8]);
}

/// `momentum`: `M_j ← β·M_j + (1−β)·G` on member `j` of a stack, with the
/// Nesterov input `U_j ← β·M_j + (1−β)·G`; other members untouched.
#[test]
fn momentum_kernel_matches_its_formula() {
    let mut rng = StdRng::seed_from_u64(1);
    let (b, m, n) = (3, 17, 23);
    let per = m * n;
    for d in BOTH {
        let g0 = randn(&mut rng, per);
        let m0 = randn(&mut rng, b * per);
        let g = tensor(&g0, &[m, n], d);
        let mut mt = tensor(&m0, &[b, m, n], d);
        let mut ut = EmuTensor::zeros(&[b, m, n], d);
        let beta = 0.9f32;
        emu::momentum(&g, &mut mt, 1, Some(&mut ut), beta).unwrap();
        let (gs, ms) = (g.to_host(), tensor(&m0, &[b, m, n], d).to_host());
        let mut want_m = ms.clone();
        let mut want_u = vec![0.0; b * per];
        for (i, &gi) in gs.iter().enumerate() {
            let k = per + i;
            want_m[k] = st(d, (1.0 - beta) * gi + beta * ms[k]);
            want_u[k] = st(d, beta * want_m[k] + (1.0 - beta) * gi);
        }
        assert!(rel(&mt.to_host(), &want_m) <= tol(d), "{d:?} momentum");
        assert!(rel(&ut.to_host(), &want_u) <= tol(d), "{d:?} nesterov");
        // Out-of-range member and a mismatched gradient: typed errors.
        assert!(matches!(
            emu::momentum(&g, &mut mt, 3, None, beta),
            Err(CudaError::Input(_))
        ));
        let g2 = EmuTensor::zeros(&[m, n + 1], d);
        assert!(matches!(
            emu::momentum(&g2, &mut mt, 0, None, beta),
            Err(CudaError::Input(_))
        ));
    }
}

/// `batch_dot` and `normalize`: per-matrix inner products and the
/// Euclidean direction `u/‖u‖₂`, reductions in f64 (block sums through
/// warp shuffles and shared memory, then atomics), on sizes that need the
/// grid-stride loop (more elements than 1024 blocks × 256 threads).
#[test]
fn reductions_match_f64_sums() {
    let mut rng = StdRng::seed_from_u64(2);
    for (b, m, n) in [(3, 7, 9), (2, 600, 500)] {
        let per = m * n;
        for d in BOTH {
            let x = tensor(&randn(&mut rng, b * per), &[b, m, n], d);
            let y = tensor(&randn(&mut rng, b * per), &[b, m, n], d);
            let mut out = EmuScalars::new(b);
            emu::batch_dot(&x, &y, &mut out).unwrap();
            let (xs, ys) = (x.to_host(), y.to_host());
            for (k, got) in out.to_host().iter().enumerate() {
                let want: f64 = (k * per..(k + 1) * per)
                    .map(|i| xs[i] as f64 * ys[i] as f64)
                    .sum();
                assert!(
                    (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                    "{d:?} dot {k}"
                );
            }
            // normalize over the whole stack (any rank).
            let mut o = EmuTensor::zeros(&[b, m, n], d);
            let mut sc = EmuScalars::new(1);
            emu::normalize(&x, &mut o, &mut sc).unwrap();
            let ss: f64 = xs.iter().map(|&v| v as f64 * v as f64).sum();
            assert!((sc.to_host()[0] - ss).abs() <= 1e-12 * ss);
            let c = (1.0 / ss.sqrt()) as f32;
            let want: Vec<f32> = xs.iter().map(|&v| st(d, c * v)).collect();
            assert!(rel(&o.to_host(), &want) <= tol(d), "{d:?} normalize");
        }
    }
    // normalize(0) = 0, never NaN.
    let z = EmuTensor::zeros(&[5], DType::F32);
    let mut o = tensor(&[1.0; 5], &[5], DType::F32);
    emu::normalize(&z, &mut o, &mut EmuScalars::new(1)).unwrap();
    assert_eq!(o.to_host(), vec![0.0; 5]);
}

/// `lmo_update` reproduces its host twin `UpdateCoeffs::apply_host` (SPEC
/// §3's step with `D = −s·O`): constant and adaptive radii, both modes,
/// weight decay, the dual norm read from the device scalars at index j.
#[test]
fn lmo_update_kernel_matches_its_host_twin() {
    let mut rng = StdRng::seed_from_u64(3);
    let (b, m, n) = (3, 12, 20);
    let per = m * n;
    let coeffs = [
        UpdateCoeffs {
            t: 0.05,
            mult: 1.0,
            adaptive: None,
            s: 1.5,
            weight_decay: 0.1,
            constrained: None,
        },
        UpdateCoeffs {
            t: 0.0,
            mult: 0.5,
            adaptive: Some((0.5, 2.0)),
            s: 0.7,
            weight_decay: 0.0,
            constrained: None,
        },
        UpdateCoeffs {
            t: 0.3,
            mult: 1.0,
            adaptive: None,
            s: 1.0,
            weight_decay: 0.01,
            constrained: Some(2.0),
        },
    ];
    for d in BOTH {
        for c in &coeffs {
            let p0 = randn(&mut rng, per);
            let o0 = randn(&mut rng, b * per);
            let mut p = tensor(&p0, &[m, n], d);
            let o = tensor(&o0, &[b, m, n], d);
            let inner = [3.0, 7.5, 11.0];
            let sc = EmuScalars::from_values(&inner);
            emu::lmo_update(&mut p, &o, 2, &sc, c).unwrap();
            let mut want = tensor(&p0, &[m, n], d).to_host();
            let os = o.to_host();
            c.apply_host(&mut want, &os[2 * per..3 * per], inner[2]);
            let want: Vec<f32> = want.into_iter().map(|v| st(d, v)).collect();
            assert!(rel(&p.to_host(), &want) <= tol(d), "{d:?} {c:?}");
        }
    }
}

/// `nonfinite`: counts NaN and ±Inf over several tensors into one
/// counter, in both storages (bf16 keeps Inf and NaN).
#[test]
fn nonfinite_counts_nan_and_inf() {
    for d in BOTH {
        let mut a = vec![1.0f32; 3000];
        a[0] = f32::NAN;
        a[2999] = f32::INFINITY;
        let mut b = vec![0.5f32; 70];
        b[33] = f32::NEG_INFINITY;
        let (ta, tb) = (tensor(&a, &[3000], d), tensor(&b, &[7, 10], d));
        let empty = EmuTensor::zeros(&[0], d);
        assert_eq!(emu::count_nonfinite(&[&ta, &empty, &tb]).unwrap(), 3);
        let ok = tensor(&[f32::MAX, -1e30, 0.0], &[3], d);
        // f32::MAX rounds to bf16 Inf: a non-finite value in bf16 storage.
        let want = if d == DType::Bf16 { 1 } else { 0 };
        assert_eq!(emu::count_nonfinite(&[&ok]).unwrap(), want);
    }
}

/// `sign`, `scale` and the fused `adamw` against their formulas.
#[test]
fn elementwise_kernels_match_their_formulas() {
    let mut rng = StdRng::seed_from_u64(4);
    let n = 1000;
    for d in BOTH {
        let mut x0 = randn(&mut rng, n);
        x0[3] = 0.0;
        let x = tensor(&x0, &[n], d);
        let xs = x.to_host();
        let mut o = EmuTensor::zeros(&[n], d);
        emu::sign(0.25, &x, &mut o).unwrap();
        let want: Vec<f32> = xs
            .iter()
            .map(|&v| {
                if v > 0.0 {
                    0.25
                } else if v < 0.0 {
                    -0.25
                } else {
                    0.0
                }
            })
            .collect();
        assert_eq!(o.to_host(), want);
        emu::scale(-3.0, &x, &mut o).unwrap();
        let want: Vec<f32> = xs.iter().map(|&v| st(d, -3.0 * v)).collect();
        assert_eq!(o.to_host(), want);
        // AdamW.
        let h = AdamWStep {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            bias1: 1.0 - 0.9f32.powi(3),
            bias2: 1.0 - 0.95f32.powi(3),
        };
        let (p0, m0) = (randn(&mut rng, n), randn(&mut rng, n));
        let v0: Vec<f32> = randn(&mut rng, n).iter().map(|v| v * v).collect();
        let mut p = tensor(&p0, &[n], d);
        let mut m = tensor(&m0, &[n], d);
        let mut v = tensor(&v0, &[n], d);
        let (ps, ms, vs) = (p.to_host(), m.to_host(), v.to_host());
        emu::adamw(&mut p, &x, &mut m, &mut v, &h).unwrap();
        let (mut wp, mut wm, mut wv) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        for i in 0..n {
            let gi = xs[i];
            let mi = h.beta1 * ms[i] + (1.0 - h.beta1) * gi;
            let vi = h.beta2 * vs[i] + (1.0 - h.beta2) * gi * gi;
            wm[i] = st(d, mi);
            wv[i] = st(d, vi);
            let upd = (mi / h.bias1) / ((vi / h.bias2).sqrt() + h.eps);
            wp[i] = st(d, (1.0 - h.lr * h.weight_decay) * ps[i] - h.lr * upd);
        }
        // A few ulps: the update divides and takes a square root.
        let t = tol(d) * 4.0;
        assert!(rel(&m.to_host(), &wm) <= t, "{d:?} adamw m");
        assert!(rel(&v.to_host(), &wv) <= t, "{d:?} adamw v");
        assert!(rel(&p.to_host(), &wp) <= t, "{d:?} adamw p");
    }
}

/// The polar plan's commands on the emulator (the batch_sumsq and
/// normalization kernels, tiled transposes for tall stacks, the
/// conversions, every copy and strided-batched GEMM with its addresses,
/// leading dimensions and strides) equal `NewtonSchulz::<Nd32>` matrix by
/// matrix, and agree with the host interpreter `PolarPlan::simulate`.
#[test]
fn emulated_plan_matches_newton_schulz() {
    let mut rng = StdRng::seed_from_u64(9);
    let batch = 3;
    let cfgs = [
        NsConfig::muon(),
        NsConfig::new(CoefficientSet::PolarExpress),
        NsConfig::new(CoefficientSet::Cubic).with_steps(8),
    ];
    for cfg in &cfgs {
        for (m, n) in [(24, 40), (40, 24), (1, 17), (17, 1), (16, 16), (70, 33)] {
            let g = randn(&mut rng, batch * m * n);
            let mut want = Vec::new();
            for b in 0..batch {
                let gn =
                    ArrayD::from_shape_vec(IxDyn(&[m, n]), g[b * m * n..(b + 1) * m * n].to_vec())
                        .unwrap();
                let mut on = Nd32::zeros_like(&gn);
                NewtonSchulz::<Nd32>::new(cfg.clone())
                    .unwrap()
                    .polar(&gn, &mut on)
                    .unwrap();
                want.extend(on.iter().copied());
            }
            for (io, work, tol) in [
                (DType::F32, DType::F32, 2e-5),
                (DType::Bf16, DType::Bf16, 3e-2),
                (DType::F32, DType::Bf16, 3e-2),
            ] {
                let mut plan = EmuPlan::mixed(cfg, batch, m, n, io, work).unwrap();
                let gt = tensor(&g, &[batch, m, n], io);
                let mut out = EmuTensor::zeros(&[batch, m, n], io);
                plan.run(&gt, &mut out).unwrap();
                let got = out.to_host();
                let tol = if cfg.coefficients == CoefficientSet::PolarExpress && tol > 1e-3 {
                    1e-1
                } else {
                    tol
                };
                let e = rel(&got, &want);
                assert!(
                    e < tol,
                    "{:?} {m}×{n} {io:?}/{work:?}: {e:e}",
                    cfg.coefficients
                );
                // The interpreter runs the same op list with its own
                // normalization and storage model: in f32 the two agree to
                // summation order.
                if work == DType::F32 {
                    let sim = PolarPlan::simulate(cfg, batch, m, n, io, work, &g).unwrap();
                    let e = rel(&got, &sim);
                    assert!(e < 1e-6, "emulator vs interpreter {m}×{n}: {e:e}");
                }
                // A second run on the same plan (reused buffers) is identical.
                let mut again = EmuTensor::zeros(&[batch, m, n], io);
                plan.run(&gt, &mut again).unwrap();
                assert_eq!(again.to_host(), got);
            }
        }
    }
    // Shape and dtype mismatches: typed errors.
    let mut plan = EmuPlan::mixed(&NsConfig::muon(), 2, 4, 6, DType::F32, DType::F32).unwrap();
    let g = EmuTensor::zeros(&[2, 6, 4], DType::F32);
    let mut out = EmuTensor::zeros(&[2, 4, 6], DType::F32);
    assert!(matches!(plan.run(&g, &mut out), Err(CudaError::Input(_))));
    let g = EmuTensor::zeros(&[2, 4, 6], DType::Bf16);
    assert!(matches!(plan.run(&g, &mut out), Err(CudaError::Input(_))));
    assert!(EmuPlan::mixed(&NsConfig::muon(), 0, 4, 6, DType::F32, DType::F32).is_err());
}

/// The kernels the generic `Cuda` backend launches directly (tiled
/// transpose, the syrk mirror, row and column norms, scaled lines, the
/// scalar reductions, argmax), run one by one with the launch shapes the
/// backend uses, against their formulas.
#[test]
fn backend_kernels_match_their_formulas() {
    let mut rng = StdRng::seed_from_u64(5);
    let (m, n) = (45, 70);
    for d in BOTH {
        let x0 = randn(&mut rng, m * n);
        let mut x = tensor(&x0, &[m, n], d);
        let xs = x.to_host();
        let xp = x.address();
        let (mm, nn) = (Arg::I64(m as i64), Arg::I64(n as i64));
        // transpose(a, x, out, m, n): out (n×m) = a·xᵀ, 32×32 tiles.
        let mut t = EmuTensor::zeros(&[n, m], d);
        let tp = t.address();
        let shape = (
            [n.div_ceil(32) as u32, m.div_ceil(32) as u32, 1],
            [32, 8, 1],
        );
        let l = Launch::new(
            "transpose",
            d,
            shape,
            &[Arg::F32(2.0), Arg::Ptr(xp), Arg::Ptr(tp), mm, nn],
        );
        emu::launch(&l, &mut [&mut x, &mut t], &mut []).unwrap();
        let ts = t.to_host();
        for i in 0..m {
            for j in 0..n {
                assert_eq!(ts[j * m + i], st(d, 2.0 * xs[i * n + j]), "{d:?} transpose");
            }
        }
        // mirror(c, k): the lower triangle copied from the upper one.
        let k = 37;
        let mut c = tensor(&randn(&mut rng, k * k), &[k, k], d);
        let before = c.to_host();
        let cp = c.address();
        let l = Launch::new(
            "mirror",
            d,
            ([6, 1, 1], [256, 1, 1]),
            &[Arg::Ptr(cp), Arg::I64(k as i64)],
        );
        emu::launch(&l, &mut [&mut c], &mut []).unwrap();
        let after = c.to_host();
        for i in 0..k {
            for j in 0..k {
                let want = if i > j {
                    before[j * k + i]
                } else {
                    before[i * k + j]
                };
                assert_eq!(after[i * k + j], want);
            }
        }
        // row_norms (one block per row, shared-memory sums) and col_norms
        // (one thread per column): squared norms in f64.
        for (kernel, lines, shape) in [
            ("row_norms", m, ([m as u32, 1, 1], [256, 1, 1])),
            ("col_norms", n, ([1, 1, 1], [256, 1, 1])),
        ] {
            let mut acc = EmuScalars::new(lines);
            let ap = acc.address();
            let l = Launch::new(kernel, d, shape, &[Arg::Ptr(xp), Arg::Ptr(ap), mm, nn]);
            emu::launch(&l, &mut [&mut x], &mut [&mut acc]).unwrap();
            let got = acc.to_host();
            for (r, g) in got.iter().take(lines).enumerate() {
                let want: f64 = if kernel == "row_norms" {
                    (0..n).map(|j| (xs[r * n + j] as f64).powi(2)).sum()
                } else {
                    (0..m).map(|i| (xs[i * n + r] as f64).powi(2)).sum()
                };
                assert!((g - want).abs() <= 1e-12 * want, "{d:?} {kernel} {r}");
            }
        }
        // dot, sumsq, sumabs into one f64; amax then first_index.
        let y = randn(&mut rng, m * n);
        let mut yt = tensor(&y, &[m, n], d);
        let ys = yt.to_host();
        let yp = yt.address();
        let total = Arg::I64((m * n) as i64);
        let grid = ([(m * n).div_ceil(256) as u32, 1, 1], [256, 1, 1]);
        let sums: [(&str, f64); 3] = [
            (
                "dot",
                xs.iter().zip(&ys).map(|(a, b)| *a as f64 * *b as f64).sum(),
            ),
            ("sumsq", xs.iter().map(|a| (*a as f64).powi(2)).sum()),
            ("sumabs", xs.iter().map(|a| (*a as f64).abs()).sum()),
        ];
        for (kernel, want) in sums {
            let mut acc = EmuScalars::new(1);
            let ap = acc.address();
            let args: Vec<Arg> = if kernel == "dot" {
                vec![Arg::Ptr(xp), Arg::Ptr(yp), Arg::Ptr(ap), total]
            } else {
                vec![Arg::Ptr(xp), Arg::Ptr(ap), total]
            };
            let l = Launch::new(kernel, d, grid, &args);
            emu::launch(&l, &mut [&mut x, &mut yt], &mut [&mut acc]).unwrap();
            let got = acc.to_host()[0];
            assert!(
                (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                "{d:?} {kernel}"
            );
        }
        let mut bits = EmuScalars::new(1);
        let bp = bits.address();
        let l = Launch::new("amax", d, grid, &[Arg::Ptr(xp), Arg::Ptr(bp), total]);
        emu::launch(&l, &mut [&mut x], &mut [&mut bits]).unwrap();
        let amax = f32::from_bits(bits.to_host()[0].to_bits() as u32);
        let (want_i, want_v) = xs.iter().enumerate().fold((0, 0.0f32), |(bi, bv), (i, v)| {
            if v.abs() > bv { (i, v.abs()) } else { (bi, bv) }
        });
        assert_eq!(amax, want_v, "{d:?} amax");
        // first_index(x, target, out, n) with out preset to u64::MAX.
        let mut idx = EmuScalars::from_values(&[f64::from_bits(u64::MAX)]);
        let ip = idx.address();
        let l = Launch::new(
            "first_index",
            d,
            grid,
            &[Arg::Ptr(xp), Arg::Ptr(bp), Arg::Ptr(ip), total],
        );
        emu::launch(&l, &mut [&mut x], &mut [&mut bits, &mut idx]).unwrap();
        let got = idx.to_host()[0].to_bits();
        assert_eq!(got, want_i as u64, "{d:?} first_index");
        // scale_cols / scale_rows with f32 scales.
        for (kernel, lines) in [("scale_cols", n), ("scale_rows", m)] {
            let s = randn(&mut rng, lines);
            let mut sv = tensor(&s, &[lines], DType::F32);
            let sp = sv.address();
            let mut o = EmuTensor::zeros(&[m, n], d);
            let op = o.address();
            let l = Launch::new(
                kernel,
                d,
                grid,
                &[Arg::Ptr(xp), Arg::Ptr(sp), Arg::Ptr(op), mm, nn],
            );
            emu::launch(&l, &mut [&mut x, &mut sv, &mut o], &mut []).unwrap();
            let os = o.to_host();
            for i in 0..m {
                for j in 0..n {
                    let f = if kernel == "scale_cols" { s[j] } else { s[i] };
                    assert_eq!(os[i * n + j], st(d, f * xs[i * n + j]), "{d:?} {kernel}");
                }
            }
        }
        // axpby: y ← a·x + b·y.
        let l = Launch::new(
            "axpby",
            d,
            grid,
            &[
                Arg::F32(0.5),
                Arg::Ptr(xp),
                Arg::F32(-2.0),
                Arg::Ptr(yp),
                total,
            ],
        );
        emu::launch(&l, &mut [&mut x, &mut yt], &mut []).unwrap();
        let want: Vec<f32> = xs
            .iter()
            .zip(&ys)
            .map(|(a, b)| st(d, 0.5 * a + -2.0 * b))
            .collect();
        assert!(rel(&yt.to_host(), &want) <= tol(d), "{d:?} axpby");
    }
}
