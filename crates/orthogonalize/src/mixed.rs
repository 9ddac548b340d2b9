//! Newton–Schulz in bf16 for f32 tensors (mixed precision).

use lmo_core::{Backend, LmoError, Orthogonalizer};
use lmo_ndarray::{Bf16Kernel, Nd32, NdBf16, bf16_kernel, round_bf16};
use ndarray::ArrayD;

use crate::{NewtonSchulz, NsConfig};

/// The polar factor of an **f32** matrix computed with **bf16 storage and
/// f32 accumulation** — what `torch.optim.Muon` does with f32 parameters:
/// `X₀ = bf16(G)`, the iteration of [`NewtonSchulz`] on
/// [`NdBf16`](lmo_ndarray::NdBf16) (every stored intermediate rounded to
/// bf16, products accumulated in f32), the result returned as f32.
///
/// On CPUs with AVX-512 BF16 the products run on the native `vdpbf16ps`
/// kernel ([`lmo_ndarray::native`]) at twice the f32 FMA rate;
/// elsewhere on the f32 kernels with rounding ([`NewtonSchulzBf16::kernel`]
/// says which). Accuracy versus f32: docs/orthogonalize.md ("Accuracy").
///
/// As an [`Orthogonalizer<Nd32>`] it plugs into `lmo_core::Spectral`, and
/// gluon-optim selects it with `Orth::NewtonSchulzBf16`. Input handling as
/// [`NewtonSchulz`]: non-finite entries → [`LmoError::NonFinite`] with
/// `out` untouched; the f32 staging buffer of the rounded input is
/// allocated on the first call for a shape and reused, and the iteration
/// writes `out` directly.
pub struct NewtonSchulzBf16 {
    ns: NewtonSchulz<NdBf16>,
    x: ArrayD<f32>,
}

impl NewtonSchulzBf16 {
    /// A new bf16 iteration; invalid hyper-parameters give
    /// [`LmoError::InvalidHyperParameter`] (see [`NsConfig::validate`]).
    pub fn new(cfg: NsConfig) -> Result<Self, LmoError> {
        Ok(Self {
            ns: NewtonSchulz::new(cfg)?,
            x: ArrayD::zeros(ndarray::IxDyn(&[0])),
        })
    }

    /// Muon's NS5 ([`NsConfig::muon`]) in bf16.
    pub fn muon() -> Self {
        Self::new(NsConfig::muon()).expect("Muon's configuration is valid")
    }

    /// The configuration.
    pub fn config(&self) -> &NsConfig {
        self.ns.config()
    }

    /// The kernel the bf16 products run on, on this CPU.
    pub fn kernel() -> Bf16Kernel {
        bf16_kernel()
    }

    /// Writes the bf16 iteration's approximation of `polar(g)` into `out`.
    pub fn run(&mut self, g: &ArrayD<f32>, out: &mut ArrayD<f32>) -> Result<(), LmoError> {
        Nd32::shape(g).check_eq(&Nd32::shape(out))?;
        Nd32::shape(g).as_matrix()?;
        Nd32::check_finite(g)?;
        if self.x.shape() != g.shape() {
            self.x = g.clone();
        } else {
            self.x.assign(g);
        }
        round_bf16(&mut self.x);
        // `x` is finite and shaped like `out`: the run cannot fail half-way.
        self.ns.run(&self.x, out)
    }
}

impl Orthogonalizer<Nd32> for NewtonSchulzBf16 {
    fn polar(&mut self, g: &ArrayD<f32>, out: &mut ArrayD<f32>) -> Result<(), LmoError> {
        self.run(g, out)
    }
}
