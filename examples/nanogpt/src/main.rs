//! NanoGPT: a GPT-2-style model trained on Shakespeare with AdamW, Muon,
//! Scion and Gluon through the tch adapter (`lmo-tch`), on the CPU or a GPU,
//! with one optimizer logic (`gluon-optim`, SPEC §3).
//!
//! ```sh
//! cargo xtask nanogpt                       # tiny model, embedded text, all four optimizers
//! cargo xtask data shakespeare && cargo xtask nanogpt -- --data shakespeare
//! cargo xtask nanogpt -- --config gpt2-small --device cuda --bf16   # (build with --features cuda)
//! cargo xtask nanogpt -- --ranks 2         # data-parallel over MPI (mpirun -np 2; Open MPI)
//! cargo xtask nanogpt -- --help
//! ```
//!
//! Each optimizer trains the same initialization on the same batches;
//! the run evaluates the validation loss every `--eval-every` steps and
//! reports the steps and wall time each optimizer needs to reach AdamW's
//! final validation loss. Gluon's radii come from an (L0, L1) probe
//! (SPEC §3): a short run of Scion during which a `LipschitzEstimator`
//! records `(‖∇_i f‖_*, L̂_i)` per block in Gluon's norms; the τ = 0.9
//! quantile fit per group gives `t_i = ‖M_i‖_*/(L0 + L1‖M_i‖_*)`.
//! Outputs under `--out` (default `target/nanogpt/<config>`): per optimizer
//! `log.csv` and `ckpt/` (VarStore + optimizer state + progress, for
//! `--resume`), `summary.{json,md}`, `loss.{svg,png}`, `lhat.{svg,png}`
//! (the probe's L̂ against ‖∇f‖_* per group with the fitted line) and
//! `probe_points.csv`.
//!
//! Data parallelism (`--ranks N`, built with `--features mpi`, launched by
//! `mpirun -np N`): `--batch` is the global batch; each rank computes the
//! gradient of its own rows of it, `lmo_tch::ShardedVarStoreOptimizer`
//! averages the gradients and steps with each block's optimizer state on
//! one rank, and the replicas stay bit-identical (checked after every
//! run). The run repeats the single-process one up to the rounding of the
//! gradient average (docs/distributed.md).

mod data;
mod model;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use gluon_optim::presets::{self, ScionRadii};
use gluon_optim::{AdamWGroup, Config, Label, LipschitzEstimator, Schedule};
use indicatif::{ProgressBar, ProgressStyle};
use lmo_comm::{Communicator, ReduceOp};
use lmo_examples::{Panel, Series, gluon_with, plot_panels};
use lmo_tch::{ShardedVarStoreOptimizer, Tch32, VarStoreOptimizer, default_label};
use serde::{Deserialize, Serialize};
use tch::{Device, nn};

use data::{Dataset, Tokenizer, batch, load_text};
use model::{Gpt, GptConfig};

/// Quantile level of the (L0, L1) fit (the Gluon paper's penalized fit:
/// about 10 % of the probe's points may lie above the line).
const TAU: f64 = 0.9;

