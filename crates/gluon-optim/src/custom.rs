//! User norms: a group can use a norm this crate does not know — any type
//! implementing lmo-core's [`lmo_core::Norm`] — without editing an enum. The group
//! names it ([`NormSpec::Custom`](crate::NormSpec::Custom)); a
//! [`NormRegistry`] given to [`Optimizer::with_norms`](crate::Optimizer::with_norms)
//! (or [`LipschitzEstimator::with_norms`](crate::LipschitzEstimator::with_norms))
//! builds it for each block of that group.

use std::collections::BTreeMap;

use lmo_core::{Backend, LmoError};

use crate::config::DynNorm;

/// Builds a user norm for one block from the block's shape and the total
/// scale `s` of its group (`scale` times the shape factor): the LMO step
/// then uses `s·lmo`, as for the built-in norms.
pub type NormBuilder<B> = Box<dyn Fn(&[usize], f64) -> Result<DynNorm<B>, LmoError> + Send + Sync>;

/// User norms by name, for the groups whose norm is
/// `NormSpec::Custom(name)`. A name no group uses is ignored; a group
/// naming a norm the registry does not have is refused when the optimizer
/// is built ([`LmoError::InvalidHyperParameter`]).
///
/// ```
/// use gluon_optim::{Config, GroupConfig, Label, LmoGroup, NormRegistry, NormSpec, Optimizer, Radius};
/// use lmo_core::{ColRowNorm, Norm};
/// use lmo_ndarray::Nd64;
///
/// // The max-column ℓ2 norm with rows and columns swapped (ℓ2 of rows):
/// // any `Norm` works; here lmo-core's row norm under a name of our own.
/// let norms = NormRegistry::<Nd64>::new().with("rows", |_dims, s| {
///     Ok(Box::new(ColRowNorm::<f64, true>::new().with_scale(s)?))
/// });
/// let cfg = Config::new().group(
///     Label::Hidden,
///     GroupConfig::Lmo(LmoGroup::new(NormSpec::Custom("rows".into()), Radius::Constant(0.1))),
/// );
/// let p = vec![ndarray::Array2::<f64>::ones((3, 4)).into_dyn()];
/// let opt = Optimizer::<Nd64>::with_norms(cfg, vec![Label::Hidden], &p, &norms).unwrap();
/// assert_eq!(opt.steps(), 0);
/// ```
pub struct NormRegistry<B: Backend> {
    builders: BTreeMap<String, NormBuilder<B>>,
}

impl<B: Backend> Default for NormRegistry<B> {
    fn default() -> Self {
        Self {
            builders: BTreeMap::new(),
        }
    }
}

impl<B: Backend> NormRegistry<B> {
    /// An empty registry (what [`crate::Optimizer::new`] uses).
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) the norm `name`, built by `build` from a
    /// block's shape and its group's total scale.
    pub fn with(
        mut self,
        name: impl Into<String>,
        build: impl Fn(&[usize], f64) -> Result<DynNorm<B>, LmoError> + Send + Sync + 'static,
    ) -> Self {
        self.builders.insert(name.into(), Box::new(build));
        self
    }

    /// The norm `name` for a block of shape `dims` with total scale `s`.
    pub fn build(&self, name: &str, dims: &[usize], s: f64) -> Result<DynNorm<B>, LmoError> {
        match self.builders.get(name) {
            Some(f) => f(dims, s),
            None => Err(LmoError::InvalidHyperParameter(
                "a group names a custom norm the registry does not have",
            )),
        }
    }

    /// The registered names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.builders.keys().map(String::as_str)
    }
}
