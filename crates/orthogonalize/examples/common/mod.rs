//! Helpers shared by the accuracy examples (`accuracy_table`,
//! `gram_accuracy`): seeded Gaussian inputs and one run of an iteration on
//! an f64 input in a given precision.

use lmo_core::{Backend, Scalar};
use lmo_ndarray::{NdScalar, round_bf16};
use ndarray::{ArrayD, IxDyn};
use orthogonalize::{NewtonSchulz, NsConfig};
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// An `m × n` matrix of standard normal entries.
pub fn gaussian(rng: &mut StdRng, m: usize, n: usize) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(&[m, n]), |_| StandardNormal.sample(rng))
}

/// The iteration's output on `g` in `B`'s precision, in f64, and the Gram
/// fallbacks it took. With `bf16` the input is first rounded as bf16
/// storage would (NdBf16's scalar is f32).
pub fn run<B>(cfg: &NsConfig, g: &ArrayD<f64>, bf16: bool) -> (ArrayD<f64>, u64)
where
    B: Backend<Tensor = ArrayD<<B as Backend>::Scalar>>,
    B::Scalar: NdScalar,
{
    let mut x: ArrayD<B::Scalar> = g.mapv(B::Scalar::of);
    if bf16 {
        let mut f: ArrayD<f32> = g.mapv(|v| v as f32);
        round_bf16(&mut f);
        x = f.mapv(|v| B::Scalar::of(v as f64));
    }
    let mut out = x.clone();
    let mut ns = NewtonSchulz::<B>::new(cfg.clone()).expect("valid configuration");
    ns.run(&x, &mut out).expect("finite input");
    (out.mapv(|v| v.as_f64()), ns.gram_fallbacks())
}