#[derive(Parser, Debug, Clone)]
#[command(about = "Train a GPT-2-style model with AdamW, Muon, Scion and Gluon and compare them")]
struct Args {
    /// Model and run size: `tiny` (4 layers, width 128, context 64; CPU
    /// minutes) or `gpt2-small` (124M, context 1024; a GPU).
    #[arg(long, default_value = "tiny")]
    config: String,
    /// Text: `embedded` (64 KB of King Lear, no download), `shakespeare`
    /// (`cargo xtask data shakespeare`) or a path to a UTF-8 file.
    #[arg(long, default_value = "embedded")]
    data: String,
    /// `char` or `bpe` (GPT-2); default char for tiny, bpe for gpt2-small.
    #[arg(long)]
    tokenizer: Option<String>,
    /// Optimizers to run, in order; the first `adamw` run sets the target.
    #[arg(long, value_delimiter = ',', default_value = "adamw,muon,scion,gluon")]
    optimizers: Vec<String>,
    /// Training steps (default: tiny 600, gpt2-small 5000).
    #[arg(long)]
    steps: Option<u64>,
    /// Sequences per batch, over all ranks (default: tiny 32, gpt2-small 16).
    #[arg(long)]
    batch: Option<i64>,
    /// Data-parallel ranks, as started by MPI: `cargo xtask nanogpt --
    /// --ranks N` builds with `--features mpi` and launches `mpirun -np N`;
    /// the program checks that MPI started N ranks and that they divide
    /// `--batch`.
    #[arg(long)]
    ranks: Option<usize>,
    /// Evaluate every N steps (default: steps/12).
    #[arg(long)]
    eval_every: Option<u64>,
    /// Validation batches per evaluation.
    #[arg(long, default_value_t = 8)]
    eval_batches: u64,
    /// AdamW learning rate (all parameters).
    #[arg(long, default_value_t = 3e-3)]
    lr_adamw: f64,
    /// Muon learning rate of the hidden matrices.
    #[arg(long, default_value_t = 0.02)]
    lr_muon: f64,
    /// Learning rate of Muon's AdamW groups (embeddings, head, vectors).
    #[arg(long, default_value_t = 3e-3)]
    lr_muon_adam: f64,
    /// Scion step size (radii: hidden 3, embedding/head 30, vectors 1, times this).
    #[arg(long, default_value_t = 0.01)]
    lr_scion: f64,
    /// Steps of the (L0, L1) probe for Gluon.
    #[arg(long, default_value_t = 40)]
    probe_steps: u64,
    /// `cpu`, `cuda` or `auto`.
    #[arg(long, default_value = "auto")]
    device: String,
    /// bf16 parameters, momenta and products (as PyTorch Muon on GPUs).
    #[arg(long)]
    bf16: bool,
    /// Tie the head to the token embedding (GPT-2).
    #[arg(long)]
    tied: bool,
    /// Save a checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    checkpoint_every: u64,
    /// Continue each optimizer's run from its checkpoint, if any.
    #[arg(long)]
    resume: bool,
    /// Stop each run after this many steps (of `--steps`), leaving a
    /// checkpoint to `--resume` from (time-boxed sessions).
    #[arg(long)]
    stop_after: Option<u64>,
    /// Seed of the initialization and of the batches.
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// libtorch CPU threads (default: libtorch's choice).
    #[arg(long)]
    threads: Option<i32>,
    /// Output directory (default `target/nanogpt/<config>`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress bar (log lines only).
    #[arg(long)]
    quiet: bool,
}

/// Gluon's fitted (L0, L1) per label.
type Fits = Vec<(Label, (f64, f64))>;

/// Run sizes of a configuration.
struct Preset {
    n_layer: i64,
    n_head: i64,
    d: i64,
    ctx: i64,
    batch: i64,
    steps: u64,
    tokenizer: &'static str,
}

fn preset(name: &str) -> Result<Preset, String> {
    match name {
        "tiny" => Ok(Preset {
            n_layer: 4,
            n_head: 4,
            d: 128,
            ctx: 64,
            batch: 32,
            steps: 600,
            tokenizer: "char",
        }),
        "gpt2-small" => Ok(Preset {
            n_layer: 12,
            n_head: 12,
            d: 768,
            ctx: 1024,
            batch: 16,
            steps: 5000,
            tokenizer: "bpe",
        }),
        other => Err(format!("unknown --config {other:?} (tiny | gpt2-small)")),
    }
}

/// Everything one training run needs besides the optimizer.
struct Setup {
    args: Args,
    tok: Tokenizer,
    gpt: GptConfig,
    data: Dataset,
    device: Device,
    batch: i64,
    steps: u64,
    eval_every: u64,
    out: PathBuf,
    /// This process's rank and the number of ranks.
    rank: usize,
    ranks: usize,
    /// This rank's rows of every batch.
    rows: Range<i64>,
}

impl Setup {
    /// Prints `line` once (on rank 0).
    fn say(&self, line: &str) {
        if self.rank == 0 {
            println!("{line}");
        }
    }
}

/// One logged evaluation.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Eval {
    step: u64,
    train_loss: f64,
    val_loss: f64,
    elapsed_s: f64,
}

/// Progress saved with a checkpoint (the model and optimizer state are
/// beside it).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Progress {
    step: u64,
    elapsed_s: f64,
    evals: Vec<Eval>,
    /// Per-step training losses.
    train: Vec<f64>,
    /// Gluon's fitted (L0, L1) per label.
    fits: Fits,
}

/// The result of one optimizer.
#[derive(Clone, Debug, Serialize)]
struct RunResult {
    optimizer: String,
    hyper: String,
    final_val: f64,
    steps_to_target: Option<u64>,
    time_to_target_s: Option<f64>,
    wall_s: f64,
    evals: Vec<Eval>,
}

fn main() {
    let args = Args::parse();
    #[cfg(feature = "mpi")]
    let comm = match lmo_comm::MpiComm::init() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nanogpt: {e}");
            std::process::exit(1);
        }
    };
    #[cfg(not(feature = "mpi"))]
    let comm = lmo_comm::SingleProcess;
    if let Err(e) = run(args, &comm) {
        eprintln!("nanogpt (rank {}): {e}", comm.rank());
        std::process::exit(1);
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("examples/nanogpt is two levels below the root")
        .to_path_buf()
}

