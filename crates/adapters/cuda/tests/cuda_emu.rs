//! The CPU kernel emulator (feature `emu`): what it refuses, and the
//! parts of the CUDA backend the GPU tests of `cuda.rs` (which also run on
//! the emulator) do not reach: every kernel in bf16 storage as well as
//! f32, reductions past the grid-stride bound, the polar plan for every
//! coefficient set and more shapes, graph replay. No GPU needed.
//!
//! Tolerances: elementwise kernels equal the formula evaluated in f32 and
//! rounded once to the storage (4e-7 relative in f32: NVRTC would contract
//! `a·b + c` into an fma, the emulator does not; one bf16 step, 2⁻⁸, in
//! bf16). f64 reductions: 1e-12 relative (summation order). Polar factors:
//! the bounds of the host interpreter's test (f32 2e-5, bf16 3e-2, Polar
//! Express in bf16 1e-1).
#![cfg(feature = "emu")]

use std::sync::Arc;

use half::bf16;
use lmo_core::{AdamWStep, Backend, Orthogonalizer, Trans};
use lmo_cuda::cmd::{Arg, Cmd, Launch, StridedGemm};
use lmo_cuda::step::{self, DeviceScalars};
use lmo_cuda::{Cuda, CudaDevice, CudaError, CudaTensor, DType, PolarPlan, UpdateCoeffs, emu};
use lmo_ndarray::Nd32;
use lmo_testkit::randn;
use ndarray::{ArrayD, IxDyn};
use orthogonalize::{CoefficientSet, NewtonSchulz, NsConfig};
use rand::{SeedableRng, rngs::StdRng};

/// max |a − b| / max|b|; a NaN difference counts as +∞ (never passes).
fn rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-30f32, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (x - y).abs();
            if d.is_nan() { f32::INFINITY } else { d }
        })
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

const BOTH: [DType; 2] = [DType::F32, DType::Bf16];

fn tol(d: DType) -> f32 {
    match d {
        DType::F32 => 4e-7,
        DType::Bf16 => 2f32.powi(-8),
    }
}

fn emu() -> Arc<CudaDevice> {
    CudaDevice::emulated()
}

fn t(dev: &Arc<CudaDevice>, v: &[f32], dims: &[usize], d: DType) -> CudaTensor {
    dev.tensor(v, dims, d).unwrap()
}

/// Issues one command on the emulated device and returns its error text.
fn refused(dev: &CudaDevice, c: &Cmd) -> String {
    // SAFETY: the emulator checks every address before touching memory.
    match unsafe { dev.issue(c) } {
        Err(CudaError::Emulator(m)) => m,
        other => panic!("expected an emulator refusal, got {other:?}"),
    }
}

/// Every kernel the CUDA backend loads is compiled into the emulator, for
/// both storages.
#[test]
fn the_emulator_has_every_kernel() {
    assert!(emu::has_every_kernel());
    assert!(!emu::has_kernel("no_such_kernel", DType::F32));
    let dev = emu();
    assert!(dev.is_emulated() && dev.stream().is_none());
}

