//! The (L0, L1) probe (SPEC §3): a few optimizer steps while a
//! [`LipschitzEstimator`] records points, then one fit per block and per
//! label, with the fits' warnings.

use std::collections::BTreeMap;

use lmo_core::{Bf16Storage, LmoError};

use crate::config::Label;
use crate::estimator::{Fit, FitWarning, LipschitzEstimator, fit_quantile};
use crate::optimizer::{OptError, Optimizer};

/// What [`probe`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeReport {
    /// The fit of every block (`None` for a block that never moved).
    pub fits: Vec<Option<Fit>>,
    /// Per label, the largest `(L0, L1)` among its blocks' fits: the
    /// constants [`crate::presets::gluon_fitted`] takes.
    pub by_label: BTreeMap<Label, (f64, f64)>,
    /// Every block's warnings ([`Fit::warnings`]), with the block index.
    pub warnings: Vec<(usize, FitWarning)>,
}

/// Runs `steps` steps of `optimizer` from `params` while `estimator`
/// observes every iterate, before the first step and after the last one,
/// so each block that moves records `steps` points (the estimator is
/// [reset](LipschitzEstimator::reset) first: the probe's first iterate
/// pairs with nothing seen before); then fits each block at quantile level
/// `tau` ([`fit_quantile`]; `tau = 1` is the exact envelope) over all the
/// estimator's points, those of earlier probes included.
/// `grad(params, grads)` writes the gradients of the current iterate.
///
/// The fit is trustworthy when the probe's steps are exact LMO steps on
/// the gradient and short against `1/L1` ([`FitWarning`] says when they
/// were not): probe with `β = 0`, a small constant radius and
/// [`crate::Config::with_exact_polar`].
///
/// Errors: `tau ∉ (0, 1]` (nothing runs), and any error of the optimizer
/// or estimator, returned at the step where it happened (the parameters
/// then hold the iterate of that step: the probe moves them).
///
/// ```
/// use gluon_optim::{Label, LipschitzEstimator, LmoGroup, NormSpec, Orth, Optimizer, Radius, probe};
/// use gluon_optim::Config;
/// use gluon_optim::GroupConfig;
/// use lmo_ndarray::Nd64;
/// use ndarray::ArrayD;
///
/// // f(X) = ½‖X − C‖_F²: (L0, L1) = (1, 0) in the Frobenius norm.
/// let c = ArrayD::from_shape_vec(vec![2, 3], vec![1.0, -2.0, 0.5, 3.0, 0.0, -1.0]).unwrap();
/// let group = LmoGroup::new(NormSpec::Frobenius, Radius::Constant(0.05)).beta(0.0);
/// let cfg = Config::new().group(Label::Hidden, GroupConfig::Lmo(group));
/// let labels = vec![Label::Hidden];
/// let mut params = vec![ArrayD::<f64>::zeros(vec![2, 3])];
/// let mut opt = Optimizer::<Nd64>::new(cfg.clone(), labels.clone(), &params).unwrap();
/// let mut est = LipschitzEstimator::<Nd64>::new(&cfg, &labels, &params).unwrap();
/// let report = probe(&mut opt, &mut est, &mut params, 10, 1.0, |x, g| {
///     g[0] = &x[0] - &c;
/// })
/// .unwrap();
/// let fit = report.fits[0].unwrap();
/// assert_eq!(fit.n, 10);
/// assert!((fit.l0 + fit.l1 * fit.g_range.1 - 1.0).abs() < 1e-9);
/// assert!(report.warnings.is_empty());
/// ```
pub fn probe<B: Bf16Storage>(
    optimizer: &mut Optimizer<B>,
    estimator: &mut LipschitzEstimator<B>,
    params: &mut [B::Tensor],
    steps: usize,
    tau: f64,
    mut grad: impl FnMut(&[B::Tensor], &mut [B::Tensor]),
) -> Result<ProbeReport, OptError>
where
    B::Tensor: Send + Sync,
{
    if !(tau > 0.0 && tau <= 1.0) {
        return Err(OptError::Lmo {
            block: usize::MAX,
            error: LmoError::InvalidHyperParameter("probe quantile τ must be in (0, 1]"),
        });
    }
    let mut grads: Vec<B::Tensor> = params.iter().map(B::zeros_like).collect();
    // The probe's first iterate pairs with nothing the estimator saw before.
    estimator.reset();
    for k in 0..=steps {
        grad(params, &mut grads);
        estimator.observe(params, &grads)?;
        if k < steps {
            optimizer.step(params, &grads)?;
        }
    }
    let mut report = ProbeReport {
        fits: vec![],
        by_label: BTreeMap::new(),
        warnings: vec![],
    };
    for (i, label) in estimator.labels().iter().enumerate() {
        let fit = fit_quantile(estimator.points(i), tau);
        if let Some(f) = fit {
            let e = report.by_label.entry(label.clone()).or_insert((0.0, 0.0));
            *e = (e.0.max(f.l0), e.1.max(f.l1));
            report
                .warnings
                .extend(f.warnings().into_iter().map(|w| (i, w)));
        }
        report.fits.push(fit);
    }
    Ok(report)
}
