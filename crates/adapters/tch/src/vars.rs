//! The trainable variables of a `VarStore` as optimizer blocks: names,
//! detached parameter handles, gradients and the checkpoint file; shared
//! by [`crate::VarStoreOptimizer`] and [`crate::ShardedVarStoreOptimizer`].

use std::path::Path;

use gluon_optim::{Label, OptState};
use serde::{Deserialize, Serialize};
use tch::Tensor;
use tch::nn::VarStore;

use crate::{TchOptError, TchTensor};

/// A saved `VarStore` optimizer: the variable names (in block order) and
/// the optimizer state (the single-process format, whatever the world
/// size it was saved at).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedOptimizer {
    /// Variable names, one per block.
    pub names: Vec<String>,
    /// The optimizer state.
    pub state: OptState,
}

/// The blocks of a `VarStore`: its trainable variables sorted by name (a
/// stable order for checkpoints).
pub(crate) struct Vars {
    pub(crate) names: Vec<String>,
    /// The variables themselves (for `.grad()` and `zero_grad`).
    vars: Vec<Tensor>,
    /// Detached handles on the same storage: the optimizer writes through
    /// these (no autograd bookkeeping, safe on rayon's worker threads,
    /// where a `no_grad` guard of the calling thread does not reach).
    pub(crate) params: Vec<TchTensor>,
    /// The gradients of the step being taken (handles sharing storage;
    /// empty between steps).
    pub(crate) grads: Vec<TchTensor>,
}

impl Vars {
    /// The trainable variables of `vs` and their labels by `label(name,
    /// dims)`.
    pub(crate) fn collect(
        vs: &VarStore,
        label: impl Fn(&str, &[i64]) -> Label,
    ) -> (Self, Vec<Label>) {
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
        let me = Vars {
            names,
            vars,
            params,
            grads: Vec::new(),
        };
        (me, labels)
    }

    /// Sets every variable's gradient to zero.
    pub(crate) fn zero_grad(&mut self) {
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

    /// Every block's gradient, in block order.
    pub(crate) fn gradients(&self) -> Result<Vec<TchTensor>, TchOptError> {
        (0..self.vars.len()).map(|i| self.grad_of(i)).collect()
    }

    /// Fills `self.grads` with every block's gradient (left empty on an
    /// error).
    pub(crate) fn read_grads(&mut self) -> Result<(), TchOptError> {
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
        Ok(())
    }

    /// The error of a state saved for other variables.
    pub(crate) fn check_names(&self, s: &SavedOptimizer) -> Result<(), TchOptError> {
        if s.names == self.names {
            return Ok(());
        }
        Err(TchOptError::Mismatch(format!(
            "saved for {} variables ({:?}…), this store has {} ({:?}…)",
            s.names.len(),
            s.names.first(),
            self.names.len(),
            self.names.first()
        )))
    }
}

fn io(path: &Path, e: &dyn std::fmt::Display) -> TchOptError {
    TchOptError::Io(format!("{}: {e}", path.display()))
}

/// Writes `s` as JSON to `path`.
pub(crate) fn write_saved(path: &Path, s: &SavedOptimizer) -> Result<(), TchOptError> {
    let json = serde_json::to_string(s).map_err(|e| io(path, &e))?;
    std::fs::write(path, json).map_err(|e| io(path, &e))
}

/// Reads the JSON written by [`write_saved`].
pub(crate) fn read_saved(path: &Path) -> Result<SavedOptimizer, TchOptError> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, &e))?;
    serde_json::from_str(&text).map_err(|e| io(path, &e))
}
