//! Estimating layer-wise (L0, L1) along a trajectory (SPEC §3).

use lmo_core::{Backend, LmoError, Scalar};
use serde::{Deserialize, Serialize};

use crate::config::{Config, DynNorm, GroupConfig, Label, NormSpec};
use crate::optimizer::OptError;

/// One recorded point of block i: `g = ‖∇_i f(X^k)‖_*` and
/// `lhat = ‖∇_i f(X^{k+1}) − ∇_i f(X^k)‖_* / ‖X_i^{k+1} − X_i^k‖`, with the
/// step that produced it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Step index k.
    pub k: u64,
    /// `‖∇_i f(X^k)‖_*`.
    pub g: f64,
    /// The local smoothness estimate `L̂_k`.
    pub lhat: f64,
    /// The step length `s_k = ‖X_i^{k+1} − X_i^k‖` in the block's norm
    /// (NaN when loaded from a point saved without it).
    #[serde(default = "unknown")]
    pub step: f64,
    /// The step's alignment with the gradient,
    /// `a_k = −<∇_i f(X^k), X_i^{k+1} − X_i^k> / (‖∇_i f(X^k)‖_*·s_k)`, in
    /// `[−1, 1]` by duality: 1 for an exact LMO step on the gradient itself
    /// (no momentum), lower for an inexact LMO (Newton–Schulz) or a step on
    /// a momentum buffer. NaN when loaded from a point saved without it
    /// (no warning is raised on unknown values).
    #[serde(default = "unknown")]
    pub align: f64,
}

/// The value of a figure a saved point or fit did not record.
fn unknown() -> f64 {
    f64::NAN
}

/// Above this `u = L1·s` (the fitted L1 times the median probe step), a
/// [`Fit`] warns of [`FitWarning::LongSteps`]: the fit is low by the factor
/// `(1 − e^{−u})/u`, below 0.906 here.
pub const LONG_STEP_U: f64 = 0.2;

/// Below this median alignment a [`Fit`] warns of
/// [`FitWarning::InexactSteps`].
pub const MIN_ALIGN: f64 = 0.95;

/// What makes a fit of (L0, L1) doubtful, from the probe's own points.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum FitWarning {
    /// The probe's steps were long for the fitted L1: `L̂` is a difference
    /// quotient over the step, and where the gradient's dual norm changes
    /// like `e^{L1·s}` (the extreme case of (L0, L1)-smoothness,
    /// `f(X) = exp(<A, X>)` with `L1 = ‖A‖_*`) a descent step of length `s`
    /// measures `L̂ = g·L1·(1 − e^{−u})/u` with `u = L1·s`, so the fitted
    /// L1 is low by that factor. Keep probe steps at `s ≪ 1/L1` (u ≤ 0.2
    /// loses at most 9.4 %).
    LongSteps {
        /// `u = L1·s` at the median step.
        u: f64,
        /// `(1 − e^{−u})/u`, the factor by which L1 may be low.
        bias: f64,
    },
    /// The probe's steps were not the exact LMO direction of the gradient
    /// (median alignment below [`MIN_ALIGN`]): a Newton–Schulz polar factor
    /// or momentum. On the exponential example a step of alignment `a`
    /// measures about `a·L1`. Probe with exact LMOs
    /// ([`Config::with_exact_polar`]) and without momentum (β = 0).
    InexactSteps {
        /// The median alignment.
        align: f64,
    },
}

impl core::fmt::Display for FitWarning {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FitWarning::LongSteps { u, bias } => write!(
                f,
                "probe steps are long for the fitted L1 (L1·step = {u:.2}): L1 may be low \
                 by the factor (1 − e^(−u))/u = {bias:.2}; probe with shorter steps"
            ),
            FitWarning::InexactSteps { align } => write!(
                f,
                "probe steps are not exact LMO steps on the gradient (median alignment \
                 {align:.2}): L1 may be low by about that factor; probe with exact LMOs \
                 (Config::with_exact_polar) and β = 0"
            ),
        }
    }
}

