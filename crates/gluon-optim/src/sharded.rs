//! The sharded (ZeRO-1 style) step over a [`Communicator`]: each block has
//! one owner rank, which alone keeps its optimizer state and computes its
//! step; the updated parameters then reach every rank.
//!
//! Design (docs/distributed.md):
//! - **Ownership**: blocks are assigned by the longest-processing-time rule
//!   on the cost of their direction phase (`m·n·min(m, n)` for a polar
//!   factor, the element count otherwise), largest first, each to the rank
//!   with the least cost so far (ties: lowest rank). Every rank computes
//!   the same assignment from the same shapes.
//! - **Step**: every rank validates its inputs and the ranks agree on one
//!   outcome (one all-reduce of a status vector) before anything changes;
//!   the owner runs the whole step of its blocks (all four phases of
//!   [`crate::phases`], so every radius policy, the adaptive one included,
//!   works unchanged); then each block's updated parameter is broadcast
//!   from its owner. Broadcasting parameters (rather than all-gathering
//!   directions) moves the same bytes through one buffer of the largest
//!   block's size, needs no second apply phase on the receivers, and leaves
//!   replicas bit-identical whatever the reduction order of the gradient
//!   average.
//! - **Report**: the owners' `(radius, dual norm)` are summed over ranks
//!   (every other rank contributes exact zeros): the same report on every
//!   rank.
//! - **Checkpoints**: [`ShardedOptimizer::state`] gathers the whole
//!   [`OptState`] (the single-process format) on every rank;
//!   [`ShardedOptimizer::load_state`] takes it at any world size.
//!
//! References: Rajbhandari et al., "ZeRO: Memory optimizations toward
//! training trillion parameter models" (SC 2020), stage 1; Liu et al.,
//! "Muon is scalable for LLM training" (Moonlight, arXiv 2502.16982),
//! distributed Muon; Graham, "Bounds on multiprocessing timing anomalies"
//! (1969), the LPT rule.

use lmo_comm::{CommError, Communicator, Reduce, ReduceOp};
use lmo_core::{Backend, Bf16Storage, Scalar};

use crate::config::{Config, GroupConfig, Label, NormSpec};
use crate::custom::NormRegistry;
use crate::optimizer::{BlockReport, BlockState, OptError, OptState, Optimizer, StepReport};
use crate::validate;

/// Errors of the sharded step; every rank returns one. An
/// [`ShardError::Opt`] or [`ShardError::Peer`] error leaves parameters,
/// optimizer state and step counters bit-identical on every rank (an LMO
/// failure included: steps are atomic, see [`ShardedOptimizer::step`]). A
/// [`ShardError::Comm`] error is a transport's refusal part way through a
/// collective sequence, after which the ranks may differ: restart from a
/// checkpoint. (MPI aborts the job instead; it returns only argument
/// errors, which the agreed checks rule out.)
#[derive(Debug, Clone, PartialEq)]
pub enum ShardError {
    /// This rank's error (the same on every rank for a non-finite
    /// gradient: the lowest block index of any rank).
    Opt(OptError),
    /// Another rank, the lowest-numbered that failed, refused the call
    /// (its own error says why); this rank changed nothing.
    Peer {
        /// The failing rank.
        rank: usize,
    },
    /// The communicator refused a call (arguments) or failed.
    Comm(CommError),
}

