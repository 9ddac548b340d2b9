//! `lmo-bench SUITE [options]`: runs one benchmark suite of this project and
//! prints one JSON object per line (`{"suite":…, "case":…, "impl":…,
//! "samples_s":[…], "flops":…}`), read by `cargo xtask bench`.
//!
//! Suites: `gemm` (sgemm/dgemm roofline), `orth` (polar factors), `brox`
//! (exact trust-region subproblem), `step` (one optimizer step on
//! GPT-2-small-shaped parameters per preset; `--shapes LxD` sets layers ×
//! width, default 12x768); with `--features cuda`: `gpu-gemm`, `gpu-orth`,
//! `gpu-step` (see `gpu.rs`; they print a skip line without a device).
//! Options: `--shapes 768x768,2048x2048`, `--reps N`, `--sets muon,…`,
//! `--precisions f32,bf16,f64`, `--forms plain,gram` (orth: the Newton–Schulz
//! form, reported as impl `ours` and `ours-gram`).

use std::time::Instant;

mod gpu;

use lmo_core::{Backend, Trans};
use lmo_ndarray::{Nd32, Nd64, NdBf16, NdScalar, round_bf16};
use ndarray::{ArrayD, IxDyn};
use orthogonalize::{CoefficientSet, NewtonSchulz, NsConfig};
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};

struct Opts {
    shapes: Vec<(usize, usize)>,
    reps: usize,
    sets: Vec<String>,
    precisions: Vec<String>,
    forms: Vec<String>,
}

fn parse_shapes(s: &str) -> Result<Vec<(usize, usize)>, String> {
    s.split(',')
        .map(|p| {
            let (a, b) = p
                .split_once('x')
                .ok_or_else(|| format!("bad shape {p:?}, want MxN"))?;
            let m = a.parse().map_err(|_| format!("bad shape {p:?}"))?;
            let n = b.parse().map_err(|_| format!("bad shape {p:?}"))?;
            if m == 0 || n == 0 {
                return Err(format!("empty shape {p:?}"));
            }
            Ok((m, n))
        })
        .collect()
}

fn opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        shapes: vec![
            (768, 768),
            (768, 3072),
            (1024, 1024),
            (2048, 2048),
            (4096, 4096),
        ],
        reps: 5,
        sets: vec!["muon".into()],
        precisions: vec!["f32".into()],
        forms: vec!["plain".into()],
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--shapes" => o.shapes = parse_shapes(val()?)?,
            "--reps" => o.reps = val()?.parse().map_err(|_| "--reps: integer".to_string())?,
            "--sets" => o.sets = val()?.split(',').map(String::from).collect(),
            "--precisions" => o.precisions = val()?.split(',').map(String::from).collect(),
            "--forms" => o.forms = val()?.split(',').map(String::from).collect(),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if o.reps == 0 {
        return Err("--reps must be ≥ 1".into());
    }
    Ok(o)
}

fn gaussian<S: NdScalar>(seed: u64, m: usize, n: usize) -> ArrayD<S> {
    let mut rng = StdRng::seed_from_u64(seed);
    ArrayD::from_shape_fn(IxDyn(&[m, n]), |_| S::of(StandardNormal.sample(&mut rng)))
}

fn time_reps(reps: usize, mut f: impl FnMut()) -> Vec<f64> {
    f(); // warm-up (sizes buffers, faults pages)
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect()
}

fn emit(suite: &str, case: &str, imp: &str, flops: f64, samples: &[f64]) {
    emit_with(suite, case, imp, flops, samples, None);
}

fn emit_with(suite: &str, case: &str, imp: &str, flops: f64, samples: &[f64], kkt: Option<f64>) {
    let s: Vec<String> = samples.iter().map(|x| format!("{x:.6e}")).collect();
    let extra = kkt
        .map(|r| format!(",\"kkt_residual\":{r:.3e}"))
        .unwrap_or_default();
    println!(
        "{{\"suite\":\"{suite}\",\"case\":\"{case}\",\"impl\":\"{imp}\",\"flops\":{flops:.6e},\"samples_s\":[{}]{extra}}}",
        s.join(",")
    );
}

