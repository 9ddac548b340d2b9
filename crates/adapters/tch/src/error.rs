//! The errors of the `VarStore` optimizers.

use gluon_optim::{OptError, ShardError};

/// Errors of [`crate::VarStoreOptimizer`] and
/// [`crate::ShardedVarStoreOptimizer`]. Every error leaves the variables
/// and the optimizer state untouched (steps are atomic, an LMO failure
/// included), except a communicator failure part way through a sharded
/// step (see each method, for the gradients as well).
#[derive(Debug)]
pub enum TchOptError {
    /// The optimizer rejected the step, the configuration or the state.
    Opt(OptError),
    /// The sharded step failed on this rank or on another
    /// ([`ShardError::Peer`]), or the communicator failed.
    Shard(ShardError),
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
            TchOptError::Shard(e) => write!(f, "{e}"),
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

impl From<ShardError> for TchOptError {
    fn from(e: ShardError) -> Self {
        match e {
            ShardError::Opt(e) => TchOptError::Opt(e),
            e => TchOptError::Shard(e),
        }
    }
}
