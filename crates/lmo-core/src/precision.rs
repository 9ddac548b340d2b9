//! What a backend offers for polar factors in bf16 storage: the seam that
//! lets an optimizer ask for "the bf16 Newton–Schulz of this backend"
//! without knowing the backend (SPEC §2, precision).

use crate::Backend;

/// A backend's declaration of its bf16 polar-factor path: bf16 storage
/// with f32 accumulation, the precision `torch.optim.Muon` uses, run on
/// this backend's own tensors.
///
/// Every backend that an optimizer runs on implements this trait (the
/// optimizer's bound checks it at compile time), and says here whether it
/// offers the path ([`Bf16Storage::OFFERS_BF16`]) and, if it does, which
/// backend runs the iteration ([`Bf16Storage::Bf16`], sharing the tensor
/// type) and how an input enters it ([`Bf16Storage::to_bf16`]). The
/// mixed-precision polar factor of the `orthogonalize` crate is written
/// once against this trait: `X₀ = round_bf16(G)`, then the iteration on
/// `Self::Bf16`, every stored intermediate rounded to bf16 and every
/// product accumulated in f32.
///
/// A backend without such a path sets `OFFERS_BF16 = false` and
/// `Bf16 = Self`; a configuration that asks for it is then refused with
/// [`crate::LmoError::InvalidHyperParameter`] when the optimizer is built,
/// before anything is allocated or stepped.
pub trait Bf16Storage: Backend {
    /// The backend whose operations store bf16 and accumulate in f32, on
    /// the tensors of `Self` (`Self` itself for a backend that is already
    /// bf16, or that offers no bf16 path).
    type Bf16: Backend<Scalar = Self::Scalar, Tensor = Self::Tensor>;

    /// `true` if the bf16 polar factor is available on this backend.
    const OFFERS_BF16: bool;

    /// Writes `src` with every entry rounded to the nearest bf16 value
    /// (ties to even) into `dst` (same shape): the conversion
    /// `X₀ = bf16(G)` of the input. A backend whose own operations already
    /// round to bf16 ([`Bf16Storage::Bf16`] `= Self`) may copy `src` as it
    /// is, since its first operation rounds.
    fn to_bf16(src: &Self::Tensor, dst: &mut Self::Tensor);
}
