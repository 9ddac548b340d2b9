//! The libtorch (tch) adapter of the LMO toolkit: `gluon-optim`'s layer-wise
//! LMO step (SPEC §3: Gluon, Muon, Scion, AdamW, …) on `tch::Tensor`s, on
//! the CPU or on CUDA, with the same optimizer logic as every other backend.
//!
//! - [`Tch`] ([`Tch32`], [`Tch64`]): the lmo-core [`lmo_core::Backend`] on
//!   libtorch tensors. f32, bf16 and f16 tensors keep their storage type;
//!   the polar factor (Newton–Schulz, SPEC §2) then runs as libtorch
//!   matmuls in that type (bf16 on CUDA: tensor cores, f32 accumulation).
//! - [`VarStoreOptimizer`]: groups the variables of a [`tch::nn::VarStore`]
//!   by name and shape ([`default_label`]: hidden matrices, embeddings,
//!   head, vectors), reads their gradients and steps them in place under
//!   `no_grad`; its state saves to JSON next to the `VarStore` checkpoint.
//! - `device` (feature `device-step`): zero-copy views of libtorch CUDA
//!   tensors for the CUDA backend and `gluon_optim::cuda::DeviceOptimizer`.
//!
//! libtorch comes from the PyPI wheel `torch==2.11.0` (tch `=0.24.0`):
//! `cargo xtask test` and `cargo xtask nanogpt` install it into
//! `target/torch` and set `LIBTORCH`. The `cuda` feature links
//! `libtorch_cuda` explicitly so that `tch::Cuda::is_available()` is true on
//! a GPU machine (see `build.rs`).
//!
//! ```no_run
//! use gluon_optim::presets;
//! use lmo_tch::VarStoreOptimizer;
//! use tch::{nn, nn::Module, Device, Kind, Tensor};
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! let net = nn::seq()
//!     .add(nn::linear(vs.root() / "fc1", 8, 32, Default::default()))
//!     .add_fn(|x| x.relu())
//!     .add(nn::linear(vs.root() / "head", 32, 1, Default::default()));
//! let mut opt = VarStoreOptimizer::new(&vs, presets::muon(0.02, 3e-3)).unwrap();
//! let x = Tensor::randn([64, 8], (Kind::Float, Device::Cpu));
//! for _ in 0..10 {
//!     let loss = net.forward(&x).square().mean(Kind::Float);
//!     opt.zero_grad();
//!     loss.backward();
//!     opt.step().unwrap();
//! }
//! ```

mod backend;
#[cfg(feature = "device-step")]
pub mod device;

pub use backend::{Tch, Tch32, Tch64, TchScalar, TchTensor, shape_of};

use std::path::Path;

use gluon_optim::{Config, Label, OptError, OptState, Optimizer, StepReport};
use serde::{Deserialize, Serialize};
use tch::Tensor;
use tch::nn::VarStore;

/// The default grouping of a variable by its name and shape (the
/// conventions of GPT-style models, nanoGPT's names included):
/// - rank ≤ 1 (biases, norm gains): [`Label::Vector`];
/// - a name with a path component `wte`, `wpe`, `emb`, `embed`,
///   `embedding` or `tok_embeddings`: [`Label::Embedding`];
/// - a name with a path component `lm_head`, `head` or `output`:
///   [`Label::Head`];
/// - any other matrix (or higher rank): [`Label::Hidden`].
pub fn default_label(name: &str, dims: &[i64]) -> Label {
    if dims.len() <= 1 {
        return Label::Vector;
    }
    let parts: Vec<&str> = name.split('.').collect();
    let has = |keys: &[&str]| parts.iter().any(|p| keys.contains(p));
    if has(&["wte", "wpe", "emb", "embed", "embedding", "tok_embeddings"]) {
        Label::Embedding
    } else if has(&["lm_head", "head", "output"]) {
        Label::Head
    } else {
        Label::Hidden
    }
}

/// Errors of [`VarStoreOptimizer`]; every error leaves the variables and
/// the optimizer state untouched.
#[derive(Debug)]
pub enum TchOptError {
    /// The optimizer rejected the step, the configuration or the state.
    Opt(OptError),
    /// Variable `name` has no gradient (call `backward()` first, or freeze
    /// it so that it is not trainable).
    MissingGradient {
        /// The variable.
        name: String,
    },
    /// A saved state names other variables than this store.
    Mismatch(String),
    /// Reading or writing a checkpoint failed.
    Io(String),
}

impl core::fmt::Display for TchOptError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TchOptError::Opt(e) => write!(f, "{e}"),
            TchOptError::MissingGradient { name } => write!(
                f,
                "variable `{name}` has no gradient (call backward() before step())"
            ),
            TchOptError::Mismatch(why) => write!(f, "saved state does not fit: {why}"),
            TchOptError::Io(why) => write!(f, "checkpoint: {why}"),
        }
    }
}

impl std::error::Error for TchOptError {}

impl From<OptError> for TchOptError {
    fn from(e: OptError) -> Self {
        TchOptError::Opt(e)
    }
}

/// A saved [`VarStoreOptimizer`]: the variable names (in block order) and
/// the optimizer state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedOptimizer {
    /// Variable names, one per block.
    pub names: Vec<String>,
    /// The optimizer state.
    pub state: OptState,
}

