//! The device-resident step end to end: Muon (bf16 polar factors, f32
//! parameters) on a GPU against the same optimizer on the CPU, on a toy
//! problem whose gradient needs no autograd: `f(W) = ½‖W − T‖²` per
//! tensor (`∇f = W − T`) for two hidden matrices of one shape, one of
//! another, and a bias.
//!
//! ```text
//! cargo run --release -p gluon-optim --features cuda --example device_step
//! cargo run --release -p gluon-optim --features cuda-emu --example device_step   # no GPU
//! ```
//!
//! Prints the loss of both every 10 steps and their largest parameter
//! difference. Without a CUDA device it runs on the CPU kernel emulator
//! when built with `cuda-emu`, and otherwise says so and exits cleanly.

use gluon_optim::cuda::DeviceOptimizer;
use gluon_optim::{Label, Optimizer, presets};
use lmo_core::Backend;
use lmo_cuda::{Cuda, CudaDevice, CudaTensor, DType};
use lmo_ndarray::Nd32;
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = if CudaDevice::available() {
        CudaDevice::new(0)?
    } else {
        if std::env::var("LMO_EXPECT_GPU").as_deref() == Ok("1") {
            return Err("LMO_EXPECT_GPU=1 but no CUDA driver or device answers".into());
        }
        #[cfg(feature = "cuda-emu")]
        {
            println!("no CUDA driver or device: running on the CPU kernel emulator");
            CudaDevice::emulated()
        }
        #[cfg(not(feature = "cuda-emu"))]
        {
            println!(
                "no CUDA driver or device: nothing to run (this example needs a GPU, \
                 or --features cuda-emu for the CPU kernel emulator)"
            );
            return Ok(());
        }
    };
    println!("device: {}", dev.name());
    let shapes: Vec<(Label, Vec<usize>)> = vec![
        (Label::Hidden, vec![256, 128]),
        (Label::Hidden, vec![256, 128]),
        (Label::Hidden, vec![128, 512]),
        (Label::Vector, vec![128]),
    ];
    let labels: Vec<Label> = shapes.iter().map(|s| s.0.clone()).collect();
    let mut rng = StdRng::seed_from_u64(1);
    let mut randn = |n: usize, s: f32| -> Vec<f32> {
        (0..n)
            .map(|_| s * rng.sample::<f32, _>(StandardNormal))
            .collect()
    };
    let init: Vec<Vec<f32>> = shapes
        .iter()
        .map(|s| randn(s.1.iter().product(), 0.02))
        .collect();
    let target: Vec<Vec<f32>> = shapes
        .iter()
        .map(|s| randn(s.1.iter().product(), 0.05))
        .collect();
    let on_dev = |v: &[f32], d: &[usize]| dev.tensor(v, d, DType::F32);
    let mut pg: Vec<CudaTensor> = init
        .iter()
        .zip(&shapes)
        .map(|(v, s)| on_dev(v, &s.1))
        .collect::<Result<_, _>>()?;
    let tg: Vec<CudaTensor> = target
        .iter()
        .zip(&shapes)
        .map(|(v, s)| on_dev(v, &s.1))
        .collect::<Result<_, _>>()?;
    let mut gg: Vec<CudaTensor> = pg.iter().map(Cuda::zeros_like).collect();
    let nd = |v: &[f32], d: &[usize]| ArrayD::from_shape_vec(IxDyn(d), v.to_vec());
    let mut pc: Vec<ArrayD<f32>> = init
        .iter()
        .zip(&shapes)
        .map(|(v, s)| nd(v, &s.1))
        .collect::<Result<_, _>>()?;
    let tc: Vec<ArrayD<f32>> = target
        .iter()
        .zip(&shapes)
        .map(|(v, s)| nd(v, &s.1))
        .collect::<Result<_, _>>()?;
    let mut gc: Vec<ArrayD<f32>> = pc.iter().map(Nd32::zeros_like).collect();

    let cfg = presets::muon(0.02, 3e-3).with_bf16_polar();
    let mut gpu = DeviceOptimizer::new(&dev, cfg.clone(), &labels, &pg)?.with_graphs(true);
    let mut cpu = Optimizer::<Nd32>::new(cfg, labels, &pc)?;
    // ∇f = W − T and f = ½‖W − T‖², with the backend ops of each side.
    fn grad_and_loss<B: Backend<Scalar = f32>>(
        p: &[B::Tensor],
        t: &[B::Tensor],
        g: &mut [B::Tensor],
    ) -> f32 {
        let mut loss = 0.0;
        for ((p, t), g) in p.iter().zip(t).zip(g.iter_mut()) {
            B::scale(1.0, p, g);
            B::axpby(-1.0, t, 1.0, g);
            loss += 0.5 * B::norm2(g).powi(2);
        }
        loss
    }
    for step in 0..=50 {
        let lg = grad_and_loss::<Cuda>(&pg, &tg, &mut gg);
        let lc = grad_and_loss::<Nd32>(&pc, &tc, &mut gc);
        if step % 10 == 0 {
            println!("step {step:>2}: loss device {lg:.6}  CPU {lc:.6}");
        }
        if step < 50 {
            gpu.step(&mut pg, &gg)?;
            cpu.step(&mut pc, &gc)?;
        }
    }
    dev.synchronize()?;
    let diff = pg
        .iter()
        .zip(&pc)
        .map(|(g, c)| {
            g.to_host()
                .iter()
                .zip(c.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max)
        })
        .fold(0.0f32, f32::max);
    println!(
        "largest |W_device − W_cpu| after 50 steps: {diff:.2e} (bf16 polar factors on both sides)"
    );
    Ok(())
}
