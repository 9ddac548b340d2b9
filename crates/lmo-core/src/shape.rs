//! Tensor shapes.

use crate::LmoError;

/// The shape of a tensor of rank 0 to 4 (scalars, vectors, matrices,
/// convolution kernels `(out, in, kh, kw)`), row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    dims: [usize; 4],
    rank: u8,
}

impl Shape {
    /// The largest rank a [`Shape`] holds.
    pub const MAX_RANK: usize = 4;

    /// Builds a shape from its dimensions; more than [`Shape::MAX_RANK`]
    /// dimensions give [`LmoError::UnsupportedRank`].
    pub fn new(dims: &[usize]) -> Result<Self, LmoError> {
        if dims.len() > Self::MAX_RANK {
            return Err(LmoError::UnsupportedRank(dims.len()));
        }
        let mut d = [1usize; 4];
        d[..dims.len()].copy_from_slice(dims);
        Ok(Shape {
            dims: d,
            rank: dims.len() as u8,
        })
    }

    /// A matrix shape `m × n`.
    pub const fn matrix(m: usize, n: usize) -> Self {
        Shape {
            dims: [m, n, 1, 1],
            rank: 2,
        }
    }

    /// A vector shape of length `d`.
    pub const fn vector(d: usize) -> Self {
        Shape {
            dims: [d, 1, 1, 1],
            rank: 1,
        }
    }

    /// The rank (number of dimensions).
    pub fn rank(&self) -> usize {
        self.rank as usize
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.rank as usize]
    }

    /// Number of elements, the product of the dimensions.
    pub fn numel(&self) -> usize {
        self.dims().iter().product()
    }

    /// `(rows, cols)` of a rank-2 shape; other ranks give
    /// [`LmoError::UnsupportedRank`] (matrix norms never guess how to
    /// flatten a vector or a convolution kernel).
    pub fn as_matrix(&self) -> Result<(usize, usize), LmoError> {
        if self.rank == 2 {
            Ok((self.dims[0], self.dims[1]))
        } else {
            Err(LmoError::UnsupportedRank(self.rank as usize))
        }
    }

    /// `(rows, cols)` used in error messages: matrices as they are, vectors
    /// as `(1, len)`, other ranks as `(dim0, rest)`.
    pub fn as_pair(&self) -> (usize, usize) {
        match self.rank {
            0 => (1, 1),
            1 => (1, self.dims[0]),
            _ => (
                self.dims[0],
                self.dims[1..self.rank as usize].iter().product(),
            ),
        }
    }

    /// `Ok(())` if `self == other`, else [`LmoError::ShapeMismatch`].
    pub fn check_eq(&self, other: &Shape) -> Result<(), LmoError> {
        if self == other {
            Ok(())
        } else {
            Err(LmoError::ShapeMismatch {
                expected: self.as_pair(),
                found: other.as_pair(),
            })
        }
    }
}
