//! The device-resident step (feature `cuda`).
//!
//! Without a GPU: the host side is checked against the generic optimizer
//! on the CPU: the stacking plan, its errors, and the update coefficients
//! (`update_coeffs` + `UpdateCoeffs::apply_host`, the formula the
//! `lmo_update` kernel implements) reproduce `Optimizer::<Nd32>`'s update
//! of a hidden block for every radius policy, both modes, Nesterov, weight
//! decay, RMS→RMS and a schedule, to f32 rounding (1e-5 relative).
//!
//! With a GPU: `DeviceOptimizer` against `Optimizer::<Nd32>` over three
//! steps (f32: 1e-4 relative; bf16 polar factors: 3e-2).
#![cfg(feature = "cuda")]

use gluon_optim::RadiusRule;
use gluon_optim::cuda::{BlockPlan, DevicePlan, total_scale, update_coeffs};
use gluon_optim::{
    Config, GroupConfig, Label, LmoGroup, Mode, NormSpec, OptError, Optimizer, Orth, Radius,
    Schedule, ShapeScale, presets,
};
use lmo_core::{Backend, Orthogonalizer};
use lmo_ndarray::Nd32;
use lmo_testkit::{nd, randn, rel};
use ndarray::ArrayD;
use orthogonalize::{NewtonSchulz, NsConfig};
use rand::{SeedableRng, rngs::StdRng};

fn group(norm: NormSpec, radius: Radius) -> LmoGroup {
    LmoGroup::new(norm, radius).beta(0.9)
}

fn ns() -> Orth {
    Orth::NewtonSchulz(NsConfig::muon())
}

/// The stacking plan: same label and shape share a stack, in parameter
/// order; AdamW blocks stay separate.
#[test]
fn plan_stacks_same_shapes() {
    let labels = [
        Label::Hidden,
        Label::Embedding,
        Label::Hidden,
        Label::Hidden,
        Label::Vector,
    ];
    let dims = [vec![8, 4], vec![10, 4], vec![4, 8], vec![8, 4], vec![4]];
    let p = DevicePlan::new(&presets::muon(0.02, 3e-4), &labels, &dims).unwrap();
    assert_eq!(p.stacks.len(), 2);
    assert_eq!(p.stacks[0].members, vec![0, 3]);
    assert_eq!(p.stacks[0].dims, (8, 4));
    assert_eq!(p.stacks[1].members, vec![2]);
    assert_eq!(p.blocks[3], BlockPlan::Lmo { stack: 0, index: 1 });
    assert!(matches!(p.blocks[1], BlockPlan::AdamW(_)));
    assert!(matches!(p.blocks[4], BlockPlan::AdamW(_)));
    assert_eq!(p.stacks[0].work, None);
    let bf = DevicePlan::new(&presets::muon(0.02, 3e-4).with_bf16_polar(), &labels, &dims).unwrap();
    assert_eq!(bf.stacks[0].work, Some(lmo_cuda::DType::Bf16));
}

/// What has no device path is refused at construction, with the block.
#[test]
fn plan_refuses_what_has_no_device_path() {
    let one = |norm: NormSpec, dims: Vec<usize>| {
        let c = Config::new().group(
            Label::Hidden,
            GroupConfig::Lmo(group(norm, Radius::Constant(0.1))),
        );
        DevicePlan::new(&c, &[Label::Hidden], &[dims])
    };
    for (norm, why) in [
        (NormSpec::L1, "no ℓ1, column-, row- or custom-norm LMO"),
        (NormSpec::ColNorm, "no ℓ1, column-, row- or custom-norm LMO"),
        (NormSpec::RowNorm, "no ℓ1, column-, row- or custom-norm LMO"),
        (NormSpec::Spectral(Orth::Exact), "exact polar factor"),
        (NormSpec::RmsToRms(Orth::Exact), "exact polar factor"),
    ] {
        match one(norm.clone(), vec![4, 4]) {
            Err(OptError::Lmo {
                block: 0,
                error: lmo_core::LmoError::InvalidHyperParameter(msg),
            }) => assert!(msg.contains(why), "{norm:?}: {msg}"),
            other => panic!("{norm:?}: {other:?}"),
        }
    }
    assert!(matches!(
        one(NormSpec::Spectral(ns()), vec![2, 3, 4]),
        Err(OptError::Lmo {
            block: 0,
            error: lmo_core::LmoError::UnsupportedRank(3)
        })
    ));
    assert_eq!(
        DevicePlan::new(&presets::muon(0.02, 3e-4), &[Label::Hidden], &[]),
        Err(OptError::CountMismatch {
            expected: 1,
            found: 0
        })
    );
    let c = Config::new();
    assert!(matches!(
        DevicePlan::new(&c, &[Label::Head], &[vec![3, 3]]),
        Err(OptError::NoGroup(Label::Head))
    ));
}