/// `gluon-optim`'s [`Optimizer`] over the trainable variables of a
/// [`VarStore`], in place.
///
/// Blocks are the trainable variables sorted by name (a stable order for
/// checkpoints), each labelled by [`default_label`] or a user function.
/// [`VarStoreOptimizer::step`] reads every variable's `.grad()` and runs
/// one step of SPEC §3 under `no_grad`; the update writes straight into the
/// variables' storage (CPU or CUDA), so the model sees it.
pub struct VarStoreOptimizer {
    names: Vec<String>,
    /// The variables themselves (for `.grad()` and `zero_grad`).
    vars: Vec<Tensor>,
    /// Detached handles on the same storage: the optimizer writes through
    /// these (no autograd bookkeeping, safe on rayon's worker threads,
    /// where a `no_grad` guard of the calling thread does not reach).
    params: Vec<TchTensor>,
    grads: Vec<TchTensor>,
    opt: Optimizer<Tch32>,
}

impl VarStoreOptimizer {
    /// The optimizer for the trainable variables of `vs`, grouped by
    /// [`default_label`]. f32, bf16 or f16 variables.
    pub fn new(vs: &VarStore, config: Config) -> Result<Self, TchOptError> {
        Self::with_labels(vs, config, default_label)
    }

    /// As [`VarStoreOptimizer::new`], with `label(name, dims)` choosing the
    /// group of each variable.
    pub fn with_labels(
        vs: &VarStore,
        config: Config,
        label: impl Fn(&str, &[i64]) -> Label,
    ) -> Result<Self, TchOptError> {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let labels = vars.iter().map(|(n, t)| label(n, &t.size())).collect();
        let names: Vec<String> = vars.iter().map(|(n, _)| n.clone()).collect();
        let vars: Vec<Tensor> = vars.into_iter().map(|(_, t)| t).collect();
        let params: Vec<TchTensor> = vars.iter().map(|t| TchTensor(t.detach())).collect();
        let opt = Optimizer::new(config, labels, &params)?;
        Ok(VarStoreOptimizer {
            names,
            vars,
            params,
            grads: Vec::new(),
            opt,
        })
    }

    /// The variable names, in block order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The label of each block.
    pub fn labels(&self) -> &[Label] {
        self.opt.labels()
    }

    /// The variables, detached (handles sharing the `VarStore`'s storage).
    pub fn params(&self) -> &[TchTensor] {
        &self.params
    }

    /// The underlying optimizer (configuration, step count).
    pub fn optimizer(&self) -> &Optimizer<Tch32> {
        &self.opt
    }

    /// Sets every variable's gradient to zero (as `optimizer.zero_grad()`
    /// in PyTorch).
    pub fn zero_grad(&mut self) {
        for v in &mut self.vars {
            v.zero_grad();
        }
    }

    /// The gradient of block `i` (a handle sharing storage), or the error
    /// naming a variable without one.
    fn grad_of(&self, i: usize) -> Result<TchTensor, TchOptError> {
        let g = self.vars[i].grad();
        if g.defined() {
            Ok(TchTensor(g))
        } else {
            Err(TchOptError::MissingGradient {
                name: self.names[i].clone(),
            })
        }
    }

    /// The current gradients (handles sharing storage), in block order,
    /// after `backward()`: for example for a
    /// [`gluon_optim::LipschitzEstimator`] next to [`VarStoreOptimizer::params`].
    pub fn gradients(&self) -> Result<Vec<TchTensor>, TchOptError> {
        (0..self.vars.len()).map(|i| self.grad_of(i)).collect()
    }

    /// One step (SPEC §3) from the variables' current gradients, in place,
    /// under `no_grad`. Validates everything before changing anything.
    pub fn step(&mut self) -> Result<&StepReport, TchOptError> {
        self.grads.clear();
        for i in 0..self.vars.len() {
            match self.grad_of(i) {
                Ok(g) => self.grads.push(g),
                Err(e) => {
                    self.grads.clear();
                    return Err(e);
                }
            }
        }
        let _guard = tch::no_grad_guard();
        let r = self.opt.step(&mut self.params, &self.grads);
        self.grads.clear();
        Ok(r?)
    }

    /// The state with the variable names (see [`SavedOptimizer`]).
    pub fn saved(&self) -> SavedOptimizer {
        SavedOptimizer {
            names: self.names.clone(),
            state: self.opt.state(),
        }
    }

    /// Restores a state saved from an optimizer over the same variables.
    pub fn restore(&mut self, s: &SavedOptimizer) -> Result<(), TchOptError> {
        if s.names != self.names {
            return Err(TchOptError::Mismatch(format!(
                "saved for {} variables ({:?}…), this store has {} ({:?}…)",
                s.names.len(),
                s.names.first(),
                self.names.len(),
                self.names.first()
            )));
        }
        let _guard = tch::no_grad_guard();
        Ok(self.opt.load_state(&s.state)?)
    }

    /// Writes the state as JSON to `path` (see [`VarStoreOptimizer::load`]).
    pub fn save(&self, path: &Path) -> Result<(), TchOptError> {
        let io = |e: &dyn std::fmt::Display| TchOptError::Io(format!("{}: {e}", path.display()));
        let json = serde_json::to_string(&self.saved()).map_err(|e| io(&e))?;
        std::fs::write(path, json).map_err(|e| io(&e))
    }

    /// Restores the state written by [`VarStoreOptimizer::save`].
    pub fn load(&mut self, path: &Path) -> Result<(), TchOptError> {
        let io = |e: &dyn std::fmt::Display| TchOptError::Io(format!("{}: {e}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| io(&e))?;
        let s: SavedOptimizer = serde_json::from_str(&text).map_err(|e| io(&e))?;
        self.restore(&s)
    }
}