/// Range checks of the numeric options, before anything is loaded or
/// written: each error names the flag and its valid range.
fn validate(a: &Args) -> Result<(), String> {
    fn at_least<T: PartialOrd + std::fmt::Display + Copy>(
        flag: &str,
        v: Option<T>,
        min: T,
        why: &str,
    ) -> Result<(), String> {
        match v {
            Some(x) if x < min => Err(format!("{flag} {x}: must be ≥ {min}{why}")),
            _ => Ok(()),
        }
    }
    at_least("--steps", a.steps, 1, " (0 steps would train nothing)")?;
    at_least(
        "--batch",
        a.batch,
        1,
        " sequences (an empty batch has no loss)",
    )?;
    at_least("--eval-every", a.eval_every, 1, " step")?;
    at_least("--eval-batches", Some(a.eval_batches), 1, " batch")?;
    at_least(
        "--stop-after",
        a.stop_after,
        1,
        " step (omit it to run all --steps)",
    )?;
    at_least("--threads", a.threads, 1, " thread")?;
    if a.optimizers.iter().any(|o| o == "gluon") {
        at_least(
            "--probe-steps",
            Some(a.probe_steps),
            2,
            " (each point of Gluon's (L0, L1) fit comes from two consecutive steps)",
        )?;
    }
    for (flag, lr) in [
        ("--lr-adamw", a.lr_adamw),
        ("--lr-muon", a.lr_muon),
        ("--lr-muon-adam", a.lr_muon_adam),
        ("--lr-scion", a.lr_scion),
    ] {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(format!("{flag} {lr}: a finite learning rate > 0"));
        }
    }
    Ok(())
}

/// Checks the arguments, loads and tokenizes the text, and says what will
/// run (on rank 0 of `comm`).
fn prepare(args: Args, comm: &impl Communicator) -> Result<Setup, String> {
    validate(&args)?;
    let p = preset(&args.config)?;
    let (rank, ranks) = (comm.rank(), comm.size());
    match args.ranks {
        Some(n) if n != ranks && cfg!(feature = "mpi") => {
            return Err(format!(
                "--ranks {n}, but MPI started {ranks} rank(s): launch with `mpirun -np {n}` (or `cargo xtask nanogpt -- --ranks {n}`)"
            ));
        }
        Some(n) if n != ranks => {
            return Err(format!(
                "--ranks {n}: this build has no MPI; use `cargo xtask nanogpt -- --ranks {n}` (builds with --features mpi, launches mpirun)"
            ));
        }
        _ => {}
    }
    let global = args.batch.unwrap_or(p.batch);
    if global % ranks as i64 != 0 {
        return Err(format!(
            "--batch {global} does not split over {ranks} ranks: use a multiple of {ranks}"
        ));
    }
    let per = global / ranks as i64;
    let rows = rank as i64 * per..(rank as i64 + 1) * per;
    for o in &args.optimizers {
        if !["adamw", "muon", "scion", "gluon"].contains(&o.as_str()) {
            return Err(format!(
                "unknown optimizer {o:?} (adamw, muon, scion, gluon)"
            ));
        }
    }
    let device = match args.device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" if tch::Cuda::is_available() => Device::Cuda(0),
        "cuda" => {
            return Err("--device cuda: CUDA is not available (build with --features cuda on a GPU machine)".into());
        }
        "auto" => Device::cuda_if_available(),
        other => return Err(format!("unknown --device {other:?} (cpu | cuda | auto)")),
    };
    if let Some(t) = args.threads {
        tch::set_num_threads(t);
    }
    let root = workspace_root();
    let (text, what) = load_text(&args.data, &root)?;
    let tok = Tokenizer::new(args.tokenizer.as_deref().unwrap_or(p.tokenizer), &text)?;
    let data = Dataset::new(tok.encode(&text), p.ctx)?;
    let gpt = GptConfig {
        vocab: tok.vocab(),
        ctx: p.ctx,
        n_layer: p.n_layer,
        n_head: p.n_head,
        d: p.d,
        tied: args.tied,
    };
    let steps = args.steps.unwrap_or(p.steps);
    let eval_every = args.eval_every.unwrap_or((steps / 12).max(1));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("target/nanogpt").join(&args.config));
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let say = |line: String| {
        if rank == 0 {
            println!("{line}");
        }
    };
    say(format!(
        "nanogpt {}: {} params ({} layers, {} heads, width {}, context {}, vocab {}{}), {} on {:?}{}, {} threads",
        args.config,
        gpt.params(),
        gpt.n_layer,
        gpt.n_head,
        gpt.d,
        gpt.ctx,
        gpt.vocab,
        if gpt.tied { ", tied head" } else { "" },
        steps,
        device,
        if args.bf16 { ", bf16" } else { "" },
        tch::get_num_threads()
    ));
    if ranks > 1 {
        say(format!(
            "data parallel: {ranks} ranks × {per} sequences of each batch; optimizer state sharded over the ranks"
        ));
    }
    say(format!(
        "data: {what}: {} train / {} val tokens; batch {} × {}; eval every {} steps on {} batches",
        data.train.len(),
        data.val.len(),
        global,
        p.ctx,
        eval_every,
        args.eval_batches
    ));
    let seen = steps as f64 * (args.batch.unwrap_or(p.batch) * p.ctx) as f64;
    if seen > 3.0 * data.train.len() as f64 {
        say(format!(
            "note: {steps} steps read the training text {:.0} times: expect overfitting (validation loss rising); \
             for comparisons use --data shakespeare (cargo xtask data shakespeare) or fewer --steps",
            seen / data.train.len() as f64
        ));
    }
    Ok(Setup {
        batch: args.batch.unwrap_or(p.batch),
        args,
        tok,
        gpt,
        data,
        device,
        steps,
        eval_every,
        out,
        rank,
        ranks,
        rows,
    })
}