/// Sign, Frobenius and vector-RMS groups are elementwise blocks; Scion and
/// Gluon (whose embeddings, head and vectors use them) plan whole.
#[test]
fn plan_takes_elementwise_groups() {
    use gluon_optim::cuda::ElemKind;
    let labels = [Label::Embedding, Label::Hidden, Label::Vector, Label::Head];
    let dims = [vec![10, 4], vec![4, 4], vec![4], vec![10, 4]];
    for cfg in [
        presets::scion(0.01, false),
        presets::gluon((0.5, 2.0), (0.5, 1.0), 0.9),
    ] {
        let p = DevicePlan::new(&cfg, &labels, &dims).unwrap();
        let kind = |i: usize| match &p.blocks[i] {
            BlockPlan::Elementwise { kind, .. } => Some(*kind),
            _ => None,
        };
        assert_eq!(kind(0), Some(ElemKind::Sign));
        assert_eq!(p.blocks[1], BlockPlan::Lmo { stack: 0, index: 0 });
        assert_eq!(kind(2), Some(ElemKind::Euclidean));
        assert_eq!(kind(3), Some(ElemKind::Sign));
    }
}

/// The LMO direction `O` (the update is `−s·O`) the device computes for
/// the LMO input `u` of a block of group `g`, on the CPU.
fn direction(g: &LmoGroup, u: &[f32], dims: &[usize]) -> Vec<f32> {
    match &g.norm {
        NormSpec::Sign => u
            .iter()
            .map(|x| {
                if *x > 0.0 {
                    1.0
                } else if *x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            })
            .collect(),
        NormSpec::Frobenius | NormSpec::VectorRms => {
            let n = u.iter().map(|x| *x as f64 * *x as f64).sum::<f64>().sqrt();
            u.iter().map(|x| (*x as f64 / n) as f32).collect()
        }
        _ => {
            let un = nd(u, dims);
            let mut o = Nd32::zeros_like(&un);
            NewtonSchulz::<Nd32>::new(NsConfig::muon())
                .unwrap()
                .polar(&un, &mut o)
                .unwrap();
            o.iter().copied().collect()
        }
    }
}