/// The emulator refuses what a GPU would silently misread: a wrong
/// argument count, an argument of the wrong kind (an `int` where the
/// kernel takes `long long`), an address outside every live buffer
/// (including one that was freed), dimensions beyond CUDA's limits, a
/// full-mask shuffle in a partial warp, GEMM operands that overrun their
/// buffer or a leading dimension below the rows; and it reports a
/// divergent barrier and a deadlock (kernels written to have them).
#[test]
fn the_emulator_refuses_bad_commands() {
    let dev = emu();
    let x = t(&dev, &[0.0; 8], &[8], DType::F32);
    let p = x.address();
    let shape = ([1, 1, 1], [32, 1, 1]);
    let fill = |args: &[Arg]| Cmd::Launch(Launch::new("fill", DType::F32, shape, args));
    // fill_f32(float* x, float v, long long n).
    let m = refused(&dev, &fill(&[Arg::Ptr(p), Arg::F32(1.0), Arg::I32(8)]));
    assert!(
        m.contains("argument 2 passed as i32, the kernel takes i64"),
        "{m}"
    );
    let m = refused(&dev, &fill(&[Arg::Ptr(p), Arg::F32(1.0)]));
    assert!(m.contains("2 arguments passed, the kernel takes 3"), "{m}");
    let m = refused(&dev, &fill(&[Arg::Ptr(8), Arg::F32(1.0), Arg::I64(8)]));
    assert!(m.contains("outside every live buffer"), "{m}");
    let big = Cmd::Launch(Launch::new(
        "fill",
        DType::F32,
        ([1, 70_000, 1], [32, 1, 1]),
        &[Arg::Ptr(p), Arg::F32(1.0), Arg::I64(8)],
    ));
    assert!(refused(&dev, &big).contains("CUDA limits"));
    let acc = DeviceScalars::new(&dev, 1).unwrap();
    let odd = Cmd::Launch(Launch::new(
        "sumsq",
        DType::F32,
        ([1, 1, 1], [48, 1, 1]),
        &[Arg::Ptr(p), Arg::Ptr(acc.address()), Arg::I64(8)],
    ));
    assert!(refused(&dev, &odd).contains("partial warp"));
    // A 3×3 GEMM on an 8-element buffer overruns it; ld 2 < 3 rows.
    let y = t(&dev, &[0.0; 9], &[9], DType::F32);
    let g = |ld: usize| StridedGemm {
        ta: false,
        tb: false,
        m: 3,
        n: 3,
        k: 3,
        alpha: 1.0,
        a: (p, ld, 0),
        b: (y.address(), 3, 0),
        beta: 0.0,
        c: (y.address(), 3, 0),
        batch: 1,
        dtype: DType::F32,
    };
    assert!(refused(&dev, &Cmd::Gemm(g(3))).contains("gemm A"));
    assert!(refused(&dev, &Cmd::Gemm(g(2))).contains("leading dimension 2 below its 3 rows"));
    // The emulator's own fault kernels: a barrier thread 0 skips, and half
    // a warp in a shuffle while the other half waits at a block barrier.
    let fault = |k: &'static str| {
        let l = Launch::new(k, DType::F32, shape, &[Arg::Ptr(p), Arg::I64(8)]);
        refused(&dev, &Cmd::Launch(l))
    };
    assert!(fault("emu_fault_divergent").contains("divergent barrier"));
    assert!(fault("emu_fault_deadlock").contains("deadlock"));
    // The right launch fills x (any grid: grid-stride loops), also after a
    // deadlock abandoned the stuck threads.
    // SAFETY: x holds 8 f32 values.
    unsafe { dev.issue(&fill(&[Arg::Ptr(p), Arg::F32(2.5), Arg::I64(8)])) }.unwrap();
    assert_eq!(x.to_host(), vec![2.5; 8]);
    // After the tensor is dropped its address is foreign.
    drop(x);
    let m = refused(&dev, &fill(&[Arg::Ptr(p), Arg::F32(1.0), Arg::I64(8)]));
    assert!(m.contains("outside every live buffer"), "{m}");
}