/// The optimizer configuration of `name` with its description; Gluon's
/// runs the probe (once; `probe` keeps its fits).
fn optimizer_config(
    s: &Setup,
    name: &str,
    probe: &mut Option<Fits>,
    comm: &impl Communicator,
) -> Result<(Config, String), String> {
    let schedule = Schedule::WarmupCosine {
        warmup: (s.steps / 20).max(1),
        total: s.steps.max(2),
        floor: 0.1,
    };
    let (cfg, hyper) = match name {
        "adamw" => (
            presets::adamw(AdamWGroup {
                lr: s.args.lr_adamw,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: 0.0,
            }),
            format!("lr {}", s.args.lr_adamw),
        ),
        "muon" => (
            presets::muon(s.args.lr_muon, s.args.lr_muon_adam),
            format!("lr {} (AdamW {})", s.args.lr_muon, s.args.lr_muon_adam),
        ),
        "scion" => (
            presets::scion_with(s.args.lr_scion, false, scion_radii()),
            format!("lr {}", s.args.lr_scion),
        ),
        _ => {
            let fits = match (resumed_fits(s, name, comm)?, probe.as_ref()) {
                (Some(f), _) => f,
                (None, Some(f)) => f.clone(),
                (None, None) => {
                    let f = probe_fits(s, comm)?;
                    *probe = Some(f.clone());
                    f
                }
            };
            let map: BTreeMap<Label, (f64, f64)> = fits.iter().cloned().collect();
            let hyper = fits
                .iter()
                .map(|(l, (a, b))| format!("{l:?} ({a:.2}, {b:.2})"))
                .collect::<Vec<_>>()
                .join(", ");
            (gluon_with(&map, 0.9)?, format!("(L0, L1): {hyper}"))
        }
    };
    let mut cfg = cfg.schedule(schedule);
    // libtorch parallelizes inside each op; blocks run one after another.
    cfg.parallel = false;
    Ok((cfg, hyper))
}

fn run(args: Args, comm: &impl Communicator) -> Result<(), String> {
    let s = prepare(args, comm)?;
    let mut results: Vec<RunResult> = vec![];
    let mut probe = None;
    for name in s.args.optimizers.clone() {
        let (cfg, hyper) = optimizer_config(&s, &name, &mut probe, comm)?;
        let fits = if name == "gluon" {
            probe.clone().unwrap_or_default()
        } else {
            vec![]
        };
        results.push(train(&s, &name, &hyper, cfg, fits, comm)?);
    }
    match s.rank {
        0 => report(&s, &mut results),
        _ => Ok(()),
    }
}

/// Scion's radii for this model (the nanogpt reference's 50/3000 are for
/// width 768 and vocabulary 50k).
fn scion_radii() -> ScionRadii {
    ScionRadii {
        hidden: 3.0,
        embedding_head: 30.0,
        vector: 1.0,
    }
}

fn ckpt_dir(s: &Setup, name: &str) -> PathBuf {
    s.out.join(name).join("ckpt")
}

/// The checkpoint's progress when resuming, the same on every rank: rank
/// 0 reads it and broadcasts it (JSON). Collective.
fn read_progress(
    s: &Setup,
    name: &str,
    comm: &impl Communicator,
) -> Result<Option<Progress>, String> {
    if !s.args.resume {
        return Ok(None);
    }
    let mut text = match s.rank {
        0 => std::fs::read(ckpt_dir(s, name).join("progress.json")).unwrap_or_default(),
        _ => vec![],
    };
    let mut len = [text.len() as u64];
    comm.broadcast(&mut len, 0).map_err(|e| e.to_string())?;
    text.resize(len[0] as usize, 0);
    comm.broadcast_bytes(&mut text, 0)
        .map_err(|e| e.to_string())?;
    Ok(serde_json::from_slice(&text).ok())
}