/// `update_coeffs` + `apply_host` (the `lmo_update` kernel's formula)
/// reproduce the generic optimizer's first step of a block, for spectral,
/// RMS→RMS, sign, Frobenius and vector-RMS groups.
#[test]
fn update_coeffs_reproduce_the_generic_step() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut cases: Vec<(LmoGroup, Vec<usize>)> = Vec::new();
    for (m, n) in [(12usize, 8usize), (8, 20)] {
        let dims = vec![m, n];
        let g = group(NormSpec::Spectral(ns()), Radius::Constant(0.05));
        cases.push((g, dims.clone()));
        let mut g = group(
            NormSpec::RmsToRms(ns()),
            Radius::Adaptive { l0: 2.0, l1: 0.5 },
        );
        g.weight_decay = 0.1;
        g.nesterov = true;
        cases.push((g, dims.clone()));
        let mut g = group(NormSpec::Spectral(ns()), Radius::Theory { t0: 0.3 });
        g.shape_scale = ShapeScale::MuonRatio;
        g.scale = 1.7;
        cases.push((g, dims.clone()));
        let mut g = group(NormSpec::RmsToRms(ns()), Radius::Constant(0.4));
        g.mode = Mode::Constrained { rho: 3.0 };
        g.weight_decay = 0.05;
        cases.push((g, dims.clone()));
        let mut g = group(NormSpec::Sign, Radius::Adaptive { l0: 1.0, l1: 0.3 });
        g.shape_scale = ShapeScale::InvFanIn;
        g.nesterov = true;
        cases.push((g, dims.clone()));
        let mut g = group(NormSpec::Frobenius, Radius::Constant(0.2));
        g.weight_decay = 0.1;
        cases.push((g, dims));
    }
    for d in [vec![24], vec![7]] {
        let mut g = group(NormSpec::VectorRms, Radius::Adaptive { l0: 3.0, l1: 0.2 });
        g.mode = Mode::Constrained { rho: 2.0 };
        cases.push((g.clone(), d.clone()));
        g.radius = Radius::Constant(0.1);
        g.mode = Mode::Unconstrained;
        cases.push((g, d));
    }
    for (g, dims) in cases {
        let numel: usize = dims.iter().product();
        let config = Config::new()
            .group(Label::Hidden, GroupConfig::Lmo(g.clone()))
            .schedule(Schedule::Warmup { warmup: 4 });
        let p0 = randn(&mut rng, numel);
        let gr = randn(&mut rng, numel);
        let mut params = vec![nd(&p0, &dims)];
        let mut opt = Optimizer::<Nd32>::new(config.clone(), vec![Label::Hidden], &params).unwrap();
        opt.step(&mut params, &[nd(&gr, &dims)]).unwrap();

        // The same step by hand: momentum from zero, the direction on the
        // CPU, then the device update formula.
        let beta = gluon_optim::momentum(&g, 0) as f32;
        let mom: Vec<f32> = gr.iter().map(|x| (1.0 - beta) * x).collect();
        let u: Vec<f32> = if g.nesterov {
            mom.iter()
                .zip(&gr)
                .map(|(mi, gi)| beta * mi + (1.0 - beta) * gi)
                .collect()
        } else {
            mom
        };
        let o = direction(&g, &u, &dims);
        let inner: f64 = u.iter().zip(&o).map(|(a, b)| *a as f64 * *b as f64).sum();
        // Phase 3 on the host, as the device step does it: the dual norm
        // s·⟨U, O⟩ into the group's radius rule.
        let dual = (total_scale(&g, &dims) * inner).max(0.0);
        let t = RadiusRule::new(&g.radius, 0, config.schedule.at(0)).at(dual);
        let c = update_coeffs(&g, &dims, t);
        let mut want = p0.clone();
        c.apply_host(&mut want, &o);
        let got: Vec<f32> = params[0].iter().copied().collect();
        let e = rel(&got, &want);
        assert!(e < 1e-5, "{g:?} {dims:?}: {e:e}");
        // And the step moved the parameters (the check is not vacuous).
        assert!(rel(&got, &p0) > 1e-4, "{g:?}: no update");
    }
}

/// `DeviceOptimizer` against `Optimizer::<Nd32>` over three steps, on the
/// GPU and on the emulator.
#[test]
fn device_step_matches_cpu() {
    for dev in lmo_testkit::cuda_devices() {
        device_step_matches_cpu_on(&dev);
    }
}

