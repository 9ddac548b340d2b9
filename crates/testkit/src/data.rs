//! Test data and comparisons shared by the suites that check one backend
//! against another on identical inputs.

use ndarray::{ArrayD, IxDyn};
use rand::Rng;
use rand_distr::StandardNormal;

/// `n` standard-normal f32 values from `rng`.
pub fn randn(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect()
}

/// `v` (row-major) as an f32 array of shape `dims`.
///
/// # Panics
/// If `v.len()` is not the product of `dims` (a bug in the test).
pub fn nd(v: &[f32], dims: &[usize]) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(dims), v.to_vec()).expect("length matches the shape")
}

/// The largest entrywise difference of `a` and `b`, relative to
/// `max(1, max|b|)`: `max_k |a_k − b_k| / max(1, max_k |b_k|)`.
///
/// A NaN difference (NaN in either input, or `∞ − ∞`) counts as `+∞`, so a
/// result full of NaN (or an infinite reference) never passes a tolerance
/// check.
///
/// # Panics
/// If `a` and `b` differ in length (a bug in the test or the backend).
pub fn rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "rel: compared slices differ in length");
    let scale = b.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (x - y).abs();
            if d.is_nan() { f32::INFINITY } else { d }
        })
        .fold(0.0, f32::max);
    let r = worst / scale;
    // ∞/∞ (an infinite reference) is no pass either.
    if r.is_nan() { f32::INFINITY } else { r }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_is_the_scaled_largest_difference() {
        assert_eq!(rel(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert_eq!(rel(&[1.0, 6.0], &[1.0, 4.0]), 0.5);
        assert_eq!(rel(&[0.5], &[0.25]), 0.25);
        // NaN anywhere must fail any tolerance, not score 0.
        assert_eq!(rel(&[f32::NAN, f32::NAN], &[1.0, 2.0]), f32::INFINITY);
        assert_eq!(rel(&[1.0, 2.0], &[1.0, f32::NAN]), f32::INFINITY);
        assert_eq!(rel(&[f32::INFINITY], &[f32::INFINITY]), f32::INFINITY);
        assert!(rel(&[f32::NAN; 3], &[0.0; 3]) > 1e-3);
        assert!(std::panic::catch_unwind(|| rel(&[1.0, 2.0], &[1.0])).is_err());
        assert_eq!(nd(&[1.0, 2.0, 3.0, 4.0], &[2, 2])[[1, 0]], 3.0);
        let mut r = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
        let v = randn(&mut r, 1000);
        let mean = v.iter().sum::<f32>() / 1000.0;
        assert!(mean.abs() < 0.2 && v.iter().any(|&x| x < 0.0));
    }
}
