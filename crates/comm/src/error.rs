//! Errors of the communicators.

/// What went wrong in a collective call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommError {
    /// The call's arguments do not fit (buffer lengths, counts, root);
    /// nothing was sent.
    Argument(String),
    /// The transport failed or is unavailable (MPI not initialized, or
    /// initialized twice).
    Transport(String),
}

impl core::fmt::Display for CommError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CommError::Argument(s) => write!(f, "collective call: {s}"),
            CommError::Transport(s) => write!(f, "transport: {s}"),
        }
    }
}

impl std::error::Error for CommError {}

/// An argument error.
pub(crate) fn arg(msg: String) -> CommError {
    CommError::Argument(msg)
}