/// The benchmark's trust-region instance, computed with integer hashing so
/// that bench/peers/peers.py builds bit-identical matrices: `V_ij` from the
/// index, `A = V + Vᵀ` (symmetric indefinite), `g` likewise, `t = 1`.
fn trs_instance(n: usize) -> (Vec<f64>, Vec<f64>) {
    let v =
        |k: usize| ((k as u64).wrapping_mul(2654435761) % (1u64 << 32)) as f64 / 4294967296.0 - 0.5;
    let a: Vec<f64> = (0..n * n)
        .map(|ij| v(ij) + v((ij % n) * n + ij / n))
        .collect();
    let g: Vec<f64> = (0..n)
        .map(|i| ((i * 40503 + 12345) % 65536) as f64 / 65536.0 - 0.5)
        .collect();
    (a, g)
}

fn brox_suite(o: &Opts) -> Result<(), String> {
    for &(n, _) in &o.shapes {
        let (a, g) = trs_instance(n);
        let mut res = 0.0;
        let s = time_reps(o.reps, || {
            let trs = brox::Trs::new(&a, n).expect("symmetric finite instance");
            res = trs.solve(&g, 1.0).expect("valid instance").kkt_residual;
        });
        emit_with("brox", &format!("trs/{n}"), "ours", 0.0, &s, Some(res));
    }
    Ok(())
}

fn gemm_suite(o: &Opts) {
    for &(m, n) in &o.shapes {
        let k = n;
        let flops = 2.0 * (m * n * k) as f64;
        let case = format!("{m}x{k}x{n}");
        let a32 = gaussian::<f32>(1, m, k);
        let b32 = gaussian::<f32>(2, k, n);
        let mut c32 = ArrayD::<f32>::zeros(IxDyn(&[m, n]));
        let s = time_reps(o.reps, || {
            Nd32::gemm(1.0, &a32, Trans::No, &b32, Trans::No, 0.0, &mut c32)
        });
        emit("gemm", &case, "ours-sgemm", flops, &s);
        let a64 = gaussian::<f64>(1, m, k);
        let b64 = gaussian::<f64>(2, k, n);
        let mut c64 = ArrayD::<f64>::zeros(IxDyn(&[m, n]));
        let s = time_reps(o.reps, || {
            Nd64::gemm(1.0, &a64, Trans::No, &b64, Trans::No, 0.0, &mut c64)
        });
        emit("gemm", &case, "ours-dgemm", flops, &s);
    }
}

fn set_of(name: &str) -> Result<CoefficientSet, String> {
    Ok(match name {
        "muon" => CoefficientSet::MuonQuintic,
        "cubic" => CoefficientSet::Cubic,
        "polar-express" => CoefficientSet::PolarExpress,
        "nanogpt" => CoefficientSet::ModdedNanogpt,
        other => return Err(format!("unknown coefficient set {other:?}")),
    })
}

/// Flops of the plain-GEMM formulation (what numpy/PyTorch do): per step
/// `2k²l + 2k³ + 2k²l` (the `A·A` term is skipped when c = 0).
fn ns_flops(cfg: &NsConfig, m: usize, n: usize) -> f64 {
    let (k, l) = (m.min(n) as f64, m.max(n) as f64);
    (0..cfg.steps)
        .map(|i| {
            let c = cfg.coefficients.step(i)[2];
            4.0 * k * k * l + if c != 0.0 { 2.0 * k * k * k } else { 0.0 }
        })
        .sum()
}

fn orth_case<B>(cfg: &NsConfig, g: &ArrayD<B::Scalar>, reps: usize) -> Vec<f64>
where
    B: Backend<Tensor = ArrayD<<B as Backend>::Scalar>>,
{
    let mut ns = NewtonSchulz::<B>::new(cfg.clone()).expect("valid config");
    let mut out = g.clone();
    time_reps(reps, || ns.run(g, &mut out).expect("finite input"))
}

