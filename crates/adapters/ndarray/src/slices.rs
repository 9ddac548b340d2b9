//! The elementwise operations and reductions of the backend on contiguous
//! slices: written so the compiler vectorizes them (independent lanes, no
//! early exit inside a chunk) and, above [`PAR_MIN`] entries, spread over
//! the current rayon pool in chunks of [`CHUNK`].
//!
//! Only operations whose result does not depend on the order of the work
//! run in parallel (maps, `all`, `max`); sums (`dot`, `Σ|x|`, `Σx²`) run
//! on one thread in a fixed order of [`LANES`] interleaved partial sums,
//! so every result is the same bit for bit on any number of threads.

use rayon::prelude::*;

use crate::NdScalar;

/// Entries per parallel task.
pub(crate) const CHUNK: usize = 1 << 14;
/// Below this many entries an operation runs on the calling thread.
pub(crate) const PAR_MIN: usize = 1 << 17;
/// Interleaved partial sums of a reduction (independent FMA chains).
const LANES: usize = 16;

/// `f(x_i)` for every entry, in parallel for long slices.
#[inline]
pub(crate) fn map_mut<S: NdScalar>(x: &mut [S], f: impl Fn(&mut S) + Sync + Send) {
    if x.len() >= PAR_MIN {
        x.par_chunks_mut(CHUNK)
            .for_each(|c| c.iter_mut().for_each(&f));
    } else {
        x.iter_mut().for_each(f);
    }
}

/// `f(o_i, x_i)` for every pair, in parallel for long slices.
#[inline]
pub(crate) fn map2<S: NdScalar>(o: &mut [S], x: &[S], f: impl Fn(&mut S, S) + Sync + Send) {
    debug_assert_eq!(o.len(), x.len());
    if o.len() >= PAR_MIN {
        o.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(o, &v)| f(o, v)));
    } else {
        o.iter_mut().zip(x).for_each(|(o, &v)| f(o, v));
    }
}

/// `f(p_i, g_i, m_i, v_i)` for every entry (AdamW), in parallel for long
/// slices.
#[inline]
pub(crate) fn map4<S: NdScalar>(
    p: &mut [S],
    g: &[S],
    m: &mut [S],
    v: &mut [S],
    f: impl Fn(&mut S, S, &mut S, &mut S) + Sync + Send,
) {
    type Chunks<'a, S> = (((&'a mut [S], &'a [S]), &'a mut [S]), &'a mut [S]);
    let run = |(((p, g), m), v): Chunks<'_, S>| {
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            f(p, g, m, v);
        }
    };
    if p.len() >= PAR_MIN {
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(run);
    } else {
        run((((p, g), m), v));
    }
}

/// `max_i |x_i|`, NaN if any entry is NaN (so the result is finite exactly
/// when every entry is), 0 for an empty slice. Order-independent, hence
/// parallel for long slices.
pub(crate) fn max_abs<S: NdScalar>(x: &[S]) -> S {
    fn chunk<S: NdScalar>(c: &[S]) -> S {
        // `max` ignores NaN; `is_nan` (a comparison, no branch) flags it.
        let (mut m, mut nan) = (S::zero(), false);
        for &v in c {
            m = m.max(v.abs());
            nan |= v.is_nan();
        }
        if nan { S::nan() } else { m }
    }
    let join = |a: S, b: S| {
        if a.is_nan() || b.is_nan() {
            S::nan()
        } else {
            a.max(b)
        }
    };
    if x.len() >= PAR_MIN {
        x.par_chunks(CHUNK).map(chunk).reduce(S::zero, join)
    } else {
        x.chunks(CHUNK).map(chunk).fold(S::zero(), join)
    }
}

/// Whether every entry is finite (one order-independent pass, parallel for
/// long slices; each chunk is read whole, without a branch per entry).
pub(crate) fn all_finite<S: NdScalar>(x: &[S]) -> bool {
    let chunk = |c: &[S]| c.iter().fold(true, |ok, v| ok & v.is_finite());
    if x.len() >= PAR_MIN {
        x.par_chunks(CHUNK).all(chunk)
    } else {
        x.chunks(CHUNK).all(chunk)
    }
}

/// `Σ f(x_i, y_i)` in [`LANES`] interleaved partial sums, added in a fixed
/// order at the end (one thread: the same bits on any pool).
#[inline]
fn lane_sum<S: NdScalar>(x: &[S], y: &[S], f: impl Fn(S, S) -> S) -> S {
    debug_assert_eq!(x.len(), y.len());
    let mut acc = [S::zero(); LANES];
    let (xc, xr) = x.split_at(x.len() - x.len() % LANES);
    let (yc, yr) = y.split_at(xc.len());
    for (a, b) in xc.chunks_exact(LANES).zip(yc.chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += f(a[l], b[l]);
        }
    }
    for (l, (&a, &b)) in xr.iter().zip(yr).enumerate() {
        acc[l] += f(a, b);
    }
    // Pairwise over the lanes, in a fixed order.
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            acc[l] += acc[l + w];
        }
    }
    acc[0]
}