/// Gluon's fits from its checkpoint, when resuming. Collective.
fn resumed_fits(s: &Setup, name: &str, comm: &impl Communicator) -> Result<Option<Fits>, String> {
    Ok(read_progress(s, name, comm)?
        .filter(|p| !p.fits.is_empty())
        .map(|p| p.fits))
}

/// `local` on this rank, agreed over the ranks: this rank's error, or an
/// error naming the failure elsewhere, so that no rank goes on into a
/// collective the others skip. Collective.
fn agreed<T>(comm: &impl Communicator, local: Result<T, String>) -> Result<T, String> {
    let mut failed = [if local.is_err() { 1.0f64 } else { 0.0 }];
    comm.all_reduce(&mut failed, ReduceOp::Max)
        .map_err(|e| e.to_string())?;
    let v = local?;
    match failed[0] > 0.0 {
        true => Err("another rank failed (its message says why)".into()),
        false => Ok(v),
    }
}

/// A fresh model (same initialization for every optimizer: the seed).
fn build(s: &Setup) -> (nn::VarStore, Gpt) {
    // libtorch's generator is global: seed and initialize under one lock
    // (runs in other threads would otherwise draw from it in between).
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _lock = INIT.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(s.args.seed as i64);
    let mut vs = nn::VarStore::new(s.device);
    let model = Gpt::new(&vs.root(), s.gpt);
    if s.args.bf16 {
        vs.bfloat16();
    }
    (vs, model)
}

/// Mean validation loss over the fixed evaluation batches (each rank its
/// rows of each, averaged over the ranks). Collective.
fn evaluate(s: &Setup, model: &Gpt, comm: &impl Communicator) -> Result<f64, String> {
    let local = tch::no_grad(|| {
        let mut sum = 0.0;
        for j in 0..s.args.eval_batches {
            let (x, y) = batch(
                &s.data.val,
                s.rows.clone(),
                s.gpt.ctx,
                s.args.seed ^ 0xE7A1,
                j,
                s.device,
            );
            sum += model.loss(&x, &y).double_value(&[]);
        }
        sum
    });
    let mut sum = [local];
    comm.all_reduce(&mut sum, ReduceOp::Sum)
        .map_err(|e| e.to_string())?;
    Ok(sum[0] / (s.args.eval_batches.max(1) * s.ranks as u64) as f64)
}

/// The (L0, L1) probe: `probe_steps` steps of Scion from the common
/// initialization while a [`LipschitzEstimator`] records points in Gluon's
/// norms; per label the largest τ-quantile constants of its blocks.
/// Collective: rank 0 probes (on the whole batches, as one process would)
/// and broadcasts the fits.
fn probe_fits(s: &Setup, comm: &impl Communicator) -> Result<Fits, String> {
    // The labels of the model's trainable variables, on every rank.
    let labels: std::collections::BTreeSet<Label> = build(s)
        .0
        .variables()
        .iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(n, t)| default_label(n, &t.size()))
        .collect();
    let local = match s.rank {
        0 => probe_local(s),
        _ => Ok(vec![]),
    };
    // [ok, L0, L1, L0, L1, …] in label order, from rank 0.
    let mut buf = vec![0.0f64; 1 + 2 * labels.len()];
    if let Ok(fits) = &local {
        buf[0] = 1.0;
        for (k, l) in labels.iter().enumerate() {
            let (l0, l1) = fits
                .iter()
                .find(|(f, _)| f == l)
                .map(|f| f.1)
                .unwrap_or((0.0, 0.0));
            buf[1 + 2 * k] = l0;
            buf[2 + 2 * k] = l1;
        }
    }
    comm.broadcast(&mut buf, 0).map_err(|e| e.to_string())?;
    let fits = local?;
    if buf[0] != 1.0 {
        return Err("the (L0, L1) probe failed on rank 0".into());
    }
    match s.rank {
        0 => Ok(fits),
        _ => Ok(labels
            .into_iter()
            .enumerate()
            .map(|(k, l)| (l, (buf[1 + 2 * k], buf[2 + 2 * k])))
            .collect()),
    }
}