fn orth_suite(o: &Opts) -> Result<(), String> {
    for (set, form) in o
        .sets
        .iter()
        .flat_map(|s| o.forms.iter().map(move |f| (s, f)))
    {
        let (cfg, imp) = match form.as_str() {
            "plain" => (NsConfig::new(set_of(set)?), "ours"),
            "gram" => (NsConfig::new(set_of(set)?).gram(), "ours-gram"),
            other => return Err(format!("unknown form {other:?} (plain, gram)")),
        };
        for &(m, n) in &o.shapes {
            // Both forms report the plain formulation's flops, so that
            // flop rates compare like with like (the Gram form's own count
            // is in docs/orthogonalize.md).
            let flops = ns_flops(&NsConfig::new(set_of(set)?), m, n);
            for p in &o.precisions {
                let case = format!("{set}/{p}/{m}x{n}");
                let s = match p.as_str() {
                    "f32" => orth_case::<Nd32>(&cfg, &gaussian(7, m, n), o.reps),
                    "f64" => orth_case::<Nd64>(&cfg, &gaussian(7, m, n), o.reps),
                    "bf16" => {
                        let mut g = gaussian::<f32>(7, m, n);
                        round_bf16(&mut g);
                        orth_case::<NdBf16>(&cfg, &g, o.reps)
                    }
                    other => return Err(format!("unknown precision {other:?}")),
                };
                emit("orth", &case, imp, flops, &s);
            }
        }
    }
    Ok(())
}

/// GPT-2-style parameter set: per layer the hidden matrices 3d×d, d×d,
/// 4d×d, d×4d and six vectors; token (50257×d, or 8d in small runs) and
/// position (1024×d) embeddings. Gradients are Gaussian·0.01, seeded.
fn gpt2_params(
    layers: usize,
    d: usize,
) -> (Vec<gluon_optim::Label>, Vec<ArrayD<f32>>, Vec<ArrayD<f32>>) {
    use gluon_optim::Label;
    let (vocab, ctx) = if d >= 256 {
        (50257, 1024)
    } else {
        (8 * d, 4 * d)
    };
    let mut labels = vec![Label::Embedding, Label::Embedding];
    let mut shapes = vec![vec![vocab, d], vec![ctx, d]];
    for _ in 0..layers {
        for s in [[3 * d, d], [d, d], [4 * d, d], [d, 4 * d]] {
            labels.push(Label::Hidden);
            shapes.push(s.to_vec());
        }
        for v in [3 * d, d, 4 * d, d, d, d] {
            labels.push(Label::Vector);
            shapes.push(vec![v]);
        }
    }
    let mut rng = StdRng::seed_from_u64(3);
    let mk = |rng: &mut StdRng, s: &[usize], scale: f32| {
        ArrayD::from_shape_fn(IxDyn(s), |_| {
            let z: f32 = StandardNormal.sample(rng);
            scale * z
        })
    };
    let params = shapes.iter().map(|s| mk(&mut rng, s, 0.02)).collect();
    let grads = shapes.iter().map(|s| mk(&mut rng, s, 0.01)).collect();
    (labels, params, grads)
}