fn device_step_matches_cpu_on(dev: &std::sync::Arc<lmo_cuda::CudaDevice>) {
    use gluon_optim::cuda::DeviceOptimizer;
    use lmo_cuda::DType;
    let mut rng = StdRng::seed_from_u64(8);
    let spec = [
        (Label::Hidden, vec![48, 32]),
        (Label::Hidden, vec![32, 96]),
        (Label::Hidden, vec![48, 32]),
        (Label::Embedding, vec![50, 32]),
        (Label::Vector, vec![32]),
    ];
    let labels: Vec<Label> = spec.iter().map(|s| s.0.clone()).collect();
    for (cfg, graphs, tol) in [
        (presets::muon(0.05, 0.01), false, 1e-4),
        (presets::gluon((0.5, 2.0), (0.5, 1.0), 0.9), true, 1e-4),
        (presets::scion(0.01, true), true, 1e-4),
        (presets::muon(0.05, 0.01).with_bf16_polar(), true, 3e-2),
    ] {
        let vals: Vec<Vec<f32>> = spec
            .iter()
            .map(|s| randn(&mut rng, s.1.iter().product()))
            .collect();
        let mut pc: Vec<ArrayD<f32>> = vals.iter().zip(&spec).map(|(v, s)| nd(v, &s.1)).collect();
        let mut pg: Vec<_> = vals
            .iter()
            .zip(&spec)
            .map(|(v, s)| dev.tensor(v, &s.1, DType::F32).unwrap())
            .collect();
        let mut oc = Optimizer::<Nd32>::new(cfg.clone(), labels.clone(), &pc).unwrap();
        let mut og = DeviceOptimizer::new(dev, cfg.clone(), &labels, &pg)
            .unwrap()
            .with_graphs(graphs);
        for _ in 0..3 {
            let gv: Vec<Vec<f32>> = spec
                .iter()
                .map(|s| randn(&mut rng, s.1.iter().product()))
                .collect();
            let gc: Vec<ArrayD<f32>> = gv.iter().zip(&spec).map(|(v, s)| nd(v, &s.1)).collect();
            let gg: Vec<_> = gv
                .iter()
                .zip(&spec)
                .map(|(v, s)| dev.tensor(v, &s.1, DType::F32).unwrap())
                .collect();
            let rep = oc.step(&mut pc, &gc).unwrap().clone();
            assert!(og.step(&mut pg, &gg).unwrap());
            let duals: Vec<f64> = og
                .report()
                .unwrap()
                .blocks
                .iter()
                .map(|b| b.dual_norm)
                .collect();
            assert_eq!(rep.blocks.len(), duals.len());
            assert_eq!(rep.blocks.len(), spec.len());
            for (b, d) in rep.blocks.iter().zip(&duals) {
                assert!(
                    (b.dual_norm - d).abs() <= tol as f64 * (1.0 + b.dual_norm),
                    "dual"
                );
            }
        }
        for (c, g) in pc.iter().zip(&pg) {
            let e = rel(&g.to_host(), c.as_slice().unwrap());
            assert!(e < tol, "step differs: {e:e}");
        }
        // A NaN gradient: an error, and nothing changes.
        let before: Vec<Vec<f32>> = pg.iter().map(|p| p.to_host()).collect();
        let mut gv: Vec<Vec<f32>> = spec
            .iter()
            .map(|s| vec![0.1; s.1.iter().product()])
            .collect();
        gv[2][5] = f32::NAN;
        let gg: Vec<_> = gv
            .iter()
            .zip(&spec)
            .map(|(v, s)| dev.tensor(v, &s.1, DType::F32).unwrap())
            .collect();
        assert!(matches!(
            og.step(&mut pg, &gg),
            Err(gluon_optim::cuda::DeviceError::Opt(
                OptError::NonFiniteGradient { block: 2 }
            ))
        ));
        let after: Vec<Vec<f32>> = pg.iter().map(|p| p.to_host()).collect();
        assert_eq!(before, after);
    }
}

/// The parameters of the HostExec/emulator harnesses: two stacked hidden
/// shapes and one alone, an embedding, a head and a vector.
fn small_model() -> Vec<(Label, Vec<usize>)> {
    vec![
        (Label::Hidden, vec![24, 16]),
        (Label::Hidden, vec![16, 40]),
        (Label::Hidden, vec![24, 16]),
        (Label::Embedding, vec![30, 16]),
        (Label::Head, vec![30, 16]),
        (Label::Vector, vec![16]),
    ]
}

/// Runs without a GPU: the device step's orchestration (stacking, stack
/// offsets, Nesterov buffers, the polar op list, elementwise directions,
/// per-step β/t/bias corrections, AdamW) executed by `HostExec`, the host
/// twins of its kernels, against `Optimizer::<Nd32>` over four steps; dual
/// norms against the generic step's report; NaN handling under both
/// policies. f32: 1e-4 relative; bf16 polar factors: 3e-2.
#[test]
fn host_exec_step_matches_the_generic_optimizer() {
    use gluon_optim::cuda::{HostExec, HostTensor};
    exec_matches_the_generic_optimizer(
        || HostExec,
        |v, d| HostTensor::f32(v.to_vec(), d),
        |t| t.data.clone(),
    );
}

/// The same on the CPU kernel emulator (feature `cuda-emu`): `CudaExec`
/// on an emulated device issues the commands a GPU would receive (the
/// kernels of `cuda_kernels.cu` with their launch shapes, argument lists
/// and addresses, the polar plan's copies and strided-batched GEMMs), run
/// over host memory. What is left between this and a GPU run: the driver,
/// cuBLAS, stream capture and the device's fused multiply-adds.
#[cfg(feature = "cuda-emu")]
#[test]
fn emulated_device_step_matches_the_generic_optimizer() {
    use gluon_optim::cuda::CudaExec;
    use lmo_cuda::{CudaDevice, DType};
    let dev = CudaDevice::emulated();
    exec_matches_the_generic_optimizer(
        || CudaExec(dev.clone()),
        |v, d| dev.tensor(v, d, DType::F32).unwrap(),
        |t| t.to_host(),
    );
}