/// A fitted line `L̂ ≈ L0 + L1·g` of one block, with what the points
/// behind it covered. A quantile fit ([`fit_quantile`], τ < 1) is **not**
/// an upper envelope: about a fraction `1 − τ` of the points lies above it
/// by design (`above` says how many did); [`fit_envelope`] is the exact
/// envelope.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    /// L0 ≥ 0.
    pub l0: f64,
    /// L1 ≥ 0.
    pub l1: f64,
    /// Fraction of the points strictly above the line (0 for the exact
    /// envelope, up to rounding).
    pub above: f64,
    /// Number of points.
    pub n: usize,
    /// The range `[min, max]` of `‖∇f‖_*` the points covered: the line is
    /// measured there and extrapolated elsewhere.
    #[serde(default = "unknown_range")]
    pub g_range: (f64, f64),
    /// The median step length `s` of the points (NaN if unknown).
    #[serde(default = "unknown")]
    pub step: f64,
    /// The median alignment of the points' steps ([`Point::align`]; NaN
    /// if unknown).
    #[serde(default = "unknown")]
    pub align: f64,
}

/// An unknown `g` range (a fit saved without it).
fn unknown_range() -> (f64, f64) {
    (f64::NAN, f64::NAN)
}

/// The median of `v` (sorted in place); NaN for an empty slice.
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let h = v.len() / 2;
    if v.len() % 2 == 1 {
        v[h]
    } else {
        0.5 * (v[h - 1] + v[h])
    }
}

impl Fit {
    /// The fit `(l0, l1)` of the finite `points`, with its share of them
    /// strictly above the line (relative margin 1e-9 for rounding).
    fn of(points: &[Point], l0: f64, l1: f64) -> Fit {
        let above = points
            .iter()
            .filter(|p| p.lhat > (l0 + l1 * p.g) * (1.0 + 1e-9))
            .count();
        let gs = points.iter().map(|p| p.g);
        let g_range = (
            gs.clone().fold(f64::INFINITY, f64::min),
            gs.fold(f64::NEG_INFINITY, f64::max),
        );
        Fit {
            l0,
            l1,
            above: above as f64 / points.len() as f64,
            n: points.len(),
            g_range,
            step: median(&mut points.iter().map(|p| p.step).collect::<Vec<_>>()),
            align: median(&mut points.iter().map(|p| p.align).collect::<Vec<_>>()),
        }
    }

    /// The theory radius (Gluon Thm 1) this fit implies at dual norm `g`:
    /// `g / (L0 + L1·g)`.
    pub fn radius(&self, g: f64) -> f64 {
        if g == 0.0 {
            0.0
        } else {
            g / (self.l0 + self.l1 * g)
        }
    }

    /// `(1 − e^{−u})/u` at `u = L1·s` (the median step): the factor by
    /// which long probe steps lower the fitted L1 on the exponential
    /// example ([`FitWarning::LongSteps`]); 1 for `u → 0`.
    pub fn step_bias(&self) -> f64 {
        let u = self.l1 * self.step;
        if u.is_finite() && u > 1e-8 {
            -(-u).exp_m1() / u
        } else {
            1.0
        }
    }

    /// What makes this fit doubtful: probe steps long for the fitted L1
    /// (`L1·s >` [`LONG_STEP_U`]), or steps that were not exact LMO steps
    /// on the gradient (median alignment below [`MIN_ALIGN`]).
    pub fn warnings(&self) -> Vec<FitWarning> {
        let mut w = vec![];
        let u = self.l1 * self.step;
        if u > LONG_STEP_U {
            w.push(FitWarning::LongSteps {
                u,
                bias: self.step_bias(),
            });
        }
        if self.align < MIN_ALIGN {
            w.push(FitWarning::InexactSteps { align: self.align });
        }
        w
    }
}

impl core::fmt::Display for Fit {
    /// `L0 = …, L1 = … (n points, ‖∇f‖_* in [a, b], median step s, x %
    /// above the line)`; the last part says plainly when the line is not
    /// an upper envelope.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "L0 = {:.4e}, L1 = {:.4e} ({} points, ‖∇f‖_* in [{:.3e}, {:.3e}], median step {:.3e}, ",
            self.l0, self.l1, self.n, self.g_range.0, self.g_range.1, self.step
        )?;
        if self.above > 0.0 {
            write!(
                f,
                "{:.0}% of the points above the line: not an upper envelope)",
                100.0 * self.above
            )
        } else {
            write!(f, "an upper envelope of the points)")
        }
    }
}

/// The finite points; `None` if there are none.
fn finite_points(points: &[Point]) -> Option<Vec<Point>> {
    let v: Vec<Point> = points
        .iter()
        .filter(|p| p.g.is_finite() && p.lhat.is_finite())
        .copied()
        .collect();
    (!v.is_empty()).then_some(v)
}

