//! # orthogonalize
//!
//! The polar factor `polar(G) = U·Vᵀ` of `G = U·Σ·Vᵀ`, the expensive part of
//! the spectral-norm LMO behind Muon, Scion and Gluon (SPEC §2):
//!
//! - [`NewtonSchulz`]: odd polynomial iterations with every coefficient set
//!   of SPEC §2 ([`CoefficientSet`]: Muon quintic, classical cubic, Polar
//!   Express, modded-nanogpt per-step, user coefficients), any number of
//!   steps, Frobenius normalization with margin δ and guard ε, the
//!   transpose for tall matrices, in the plain form or the Gram form
//!   ([`NsForm::Gram`]: the steps on `min(m,n)²` matrices with restarts and
//!   a guard, faster for rectangular matrices). Written once against lmo-core's
//!   [`lmo_core::Backend`]; on the ndarray backend its Gram products compute
//!   one triangle and its products run through faer or, where the CPU has
//!   AVX-512 (and `avx512_bf16` for bf16), `lmo_ndarray::native`.
//! - [`FaerPolar`]: the exact polar factor through faer's SVD (reference and
//!   small-matrix option, no system library).
//! - [`BatchPolar`]: many matrices at once, in parallel with rayon,
//!   allocation-free after the first call.
//!
//! Both plug into lmo-core's spectral LMO:
//! `lmo_core::Spectral::with_orthogonalizer(NewtonSchulz::muon())`.
//!
//! The same `NewtonSchulz` runs on a GPU through the CUDA backend of the
//! `lmo-cuda` adapter crate (cudarc; cuBLAS GEMMs in f32 or bf16 with f32
//! accumulation, `syrk` Gram products, NVRTC kernels), which also has the
//! batched device plans of this iteration.
//!
//! Precision: the backend's scalar (f32 or f64); bf16 storage with f32
//! accumulation through a bf16 backend such as `lmo_ndarray::NdBf16`
//! (natively, `vdpbf16ps`, on CPUs with AVX-512 BF16); [`NewtonSchulzBf16`]
//! runs that bf16 iteration on a wider backend's tensors (mixed precision,
//! as `torch.optim.Muon`), on the path the backend declares through
//! [`lmo_core::Bf16Storage`]. `docs/orthogonalize.md` has
//! the accuracy and speed tables.
#![warn(missing_docs)]

mod batch;
mod coeffs;
mod exact;
mod gram;
mod mixed;
mod ns;

pub use batch::BatchPolar;
pub use coeffs::{
    CUBIC, CoefficientSet, MODDED_NANOGPT, MUON_QUINTIC, Normalization, NsConfig, NsForm,
    POLAR_EXPRESS, POLAR_EXPRESS_SAFETY,
};
pub use exact::FaerPolar;
pub use mixed::NewtonSchulzBf16;
pub use ns::NewtonSchulz;

/// The code blocks of docs/orthogonalize.md, compiled and run as doc tests.
#[doc = include_str!("../../../docs/orthogonalize.md")]
#[cfg(doctest)]
pub struct DocsDoctests;