impl core::fmt::Display for ShardError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ShardError::Opt(e) => write!(f, "{e}"),
            ShardError::Peer { rank } => write!(f, "rank {rank} refused the step"),
            ShardError::Comm(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ShardError {}

impl From<OptError> for ShardError {
    fn from(e: OptError) -> Self {
        ShardError::Opt(e)
    }
}

impl From<CommError> for ShardError {
    fn from(e: CommError) -> Self {
        ShardError::Comm(e)
    }
}

/// The cost of block `shape`'s direction phase under `group`: `m·n·min(m,
/// n)` for a polar factor (spectral, RMS→RMS), the element count otherwise.
fn cost(group: &GroupConfig, shape: &[usize]) -> u128 {
    let numel: u128 = shape.iter().map(|&d| d as u128).product();
    match (group, shape) {
        (GroupConfig::Lmo(g), &[m, n])
            if matches!(g.norm, NormSpec::Spectral(_) | NormSpec::RmsToRms(_)) =>
        {
            numel * m.min(n) as u128
        }
        _ => numel,
    }
}

/// The owner rank of every block given the blocks' `costs` (the sharded
/// step passes each block's direction-phase cost: `m·n·min(m, n)` for a
/// polar factor, the element count otherwise): the longest-processing-time
/// rule over `size` ranks (largest first, ties by block index; each to the
/// least-loaded rank, ties by rank). Every rank's load is at most
/// `Σ costs / size + max cost` (Graham 1969).
pub fn assign_owners(costs: &[u128], size: usize) -> Vec<usize> {
    let size = size.max(1);
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by(|&a, &b| costs[b].cmp(&costs[a]).then(a.cmp(&b)));
    let mut load = vec![0u128; size];
    let mut owner = vec![0; costs.len()];
    for i in order {
        let r = (0..size).min_by_key(|&r| (load[r], r)).unwrap_or(0);
        owner[i] = r;
        load[r] += costs[i];
    }
    owner
}

/// Where the last [`ShardedOptimizer::step`] spent its time on this rank
/// (wall clock, seconds).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepTimes {
    /// Checks and the agreement on them (one all-reduce).
    pub check_s: f64,
    /// The owned blocks' step: phases 1–4 and the agreement after phase 2.
    pub compute_s: f64,
    /// Broadcasting the updated parameters and the report.
    pub exchange_s: f64,
}

/// The per-rank outcome of a call, agreed on by one all-reduce: entry `r`
/// is 1 if rank `r` refused; the last entry is minus the lowest block with
/// a non-finite gradient (or −∞ when none).
struct Status {
    v: Vec<f64>,
}

impl Status {
    fn new(size: usize) -> Self {
        let mut s = Status {
            v: vec![0.0; size + 1],
        };
        s.clear();
        s
    }

    /// Back to "no rank refused, all gradients finite".
    fn clear(&mut self) {
        let n = self.v.len() - 1;
        self.v[..n].iter_mut().for_each(|x| *x = 0.0);
        self.v[n] = f64::NEG_INFINITY;
    }

    fn agree<C: Communicator>(&mut self, comm: &C) -> Result<(), CommError> {
        comm.all_reduce(&mut self.v, ReduceOp::Max)
    }

    fn refuse(&mut self, rank: usize) {
        self.v[rank] = 1.0;
    }

    fn non_finite(&mut self, block: usize) {
        let n = self.v.len() - 1;
        self.v[n] = self.v[n].max(-(block as f64));
    }

    fn first_refusal(&self) -> Option<usize> {
        self.v[..self.v.len() - 1].iter().position(|&x| x > 0.0)
    }

    fn first_non_finite(&self) -> Option<usize> {
        let x = self.v[self.v.len() - 1];
        x.is_finite().then(|| (-x) as usize)
    }
}

/// Agrees on `local` over all ranks: `Ok` everywhere, or an error
/// everywhere (this rank's own, or [`ShardError::Peer`]).
fn agree<C: Communicator, T>(comm: &C, local: Result<T, OptError>) -> Result<T, ShardError> {
    agree_with(comm, &mut Status::new(comm.size()), local)
}

/// [`agree`] through a reused status buffer (no allocation).
fn agree_with<C: Communicator, T>(
    comm: &C,
    s: &mut Status,
    local: Result<T, OptError>,
) -> Result<T, ShardError> {
    s.clear();
    if local.is_err() {
        s.refuse(comm.rank());
    }
    s.agree(comm)?;
    match (local, s.first_refusal()) {
        (Err(e), _) => Err(ShardError::Opt(e)),
        (Ok(_), Some(rank)) => Err(ShardError::Peer { rank }),
        (Ok(v), None) => Ok(v),
    }
}

