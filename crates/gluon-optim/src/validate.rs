//! The checks every engine makes before a step changes anything (the CPU
//! [`crate::Optimizer`] and the device step share them): counts, shapes,
//! and what a non-finite gradient means under the configured policy.

use lmo_core::num_traits::Float;
use lmo_core::{Backend, LmoError, Scalar, Shape};

use crate::config::NonFinitePolicy;
use crate::optimizer::{BlockState, OptError};

/// `params` and `grads` both have `n` entries, else
/// [`OptError::CountMismatch`].
pub(crate) fn counts(n: usize, params: usize, grads: usize) -> Result<(), OptError> {
    for len in [params, grads] {
        if len != n {
            return Err(OptError::CountMismatch {
                expected: n,
                found: len,
            });
        }
    }
    Ok(())
}

/// `params` and `grads` both have one tensor per entry of `shapes`, each of
/// that shape (every engine's check before a step).
pub(crate) fn counts_and_shapes<'a, B: Backend>(
    shapes: impl ExactSizeIterator<Item = &'a [usize]>,
    params: &[B::Tensor],
    grads: &[B::Tensor],
) -> Result<(), OptError> {
    counts(shapes.len(), params.len(), grads.len())?;
    for (i, (s, (p, g))) in shapes.zip(params.iter().zip(grads)).enumerate() {
        for t in [p, g] {
            shape(i, s, B::shape(t).dims())?;
        }
    }
    Ok(())
}

/// Block `block`'s tensor has the dims `expected`, else
/// `OptError::Lmo { block, ShapeMismatch }`.
pub(crate) fn shape(block: usize, expected: &[usize], found: &[usize]) -> Result<(), OptError> {
    if found == expected {
        Ok(())
    } else {
        Err(mismatch(block, expected, found))
    }
}

/// `OptError::Lmo { block, ShapeMismatch { expected, found } }`.
pub(crate) fn mismatch(block: usize, expected: &[usize], found: &[usize]) -> OptError {
    let pair = |v: &[usize]| Shape::new(v).map_or((0, 0), |s| s.as_pair());
    let error = LmoError::ShapeMismatch {
        expected: pair(expected),
        found: pair(found),
    };
    OptError::Lmo { block, error }
}

/// What the step does given the first block with a non-finite gradient
/// (`None`: all finite): `Ok(true)` step, `Ok(false)` skip (policy
/// [`NonFinitePolicy::Skip`]), or [`OptError::NonFiniteGradient`].
pub(crate) fn non_finite(policy: NonFinitePolicy, first: Option<usize>) -> Result<bool, OptError> {
    match first {
        None => Ok(true),
        Some(block) => match policy {
            NonFinitePolicy::Error => Err(OptError::NonFiniteGradient { block }),
            NonFinitePolicy::Skip => Ok(false),
        },
    }
}

/// Whether a block can take gradient `g`: every entry finite and, for an
/// AdamW block (`adamw`), small enough that the second moment stays finite
/// in the scalar type: `|g| ≤ √MAX/2` (f32: 9.2e18, f64: 6.7e153).
///
/// Why the bound suffices: `v_k = β₂·v_{k−1} + (1−β₂)·g_k²` and the
/// bias-corrected `v̂_k = v_k/(1−β₂^k)` are weighted averages of past
/// `g_i²` (weights summing to at most 1), so they stay at or below
/// `max_i g_i² ≤ MAX/4`; without it `v` or `v̂` becomes Inf and AdamW's
/// update silently vanishes (`m̂/∞ = 0`).
///
/// One read of `g` ([`Backend::max_abs`] is finite exactly when every entry
/// is, and is the magnitude the bound needs).
pub(crate) fn grad_ok<B: Backend>(adamw: bool, g: &B::Tensor) -> bool {
    let amax = B::max_abs(g);
    if !amax.is_finite() {
        return false;
    }
    !adamw || amax <= <B::Scalar as Float>::max_value().sqrt() / B::Scalar::of(2.0)
}

/// The checks of one block of a saved state (every engine's
/// `load_state`): its shape is `shape`, it has one buffer (LMO momentum)
/// or two (`adamw`: m, v) of the block's size, every value is finite in
/// the backend's scalar type (1e39 is not an f32), and AdamW's moments
/// keep the invariants its step maintains under [`grad_ok`]'s bound:
/// `|m| ≤ √MAX/2` and `0 ≤ v ≤ MAX/4` (a negative `v` would make the
/// update `m̂/(√v̂ + ε)` NaN).
pub(crate) fn state_block<B: Backend>(
    i: usize,
    sb: &BlockState,
    shape: &[usize],
    adamw: bool,
) -> Result<(), OptError> {
    let bad = |why: &str| Err(OptError::BadState(format!("block {i}: {why}")));
    let numel: usize = shape.iter().product();
    if sb.shape != shape
        || sb.buffers.len() != if adamw { 2 } else { 1 }
        || sb.buffers.iter().any(|v| v.len() != numel)
    {
        return bad("shape or buffers differ");
    }
    if sb
        .buffers
        .iter()
        .flatten()
        .any(|&x| !B::Scalar::of(x).as_f64().is_finite())
    {
        return bad("non-finite buffer");
    }
    if adamw {
        let max = <B::Scalar as Float>::max_value().as_f64();
        let (m, v) = (&sb.buffers[0], &sb.buffers[1]);
        if m.iter().any(|x| x.abs() > max.sqrt() / 2.0)
            || v.iter().any(|&x| !(0.0..=max / 4.0).contains(&x))
        {
            return bad("AdamW moments out of range (|m| ≤ √MAX/2, 0 ≤ v ≤ MAX/4)");
        }
    }
    Ok(())
}

/// The largest step or skip count a saved state may carry: 2^53, the
/// last integer every count converts to f64 exactly (schedules and bias
/// corrections compute with it); no run comes near it, and a larger value
/// (a corrupt checkpoint) would overflow the counters.
pub(crate) const MAX_COUNT: u64 = 1 << 53;

/// A saved state's counters are at most [`MAX_COUNT`].
pub(crate) fn counters(step: u64, skipped: u64) -> Result<(), OptError> {
    if step > MAX_COUNT || skipped > MAX_COUNT {
        return Err(OptError::BadState(format!(
            "step {step} / skipped {skipped} beyond 2^53"
        )));
    }
    Ok(())
}