fn exec_matches_the_generic_optimizer<E: gluon_optim::cuda::Exec>(
    exec: impl Fn() -> E,
    make: impl Fn(&[f32], &[usize]) -> E::Tensor,
    values: impl Fn(&E::Tensor) -> Vec<f32>,
) {
    use gluon_optim::cuda::{DeviceError, DeviceOptimizer};
    use gluon_optim::{NonFinitePolicy, Radius};
    let mut rng = StdRng::seed_from_u64(11);
    let spec = small_model();
    let labels: Vec<Label> = spec.iter().map(|s| s.0.clone()).collect();
    let mut theory = presets::scion(0.01, false);
    if let Some(GroupConfig::Lmo(g)) = theory.groups.get_mut(&Label::Hidden) {
        g.radius = Radius::Theory { t0: 0.05 };
        g.weight_decay = 0.1;
        g.nesterov = true;
    }
    let configs = [
        (presets::muon(0.05, 0.01), 1e-4),
        (presets::gluon((0.5, 2.0), (0.5, 1.0), 0.9), 1e-4),
        (presets::scion(0.01, true), 1e-4),
        (theory.schedule(Schedule::Warmup { warmup: 3 }), 1e-4),
        (presets::muon(0.05, 0.01).with_bf16_polar(), 3e-2),
    ];
    let tensors = |vals: &[Vec<f32>]| -> Vec<E::Tensor> {
        vals.iter().zip(&spec).map(|(v, s)| make(v, &s.1)).collect()
    };
    let all = |ts: &[E::Tensor]| -> Vec<Vec<f32>> { ts.iter().map(&values).collect() };
    let fill =
        |v: f32| -> Vec<Vec<f32>> { spec.iter().map(|s| vec![v; s.1.iter().product()]).collect() };
    for (cfg, tol) in configs {
        let vals: Vec<Vec<f32>> = spec
            .iter()
            .map(|s| randn(&mut rng, s.1.iter().product()))
            .collect();
        let mut pc: Vec<ArrayD<f32>> = vals.iter().zip(&spec).map(|(v, s)| nd(v, &s.1)).collect();
        let mut ph = tensors(&vals);
        let mut oc = Optimizer::<Nd32>::new(cfg.clone(), labels.clone(), &pc).unwrap();
        let mut oh = DeviceOptimizer::with_exec(exec(), cfg.clone(), &labels, &ph).unwrap();
        for _ in 0..4 {
            let gv: Vec<Vec<f32>> = spec
                .iter()
                .map(|s| randn(&mut rng, s.1.iter().product()))
                .collect();
            let gc: Vec<ArrayD<f32>> = gv.iter().zip(&spec).map(|(v, s)| nd(v, &s.1)).collect();
            let gh = tensors(&gv);
            let rep = oc.step(&mut pc, &gc).unwrap().clone();
            assert!(oh.step(&mut ph, &gh).unwrap());
            let got = oh.report().unwrap();
            assert_eq!((got.step, got.skipped), (rep.step, false));
            assert_eq!(rep.blocks.len(), got.blocks.len());
            assert_eq!(rep.blocks.len(), spec.len());
            for (i, (b, d)) in rep.blocks.iter().zip(&got.blocks).enumerate() {
                for (what, want, found) in [
                    ("dual", b.dual_norm, d.dual_norm),
                    ("radius", b.radius, d.radius),
                ] {
                    assert!(
                        (want - found).abs() <= tol as f64 * (1.0 + want.abs()),
                        "block {i}: {what} {want} vs {found}"
                    );
                }
            }
        }
        for (i, (c, h)) in pc.iter().zip(&ph).enumerate() {
            let e = rel(&values(h), c.as_slice().unwrap());
            assert!(e < tol, "block {i} differs: {e:e}");
        }
        // A NaN gradient: an error naming the block, nothing changes.
        let before = all(&ph);
        let mut gv = fill(0.1);
        gv[3][5] = f32::NAN;
        assert!(matches!(
            oh.step(&mut ph, &tensors(&gv)),
            Err(DeviceError::Opt(OptError::NonFiniteGradient { block: 3 }))
        ));
        assert_eq!(before, all(&ph));
        assert_eq!(oh.steps(), 4);
    }
    // The skip policy: counted, nothing changes.
    let cfg = presets::muon(0.05, 0.01).non_finite(NonFinitePolicy::Skip);
    let vals: Vec<Vec<f32>> = spec
        .iter()
        .map(|s| randn(&mut rng, s.1.iter().product()))
        .collect();
    let mut ph = tensors(&vals);
    let mut oh = DeviceOptimizer::with_exec(exec(), cfg, &labels, &ph).unwrap();
    let mut gv = fill(0.1);
    gv[0][0] = f32::INFINITY;
    let mut gh = tensors(&gv);
    let before = all(&ph);
    assert!(!oh.step(&mut ph, &gh).unwrap());
    assert_eq!((oh.skipped(), oh.steps()), (1, 0));
    assert_eq!(before, all(&ph));
    // Wrong shapes and counts: typed errors, nothing changes.
    assert_eq!(spec[0].1, [24, 16]);
    gh[0] = make(&[0.1; 10], &[10]);
    assert!(matches!(
        oh.step(&mut ph, &gh),
        Err(DeviceError::Opt(OptError::Lmo {
            block: 0,
            error: lmo_core::LmoError::ShapeMismatch {
                expected: (24, 16),
                found: (1, 10)
            }
        }))
    ));
    assert!(matches!(
        oh.step(&mut ph, &gh[..2]),
        Err(DeviceError::Opt(OptError::CountMismatch {
            expected: 6,
            found: 2
        }))
    ));
    assert_eq!(before, all(&ph));
}