/// `Σ x_i·y_i`.
pub(crate) fn dot<S: NdScalar>(x: &[S], y: &[S]) -> S {
    lane_sum(x, y, |a, b| a * b)
}

/// `Σ |x_i|`.
pub(crate) fn sum_abs<S: NdScalar>(x: &[S]) -> S {
    lane_sum(x, x, |a, _| a.abs())
}

/// `√Σ x_i²` without overflow or underflow, BLAS `nrm2`'s way: the largest
/// magnitude first, then the sum of squares of the scaled entries.
/// Non-finite entries give a non-finite result (NaN for NaN, else ∞).
pub(crate) fn nrm2_scaled<S: NdScalar>(x: &[S]) -> S {
    let amax = max_abs(x);
    if amax == S::zero() || !amax.is_finite() {
        return amax;
    }
    let inv = S::one() / amax;
    let ss = if inv.is_finite() {
        lane_sum(x, x, |a, _| {
            let y = a * inv;
            y * y
        })
    } else {
        lane_sum(x, x, |a, _| {
            let y = a / amax;
            y * y
        })
    };
    amax * ss.sqrt()
}

/// `√Σ x_i²` of f32 entries in one pass, the squares summed in f64: every
/// f32 square (≤ 1.2e77, ≥ 2e-90 when non-zero) is a normal f64, so
/// neither overflow nor underflow can occur before the final rounding.
/// Non-finite entries give a non-finite result.
pub(crate) fn nrm2_f32(x: &[f32]) -> f32 {
    let mut acc = [0.0f64; LANES];
    let (c, r) = x.split_at(x.len() - x.len() % LANES);
    for a in c.chunks_exact(LANES) {
        for l in 0..LANES {
            let v = a[l] as f64;
            acc[l] += v * v;
        }
    }
    for (l, &a) in r.iter().enumerate() {
        acc[l] += (a as f64) * (a as f64);
    }
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            acc[l] += acc[l + w];
        }
    }
    // An infinite or NaN entry makes the sum Inf or NaN.
    acc[0].sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| ((i * 7919 % 1009) as f64 - 504.0) * 1e-3)
            .collect()
    }

    #[test]
    fn reductions_match_plain_loops_at_every_length() {
        for n in [0, 1, 15, 16, 17, 1000, PAR_MIN + 3] {
            let x = data(n);
            let y: Vec<f64> = x.iter().map(|v| v * 0.5 + 1.0).collect();
            let d: f64 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
            assert!((dot(&x, &y) - d).abs() <= 1e-12 * (1.0 + d.abs()), "n={n}");
            let s: f64 = x.iter().map(|v| v.abs()).sum();
            assert!((sum_abs(&x) - s).abs() <= 1e-12 * (1.0 + s), "n={n}");
            let m = x.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            assert_eq!(max_abs(&x), m, "n={n}");
            let q = x.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!((nrm2_scaled(&x) - q).abs() <= 1e-12 * (1.0 + q), "n={n}");
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let q32 = x32.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
            assert!(
                (nrm2_f32(&x32) as f64 - q32).abs() <= 1e-6 * (1.0 + q32),
                "n={n}"
            );
        }
    }

    #[test]
    fn non_finite_entries_are_seen_anywhere() {
        for n in [1, 17, PAR_MIN + 5] {
            for at in [0, n / 2, n - 1] {
                for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                    let mut x = data(n);
                    x[at] = bad;
                    assert!(!all_finite(&x), "n={n} at={at}");
                    let m = max_abs(&x);
                    assert!(!m.is_finite(), "n={n} at={at}");
                    assert_eq!(m.is_nan(), bad.is_nan());
                    assert!(!nrm2_scaled(&x).is_finite());
                    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                    assert!(!nrm2_f32(&x32).is_finite());
                }
                assert!(all_finite(&data(n)));
            }
        }
    }

    #[test]
    fn norms_neither_overflow_nor_underflow() {
        let big = vec![f32::MAX / 4.0; 4];
        assert_eq!(nrm2_f32(&big), f32::MAX / 2.0);
        let tiny = vec![f32::from_bits(1); 4]; // smallest subnormal
        assert_eq!(nrm2_f32(&tiny), f32::from_bits(2));
        let bigd = vec![f64::MAX / 4.0; 4];
        assert_eq!(nrm2_scaled(&bigd), f64::MAX / 2.0);
    }
}
