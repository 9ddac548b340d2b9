//! [`VarStoreOptimizer`]: the single-process optimizer over a `VarStore`.

use std::path::Path;

use gluon_optim::{Config, Label, Optimizer, StepReport};
use tch::nn::VarStore;

use crate::vars::{SavedOptimizer, Vars, read_saved, write_saved};
use crate::{Tch32, TchOptError, TchTensor, default_label};

/// `gluon-optim`'s [`Optimizer`] over the trainable variables of a
/// [`VarStore`], in place.
///
/// Blocks are the trainable variables sorted by name (a stable order for
/// checkpoints), each labelled by [`default_label`] or a user function.
/// [`VarStoreOptimizer::step`] reads every variable's `.grad()` and runs
/// one step of SPEC §3 under `no_grad`; the update writes straight into the
/// variables' storage (CPU or CUDA), so the model sees it. For several
/// processes (data parallelism over MPI) see
/// [`crate::ShardedVarStoreOptimizer`].
pub struct VarStoreOptimizer {
    vars: Vars,
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
        let (vars, labels) = Vars::collect(vs, label);
        let opt = Optimizer::new(config, labels, &vars.params)?;
        Ok(VarStoreOptimizer { vars, opt })
    }

    /// The variable names, in block order.
    pub fn names(&self) -> &[String] {
        &self.vars.names
    }

    /// The label of each block.
    pub fn labels(&self) -> &[Label] {
        self.opt.labels()
    }

    /// The variables, detached (handles sharing the `VarStore`'s storage).
    pub fn params(&self) -> &[TchTensor] {
        &self.vars.params
    }

    /// The underlying optimizer (configuration, step count).
    pub fn optimizer(&self) -> &Optimizer<Tch32> {
        &self.opt
    }

    /// Sets every variable's gradient to zero (as `optimizer.zero_grad()`
    /// in PyTorch).
    pub fn zero_grad(&mut self) {
        self.vars.zero_grad();
    }

    /// The current gradients (handles sharing storage), in block order,
    /// after `backward()`: for example for a
    /// [`gluon_optim::LipschitzEstimator`] next to [`VarStoreOptimizer::params`].
    pub fn gradients(&self) -> Result<Vec<TchTensor>, TchOptError> {
        self.vars.gradients()
    }

    /// One step (SPEC §3) from the variables' current gradients, in place,
    /// under `no_grad`. Validates everything before changing anything.
    pub fn step(&mut self) -> Result<&StepReport, TchOptError> {
        self.vars.read_grads()?;
        let _guard = tch::no_grad_guard();
        let v = &mut self.vars;
        let r = self.opt.step(&mut v.params, &v.grads);
        v.grads.clear();
        Ok(r?)
    }

    /// The state with the variable names (see [`SavedOptimizer`]).
    pub fn saved(&self) -> SavedOptimizer {
        SavedOptimizer {
            names: self.vars.names.clone(),
            state: self.opt.state(),
        }
    }

    /// Restores a state saved from an optimizer over the same variables
    /// (by this type, or by [`crate::ShardedVarStoreOptimizer`] at any
    /// world size).
    pub fn restore(&mut self, s: &SavedOptimizer) -> Result<(), TchOptError> {
        self.vars.check_names(s)?;
        let _guard = tch::no_grad_guard();
        Ok(self.opt.load_state(&s.state)?)
    }

    /// Writes the state as JSON to `path` (see [`VarStoreOptimizer::load`]).
    pub fn save(&self, path: &Path) -> Result<(), TchOptError> {
        write_saved(path, &self.saved())
    }

    /// Restores the state written by [`VarStoreOptimizer::save`] (or by
    /// [`crate::ShardedVarStoreOptimizer::save`]).
    pub fn load(&mut self, path: &Path) -> Result<(), TchOptError> {
        self.restore(&read_saved(path)?)
    }
}