/// Checkpoints in the CPU optimizer's format, on `HostExec`: a device
/// state saved after 3 steps and loaded into a fresh optimizer continues
/// bit for bit; the CPU optimizer's state (same format) loads into the
/// device optimizer and reads back exactly; bad states are refused and
/// change nothing.
#[test]
fn host_exec_state_round_trips_in_the_cpu_format() {
    use gluon_optim::cuda::{HostExec, HostTensor};
    state_round_trips(
        || HostExec,
        |v, d| HostTensor::f32(v.to_vec(), d),
        |t| t.data.clone(),
    );
}

/// The same on the CPU kernel emulator (the commands a GPU receives).
#[cfg(feature = "cuda-emu")]
#[test]
fn emulated_state_round_trips_in_the_cpu_format() {
    use gluon_optim::cuda::CudaExec;
    use lmo_cuda::{CudaDevice, DType};
    let dev = CudaDevice::emulated();
    state_round_trips(
        || CudaExec(dev.clone()),
        |v, d| dev.tensor(v, d, DType::F32).unwrap(),
        |t| t.to_host(),
    );
}

fn state_round_trips<E: gluon_optim::cuda::Exec>(
    exec: impl Fn() -> E,
    make: impl Fn(&[f32], &[usize]) -> E::Tensor,
    values: impl Fn(&E::Tensor) -> Vec<f32>,
) {
    use gluon_optim::cuda::{DeviceError, DeviceOptimizer};
    use gluon_optim::{NonFinitePolicy, OptState};
    let mut rng = StdRng::seed_from_u64(21);
    let spec = small_model();
    let labels: Vec<Label> = spec.iter().map(|s| s.0.clone()).collect();
    let rand_vals = |rng: &mut StdRng| -> Vec<Vec<f32>> {
        spec.iter()
            .map(|s| randn(rng, s.1.iter().product()))
            .collect()
    };
    let tensors = |vals: &[Vec<f32>]| -> Vec<E::Tensor> {
        vals.iter().zip(&spec).map(|(v, s)| make(v, &s.1)).collect()
    };
    let all = |ts: &[E::Tensor]| -> Vec<Vec<f32>> { ts.iter().map(&values).collect() };
    let mut muon_nesterov = presets::muon(0.05, 0.01).non_finite(NonFinitePolicy::Skip);
    if let Some(GroupConfig::Lmo(g)) = muon_nesterov.groups.get_mut(&Label::Hidden) {
        g.nesterov = true;
        g.weight_decay = 0.1;
    }
    for cfg in [
        muon_nesterov,
        presets::gluon((0.5, 2.0), (0.5, 1.0), 0.9).schedule(Schedule::Warmup { warmup: 4 }),
        presets::scion(0.01, true),
    ] {
        let p0 = rand_vals(&mut rng);
        let grads: Vec<Vec<Vec<f32>>> = (0..6).map(|_| rand_vals(&mut rng)).collect();
        // Uninterrupted: 6 steps, the state saved after 3.
        let mut pa = tensors(&p0);
        let mut oa = DeviceOptimizer::with_exec(exec(), cfg.clone(), &labels, &pa).unwrap();
        for g in &grads[..3] {
            assert!(oa.step(&mut pa, &tensors(g)).unwrap());
        }
        let saved = oa.state().unwrap();
        let mid = all(&pa);
        for g in &grads[3..] {
            assert!(oa.step(&mut pa, &tensors(g)).unwrap());
        }
        // Resumed: a fresh optimizer on the parameters after 3 steps.
        let mut pb = tensors(&mid);
        let mut ob = DeviceOptimizer::with_exec(exec(), cfg.clone(), &labels, &pb).unwrap();
        ob.load_state(&saved).unwrap();
        assert_eq!(ob.steps(), 3);
        for g in &grads[3..] {
            assert!(ob.step(&mut pb, &tensors(g)).unwrap());
        }
        assert_eq!(all(&pa), all(&pb), "resumed run differs");
        assert_eq!(oa.state().unwrap(), ob.state().unwrap());

        // The CPU optimizer's state has the same layout and close values…
        let mut pc: Vec<ArrayD<f32>> = p0.iter().zip(&spec).map(|(v, s)| nd(v, &s.1)).collect();
        let mut oc = Optimizer::<Nd32>::new(cfg.clone(), labels.clone(), &pc).unwrap();
        for g in &grads[..3] {
            let gc: Vec<ArrayD<f32>> = g.iter().zip(&spec).map(|(v, s)| nd(v, &s.1)).collect();
            oc.step(&mut pc, &gc).unwrap();
        }
        let cpu = oc.state();
        assert_eq!((cpu.version, cpu.step, cpu.skipped), (saved.version, 3, 0));
        assert_eq!(cpu.blocks.len(), saved.blocks.len());
        assert_eq!(cpu.blocks.len(), spec.len());
        for (i, (c, d)) in cpu.blocks.iter().zip(&saved.blocks).enumerate() {
            assert_eq!(c.shape, d.shape, "block {i}");
            assert_eq!(c.buffers.len(), d.buffers.len(), "block {i}");
            for (bc, bd) in c.buffers.iter().zip(&d.buffers) {
                let bc: Vec<f32> = bc.iter().map(|&x| x as f32).collect();
                let bd: Vec<f32> = bd.iter().map(|&x| x as f32).collect();
                assert!(rel(&bd, &bc) < 1e-4, "block {i}: {:e}", rel(&bd, &bc));
            }
        }
        // …and loads into the device optimizer exactly (f32 through f64).
        let mut pd = tensors(&mid);
        let mut od = DeviceOptimizer::with_exec(exec(), cfg.clone(), &labels, &pd).unwrap();
        od.load_state(&cpu).unwrap();
        assert_eq!(od.state().unwrap(), cpu);
        assert!(od.step(&mut pd, &tensors(&grads[3])).unwrap());

        // Bad states: typed errors, nothing changes.
        let before = od.state().unwrap();
        let mut wrong: Vec<OptState> = Vec::new();
        let mut s = before.clone();
        s.version += 1;
        wrong.push(s);
        let mut s = before.clone();
        s.blocks.pop();
        wrong.push(s);
        let mut s = before.clone();
        s.blocks[1].shape = vec![40, 16];
        wrong.push(s);
        let mut s = before.clone();
        s.blocks[5].buffers[0][3] = f64::NAN;
        wrong.push(s);
        let mut s = before.clone();
        s.blocks[0].buffers[0][0] = 1e39; // finite in f64, not in f32
        wrong.push(s);
        let mut s = before.clone();
        s.blocks[2].buffers.push(vec![0.0; 24 * 16]);
        wrong.push(s);
        for s in &wrong {
            assert!(matches!(
                od.load_state(s),
                Err(DeviceError::Opt(OptError::BadState(_)))
            ));
            assert_eq!(od.state().unwrap(), before);
        }
        // A skipped step reports the last completed step's figures.
        let last = od.report().unwrap().clone();
        let mut bad = grads[4].clone();
        bad[0][0] = f32::NAN;
        if cfg.non_finite == NonFinitePolicy::Skip {
            assert!(!od.step(&mut pd, &tensors(&bad)).unwrap());
            let r = od.report().unwrap();
            assert!(r.skipped);
            assert_eq!(r.blocks, last.blocks);
        }
    }
}

