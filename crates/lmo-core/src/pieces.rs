//! Norms on tensors that are not one matrix: a convolution kernel flattened
//! to `(out, in·kh·kw)`, a 3-D tensor read as a batch of matrices (per-head
//! attention weights), a fused QKV matrix split into its parts.
//!
//! A [`View`] says how a tensor of any rank is cut into matrix pieces; a
//! [`Pieces`] norm applies one norm per piece and combines them as the
//! product norm with the max (SPEC §1, §3: the blocks of a layer-wise step,
//! one level down):
//!
//! ```text
//! ‖X‖ = max_i ‖X_i‖_(i)      ‖G‖_* = Σ_i ‖G_i‖_(i)*      lmo(G) = (lmo_i(G_i))_i
//! ```
//!
//! so `<G, lmo(G)> = Σ_i <G_i, lmo_i(G_i)> = −‖G‖_*` and `‖lmo(G)‖ = 1`
//! whenever one piece is non-zero: the same guarantees as every norm of
//! [`crate::norms`]. For a single piece (`Flatten`) this is the piece's norm
//! on the reshaped tensor, as KellerJordan/Muon's `g.view(len(g), -1)`.
//! For several pieces each piece is orthogonalized (or normalized) on its
//! own, as per-head Muon and the split QKV of Moonlight/modded-nanogpt do.
//!
//! Every piece is a contiguous run of the row-major tensor, so the pieces
//! are read and written through one host copy each way
//! ([`Backend::copy_to_slice`]); the buffers are sized when the norm is
//! built (the piece tensors on first use), so later calls allocate nothing.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use num_traits::Zero;

use crate::{Backend, LmoError, Norm, Shape};

/// How a tensor is cut into the matrices its norm sees (SPEC §1: "the
/// choice is explicit in the API, never silent").
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum View {
    /// The tensor as it is: a matrix norm takes rank 2 only and refuses any
    /// other rank with [`LmoError::UnsupportedRank`].
    #[default]
    AsIs,
    /// `(d0, d1, …, dk) → (d0, d1·…·dk)`, one matrix: a convolution kernel
    /// `(out, in, kh, kw)` becomes `(out, in·kh·kw)` (KellerJordan/Muon).
    /// Rank ≥ 2; a matrix stays as it is.
    Flatten,
    /// `(b1, …, bj, m, n)`: the leading axes index a batch of `b1·…·bj`
    /// matrices `m × n`, each with its own LMO (per-head attention
    /// weights). Rank ≥ 2; a matrix is a batch of one.
    Batch,
    /// A matrix `(Σ r_i) × n` split along its rows into `r_i × n` parts
    /// (a fused QKV projection `(3d) × d` with sizes `[d, d, d]`), each
    /// with its own LMO. Rank 2; the sizes must be > 0 and sum to the rows.
    SplitRows(Vec<usize>),
}

impl View {
    /// The pieces of a tensor of shape `shape`, in row-major order.
    ///
    /// Errors: [`LmoError::UnsupportedRank`] for a rank the view does not
    /// take; [`LmoError::InvalidHyperParameter`] for split sizes that are
    /// empty, zero, or do not sum to the rows.
    pub fn pieces(&self, shape: &Shape) -> Result<Vec<Shape>, LmoError> {
        let dims = shape.dims();
        let rank = dims.len();
        match self {
            View::AsIs => Ok(vec![*shape]),
            View::Flatten | View::Batch if rank < 2 => Err(LmoError::UnsupportedRank(rank)),
            View::Flatten => Ok(vec![Shape::matrix(dims[0], dims[1..].iter().product())]),
            View::Batch => {
                let (m, n) = (dims[rank - 2], dims[rank - 1]);
                let count: usize = dims[..rank - 2].iter().product();
                Ok(vec![Shape::matrix(m, n); count])
            }
            View::SplitRows(sizes) => {
                let (rows, cols) = shape.as_matrix()?;
                if sizes.is_empty() || sizes.contains(&0) {
                    return Err(LmoError::InvalidHyperParameter(
                        "split sizes must be non-empty and > 0",
                    ));
                }
                let total = sizes
                    .iter()
                    .try_fold(0usize, |a, &s| a.checked_add(s))
                    .filter(|&t| t == rows);
                if total.is_none() {
                    return Err(LmoError::InvalidHyperParameter(
                        "split sizes must sum to the number of rows",
                    ));
                }
                Ok(sizes.iter().map(|&r| Shape::matrix(r, cols)).collect())
            }
        }
    }

    /// Whether the view leaves a tensor of shape `shape` as one piece of
    /// the same shape (then no [`Pieces`] wrapper is needed).
    pub fn is_identity_on(&self, shape: &Shape) -> bool {
        match self {
            View::AsIs => true,
            View::Flatten | View::Batch => shape.rank() == 2,
            View::SplitRows(s) => shape.rank() == 2 && s.as_slice() == [shape.dims()[0]],
        }
    }
}