/// `momentum` into member j of a stack (with the Nesterov input) and
/// `lmo_update` against its host twin `UpdateCoeffs::apply_host`, in f32
/// and bf16 storage.
#[test]
fn step_kernels_match_their_formulas_in_both_storages() {
    let dev = emu();
    let mut rng = StdRng::seed_from_u64(1);
    let (b, m, n) = (3, 17, 23);
    let per = m * n;
    for d in BOTH {
        let g0 = randn(&mut rng, per);
        let m0 = randn(&mut rng, b * per);
        let g = t(&dev, &g0, &[m, n], d);
        let mut mt = t(&dev, &m0, &[b, m, n], d);
        let mut ut = t(&dev, &vec![0.0; b * per], &[b, m, n], d);
        let (gs, ms) = (g.to_host(), mt.to_host());
        let beta = 0.9f32;
        step::momentum(&g, &mut mt, 1, Some(&mut ut), beta).unwrap();
        let mut want_m = ms.clone();
        let mut want_u = vec![0.0; b * per];
        for (i, &gi) in gs.iter().enumerate() {
            let k = per + i;
            want_m[k] = st(d, (1.0 - beta) * gi + beta * ms[k]);
            want_u[k] = st(d, beta * want_m[k] + (1.0 - beta) * gi);
        }
        assert!(rel(&mt.to_host(), &want_m) <= tol(d), "{d:?} momentum");
        assert!(rel(&ut.to_host(), &want_u) <= tol(d), "{d:?} nesterov");
        assert!(matches!(
            step::momentum(&g, &mut mt, 3, None, beta),
            Err(CudaError::Input(_))
        ));
        // lmo_update with host-computed radii (fixed and what an adaptive
        // rule gives), unconstrained and constrained, into member 1.
        let us = ut.to_host();
        for c in [
            UpdateCoeffs {
                t: 0.05,
                s: 1.5,
                weight_decay: 0.1,
                constrained: None,
            },
            UpdateCoeffs {
                t: 0.37,
                s: 0.7,
                weight_decay: 0.0,
                constrained: None,
            },
            UpdateCoeffs {
                t: 0.3,
                s: 1.0,
                weight_decay: 0.01,
                constrained: Some(2.0),
            },
        ] {
            let mut p = t(&dev, &randn(&mut rng, per), &[m, n], d);
            let mut want = p.to_host();
            step::lmo_update(&mut p, &ut, 1, &c).unwrap();
            c.apply_host(&mut want, &us[per..2 * per]);
            let want: Vec<f32> = want.into_iter().map(|v| st(d, v)).collect();
            assert!(rel(&p.to_host(), &want) <= tol(d), "{d:?} {c:?}");
        }
        // A non-finite radius is refused before anything is queued.
        let mut p = t(&dev, &randn(&mut rng, per), &[m, n], d);
        let before = p.to_host();
        let nan = UpdateCoeffs {
            t: f32::NAN,
            s: 1.0,
            weight_decay: 0.0,
            constrained: None,
        };
        assert!(matches!(
            step::lmo_update(&mut p, &ut, 1, &nan),
            Err(CudaError::Input(_))
        ));
        assert_eq!(p.to_host(), before);
    }
}

