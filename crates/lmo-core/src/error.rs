//! Typed errors of the LMO toolkit.

use core::fmt;

/// Errors returned by norms, LMOs and backends.
///
/// A small `Copy` enum so that it can be returned from `no_std` code without
/// allocation. Every fallible operation that returns an error leaves its
/// output buffer untouched (checks run before anything is written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LmoError {
    /// Two tensors that must have the same shape (or a tensor and the shape a
    /// norm was configured for) differ.
    ShapeMismatch {
        /// The shape that was required, as (rows, cols) (vectors: (1, len)).
        expected: (usize, usize),
        /// The shape that was given.
        found: (usize, usize),
    },
    /// The input contains NaN or ±Inf.
    NonFinite,
    /// The operation does not support tensors of this rank (e.g. a matrix norm
    /// on a vector or on a 4-D convolution kernel that was not reshaped).
    UnsupportedRank(usize),
    /// A hyper-parameter is out of its domain (the payload names it and its
    /// domain, e.g. `"scale must be finite and > 0"`).
    InvalidHyperParameter(&'static str),
}

impl fmt::Display for LmoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LmoError::ShapeMismatch { expected, found } => write!(
                f,
                "shape mismatch: expected {}x{}, found {}x{}",
                expected.0, expected.1, found.0, found.1
            ),
            LmoError::NonFinite => f.write_str("input contains NaN or infinite values"),
            LmoError::UnsupportedRank(r) => {
                write!(f, "unsupported tensor rank {r} for this operation")
            }
            LmoError::InvalidHyperParameter(what) => write!(f, "invalid hyper-parameter: {what}"),
        }
    }
}

impl core::error::Error for LmoError {}
