//! [`ShardedVarStoreOptimizer`]: data-parallel training of a `VarStore`
//! over a communicator (MPI on CPUs), with the sharded step.

use std::path::Path;

use gluon_optim::{Config, Label, ShardError, ShardedOptimizer, StepReport};
use lmo_comm::Communicator;
use tch::nn::VarStore;

use crate::vars::{SavedOptimizer, Vars, read_saved, write_saved};
use crate::{Tch32, TchOptError, TchTensor, default_label};

/// Data parallelism over the ranks of `C` for the trainable variables of a
/// [`VarStore`]: every rank holds the whole model (a replica), computes
/// the gradient of its own batch, and [`ShardedVarStoreOptimizer::step`]
/// averages each block's gradients onto the block's owner
/// ([`ShardedOptimizer::reduce_gradients`]) and takes the step of
/// [`gluon_optim::ShardedOptimizer`] (each block's optimizer state on one
/// rank, the updated variables broadcast from their owners), so that the
/// replicas stay bit-identical.
///
/// Every rank builds the same model (same names and shapes) and calls the
/// collective methods (`new`, `step`, `saved`, `save`, `restore`, `load`)
/// in the same order. With [`lmo_comm::SingleProcess`] the step is
/// [`crate::VarStoreOptimizer`]'s, bit for bit. Checkpoints are the
/// single-process format ([`SavedOptimizer`]): a state saved at any world
/// size loads at any other, and into a [`crate::VarStoreOptimizer`].
///
/// ```no_run
/// use gluon_optim::presets;
/// use lmo_comm::SingleProcess; // lmo_comm::MpiComm::init()? under mpirun
/// use lmo_tch::ShardedVarStoreOptimizer;
/// use tch::{nn, nn::Module, Device, Kind, Tensor};
///
/// let vs = nn::VarStore::new(Device::Cpu);
/// let net = nn::linear(vs.root() / "fc", 8, 8, Default::default());
/// let mut opt = ShardedVarStoreOptimizer::new(&vs, presets::muon(0.02, 3e-3), SingleProcess).unwrap();
/// // Each rank draws its own batch.
/// let x = Tensor::randn([64, 8], (Kind::Float, Device::Cpu));
/// let loss = net.forward(&x).square().mean(Kind::Float);
/// opt.zero_grad();
/// loss.backward();
/// opt.step().unwrap();
/// ```
pub struct ShardedVarStoreOptimizer<C: Communicator> {
    vars: Vars,
    opt: ShardedOptimizer<Tch32, C>,
}

impl<C: Communicator> ShardedVarStoreOptimizer<C> {
    /// The optimizer for the trainable variables of `vs` grouped by
    /// [`default_label`], over `comm`. Collective; errors (on every rank):
    /// whatever [`ShardedOptimizer::new`] refuses on any rank, the ranks'
    /// shapes differing included.
    pub fn new(vs: &VarStore, config: Config, comm: C) -> Result<Self, TchOptError> {
        Self::with_labels(vs, config, comm, default_label)
    }

    /// As [`ShardedVarStoreOptimizer::new`], with `label(name, dims)`
    /// choosing the group of each variable (the same on every rank).
    pub fn with_labels(
        vs: &VarStore,
        config: Config,
        comm: C,
        label: impl Fn(&str, &[i64]) -> Label,
    ) -> Result<Self, TchOptError> {
        let (vars, labels) = Vars::collect(vs, label);
        let opt = ShardedOptimizer::new(config, labels, &vars.params, comm)?;
        Ok(ShardedVarStoreOptimizer { vars, opt })
    }

    /// The variable names, in block order.
    pub fn names(&self) -> &[String] {
        &self.vars.names
    }

    /// The variables, detached (handles sharing the `VarStore`'s storage).
    pub fn params(&self) -> &[TchTensor] {
        &self.vars.params
    }

    /// The sharded optimizer (owners, step count, timings, communicator).
    pub fn optimizer(&self) -> &ShardedOptimizer<Tch32, C> {
        &self.opt
    }