/// Fits `L0, L1 ≥ 0` so that `L0 + L1·g` is an upper envelope of the points
/// with the smallest mean height over them: minimize `Σ_k (L0 + L1·g_k)`
/// subject to `L0 + L1·g_k ≥ L̂_k`. The optimum is the line through the
/// edge of the points' upper convex hull above the mean of the g_k (or a
/// boundary case L0 = 0 or L1 = 0). `None` without points.
///
/// (The Gluon paper fits a line with a penalty on points above it; this is
/// its exact-envelope limit, which has no free penalty weight.)
pub fn fit_envelope(points: &[Point]) -> Option<Fit> {
    let all = finite_points(points)?;
    let pts: Vec<(f64, f64)> = all.iter().map(|p| (p.g, p.lhat)).collect();
    let n = pts.len() as f64;
    let gbar = pts.iter().map(|p| p.0).sum::<f64>() / n;
    // Candidate lines: every pair on the hull is among all pairs; the
    // feasible one of least height at gbar is optimal. O(n²) candidates
    // are checked in O(n) each only for hull pairs: build the upper hull.
    let mut sorted = pts.clone();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut hull: Vec<(f64, f64)> = vec![];
    for p in sorted {
        while hull.len() >= 2 {
            let (a, b) = (hull[hull.len() - 2], hull[hull.len() - 1]);
            // Remove b if it lies on or below the segment a–p.
            if (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0) >= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(p);
    }
    let feasible = |l0: f64, l1: f64| {
        pts.iter()
            .all(|&(g, l)| l0 + l1 * g >= l * (1.0 - 1e-12) - 1e-300)
    };
    let mut best: Option<(f64, f64, f64)> = None;
    let mut consider = |l0: f64, l1: f64| {
        if l0 >= 0.0 && l1 >= 0.0 && feasible(l0, l1) {
            let h = l0 + l1 * gbar;
            if best.is_none_or(|b| h < b.2) {
                best = Some((l0, l1, h));
            }
        }
    };
    for w in hull.windows(2) {
        let ((g1, l1v), (g2, l2v)) = (w[0], w[1]);
        if g2 > g1 {
            let slope = (l2v - l1v) / (g2 - g1);
            consider(l1v - slope * g1, slope);
        }
    }
    // Boundary cases: L1 = 0 (flat line at the max) and L0 = 0 (through
    // the origin with the steepest ratio).
    let lmax = pts.iter().map(|p| p.1).fold(0.0, f64::max);
    consider(lmax, 0.0);
    let ratio = pts
        .iter()
        .filter(|p| p.0 > 0.0)
        .map(|p| p.1 / p.0)
        .fold(0.0, f64::max);
    if pts.iter().all(|p| p.0 > 0.0 || p.1 <= 0.0) {
        consider(0.0, ratio);
    }
    let (l0, l1, _) = best?;
    Some(Fit::of(&all, l0, l1))
}

/// The penalized fit of the Gluon paper: minimize over `L0, L1 ≥ 0`
/// `Σ_k (L0 + L1·g_k) + λ·Σ_k (L̂_k − L0 − L1·g_k)₊` with `λ = 1/(1−τ)`,
/// i.e. linear quantile regression of L̂ on g at level `τ ∈ (0, 1]`: about a
/// fraction `1 − τ` of the points ends above the line. `τ = 1` is the exact
/// envelope ([`fit_envelope`]). The optimum of this 2-variable LP is a
/// line through two points or a boundary line (`L0 = 0` through one point,
/// or `L1 = 0` at one point's height); all are enumerated, on at most 400
/// points (evenly subsampled beyond). `None` without points or for τ ∉ (0, 1].
pub fn fit_quantile(points: &[Point], tau: f64) -> Option<Fit> {
    if !(tau > 0.0 && tau <= 1.0) {
        return None;
    }
    if tau == 1.0 {
        return fit_envelope(points);
    }
    let all = finite_points(points)?;
    let stride = all.len().div_ceil(400);
    let pts: Vec<(f64, f64)> = all.iter().step_by(stride).map(|p| (p.g, p.lhat)).collect();
    let lambda = 1.0 / (1.0 - tau);
    let cost = |l0: f64, l1: f64| {
        pts.iter()
            .map(|&(g, l)| {
                let line = l0 + l1 * g;
                line + lambda * (l - line).max(0.0)
            })
            .sum::<f64>()
    };
    let mut best: Option<(f64, f64, f64)> = None;
    let mut consider = |l0: f64, l1: f64| {
        if l0 >= 0.0 && l1 >= 0.0 && l0.is_finite() && l1.is_finite() {
            let c = cost(l0, l1);
            if best.is_none_or(|b| c < b.2) {
                best = Some((l0, l1, c));
            }
        }
    };
    for (i, &(g1, h1)) in pts.iter().enumerate() {
        consider(h1, 0.0);
        if g1 > 0.0 {
            consider(0.0, h1 / g1);
        }
        for &(g2, h2) in &pts[i + 1..] {
            if g2 != g1 {
                let slope = (h2 - h1) / (g2 - g1);
                consider(h1 - slope * g1, slope);
            }
        }
    }
    let (l0, l1, _) = best?;
    Some(Fit::of(&all, l0, l1))
}

/// Records `(‖∇_i f(X^k)‖_*, L̂_k)` per block along a trajectory: call
/// [`LipschitzEstimator::observe`] with the parameters and gradients of
/// every iterate, then [`LipschitzEstimator::fit`]. Each block uses its
/// group's norm (AdamW groups: Frobenius), scale included. Spectral dual
/// norms are exact (Jacobi SVD): meant for short probes. [`crate::probe`]
/// runs the whole probe loop.
pub struct LipschitzEstimator<B: Backend> {
    labels: Vec<Label>,
    norms: Vec<DynNorm<B>>,
    prev_x: Vec<B::Tensor>,
    prev_g: Vec<B::Tensor>,
    diff: Vec<B::Tensor>,
    prev_dual: Vec<f64>,
    has_prev: bool,
    k: u64,
    points: Vec<Vec<Point>>,
}

impl<B: lmo_core::Bf16Storage> LipschitzEstimator<B>
where
    B::Tensor: Send,
{
    /// An estimator for the blocks of an optimizer built from `config`,
    /// `labels` and `params` (only the groups' norms are used; their radii
    /// are ignored).
    pub fn new(config: &Config, labels: &[Label], params: &[B::Tensor]) -> Result<Self, OptError> {
        Self::with_norms(config, labels, params, &crate::NormRegistry::new())
    }

    /// [`LipschitzEstimator::new`] with the user norms of
    /// [`crate::Optimizer::with_norms`].
    pub fn with_norms(
        config: &Config,
        labels: &[Label],
        params: &[B::Tensor],
        registry: &crate::NormRegistry<B>,
    ) -> Result<Self, OptError> {
        if labels.len() != params.len() {
            return Err(OptError::CountMismatch {
                expected: labels.len(),
                found: params.len(),
            });
        }
        let mut norms = vec![];
        for (i, (l, p)) in labels.iter().zip(params).enumerate() {
            let norm = match config
                .groups
                .get(l)
                .ok_or_else(|| OptError::NoGroup(l.clone()))?
            {
                GroupConfig::Lmo(g) => g.build_norm::<B>(&B::shape(p), registry),
                GroupConfig::AdamW(_) => NormSpec::Frobenius.build::<B>(1.0),
            }
            .map_err(|error| OptError::Lmo { block: i, error })?;
            norms.push(norm);
        }
        Self::from_norms(labels, norms, params)
    }

    /// An estimator with one norm per block, given directly (no
    /// configuration): block `i` measures its points in `norms[i]`, e.g.
    /// `NormSpec::Spectral(Orth::Exact).build(1.0)`. Errors on a count
    /// mismatch or a norm that refuses its block's shape.
    pub fn from_norms(
        labels: &[Label],
        norms: Vec<DynNorm<B>>,
        params: &[B::Tensor],
    ) -> Result<Self, OptError> {
        for found in [labels.len(), norms.len()] {
            if found != params.len() {
                return Err(OptError::CountMismatch {
                    expected: params.len(),
                    found,
                });
            }
        }
        for (i, (n, p)) in norms.iter().zip(params).enumerate() {
            n.check_shape(&B::shape(p))
                .map_err(|error| OptError::Lmo { block: i, error })?;
        }
        let z = |v: &[B::Tensor]| v.iter().map(B::zeros_like).collect::<Vec<_>>();
        Ok(LipschitzEstimator {
            labels: labels.to_vec(),
            norms,
            prev_x: z(params),
            prev_g: z(params),
            diff: z(params),
            prev_dual: vec![0.0; params.len()],
            has_prev: false,
            k: 0,
            points: vec![vec![]; params.len()],
        })
    }

    /// Forgets the previous iterate, keeping the recorded points: the next
    /// [`LipschitzEstimator::observe`] starts a new trajectory and pairs
    /// with nothing (use it after anything that is not one step of the
    /// trajectory: a restart, a reloaded checkpoint, a skipped step).
    pub fn reset(&mut self) {
        self.has_prev = false;
    }

    /// Records the iterate `(params, grads)`; from the second call on (since
    /// construction or [`LipschitzEstimator::reset`]), adds one point per
    /// block (blocks that did not move are skipped). Errors (count, shape,
    /// NaN/Inf, a norm's refusal) leave the estimator as it was: every
    /// block is computed before any is recorded.
    pub fn observe(&mut self, params: &[B::Tensor], grads: &[B::Tensor]) -> Result<(), OptError> {
        let n = self.norms.len();
        if params.len() != n || grads.len() != n {
            return Err(OptError::CountMismatch {
                expected: n,
                found: params.len().min(grads.len()),
            });
        }
        let one = B::Scalar::of(1.0);
        // Pass 1 computes every block's figures (only the scratch `diff`
        // changes); pass 2 commits. An error in any block, custom norms'
        // included, leaves the estimator as it was.
        let mut staged = Vec::with_capacity(n);
        for i in 0..n {
            let e = |error: LmoError| OptError::Lmo { block: i, error };
            let shape = B::shape(&self.prev_x[i]);
            for t in [&params[i], &grads[i]] {
                shape.check_eq(&B::shape(t)).map_err(e)?;
                B::check_finite(t).map_err(e)?;
            }
            let dual_now = self.norms[i].dual_norm(&grads[i]).map_err(e)?.as_f64();
            let mut point = None;
            if self.has_prev {
                B::scale(one, &grads[i], &mut self.diff[i]);
                B::axpby(-one, &self.prev_g[i], one, &mut self.diff[i]);
                let num = self.norms[i].dual_norm(&self.diff[i]).map_err(e)?.as_f64();
                B::scale(one, &params[i], &mut self.diff[i]);
                B::axpby(-one, &self.prev_x[i], one, &mut self.diff[i]);
                let den = self.norms[i].norm(&self.diff[i]).map_err(e)?.as_f64();
                if den > 0.0 {
                    let g = self.prev_dual[i];
                    let ip = B::dot(&self.prev_g[i], &self.diff[i]).as_f64();
                    point = Some(Point {
                        k: self.k - 1,
                        g,
                        lhat: num / den,
                        step: den,
                        align: if g > 0.0 { -ip / (g * den) } else { 0.0 },
                    });
                }
            }
            staged.push((dual_now, point));
        }
        for (i, (dual_now, point)) in staged.into_iter().enumerate() {
            if let Some(p) = point {
                self.points[i].push(p);
            }
            B::scale(one, &params[i], &mut self.prev_x[i]);
            B::scale(one, &grads[i], &mut self.prev_g[i]);
            self.prev_dual[i] = dual_now;
        }
        self.has_prev = true;
        self.k += 1;
        Ok(())
    }

    /// The recorded points of block `i`.
    pub fn points(&self, i: usize) -> &[Point] {
        &self.points[i]
    }

    /// The envelope fit of block `i` ([`fit_envelope`]).
    pub fn fit(&self, i: usize) -> Option<Fit> {
        fit_envelope(&self.points[i])
    }

    /// The quantile fit of block `i` at level τ ([`fit_quantile`]).
    pub fn fit_quantile(&self, i: usize, tau: f64) -> Option<Fit> {
        fit_quantile(&self.points[i], tau)
    }

    /// The labels, one per block.
    pub fn labels(&self) -> &[Label] {
        &self.labels
    }

    /// All points as CSV: `block,label,k,g,lhat,step,align`.
    pub fn to_csv(&self) -> String {
        let mut s = String::from("block,label,k,g,lhat,step,align\n");
        for (i, pts) in self.points.iter().enumerate() {
            for p in pts {
                s += &format!(
                    "{i},{:?},{},{:e},{:e},{:e},{:e}\n",
                    self.labels[i], p.k, p.g, p.lhat, p.step, p.align
                );
            }
        }
        s
    }

    /// All points and fits as JSON.
    pub fn to_json(&self) -> String {
        let blocks: Vec<serde_json::Value> = self
            .points
            .iter()
            .enumerate()
            .map(|(i, pts)| {
                serde_json::json!({
                    "block": i,
                    "label": format!("{:?}", self.labels[i]),
                    "points": pts,
                    "fit": self.fit(i),
                })
            })
            .collect();
        serde_json::to_string_pretty(&blocks).unwrap_or_default()
    }
}
