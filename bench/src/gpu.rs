//! GPU suites (feature `cuda`): `gpu-gemm` (the bf16 cuBLAS peak every
//! GPU table is measured against), `gpu-orth` (batched-plan NS5 polar
//! factor in bf16 per shape) and `gpu-step` (one Muon / AdamW step resident
//! on the device on GPT-2-small-shaped parameters). Without the feature or
//! without a device they print a `skip` line and exit cleanly; with
//! feature `cuda-emu` and `LMO_BENCH_EMULATE=1` they run on the CPU kernel
//! emulator instead (`cargo xtask gpu-plumbing`: a smoke test of this code,
//! its figures are not a GPU's).
//!
//! Timing: each sample queues `inner` runs and waits for the stream once,
//! divided by `inner` (`inner` is chosen on the warm-up so a sample lasts
//! ≥ 20 ms), so launch-queue latency is amortized as in a training loop.

use crate::Opts;

/// Prints why a GPU suite did not run.
fn skip(suite: &str, why: &str) {
    println!("{{\"skip\":\"{suite}\",\"why\":\"{why}\"}}");
}

#[cfg(not(feature = "cuda"))]
pub fn run(suite: &str, _o: &Opts) -> Result<(), String> {
    skip(
        suite,
        "lmo-bench was built without --features cuda (cargo xtask bench gpu builds it with)",
    );
    Ok(())
}

#[cfg(feature = "cuda")]
pub fn run(suite: &str, o: &Opts) -> Result<(), String> {
    use lmo_cuda::CudaDevice;
    let dev = if CudaDevice::available() {
        CudaDevice::new(0).map_err(|e| e.to_string())?
    } else if cfg!(feature = "cuda-emu") && std::env::var("LMO_BENCH_EMULATE").as_deref() == Ok("1")
    {
        // A smoke run of the suite's code on the CPU kernel emulator: the
        // figures are the emulator's (the versions line says so), not a
        // GPU's.
        emulated()
    } else {
        skip(suite, "no CUDA driver or device");
        return Ok(());
    };
    println!(
        "{{\"versions\":{{\"gpu\":\"{}\",\"ours_gpu_path\":\"cuBLAS strided-batched GemmEx (bf16, f32 accumulation), CUDA graphs\"}}}}",
        dev.name()
    );
    match suite {
        "gpu-gemm" => cuda::gemm(&dev, o),
        "gpu-orth" => cuda::orth(&dev, o),
        "gpu-step" => cuda::step(&dev, o),
        other => Err(format!("unknown GPU suite {other:?}")),
    }
}

#[cfg(feature = "cuda-emu")]
fn emulated() -> std::sync::Arc<lmo_cuda::CudaDevice> {
    lmo_cuda::CudaDevice::emulated()
}