/// Reductions in f64 through warp shuffles, shared memory and atomics, on
/// sizes that need the grid-stride loops (more elements than 4096 blocks
/// × 256 threads for the scalar ones, 1024 × 256 per matrix for the
/// batched ones), in both storages; `normalize` and NaN/Inf counting.
#[test]
fn reductions_match_f64_sums() {
    let dev = emu();
    let mut rng = StdRng::seed_from_u64(2);
    for (b, m, n) in [(3, 7, 9), (1, 1100, 1000)] {
        let per = m * n;
        for d in BOTH {
            let x = t(&dev, &randn(&mut rng, b * per), &[b, m, n], d);
            let y = t(&dev, &randn(&mut rng, b * per), &[b, m, n], d);
            let (xs, ys) = (x.to_host(), y.to_host());
            let out = DeviceScalars::new(&dev, b).unwrap();
            step::batch_dot(&x, &y, &out).unwrap();
            for (k, got) in out.to_host().unwrap().iter().enumerate() {
                let want: f64 = (k * per..(k + 1) * per)
                    .map(|i| xs[i] as f64 * ys[i] as f64)
                    .sum();
                assert!(
                    (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                    "{d:?} dot {k}"
                );
            }
            let ss: f64 = xs.iter().map(|&v| v as f64 * v as f64).sum();
            let sa: f64 = xs.iter().map(|&v| (v as f64).abs()).sum();
            assert!((Cuda::norm2(&x) as f64 - ss.sqrt()).abs() <= 1e-6 * ss.sqrt());
            assert!((Cuda::sum_abs(&x) as f64 - sa).abs() <= 1e-6 * sa);
            let mut o = t(&dev, &vec![0.0; b * per], &[b, m, n], d);
            let sc = DeviceScalars::new(&dev, 1).unwrap();
            step::normalize(&x, &mut o, &sc).unwrap();
            assert!((sc.to_host().unwrap()[0] - ss).abs() <= 1e-12 * ss);
            let c = (1.0 / ss.sqrt()) as f32;
            let want: Vec<f32> = xs.iter().map(|&v| st(d, c * v)).collect();
            assert!(rel(&o.to_host(), &want) <= tol(d), "{d:?} normalize");
        }
    }
    for d in BOTH {
        let mut a = vec![1.0f32; 3000];
        a[0] = f32::NAN;
        a[2999] = f32::INFINITY;
        let ta = t(&dev, &a, &[3000], d);
        let tb = t(&dev, &[0.5, f32::NEG_INFINITY], &[2], d);
        assert_eq!(step::count_nonfinite(&dev, &[&ta, &tb]).unwrap(), 3);
        // f32::MAX rounds to Inf in bf16 storage.
        let big = t(&dev, &[f32::MAX, -1e30, 0.0], &[3], d);
        assert_eq!(Cuda::all_finite(&big), d == DType::F32);
    }
}

/// Every elementwise and line kernel of the backend in bf16 storage (the
/// GPU test covers f32): scale, sign, axpby, fill, set, scaled rows and
/// columns, row and column norms, transpose, argmax, AdamW, and GEMM/syrk
/// with bf16 operands, each against the formula on the rounded inputs.
#[test]
fn backend_ops_match_in_bf16() {
    let dev = emu();
    let mut rng = StdRng::seed_from_u64(4);
    let d = DType::Bf16;
    let (m, n) = (45, 70);
    let x = t(&dev, &randn(&mut rng, m * n), &[m, n], d);
    let xs = x.to_host();
    let mut o = Cuda::zeros_like(&x);
    Cuda::scale(-3.0, &x, &mut o);
    let want: Vec<f32> = xs.iter().map(|&v| st(d, -3.0 * v)).collect();
    assert_eq!(o.to_host(), want);
    Cuda::sign(0.25, &x, &mut o);
    let want: Vec<f32> = xs.iter().map(|&v| 0.25 * v.signum()).collect();
    assert_eq!(o.to_host(), want);
    let mut y = t(&dev, &randn(&mut rng, m * n), &[m, n], d);
    let ys = y.to_host();
    Cuda::axpby(0.5, &x, -2.0, &mut y);
    let want: Vec<f32> = xs
        .iter()
        .zip(&ys)
        .map(|(a, b)| st(d, 0.5 * a - 2.0 * b))
        .collect();
    assert!(rel(&y.to_host(), &want) <= tol(d));
    Cuda::fill(&mut y, 1.25);
    Cuda::set(&mut y, 7, -4.0);
    let mut want = vec![1.25; m * n];
    want[7] = -4.0;
    assert_eq!(y.to_host(), want);
    let (sr, sc) = (randn(&mut rng, m), randn(&mut rng, n));
    Cuda::scale_rows(&x, &sr, &mut o);
    let oh = o.to_host();
    Cuda::scale_cols(&x, &sc, &mut y);
    let yh = y.to_host();
    let (mut rn, mut cn) = (vec![0.0; m], vec![0.0; n]);
    Cuda::row_norms(&x, &mut rn);
    Cuda::col_norms(&x, &mut cn);
    for i in 0..m {
        for j in 0..n {
            assert_eq!(oh[i * n + j], st(d, sr[i] * xs[i * n + j]));
            assert_eq!(yh[i * n + j], st(d, sc[j] * xs[i * n + j]));
        }
        let w: f64 = (0..n)
            .map(|j| (xs[i * n + j] as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((rn[i] as f64 - w).abs() <= 1e-6 * w);
    }
    for (j, c) in cn.iter().enumerate() {
        let w: f64 = (0..m)
            .map(|i| (xs[i * n + j] as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((*c as f64 - w).abs() <= 1e-6 * w);
    }
    let mut tr = t(&dev, &vec![0.0; m * n], &[n, m], d);
    Cuda::transpose_into(2.0, &x, &mut tr);
    let th = tr.to_host();
    for i in 0..m {
        for j in 0..n {
            assert_eq!(th[j * m + i], st(d, 2.0 * xs[i * n + j]));
        }
    }
    let (k, v) = Cuda::argmax_abs(&x);
    let best = xs.iter().fold(0.0f32, |b, v| b.max(v.abs()));
    let first = xs.iter().position(|v| v.abs() == best).unwrap();
    assert_eq!((k, v.abs()), (first, best));
    // AdamW, one fused kernel.
    let h = AdamWStep {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        bias1: 1.0 - 0.9f32.powi(3),
        bias2: 1.0 - 0.95f32.powi(3),
    };
    let mut p = t(&dev, &randn(&mut rng, m * n), &[m, n], d);
    let mut mo = t(&dev, &randn(&mut rng, m * n), &[m, n], d);
    let vv: Vec<f32> = randn(&mut rng, m * n).iter().map(|v| v * v).collect();
    let mut ve = t(&dev, &vv, &[m, n], d);
    let (ps, ms, vs) = (p.to_host(), mo.to_host(), ve.to_host());
    Cuda::adamw(&mut p, &x, &mut mo, &mut ve, &h);
    let (ph, mh, vh) = (p.to_host(), mo.to_host(), ve.to_host());
    for i in 0..m * n {
        let mi = h.beta1 * ms[i] + (1.0 - h.beta1) * xs[i];
        let vi = h.beta2 * vs[i] + (1.0 - h.beta2) * xs[i] * xs[i];
        let upd = (mi / h.bias1) / ((vi / h.bias2).sqrt() + h.eps);
        let pi = (1.0 - h.lr * h.weight_decay) * ps[i] - h.lr * upd;
        for (got, want) in [(mh[i], mi), (vh[i], vi), (ph[i], pi)] {
            assert!((got - st(d, want)).abs() <= 2.0 * tol(d) * want.abs().max(1e-3));
        }
    }
    // GEMM with every transpose pair, and syrk (a full GEMM in bf16),
    // against f64 products of the rounded operands.
    let (a0, b0) = (randn(&mut rng, 24 * 40), randn(&mut rng, 40 * 24));
    for (ta, tb, ad, bd) in [
        (Trans::No, Trans::No, [24, 40], [40, 24]),
        (Trans::Yes, Trans::No, [40, 24], [40, 24]),
        (Trans::No, Trans::Yes, [24, 40], [24, 40]),
        (Trans::Yes, Trans::Yes, [40, 24], [24, 40]),
    ] {
        let (at, bt) = (t(&dev, &a0, &ad, d), t(&dev, &b0, &bd, d));
        let (ah, bh) = (at.to_host(), bt.to_host());
        let mut c = t(&dev, &[0.0; 24 * 24], &[24, 24], d);
        Cuda::gemm(1.5, &at, ta, &bt, tb, 0.0, &mut c);
        let ch = c.to_host();
        let ga = |i: usize, p: usize| {
            if ta == Trans::No {
                ah[i * 40 + p]
            } else {
                ah[p * 24 + i]
            }
        };
        let gb = |p: usize, j: usize| {
            if tb == Trans::No {
                bh[p * 24 + j]
            } else {
                bh[j * 40 + p]
            }
        };
        for i in 0..24 {
            for j in 0..24 {
                let w: f64 = 1.5
                    * (0..40)
                        .map(|p| ga(i, p) as f64 * gb(p, j) as f64)
                        .sum::<f64>();
                assert!(
                    (ch[i * 24 + j] as f64 - w).abs() <= 1e-2 * (1.0 + w.abs()),
                    "{ta:?}{tb:?}"
                );
            }
        }
    }
    let xa = t(&dev, &a0, &[24, 40], d);
    let mut c = t(&dev, &[0.0; 24 * 24], &[24, 24], d);
    Cuda::syrk(1.0, &xa, 0.0, &mut c);
    let (xh, ch) = (xa.to_host(), c.to_host());
    for i in 0..24 {
        for j in 0..24 {
            let w: f64 = (0..40)
                .map(|p| xh[i * 40 + p] as f64 * xh[j * 40 + p] as f64)
                .sum();
            assert!((ch[i * 24 + j] as f64 - w).abs() <= 1e-2 * (1.0 + w.abs()));
        }
    }
}

/// The polar plan on the emulated device (the batch_sumsq and
/// normalization kernels, tiled transposes for tall stacks, the
/// conversions, every copy and strided-batched GEMM with its addresses,
/// leading dimensions and strides) equals `NewtonSchulz::<Nd32>` matrix by
/// matrix for every coefficient set and more shapes than the GPU test, and
/// agrees with the host interpreter `PolarPlan::simulate`. A replayed
/// graph (the recorded commands) reads its input's current values.
#[test]
fn emulated_plan_matches_newton_schulz() {
    let dev = emu();
    let mut rng = StdRng::seed_from_u64(9);
    let batch = 3;
    let cfgs = [
        NsConfig::muon(),
        NsConfig::new(CoefficientSet::PolarExpress),
        NsConfig::new(CoefficientSet::Cubic).with_steps(8),
    ];
    let polar_cpu = |cfg: &NsConfig, g: &[f32], m: usize, n: usize| -> Vec<f32> {
        let mut want = Vec::new();
        for b in 0..batch {
            let gn = ArrayD::from_shape_vec(IxDyn(&[m, n]), g[b * m * n..(b + 1) * m * n].to_vec())
                .unwrap();
            let mut on = Nd32::zeros_like(&gn);
            NewtonSchulz::<Nd32>::new(cfg.clone())
                .unwrap()
                .polar(&gn, &mut on)
                .unwrap();
            want.extend(on.iter().copied());
        }
        want
    };
    for cfg in &cfgs {
        for (m, n) in [(24, 40), (40, 24), (1, 17), (17, 1), (16, 16), (70, 33)] {
            let g = randn(&mut rng, batch * m * n);
            let want = polar_cpu(cfg, &g, m, n);
            for (io, work, tol) in [
                (DType::F32, DType::F32, 2e-5),
                (DType::Bf16, DType::Bf16, 3e-2),
                (DType::F32, DType::Bf16, 3e-2),
            ] {
                let mut plan = PolarPlan::mixed(&dev, cfg, batch, m, n, io, work).unwrap();
                let gt = t(&dev, &g, &[batch, m, n], io);
                let mut out = t(&dev, &vec![0.0; g.len()], &[batch, m, n], io);
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
                if work == DType::F32 {
                    let sim = PolarPlan::simulate(cfg, batch, m, n, io, work, &g).unwrap();
                    let e = rel(&got, &sim);
                    assert!(e < 1e-6, "emulator vs interpreter {m}×{n}: {e:e}");
                }
            }
        }
    }
    // Graph replay: the captured commands run again on new input values
    // at the same address and give those values' polar factor.
    let (m, n) = (40, 24);
    let mut plan = PolarPlan::new(&dev, &NsConfig::muon(), batch, m, n, DType::F32)
        .unwrap()
        .with_graphs(true);
    let mut gt = t(
        &dev,
        &randn(&mut rng, batch * m * n),
        &[batch, m, n],
        DType::F32,
    );
    let mut out = t(&dev, &vec![0.0; batch * m * n], &[batch, m, n], DType::F32);
    plan.run(&gt, &mut out).unwrap();
    let g2 = randn(&mut rng, batch * m * n);
    Cuda::copy_from_slice(&g2, &mut gt);
    plan.run(&gt, &mut out).unwrap();
    let e = rel(&out.to_host(), &polar_cpu(&NsConfig::muon(), &g2, m, n));
    assert!(e < 2e-5, "replayed graph: {e:e}");
}
