//! Newton–Schulz in bf16 for wider tensors (mixed precision).

use lmo_core::{Bf16Storage, LmoError, Orthogonalizer};

use crate::{NewtonSchulz, NsConfig};

/// The polar factor of a matrix computed with **bf16 storage and f32
/// accumulation** on a backend that offers it ([`Bf16Storage`]) — what
/// `torch.optim.Muon` does with f32 parameters:
/// `X₀ = bf16(G)` ([`Bf16Storage::to_bf16`]), then the iteration of
/// [`NewtonSchulz`] on the backend's bf16 twin [`Bf16Storage::Bf16`]
/// (every stored intermediate rounded to bf16, products accumulated in
/// f32), the result written into the caller's tensor.
///
/// On the ndarray f32 backend (`lmo_ndarray::Nd32`) the twin is
/// `lmo_ndarray::NdBf16`: on CPUs with AVX-512 BF16 its products run on the
/// native `vdpbf16ps` kernel, elsewhere on the f32 kernels with rounding
/// (`lmo_ndarray::bf16_kernel()` says which). Accuracy versus f32:
/// docs/orthogonalize.md ("Accuracy").
///
/// As an [`Orthogonalizer<B>`] it plugs into `lmo_core::Spectral`, and
/// gluon-optim selects it with `Orth::NewtonSchulzBf16`. Input handling as
/// [`NewtonSchulz`]: non-finite entries → [`LmoError::NonFinite`] with
/// `out` untouched; a backend that does not offer the path
/// (`OFFERS_BF16 = false`) → [`LmoError::InvalidHyperParameter`] from
/// [`NewtonSchulzBf16::new`]. The staging buffer of the rounded input is
/// allocated on the first call for a shape and reused, and the iteration
/// writes `out` directly.
pub struct NewtonSchulzBf16<B: Bf16Storage> {
    ns: NewtonSchulz<B::Bf16>,
    x: Option<B::Tensor>,
}

impl<B: Bf16Storage> NewtonSchulzBf16<B> {
    /// A new bf16 iteration; invalid hyper-parameters (see
    /// [`NsConfig::validate`]) or a backend without a bf16 path give
    /// [`LmoError::InvalidHyperParameter`].
    pub fn new(cfg: NsConfig) -> Result<Self, LmoError> {
        if !B::OFFERS_BF16 {
            return Err(LmoError::InvalidHyperParameter(
                "this backend offers no bf16 polar factor (Bf16Storage::OFFERS_BF16 is false)",
            ));
        }
        Ok(Self {
            ns: NewtonSchulz::new(cfg)?,
            x: None,
        })
    }

    /// Muon's NS5 ([`NsConfig::muon`]) in bf16, or the error of
    /// [`NewtonSchulzBf16::new`] on a backend without a bf16 path.
    pub fn muon() -> Result<Self, LmoError> {
        Self::new(NsConfig::muon())
    }

    /// The configuration.
    pub fn config(&self) -> &NsConfig {
        self.ns.config()
    }

    /// Writes the bf16 iteration's approximation of `polar(g)` into `out`.
    pub fn run(&mut self, g: &B::Tensor, out: &mut B::Tensor) -> Result<(), LmoError> {
        let shape = B::shape(g);
        shape.check_eq(&B::shape(out))?;
        shape.as_matrix()?;
        // No finiteness check here: rounding keeps NaN and ±Inf (and maps
        // only values beyond bf16's range to ±Inf), and `self.ns.run`
        // checks the rounded copy before it writes `out`.
        let x = match &mut self.x {
            Some(x) if B::shape(x) == shape => x,
            slot => slot.insert(B::zeros(g, shape)),
        };
        B::to_bf16(g, x);
        // `x` is shaped like `out`; the run checks it (NaN/±Inf, kept by
        // the rounding) before it writes `out`, so an error leaves `out`
        // untouched.
        self.ns.run(x, out)
    }
}

impl<B: Bf16Storage> Orthogonalizer<B> for NewtonSchulzBf16<B> {
    fn polar(&mut self, g: &B::Tensor, out: &mut B::Tensor) -> Result<(), LmoError> {
        self.run(g, out)
    }
}