#[cfg(all(feature = "cuda", not(feature = "cuda-emu")))]
fn emulated() -> std::sync::Arc<lmo_cuda::CudaDevice> {
    unreachable!("checked by cfg!(feature = \"cuda-emu\")")
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::Arc;
    use std::time::Instant;

    use gluon_optim::cuda::DeviceOptimizer;
    use gluon_optim::{AdamWGroup, presets};
    use lmo_core::{Backend, Trans};
    use lmo_cuda::{Cuda, CudaDevice, CudaTensor, DType, PolarPlan};
    use orthogonalize::NsConfig;
    use rand::{SeedableRng, rngs::StdRng};
    use rand_distr::{Distribution, StandardNormal};

    use crate::{Opts, emit};

    fn randn(seed: u64, n: usize, scale: f32) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let z: f32 = StandardNormal.sample(&mut rng);
                scale * z
            })
            .collect()
    }

    /// Samples in seconds per run (see the module docs).
    fn time_gpu(dev: &CudaDevice, reps: usize, mut f: impl FnMut()) -> Result<Vec<f64>, String> {
        let sync = || dev.synchronize().map_err(|e| e.to_string());
        f();
        sync()?;
        let t = Instant::now();
        f();
        sync()?;
        let one = t.elapsed().as_secs_f64().max(1e-6);
        let inner = ((0.02 / one).ceil() as usize).clamp(1, 1000);
        let mut out = Vec::with_capacity(reps);
        for _ in 0..reps {
            let t = Instant::now();
            for _ in 0..inner {
                f();
            }
            sync()?;
            out.push(t.elapsed().as_secs_f64() / inner as f64);
        }
        Ok(out)
    }

    fn tensor(
        dev: &Arc<CudaDevice>,
        seed: u64,
        dims: &[usize],
        dt: DType,
    ) -> Result<CudaTensor, String> {
        let n = dims.iter().product();
        dev.tensor(&randn(seed, n, 1.0), dims, dt)
            .map_err(|e| e.to_string())
    }

    pub fn gemm(dev: &Arc<CudaDevice>, o: &Opts) -> Result<(), String> {
        for &(m, n) in &o.shapes {
            let a = tensor(dev, 1, &[m, n], DType::Bf16)?;
            let b = tensor(dev, 2, &[n, n], DType::Bf16)?;
            let mut c = tensor(dev, 3, &[m, n], DType::Bf16)?;
            let s = time_gpu(dev, o.reps, || {
                Cuda::gemm(1.0, &a, Trans::No, &b, Trans::No, 0.0, &mut c)
            })?;
            let flops = 2.0 * (m * n * n) as f64;
            emit(
                "gpu-gemm",
                &format!("bf16/{m}x{n}x{n}"),
                "ours-cublas",
                flops,
                &s,
            );
        }
        Ok(())
    }

    pub fn orth(dev: &Arc<CudaDevice>, o: &Opts) -> Result<(), String> {
        let cfg = NsConfig::muon();
        for &(m, n) in &o.shapes {
            let g = tensor(dev, 7, &[m, n], DType::Bf16)?;
            let mut out = tensor(dev, 8, &[m, n], DType::Bf16)?;
            let mut plan = PolarPlan::new(dev, &cfg, 1, m, n, DType::Bf16)
                .map_err(|e| e.to_string())?
                .with_graphs(true);
            let flops = plan.flops();
            let s = time_gpu(dev, o.reps, || {
                plan.run(&g, &mut out).expect("checked shapes")
            })?;
            emit("gpu-orth", &format!("muon/bf16/{m}x{n}"), "ours", flops, &s);
        }
        Ok(())
    }

    /// GPT-2 small: `layers` × {3d×d, d×d, 4d×d, d×4d} hidden matrices
    /// (f32, gradients Gaussian·0.01).
    fn hidden(
        dev: &Arc<CudaDevice>,
        layers: usize,
        d: usize,
    ) -> Result<(Vec<CudaTensor>, Vec<CudaTensor>), String> {
        let mut p = Vec::new();
        let mut g = Vec::new();
        for l in 0..layers {
            for (i, s) in [[3 * d, d], [d, d], [4 * d, d], [d, 4 * d]]
                .iter()
                .enumerate()
            {
                let seed = (10 * l + i) as u64;
                p.push(
                    dev.tensor(&randn(seed, s[0] * s[1], 0.02), s, DType::F32)
                        .map_err(|e| e.to_string())?,
                );
                g.push(
                    dev.tensor(&randn(seed + 1000, s[0] * s[1], 0.01), s, DType::F32)
                        .map_err(|e| e.to_string())?,
                );
            }
        }
        Ok((p, g))
    }

    pub fn step(dev: &Arc<CudaDevice>, o: &Opts) -> Result<(), String> {
        use gluon_optim::Label;
        for &(layers, d) in &o.shapes {
            let (mut p, g) = hidden(dev, layers, d)?;
            let labels = vec![Label::Hidden; p.len()];
            let case = |name: &str| format!("{name}/gpt2-hidden-{layers}x{d}");
            let adam = AdamWGroup {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-10,
                weight_decay: 0.0,
            };
            let runs: Vec<(&str, &str, gluon_optim::Config, bool)> = vec![
                (
                    "muon",
                    "ours-bf16",
                    presets::muon(0.02, 1e-3).with_bf16_polar(),
                    true,
                ),
                (
                    "muon",
                    "ours-bf16-nosync",
                    presets::muon(0.02, 1e-3).with_bf16_polar(),
                    false,
                ),
                ("adamw", "ours", presets::adamw(adam), true),
            ];
            for (name, imp, cfg, check) in runs {
                let mut opt = DeviceOptimizer::new(dev, cfg, &labels, &p)
                    .map_err(|e| e.to_string())?
                    .with_graphs(true)
                    .with_finiteness_check(check);
                let s = time_gpu(dev, o.reps, || {
                    opt.step(&mut p, &g).expect("finite gradients");
                })?;
                emit("gpu-step", &case(name), imp, 0.0, &s);
            }
        }
        Ok(())
    }
}