    /// Sets every variable's gradient to zero.
    pub fn zero_grad(&mut self) {
        self.vars.zero_grad();
    }

    /// The current gradients (handles sharing storage), in block order.
    pub fn gradients(&self) -> Result<Vec<TchTensor>, TchOptError> {
        self.vars.gradients()
    }

    /// One data-parallel step, collective: each block's gradient on its
    /// owner rank is replaced by the average over the ranks (`Σ_r G_r /
    /// N`, written into the variable's `.grad()`; the other ranks' keep
    /// their own), then the sharded step (SPEC §3) updates every replica
    /// under `no_grad`.
    ///
    /// Errors are agreed: a variable without a gradient on any rank is
    /// [`TchOptError::MissingGradient`] there and
    /// [`ShardError::Peer`] on the others, before anything (gradients
    /// included) changes; the sharded step's errors are the same on every
    /// rank (a non-finite gradient anywhere: the same error or skip
    /// everywhere) and change no variable, while the owners' gradients hold
    /// the average. They change no optimizer state either, except after an
    /// LMO failure, which leaves the step's momenta updated, and a
    /// [`ShardError::Comm`] error (a transport failure part way), after
    /// which the ranks may differ: restart from a checkpoint.
    pub fn step(&mut self) -> Result<&StepReport, TchOptError> {
        let read = self.vars.read_grads();
        let first = self.opt.agree_refusal(read.is_err())?;
        read?;
        if let Some(rank) = first {
            self.vars.grads.clear();
            return Err(ShardError::Peer { rank }.into());
        }
        let _guard = tch::no_grad_guard();
        let v = &mut self.vars;
        let r = self
            .opt
            .reduce_gradients(&mut v.grads)
            .and_then(|_| self.opt.step(&mut v.params, &v.grads));
        v.grads.clear();
        Ok(r?)
    }

    /// The whole state with the variable names, on every rank (gathered
    /// from the owners). Collective.
    pub fn saved(&mut self) -> Result<SavedOptimizer, TchOptError> {
        Ok(SavedOptimizer {
            names: self.vars.names.clone(),
            state: self.opt.state()?,
        })
    }

    /// Restores a state saved at any world size (or by
    /// [`crate::VarStoreOptimizer`]). Collective; every rank passes the
    /// same state. Checks everything on every rank before changing
    /// anything, and agrees.
    pub fn restore(&mut self, s: &SavedOptimizer) -> Result<(), TchOptError> {
        let names = self.vars.check_names(s);
        self.agreed(names)?;
        let _guard = tch::no_grad_guard();
        Ok(self.opt.load_state(&s.state)?)
    }

    /// Gathers the state and writes it as JSON to `path` from rank 0 (one
    /// file, the single-process format). Collective; a failed write is an
    /// error on every rank.
    pub fn save(&mut self, path: &Path) -> Result<(), TchOptError> {
        let s = self.saved()?;
        let written = match self.opt.comm().rank() {
            0 => write_saved(path, &s),
            _ => Ok(()),
        };
        self.agreed(written)
    }

    /// Every rank reads `path` (written by
    /// [`ShardedVarStoreOptimizer::save`] or
    /// [`crate::VarStoreOptimizer::save`]) and restores it. Collective; a
    /// rank that cannot read it fails the call on every rank.
    pub fn load(&mut self, path: &Path) -> Result<(), TchOptError> {
        let read = read_saved(path);
        let s = self.agreed(read)?;
        self.restore(&s)
    }

    /// `local` on this rank, agreed: this rank's own error, or
    /// [`ShardError::Peer`] when another rank's check failed.
    fn agreed<T>(&mut self, local: Result<T, TchOptError>) -> Result<T, TchOptError> {
        let first = self.opt.agree_refusal(local.is_err())?;
        let v = local?;
        match first {
            Some(rank) => Err(ShardError::Peer { rank }.into()),
            None => Ok(v),
        }
    }
}