/// [`probe_fits`] in this process.
fn probe_local(s: &Setup) -> Result<Fits, String> {
    println!(
        "gluon: probing (L0, L1) along {} steps of Scion (τ = {TAU} quantile fit, Gluon's norms)",
        s.args.probe_steps
    );
    let t0 = Instant::now();
    let (vs, model) = build(s);
    let mut probe_cfg = presets::scion_with(s.args.lr_scion, false, scion_radii());
    probe_cfg.parallel = false;
    let mut opt = VarStoreOptimizer::new(&vs, probe_cfg).map_err(|e| e.to_string())?;
    let norms = presets::gluon((0.0, 1.0), (0.0, 1.0), 0.9);
    let mut est = LipschitzEstimator::<Tch32>::new(&norms, opt.labels(), opt.params())
        .map_err(|e| e.to_string())?;
    // Observed before every step and after the last one: one point per
    // step and block (as `gluon_optim::probe` does for in-memory params).
    for k in 0..=s.args.probe_steps {
        let (x, y) = batch(
            &s.data.train,
            0..s.batch,
            s.gpt.ctx,
            s.args.seed,
            k,
            s.device,
        );
        let loss = model.loss(&x, &y);
        opt.zero_grad();
        loss.backward();
        let grads = opt.gradients().map_err(|e| e.to_string())?;
        tch::no_grad(|| est.observe(opt.params(), &grads)).map_err(|e| e.to_string())?;
        if k < s.args.probe_steps {
            opt.step().map_err(|e| e.to_string())?;
        }
    }
    let mut fits: BTreeMap<Label, (f64, f64)> = BTreeMap::new();
    let mut panels: BTreeMap<Label, Vec<Series>> = BTreeMap::new();
    for (i, (l, name)) in opt.labels().iter().zip(opt.names()).enumerate() {
        let f = est
            .fit_quantile(i, TAU)
            .ok_or_else(|| format!("probe recorded no points for {name}"))?;
        for w in f.warnings() {
            println!("  warning, {name}: {w}");
        }
        let e = fits.entry(l.clone()).or_insert((0.0, 0.0));
        *e = (e.0.max(f.l0), e.1.max(f.l1));
        panels.entry(l.clone()).or_default().push(Series {
            name: name.clone(),
            points: est
                .points(i)
                .iter()
                .map(|p| (p.g.log10(), p.lhat.log10()))
                .collect(),
            line: false,
        });
    }
    std::fs::write(s.out.join("probe_points.csv"), est.to_csv()).map_err(|e| e.to_string())?;
    // Figure 1: L̂ against ‖∇f‖_* per group, with the group's fitted line.
    let panels: Vec<Panel> = panels
        .into_iter()
        .map(|(l, mut series)| {
            let (l0, l1) = fits[&l];
            let gs: Vec<f64> = series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.0))
                .filter(|g| g.is_finite())
                .collect();
            let (lo, hi) = gs
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &g| (a.min(g), b.max(g)));
            let line = (0..=40)
                .map(|j| {
                    let lg = lo + (hi - lo) * j as f64 / 40.0;
                    (lg, (l0 + l1 * 10f64.powf(lg)).log10())
                })
                .collect();
            // Many blocks per group: keep the legend short.
            if series.len() > 4 {
                let all = series.drain(..).flat_map(|s| s.points).collect();
                series.push(Series {
                    name: "blocks".into(),
                    points: all,
                    line: false,
                });
            }
            series.push(Series {
                name: format!("L0 + L1·g, L0 = {l0:.2}, L1 = {l1:.2}"),
                points: line,
                line: true,
            });
            Panel {
                title: format!("{l:?}"),
                x: "log10 ‖∇f‖_* (g)".into(),
                y: "log10 L̂".into(),
                series,
            }
        })
        .collect();
    plot_panels(&s.out, "lhat", 420, &panels)?;
    for (l, (a, b)) in &fits {
        println!("  {l:?}: L0 = {a:.3}, L1 = {b:.3}");
    }
    println!("  probe took {:.1}s", t0.elapsed().as_secs_f64());
    Ok(fits.into_iter().collect())
}

/// Saves the model, the (gathered) optimizer state and, last (a
/// checkpoint counts once it is there), the progress. Collective; rank 0
/// writes, and a failed write is an error on every rank.
fn save_checkpoint<C: Communicator>(
    s: &Setup,
    name: &str,
    vs: &nn::VarStore,
    opt: &mut ShardedVarStoreOptimizer<C>,
    prog: &Progress,
) -> Result<(), String> {
    let comm = opt.optimizer().comm();
    let dir = ckpt_dir(s, name);
    let model = match s.rank {
        0 => std::fs::create_dir_all(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))
            .and_then(|_| {
                vs.save(dir.join("model.safetensors"))
                    .map_err(|e| e.to_string())
            }),
        _ => Ok(()),
    };
    agreed(comm, model)?;
    opt.save(&dir.join("optimizer.json"))
        .map_err(|e| e.to_string())?;
    let comm = opt.optimizer().comm();
    let progress = match s.rank {
        0 => serde_json::to_string(prog)
            .map_err(|e| e.to_string())
            .and_then(|json| {
                std::fs::write(dir.join("progress.json"), json).map_err(|e| e.to_string())
            }),
        _ => Ok(()),
    };
    agreed(comm, progress)
}