/// The layer-wise step of [`Config`] sharded over the ranks of `C` (module
/// docs): every rank holds the full parameters (replicas), gives the same
/// configuration, labels and shapes, and calls every method in the same
/// order; each keeps optimizer state only for the blocks it owns.
///
/// With one rank ([`lmo_comm::SingleProcess`]) it steps the parameters in
/// place and costs [`Optimizer`]'s step plus four one-element
/// agreements. Over N ranks the trajectory equals the single-process one
/// bit for bit (tested under `mpirun -np 2` and `-np 3`).
pub struct ShardedOptimizer<B: Backend, C: Communicator> {
    comm: C,
    config: Config,
    labels: Vec<Label>,
    shapes: Vec<Vec<usize>>,
    owner: Vec<usize>,
    /// The blocks this rank owns, ascending.
    mine: Vec<usize>,
    local: Optimizer<B>,
    /// Staging copies of the owned parameters and gradients.
    lp: Vec<B::Tensor>,
    lg: Vec<B::Tensor>,
    /// One block's values (the largest block's size).
    scratch: Vec<B::Scalar>,
    scratch64: Vec<f64>,
    /// `(radius, dual norm)` per block, summed over ranks.
    figures: Vec<f64>,
    report: StepReport,
    skipped: u64,
    /// The agreement buffer of [`ShardedOptimizer::step`] (reused).
    status: Status,
    times: StepTimes,
}