/// One piece: where it lies in the flat tensor, its norm and, after first
/// use, its input and output tensors.
struct Part<B: Backend> {
    shape: Shape,
    offset: usize,
    norm: Box<dyn Norm<B> + Send>,
    bufs: Option<(B::Tensor, B::Tensor)>,
}

/// The product norm with the max over the pieces of a tensor (module
/// docs): `‖X‖ = max_i ‖X_i‖_(i)`, `‖G‖_* = Σ_i ‖G_i‖_(i)*`,
/// `lmo(G) = (lmo_i(G_i))_i`. Built from the pieces of a [`View`] with one
/// norm each. No pieces (a batch of zero matrices) give 0 and an empty LMO.
pub struct Pieces<B: Backend> {
    shape: Shape,
    parts: Vec<Part<B>>,
    host_in: Vec<B::Scalar>,
    host_out: Vec<B::Scalar>,
}

impl<B: Backend> Pieces<B> {
    /// The norm on tensors of shape `shape` made of `parts` (a piece shape
    /// and its norm, in row-major order, as [`View::pieces`] gives them).
    ///
    /// Errors: [`LmoError::InvalidHyperParameter`] if the pieces do not
    /// cover the tensor exactly; a piece's own
    /// [`Norm::check_shape`] error if its norm cannot take its shape.
    pub fn new(
        shape: Shape,
        parts: Vec<(Shape, Box<dyn Norm<B> + Send>)>,
    ) -> Result<Self, LmoError> {
        let mut offset = 0usize;
        let mut out = Vec::with_capacity(parts.len());
        for (s, norm) in parts {
            norm.check_shape(&s)?;
            out.push(Part {
                shape: s,
                offset,
                norm,
                bufs: None,
            });
            offset = offset
                .checked_add(s.numel())
                .ok_or(LmoError::InvalidHyperParameter(
                    "pieces must cover the tensor exactly",
                ))?;
        }
        if offset != shape.numel() {
            return Err(LmoError::InvalidHyperParameter(
                "pieces must cover the tensor exactly",
            ));
        }
        let zero = B::Scalar::zero();
        Ok(Pieces {
            shape,
            parts: out,
            host_in: vec![zero; offset],
            host_out: vec![zero; offset],
        })
    }

    /// The number of pieces.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Whether there are no pieces (a batch of zero matrices).
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Checks `x` (shape, finiteness) and copies it into `host_in`, then
    /// each piece into its input tensor.
    fn load(&mut self, x: &B::Tensor) -> Result<(), LmoError> {
        self.shape.check_eq(&B::shape(x))?;
        B::check_finite(x)?;
        B::copy_to_slice(x, &mut self.host_in);
        for p in &mut self.parts {
            let (i, _) = p
                .bufs
                .get_or_insert_with(|| (B::zeros(x, p.shape), B::zeros(x, p.shape)));
            B::copy_from_slice(&self.host_in[p.offset..p.offset + p.shape.numel()], i);
        }
        Ok(())
    }
}

impl<B: Backend> Norm<B> for Pieces<B> {
    fn name(&self) -> &'static str {
        "pieces"
    }

    fn check_shape(&self, shape: &Shape) -> Result<(), LmoError> {
        self.shape.check_eq(shape)
    }

    /// `max_i ‖X_i‖_(i)`.
    fn norm(&mut self, x: &B::Tensor) -> Result<B::Scalar, LmoError> {
        self.load(x)?;
        let mut r = B::Scalar::zero();
        for p in &mut self.parts {
            if let Some((i, _)) = &p.bufs {
                let v = p.norm.norm(i)?;
                if v > r {
                    r = v;
                }
            }
        }
        Ok(r)
    }

    /// `Σ_i ‖G_i‖_(i)*`.
    fn dual_norm(&mut self, g: &B::Tensor) -> Result<B::Scalar, LmoError> {
        self.load(g)?;
        let mut r = B::Scalar::zero();
        for p in &mut self.parts {
            if let Some((i, _)) = &p.bufs {
                r = r + p.norm.dual_norm(i)?;
            }
        }
        Ok(r)
    }

    /// `lmo(G) = (lmo_i(G_i))_i`, returning `Σ_i <G_i, lmo_i(G_i)>`; `out`
    /// is written only after every piece succeeded.
    fn lmo(&mut self, g: &B::Tensor, out: &mut B::Tensor) -> Result<B::Scalar, LmoError> {
        self.shape.check_eq(&B::shape(out))?;
        self.load(g)?;
        let mut ip = B::Scalar::zero();
        for p in &mut self.parts {
            if let Some((i, o)) = &mut p.bufs {
                ip = ip + p.norm.lmo(i, o)?;
                B::copy_to_slice(o, &mut self.host_out[p.offset..p.offset + p.shape.numel()]);
            }
        }
        B::copy_from_slice(&self.host_out, out);
        Ok(ip)
    }
}