/// A whole Muon step and a Gluon step of the generic `Optimizer<Cuda>`
/// against `Optimizer<Nd32>`.
#[test]
fn optimizer_step_matches_cpu() {
    use lmo_cuda::{Cuda, CudaTensor, DType};
    for dev in lmo_testkit::cuda_devices() {
        let mut rng = StdRng::seed_from_u64(3);
        let spec = [
            (Label::Hidden, vec![48, 32]),
            (Label::Hidden, vec![32, 96]),
            (Label::Embedding, vec![50, 32]),
            (Label::Vector, vec![32]),
        ];
        for cfg in [
            presets::muon(0.05, 0.01),
            presets::gluon((0.5, 2.0), (0.5, 1.0), 0.9),
        ] {
            let labels: Vec<Label> = spec.iter().map(|s| s.0.clone()).collect();
            let vals: Vec<Vec<f32>> = spec
                .iter()
                .map(|s| randn(&mut rng, s.1.iter().product()))
                .collect();
            let mut pc: Vec<ArrayD<f32>> =
                vals.iter().zip(&spec).map(|(v, s)| nd(v, &s.1)).collect();
            let mut pg: Vec<CudaTensor> = vals
                .iter()
                .zip(&spec)
                .map(|(v, s)| dev.tensor(v, &s.1, DType::F32).unwrap())
                .collect();
            let mut oc = Optimizer::<Nd32>::new(cfg.clone(), labels.clone(), &pc).unwrap();
            let mut og = Optimizer::<Cuda>::new(cfg.clone(), labels.clone(), &pg).unwrap();
            for _ in 0..3 {
                let gv: Vec<Vec<f32>> = spec
                    .iter()
                    .map(|s| randn(&mut rng, s.1.iter().product()))
                    .collect();
                let gc: Vec<ArrayD<f32>> = gv.iter().zip(&spec).map(|(v, s)| nd(v, &s.1)).collect();
                let gg: Vec<CudaTensor> = gv
                    .iter()
                    .zip(&spec)
                    .map(|(v, s)| dev.tensor(v, &s.1, DType::F32).unwrap())
                    .collect();
                oc.step(&mut pc, &gc).unwrap();
                og.step(&mut pg, &gg).unwrap();
            }
            for (c, g) in pc.iter().zip(&pg) {
                let e = rel(&g.to_host(), c.as_slice().unwrap());
                assert!(e < 1e-4, "step differs: {e:e}");
            }
        }
    }
}