fn step_suite(o: &Opts) -> Result<(), String> {
    use gluon_optim::{AdamWGroup, Optimizer, presets};
    for &(layers, d) in &o.shapes {
        let (labels, params, grads) = gpt2_params(layers, d);
        // The algorithmic flops of a step with polar factors: Muon's NS5
        // (the coefficients of every LMO preset here) on every hidden
        // matrix, in the plain-GEMM formulation as in the orth suite (the
        // Gram form does fewer: docs/orthogonalize.md). The elementwise
        // work (momentum, update, AdamW, the sign/RMS LMOs) is not
        // counted: it is memory-bound.
        let polar_flops: f64 = labels
            .iter()
            .zip(&params)
            .filter(|(l, p)| **l == gluon_optim::Label::Hidden && p.ndim() == 2)
            .map(|(_, p)| ns_flops(&NsConfig::muon(), p.shape()[0], p.shape()[1]))
            .sum();
        let gluon = presets::gluon((0.0, 70.0), (0.0, 1.3), 0.95);
        // "ours-bf16": the same step with the polar factor in bf16 storage
        // (f32 parameters), as torch.optim.Muon.
        let presets: Vec<(&str, &str, gluon_optim::Config)> = vec![
            (
                "adamw",
                "ours",
                presets::adamw(AdamWGroup {
                    lr: 1e-3,
                    beta1: 0.9,
                    beta2: 0.95,
                    eps: 1e-10,
                    weight_decay: 0.0,
                }),
            ),
            ("muon", "ours", presets::muon(0.02, 1e-3)),
            (
                "muon",
                "ours-bf16",
                presets::muon(0.02, 1e-3).with_bf16_polar(),
            ),
            (
                "muon",
                "ours-gram-bf16",
                presets::muon(0.02, 1e-3)
                    .with_bf16_polar()
                    .with_gram_polar(),
            ),
            ("scion", "ours", presets::scion(2f64.powi(-12), false)),
            ("gluon", "ours", gluon.clone()),
            ("gluon", "ours-bf16", gluon.with_bf16_polar()),
        ];
        for (name, imp, cfg) in presets {
            let mut p = params.clone();
            let mut opt =
                Optimizer::<Nd32>::new(cfg, labels.clone(), &p).map_err(|e| e.to_string())?;
            let s = time_reps(o.reps, || {
                opt.step(&mut p, &grads).expect("finite gradients");
            });
            let flops = if name == "adamw" { 0.0 } else { polar_flops };
            emit("step", &format!("{name}/gpt2-{layers}x{d}"), imp, flops, &s);
            // The optimizer's own work beyond the LMOs (checks, momentum,
            // radius, update): each rep runs the step through the phased
            // API and times the whole and its LMO phase, so the renderer's
            // overhead = 1 − lmo/step compares times of the same reps (the
            // phased path also rechecks Nesterov gradients, which `step`
            // skips: an upper bound). AdamW has no LMO phase.
            if name == "adamw" {
                continue;
            }
            let (mut whole, mut lmo) = (Vec::with_capacity(o.reps), Vec::with_capacity(o.reps));
            for _ in 0..o.reps {
                let t0 = Instant::now();
                opt.begin_step(&p, &grads).expect("finite gradients");
                let t1 = Instant::now();
                opt.compute_directions(|_| true).expect("finite directions");
                let t2 = Instant::now();
                opt.finish_step(&mut p, &grads).expect("finite gradients");
                whole.push(t0.elapsed().as_secs_f64());
                lmo.push((t2 - t1).as_secs_f64());
            }
            let case = format!("{name}-{imp}/gpt2-{layers}x{d}");
            emit("step-overhead", &case, "ours-step", polar_flops, &whole);
            emit("step-overhead", &case, "ours-lmo", polar_flops, &lmo);
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run = || -> Result<(), String> {
        let suite = args
            .first()
            .ok_or("usage: lmo-bench <gemm|orth|brox|step|gpu-gemm|gpu-orth|gpu-step> [options]")?;
        let o = opts(&args[1..])?;
        // Which kernels this CPU gets (reported in the bench's versions line).
        let f32_syrk = if lmo_ndarray::native::available(lmo_ndarray::native::Kind::F32) {
            "native avx512f (one triangle)"
        } else {
            "faer (recursive lower triangle)"
        };
        println!(
            "{{\"versions\":{{\"bf16_kernel\":\"{}\",\"f32_syrk_kernel\":\"{f32_syrk}\"}}}}",
            lmo_ndarray::bf16_kernel()
        );
        match suite.as_str() {
            "gemm" => gemm_suite(&o),
            "orth" => orth_suite(&o)?,
            "brox" => brox_suite(&o)?,
            "step" => step_suite(&o)?,
            "gpu-gemm" | "gpu-orth" | "gpu-step" => gpu::run(suite, &o)?,
            other => return Err(format!("unknown suite {other:?}")),
        }
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("lmo-bench: {e}");
        std::process::exit(2);
    }
}
