//! Floating-point scalar abstraction (f32, f64).

/// A real floating-point scalar the LMOs compute with: `f32` or `f64`.
///
/// Reduced-precision storage (bf16) is a backend concern: a backend stores
/// bf16 and exposes `f32` as its `Scalar`.
pub trait Scalar:
    num_traits::Float
    + core::fmt::Debug
    + core::fmt::Display
    + core::iter::Sum
    + Default
    + Send
    + Sync
    + 'static
{
    /// Converts from `f64` (rounding to nearest).
    fn of(v: f64) -> Self;
    /// Converts to `f64` (exact for f32 and f64).
    fn as_f64(self) -> f64;

    /// `1/min_positive`, an exact power of two (`2^126` for f32, `2^1022`
    /// for f64). Multiplying a subnormal by it is exact and lands in the
    /// normal range without overflow (`|x| < min_positive ⇒ |x|·lift < 1`):
    /// the first step of the two-step normalizations of tiny tensors,
    /// where one multiplier `1/‖x‖` would overflow.
    fn subnormal_lift() -> Self {
        Self::one() / Self::min_positive_value()
    }
}

impl Scalar for f32 {
    #[inline]
    fn of(v: f64) -> Self {
        v as f32
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl Scalar for f64 {
    #[inline]
    fn of(v: f64) -> Self {
        v
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self
    }
}