/// Gluon's relative Newton–Schulz normalization (ε = 0) on a gradient of
/// subnormal f32 entries (‖G‖_F < 1/f32::MAX): the device plan's scale
/// `1/‖G‖_F` would be +∞ in f32 and the polar factor NaN; it is clamped
/// to f32::MAX, and the step stays finite (host twins and emulator).
fn tiny_gradients_stay_finite<E: gluon_optim::cuda::Exec>(
    exec: E,
    make: impl Fn(&[f32], &[usize]) -> E::Tensor,
    values: impl Fn(&E::Tensor) -> Vec<f32>,
) {
    use gluon_optim::cuda::DeviceOptimizer;
    let mut rng = StdRng::seed_from_u64(5);
    let spec = small_model();
    let labels: Vec<Label> = spec.iter().map(|s| s.0.clone()).collect();
    let cfg = presets::gluon((0.0, 2.0), (0.0, 1.0), 0.9);
    let mut p: Vec<E::Tensor> = spec
        .iter()
        .map(|s| make(&randn(&mut rng, s.1.iter().product()), &s.1))
        .collect();
    let mut opt = DeviceOptimizer::with_exec(exec, cfg, &labels, &p).unwrap();
    let g: Vec<E::Tensor> = spec
        .iter()
        .map(|s| make(&vec![1e-41; s.1.iter().product()], &s.1))
        .collect();
    for _ in 0..2 {
        assert!(opt.step(&mut p, &g).unwrap());
    }
    for (i, t) in p.iter().enumerate() {
        assert!(values(t).iter().all(|v| v.is_finite()), "block {i}");
    }
}

#[test]
fn host_exec_tiny_gradients_stay_finite() {
    use gluon_optim::cuda::{HostExec, HostTensor};
    tiny_gradients_stay_finite(
        HostExec,
        |v, d| HostTensor::f32(v.to_vec(), d),
        |t| t.data.clone(),
    );
}

#[cfg(feature = "cuda-emu")]
#[test]
fn emulated_tiny_gradients_stay_finite() {
    use gluon_optim::cuda::CudaExec;
    use lmo_cuda::{CudaDevice, DType};
    let dev = CudaDevice::emulated();
    tiny_gradients_stay_finite(
        CudaExec(dev.clone()),
        |v, d| dev.tensor(v, d, DType::F32).unwrap(),
        |t| t.to_host(),
    );
}