impl<B: Bf16Storage, C: Communicator> ShardedOptimizer<B, C>
where
    B::Tensor: Send + Sync,
    B::Scalar: Reduce,
{
    /// Builds the sharded optimizer for the replicated `params` labelled
    /// `labels` over `comm`. Collective. Errors (on every rank): whatever
    /// [`Optimizer::new`] refuses on any rank, or ranks that were given
    /// different shapes.
    pub fn new(
        config: Config,
        labels: Vec<Label>,
        params: &[B::Tensor],
        comm: C,
    ) -> Result<Self, ShardError> {
        Self::with_norms(config, labels, params, comm, &NormRegistry::new())
    }

    /// [`ShardedOptimizer::new`] with user norms for the groups whose norm
    /// is [`NormSpec::Custom`] (see [`Optimizer::with_norms`]). Collective.
    pub fn with_norms(
        config: Config,
        labels: Vec<Label>,
        params: &[B::Tensor],
        comm: C,
        norms: &NormRegistry<B>,
    ) -> Result<Self, ShardError> {
        let shapes: Vec<Vec<usize>> = params.iter().map(|p| B::shape(p).dims().to_vec()).collect();
        let built = Self::plan(&config, &labels, params, comm.rank(), comm.size(), norms);
        let (owner, mine, local) = agree(&comm, built)?;
        // Every rank must make the same collective calls: compare the
        // shapes, owners, buffer counts and non-finite policy.
        let mut h = Fnv::new();
        h.eat(shapes.len() as u64);
        for (i, s) in shapes.iter().enumerate() {
            h.eat(s.len() as u64);
            s.iter().for_each(|&d| h.eat(d as u64));
            h.eat(owner[i] as u64);
            let adamw = matches!(config.groups.get(&labels[i]), Some(GroupConfig::AdamW(_)));
            h.eat(adamw as u64);
        }
        h.eat(matches!(config.non_finite, crate::NonFinitePolicy::Skip) as u64);
        let fp = h.0;
        let mut all = vec![0u64; comm.size()];
        comm.all_gather(&[fp], &mut all)?;
        let same = match all.iter().all(|&f| f == fp) {
            true => Ok(()),
            false => Err(OptError::BadState(
                "the ranks were given different shapes, group kinds or non-finite policies".into(),
            )),
        };
        agree(&comm, same)?;
        // Staging copies of the owned blocks (none for one rank, which
        // steps the parameters in place).
        let staged: &[usize] = if comm.size() == 1 { &[] } else { &mine };
        let lp: Vec<B::Tensor> = staged.iter().map(|&i| B::zeros_like(&params[i])).collect();
        let lg: Vec<B::Tensor> = staged.iter().map(|&i| B::zeros_like(&params[i])).collect();
        let largest = shapes
            .iter()
            .map(|s| s.iter().product::<usize>())
            .max()
            .unwrap_or(0);
        let n = shapes.len();
        let n_ranks = comm.size();
        Ok(ShardedOptimizer {
            comm,
            config,
            labels,
            shapes,
            owner,
            mine,
            local,
            lp,
            lg,
            scratch: vec![B::Scalar::of(0.0); largest],
            scratch64: vec![0.0; largest],
            figures: vec![0.0; 2 * n],
            report: StepReport {
                step: 0,
                skipped: false,
                blocks: vec![BlockReport::default(); n],
            },
            skipped: 0,
            status: Status::new(n_ranks),
            times: StepTimes::default(),
        })
    }

    /// Owners and this rank's local optimizer.
    #[allow(clippy::type_complexity)]
    fn plan(
        config: &Config,
        labels: &[Label],
        params: &[B::Tensor],
        rank: usize,
        size: usize,
        norms: &NormRegistry<B>,
    ) -> Result<(Vec<usize>, Vec<usize>, Optimizer<B>), OptError> {
        config.validate().map_err(|error| OptError::Lmo {
            block: usize::MAX,
            error,
        })?;
        if labels.len() != params.len() {
            return Err(OptError::CountMismatch {
                expected: labels.len(),
                found: params.len(),
            });
        }
        let mut costs = Vec::with_capacity(params.len());
        for (l, p) in labels.iter().zip(params) {
            let g = config
                .groups
                .get(l)
                .ok_or_else(|| OptError::NoGroup(l.clone()))?;
            costs.push(cost(g, B::shape(p).dims()));
        }
        let owner = assign_owners(&costs, size);
        let mine: Vec<usize> = (0..params.len()).filter(|&i| owner[i] == rank).collect();
        let ml: Vec<Label> = mine.iter().map(|&i| labels[i].clone()).collect();
        let mp: Vec<B::Tensor> = mine.iter().map(|&i| B::zeros_like(&params[i])).collect();
        let local = Optimizer::with_norms(config.clone(), ml, &mp, norms).map_err(|e| match e {
            OptError::Lmo { block, error } if block != usize::MAX => OptError::Lmo {
                block: mine[block],
                error,
            },
            e => e,
        })?;
        Ok((owner, mine, local))
    }

    /// The communicator.
    pub fn comm(&self) -> &C {
        &self.comm
    }

    /// The owner rank of every block.
    pub fn owners(&self) -> &[usize] {
        &self.owner
    }

    /// The blocks this rank owns (ascending).
    pub fn owned(&self) -> &[usize] {
        &self.mine
    }

    /// Where the last step spent its time on this rank (zeros after a
    /// skipped or refused step).
    pub fn times(&self) -> StepTimes {
        self.times
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.local.steps()
    }

    /// Steps skipped (non-finite gradient on some rank, `Skip` policy).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The number of f64-or-f32 values this rank's optimizer state holds
    /// (momenta and AdamW moments of its own blocks): about 1/N of the
    /// single-process state.
    pub fn state_len(&self) -> usize {
        self.local
            .state()
            .blocks
            .iter()
            .map(|b| b.buffers.iter().map(Vec::len).sum::<usize>())
            .sum()
    }

    /// Agreement on a check made outside this optimizer (an adapter's
    /// "every variable has a gradient", say) before a collective call:
    /// every rank passes whether it refuses, and gets the lowest refusing
    /// rank, itself included (`None`: every rank goes on). Collective, one
    /// all-reduce of `size + 1` values through a reused buffer. A rank that
    /// refused returns its own error; the others return
    /// [`ShardError::Peer`] with the rank given, so that no rank enters a
    /// collective the others skip.
    pub fn agree_refusal(&mut self, refused: bool) -> Result<Option<usize>, ShardError> {
        let s = &mut self.status;
        s.clear();
        if refused {
            s.refuse(self.comm.rank());
        }
        s.agree(&self.comm)?;
        Ok(s.first_refusal())
    }

    /// Local checks of `params` and `grads`: counts and shapes, then the
    /// first non-finite gradient.
    fn check(&self, params: &[B::Tensor], grads: &[B::Tensor]) -> Result<Option<usize>, OptError> {
        let shapes = self.shapes.iter().map(Vec::as_slice);
        validate::counts_and_shapes::<B>(shapes, params, grads)?;
        Ok(grads.iter().enumerate().position(|(i, g)| {
            let adamw = matches!(self.group(i), Some(GroupConfig::AdamW(_)));
            !validate::grad_ok::<B>(adamw, g)
        }))
    }

    /// Data parallelism: replaces every rank's `grads` by their average
    /// over the ranks (`Σ_r G_r · (1/N)`, one all-reduce per tensor through
    /// the staging buffer). Collective; checks counts and shapes on every
    /// rank first and agrees (nothing changes anywhere on an error).
    /// Non-finite values propagate into the average, where
    /// [`ShardedOptimizer::step`] finds them on every rank.
    pub fn average_gradients(&mut self, grads: &mut [B::Tensor]) -> Result<(), ShardError> {
        if self.agree_on_gradients(grads)? {
            return Ok(());
        }
        let inv = B::Scalar::of(1.0 / self.comm.size() as f64);
        for g in grads.iter_mut() {
            let n = B::shape(g).numel();
            let buf = &mut self.scratch[..n];
            B::copy_to_slice(g, buf);
            self.comm.all_reduce(buf, ReduceOp::Sum)?;
            for x in buf.iter_mut() {
                *x = *x * inv;
            }
            B::copy_from_slice(buf, g);
        }
        Ok(())
    }

    /// Data parallelism at ZeRO-1's communication volume: each block's
    /// gradients are averaged onto its owner only (`Σ_r G_r · (1/N)`, one
    /// reduce per tensor to the owner: about half an all-reduce's bytes);
    /// every other rank's gradient of that block is left as it was, which
    /// [`ShardedOptimizer::step`] does not use (the owner's gradient is the
    /// one its blocks use). Collective; checks counts and shapes on every
    /// rank first and agrees (nothing changes anywhere on an error).
    /// Non-finite values reach the owner's average, where the step finds
    /// them and every rank gets the same error or skip.
    pub fn reduce_gradients(&mut self, grads: &mut [B::Tensor]) -> Result<(), ShardError> {
        if self.agree_on_gradients(grads)? {
            return Ok(());
        }
        let inv = B::Scalar::of(1.0 / self.comm.size() as f64);
        let rank = self.comm.rank();
        for (i, g) in grads.iter_mut().enumerate() {
            let n = B::shape(g).numel();
            let buf = &mut self.scratch[..n];
            B::copy_to_slice(g, buf);
            self.comm.reduce(buf, self.owner[i], ReduceOp::Sum)?;
            if self.owner[i] == rank {
                for x in buf.iter_mut() {
                    *x = *x * inv;
                }
                B::copy_from_slice(buf, g);
            }
        }
        Ok(())
    }

    /// The agreed count and shape checks of the gradient averages; `true`
    /// when there is nothing to exchange (one rank).
    fn agree_on_gradients(&mut self, grads: &[B::Tensor]) -> Result<bool, ShardError> {
        let local = (|| {
            validate::counts(self.shapes.len(), self.shapes.len(), grads.len())?;
            for (i, (s, g)) in self.shapes.iter().zip(grads.iter()).enumerate() {
                validate::shape(i, s, B::shape(g).dims())?;
            }
            Ok(())
        })();
        agree_with(&self.comm, &mut self.status, local)?;
        Ok(self.comm.size() == 1)
    }

    /// One step on every rank: `params` (the replica) are updated from
    /// `grads` (each rank's own; average them first with
    /// [`ShardedOptimizer::average_gradients`] for data parallelism: the
    /// owner's gradient is the one its blocks use). Collective.
    ///
    /// Before anything changes, the ranks agree: a count or shape error on
    /// any rank is an error on every rank ([`ShardError::Peer`] on the
    /// others); a non-finite gradient on any rank is
    /// [`OptError::NonFiniteGradient`] with the lowest such block on every
    /// rank, or, under [`crate::NonFinitePolicy::Skip`], a skip everywhere.
    /// Then each owner runs phases 1 and 2 of its blocks and the ranks
    /// agree again: an LMO failure on any rank is an error on every rank,
    /// and nothing changes anywhere: parameters, momenta, moments and
    /// counters stay bit-identical on every rank (what single-process
    /// [`Optimizer`] does after an LMO error). Then phases 3
    /// and 4, and each block is broadcast from its owner. No allocation
    /// per step on this side of the communicator.
    pub fn step(
        &mut self,
        params: &mut [B::Tensor],
        grads: &[B::Tensor],
    ) -> Result<&StepReport, ShardError> {
        let k = self.local.steps();
        self.times = StepTimes::default();
        let t0 = std::time::Instant::now();
        let local = self.check(params, grads);
        let s = &mut self.status;
        s.clear();
        match &local {
            Err(_) => s.refuse(self.comm.rank()),
            Ok(Some(b)) => s.non_finite(*b),
            Ok(None) => {}
        }
        s.agree(&self.comm)?;
        match (local, s.first_refusal()) {
            (Err(e), _) => return Err(e.into()),
            (Ok(_), Some(rank)) => return Err(ShardError::Peer { rank }),
            _ => {}
        }
        if let Some(block) = self.status.first_non_finite() {
            validate::non_finite(self.config.non_finite, Some(block))?;
            self.skipped += 1;
            self.report.step = k;
            self.report.skipped = true;
            return Ok(&self.report);
        }
        let t1 = std::time::Instant::now();
        // One rank owns every block: it steps the parameters in place (no
        // staging copies, nothing to exchange).
        let direct = self.comm.size() == 1;
        if !direct {
            let one = B::Scalar::of(1.0);
            for (j, &i) in self.mine.iter().enumerate() {
                B::scale(one, &params[i], &mut self.lp[j]);
                B::scale(one, &grads[i], &mut self.lg[j]);
            }
        }
        let (lp, lg): (&mut [B::Tensor], &[B::Tensor]) = if direct {
            (&mut *params, grads)
        } else {
            (&mut self.lp, &self.lg)
        };
        // Phases 1 and 2 of the owned blocks, then agree: an LMO failure on
        // any rank abandons the step on every rank (nothing changed: phase
        // 1 wrote only scratch buffers, as in one process).
        let remap = |mine: &[usize], e: OptError| match e {
            OptError::Lmo { block, error } if block != usize::MAX => OptError::Lmo {
                block: mine[block],
                error,
            },
            e => e,
        };
        let directions = self
            .local
            .begin_step(lp, lg)
            .and_then(|_| self.local.compute_directions(|_| true))
            .map_err(|e| remap(&self.mine, e));
        if let Err(e) = agree_with(&self.comm, &mut self.status, directions) {
            self.local.abandon_step();
            return Err(e);
        }
        // Phases 3 and 4 (they refuse only what was checked above).
        let finished = match self.local.finish_step(lp, lg) {
            Ok(r) => {
                self.figures.iter_mut().for_each(|x| *x = 0.0);
                for (j, &i) in self.mine.iter().enumerate() {
                    self.figures[2 * i] = r.blocks[j].radius;
                    self.figures[2 * i + 1] = r.blocks[j].dual_norm;
                }
                Ok(())
            }
            Err(e) => {
                // Not reachable after the checks above; keep the ranks'
                // stages and counters equal if it ever is.
                self.local.abandon_step();
                Err(remap(&self.mine, e))
            }
        };
        agree_with(&self.comm, &mut self.status, finished)?;
        let t2 = std::time::Instant::now();
        // Every owner's parameters to every rank.
        let mut j = 0;
        let exchange = if direct { &mut params[..0] } else { params };
        for (i, p) in exchange.iter_mut().enumerate() {
            let n = B::shape(p).numel();
            let buf = &mut self.scratch[..n];
            if self.owner[i] == self.comm.rank() {
                B::copy_to_slice(&self.lp[j], buf);
                j += 1;
            }
            self.comm.broadcast(buf, self.owner[i])?;
            B::copy_from_slice(buf, p);
        }
        self.comm.all_reduce(&mut self.figures, ReduceOp::Sum)?;
        for (b, r) in self.report.blocks.iter_mut().enumerate() {
            r.radius = self.figures[2 * b];
            r.dual_norm = self.figures[2 * b + 1];
        }
        self.report.step = k;
        self.report.skipped = false;
        self.times = StepTimes {
            check_s: (t1 - t0).as_secs_f64(),
            compute_s: (t2 - t1).as_secs_f64(),
            exchange_s: t2.elapsed().as_secs_f64(),
        };
        Ok(&self.report)
    }

    /// The whole optimizer state in the single-process format, on every
    /// rank (each block's buffers broadcast from its owner). Collective.
    pub fn state(&mut self) -> Result<OptState, ShardError> {
        let local = self.local.state();
        let mut blocks = Vec::with_capacity(self.shapes.len());
        let mut j = 0;
        for (i, shape) in self.shapes.iter().enumerate() {
            let n: usize = shape.iter().product();
            let nbuf = match self.group(i) {
                Some(GroupConfig::AdamW(_)) => 2,
                _ => 1,
            };
            let mine = self.owner[i] == self.comm.rank();
            let mut buffers = Vec::with_capacity(nbuf);
            for b in 0..nbuf {
                let buf = &mut self.scratch64[..n];
                if mine {
                    buf.copy_from_slice(&local.blocks[j].buffers[b]);
                }
                self.comm.broadcast(buf, self.owner[i])?;
                buffers.push(buf.to_vec());
            }
            if mine {
                j += 1;
            }
            blocks.push(BlockState {
                shape: shape.clone(),
                buffers,
            });
        }
        Ok(OptState {
            version: OptState::VERSION,
            step: self.local.steps(),
            skipped: self.skipped,
            blocks,
        })
    }

    /// Restores a state saved by [`ShardedOptimizer::state`] or by
    /// [`Optimizer::state`], at any world size. Collective; every rank
    /// passes the same state. Checks everything before changing anything,
    /// on every rank, and agrees: the version, the blocks' shapes, buffer
    /// counts and lengths, finite values in the backend's scalar, and that
    /// every rank was given the same state (a fingerprint).
    pub fn load_state(&mut self, s: &OptState) -> Result<(), ShardError> {
        let checked = self.check_state(s);
        agree(&self.comm, checked)?;
        let fp = state_fingerprint(s);
        let mut all = vec![0u64; self.comm.size()];
        self.comm.all_gather(&[fp], &mut all)?;
        let same = match all.iter().all(|&f| f == fp) {
            true => Ok(()),
            false => Err(OptError::BadState(
                "the ranks were given different states".into(),
            )),
        };
        agree(&self.comm, same)?;
        let sub = OptState {
            version: s.version,
            step: s.step,
            skipped: s.skipped,
            blocks: self.mine.iter().map(|&i| s.blocks[i].clone()).collect(),
        };
        self.local.load_state(&sub)?;
        self.skipped = s.skipped;
        Ok(())
    }

    /// The checks of [`ShardedOptimizer::load_state`] on this rank.
    fn check_state(&self, s: &OptState) -> Result<(), OptError> {
        let bad = |why: String| Err(OptError::BadState(why));
        if s.version != OptState::VERSION {
            return bad(format!(
                "version {} (expected {})",
                s.version,
                OptState::VERSION
            ));
        }
        validate::counters(s.step, s.skipped)?;
        if s.blocks.len() != self.shapes.len() {
            return bad(format!(
                "{} blocks, optimizer has {}",
                s.blocks.len(),
                self.shapes.len()
            ));
        }
        for (i, (b, shape)) in s.blocks.iter().zip(&self.shapes).enumerate() {
            let adamw = matches!(self.group(i), Some(GroupConfig::AdamW(_)));
            validate::state_block::<B>(i, b, shape, adamw)?;
        }
        Ok(())
    }

    fn group(&self, i: usize) -> Option<&GroupConfig> {
        self.config.groups.get(self.labels.get(i)?)
    }
}

/// A fingerprint of a state's counters and values (FNV-1a over the bits).
fn state_fingerprint(s: &OptState) -> u64 {
    let mut h = Fnv::new();
    h.eat(s.version as u64);
    h.eat(s.step);
    h.eat(s.skipped);
    for b in &s.blocks {
        for v in &b.buffers {
            h.eat(v.len() as u64);
            for x in v {
                h.eat(x.to_bits());
            }
        }
    }
    h.0
}

/// FNV-1a, 64 bit.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn eat(&mut self, x: u64) {
        for b in x.to_le_bytes() {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