/// Trains one optimizer from the common initialization (or its
/// checkpoint), logging and checkpointing. Collective: each rank its rows
/// of every batch.
fn train<C: Communicator>(
    s: &Setup,
    name: &str,
    hyper: &str,
    cfg: Config,
    fits: Fits,
    comm: &C,
) -> Result<RunResult, String> {
    let (mut vs, model) = build(s);
    let mut opt = ShardedVarStoreOptimizer::new(&vs, cfg, comm).map_err(|e| e.to_string())?;
    let mut prog = Progress {
        fits,
        ..Default::default()
    };
    if let Some(p) = read_progress(s, name, comm)? {
        let dir = ckpt_dir(s, name);
        let model = vs
            .load(dir.join("model.safetensors"))
            .map_err(|e| e.to_string());
        agreed(comm, model)?;
        opt.load(&dir.join("optimizer.json"))
            .map_err(|e| e.to_string())?;
        s.say(&format!(
            "{name}: resumed from {} at step {}",
            dir.display(),
            p.step
        ));
        prog = p;
    }
    s.say(&format!("{name}: {hyper}"));
    let bar = if s.args.quiet || s.rank != 0 {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(s.steps)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>6} [{bar:30}] {pos}/{len} {elapsed} eta {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(name.to_string());
    bar.set_position(prog.step);
    let t0 = Instant::now();
    let base = prog.elapsed_s;
    let stop = s.args.stop_after.unwrap_or(s.steps).min(s.steps);
    while prog.step < stop {
        let k = prog.step;
        let (x, y) = batch(
            &s.data.train,
            s.rows.clone(),
            s.gpt.ctx,
            s.args.seed,
            k,
            s.device,
        );
        let loss = model.loss(&x, &y);
        opt.zero_grad();
        loss.backward();
        opt.step().map_err(|e| format!("{name}, step {k}: {e}"))?;
        // The batch's loss: the mean of the ranks' (equal) rows.
        let mut l = [loss.double_value(&[])];
        comm.all_reduce(&mut l, ReduceOp::Sum)
            .map_err(|e| e.to_string())?;
        let l = l[0] / s.ranks as f64;
        if !l.is_finite() {
            return Err(format!(
                "{name}: loss is {l} at step {k} (diverged; lower the learning rate)"
            ));
        }
        prog.train.push(l);
        prog.step += 1;
        prog.elapsed_s = base + t0.elapsed().as_secs_f64();
        bar.inc(1);
        if prog.step.is_multiple_of(s.eval_every) || prog.step == s.steps {
            let n = prog.train.len().min(s.eval_every as usize);
            let train_loss = prog.train[prog.train.len() - n..].iter().sum::<f64>() / n as f64;
            let val_loss = evaluate(s, &model, comm)?;
            let e = Eval {
                step: prog.step,
                train_loss,
                val_loss,
                elapsed_s: prog.elapsed_s,
            };
            let line = format!(
                "{name} step {:>5}: train {:.4}  val {:.4}  {:.1}s",
                e.step, e.train_loss, e.val_loss, e.elapsed_s
            );
            if s.args.quiet {
                s.say(&line);
            } else {
                bar.set_message(format!("val {val_loss:.4}"));
                bar.println(line);
            }
            prog.evals.push(e);
        }
        let ce = s.args.checkpoint_every;
        if ce > 0 && prog.step.is_multiple_of(ce) && prog.step < s.steps {
            save_checkpoint(s, name, &vs, &mut opt, &prog)?;
        }
    }
    bar.finish_and_clear();
    save_checkpoint(s, name, &vs, &mut opt, &prog)?;
    if s.ranks > 1 {
        same_replicas(s, name, opt.params(), comm)?;
    }
    if s.rank != 0 {
        return Ok(RunResult {
            optimizer: name.to_string(),
            hyper: hyper.to_string(),
            final_val: prog.evals.last().map(|e| e.val_loss).unwrap_or(f64::NAN),
            steps_to_target: None,
            time_to_target_s: None,
            wall_s: prog.elapsed_s,
            evals: prog.evals,
        });
    }
    if prog.step == s.steps && !s.args.quiet {
        let prompt = s.tok.encode("\n");
        let text = s.tok.decode(&model.generate(&prompt, 160, 0.8));
        println!("{name} sample:\n{}\n", text.trim());
    }
    write_log(s, name, &prog)?;
    let final_val = prog.evals.last().map(|e| e.val_loss).unwrap_or(f64::NAN);
    Ok(RunResult {
        optimizer: name.to_string(),
        hyper: hyper.to_string(),
        final_val,
        steps_to_target: None,
        time_to_target_s: None,
        wall_s: prog.elapsed_s,
        evals: prog.evals,
    })
}

/// Checks that every rank holds the same parameters (a fingerprint of
/// their bits, all-gathered). Collective.
fn same_replicas<C: Communicator>(
    s: &Setup,
    name: &str,
    params: &[lmo_tch::TchTensor],
    comm: &C,
) -> Result<(), String> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in params {
        let v = Vec::<f32>::try_from(p.copy().flatten(0, -1).to_kind(tch::Kind::Float))
            .map_err(|e| e.to_string())?;
        for x in v {
            for b in x.to_bits().to_le_bytes() {
                h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    let mut all = vec![0u64; s.ranks];
    comm.all_gather(&[h], &mut all).map_err(|e| e.to_string())?;
    if all.iter().any(|&x| x != h) {
        return Err(format!(
            "{name}: the ranks' parameters differ (fingerprints {all:x?})"
        ));
    }
    s.say(&format!(
        "{name}: parameters identical on all {} ranks (fingerprint {h:016x})",
        s.ranks
    ));
    Ok(())
}

fn write_log(s: &Setup, name: &str, prog: &Progress) -> Result<(), String> {
    let mut csv = String::from("step,train_loss,val_loss,elapsed_s\n");
    let mut evals = prog.evals.iter().peekable();
    for (k, l) in prog.train.iter().enumerate() {
        let step = k as u64 + 1;
        match evals.peek() {
            Some(e) if e.step == step => {
                csv += &format!("{step},{l},{},{}\n", e.val_loss, e.elapsed_s);
                evals.next();
            }
            _ => csv += &format!("{step},{l},,\n"),
        }
    }
    let p = s.out.join(name).join("log.csv");
    std::fs::write(&p, csv).map_err(|e| format!("{}: {e}", p.display()))
}

/// Prints and writes the comparison: steps and time to AdamW's final
/// validation loss.
fn report(s: &Setup, results: &mut [RunResult]) -> Result<(), String> {
    let target = results
        .iter()
        .find(|r| r.optimizer == "adamw")
        .map(|r| r.final_val);
    if let Some(t) = target {
        for r in results.iter_mut() {
            let hit = r.evals.iter().find(|e| e.val_loss <= t);
            r.steps_to_target = hit.map(|e| e.step);
            r.time_to_target_s = hit.map(|e| e.elapsed_s);
        }
    }
    let adam = results.iter().find(|r| r.optimizer == "adamw").cloned();
    let mut md = String::new();
    md += &format!(
        "| optimizer | hyper-parameters | final val loss | steps to AdamW's final val ({}) | ratio | time to it | wall |\n|---|---|---:|---:|---:|---:|---:|\n",
        target
            .map(|t| format!("{t:.4}"))
            .unwrap_or_else(|| "no AdamW run".into())
    );
    for r in results.iter() {
        let ratio = match (&adam, r.steps_to_target) {
            (Some(a), Some(k)) => a
                .steps_to_target
                .map(|ka| format!("{:.2}×", k as f64 / ka as f64))
                .unwrap_or_default(),
            _ => "—".into(),
        };
        md += &format!(
            "| {} | {} | {:.4} | {} | {} | {} | {:.1}s |\n",
            r.optimizer,
            r.hyper,
            r.final_val,
            r.steps_to_target
                .map(|k| k.to_string())
                .unwrap_or_else(|| "not reached".into()),
            ratio,
            r.time_to_target_s
                .map(|t| format!("{t:.1}s"))
                .unwrap_or_else(|| "—".into()),
            r.wall_s
        );
    }
    println!("\n{md}");
    std::fs::write(s.out.join("summary.md"), &md).map_err(|e| e.to_string())?;
    let json = serde_json::json!({
        "config": s.args.config,
        "model": s.gpt,
        "steps": s.steps,
        "batch": s.batch,
        "device": format!("{:?}", s.device),
        "bf16": s.args.bf16,
        "threads": tch::get_num_threads(),
        "results": results,
    });
    std::fs::write(
        s.out.join("summary.json"),
        serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let curve = |f: fn(&Eval) -> f64| -> Vec<Series> {
        results
            .iter()
            .map(|r| Series {
                name: r.optimizer.clone(),
                points: r.evals.iter().map(|e| (e.step as f64, f(e))).collect(),
                line: true,
            })
            .collect()
    };
    let plots = plot_panels(
        &s.out,
        "loss",
        560,
        &[
            Panel {
                title: "train loss (mean since last eval)".into(),
                x: "step".into(),
                y: "loss".into(),
                series: curve(|e| e.train_loss),
            },
            Panel {
                title: "validation loss".into(),
                x: "step".into(),
                y: "loss".into(),
                series: curve(|e| e.val_loss),
            },
        ],
    )?;
    println!("summary: {}", s.out.join("summary.md").display());
    for p in plots {
        println!("plot: {}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
