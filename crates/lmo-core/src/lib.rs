//! # lmo-core
//!
//! Norms, dual norms and linear minimization oracles (LMOs), and the backend
//! traits through which the optimizers of this toolkit (Gluon, Muon, Scion,
//! the Broximal Point Method) are written once for every tensor library.
//!
//! `#![no_std]` + `alloc`; the `std` feature (default) adds nothing but
//! keeps the door open for std-only conveniences.
//!
//! - [`Backend`]: tensors and the operations the LMOs need.
//! - [`Norm`]: `norm`, `dual_norm` and `lmo` (returning `<g, lmo(g)>`) for
//!   [`Frobenius`], [`Spectral`] (and RMS→RMS), [`SignInf`] (ℓ∞), [`L1`],
//!   [`ColNorm`], [`RowNorm`] and [`VectorRms`], each with a positive scale.
//! - [`Orthogonalizer`]: the seam where the spectral LMO gets its polar
//!   factor; [`ExactPolar`] is the exact reference (one-sided Jacobi SVD,
//!   [`JacobiSvd`]).
//! - [`Bf16Storage`]: what a backend offers for bf16 polar factors (bf16
//!   storage, f32 accumulation), declared by the backend itself.
//! - [`LmoError`]: typed errors (shape mismatch, non-finite input,
//!   unsupported rank, invalid hyper-parameter).
//!
//! The mathematics is SPEC §1: for `G ≠ 0`, `<G, lmo(G)> = −‖G‖_*` and
//! `‖lmo(G)‖ = 1`; `lmo(0) = 0`.
#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod backend;
mod error;
pub mod norms;
mod orth;
mod pieces;
mod precision;
mod scalar;
mod shape;
pub mod svd;

pub use backend::{AdamWStep, Backend, Trans};
pub use error::LmoError;
pub use norms::{ColNorm, ColRowNorm, Frobenius, L1, Norm, RowNorm, SignInf, Spectral, VectorRms};
/// Re-export of `num-traits` (the `Float`, `Zero`, `One` traits behind [`Scalar`]).
pub use num_traits;
pub use orth::{ExactPolar, Orthogonalizer};
pub use pieces::{Pieces, View};
pub use precision::Bf16Storage;
pub use scalar::Scalar;
pub use shape::Shape;
pub use svd::JacobiSvd;
