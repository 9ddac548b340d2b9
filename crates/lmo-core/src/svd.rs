//! Exact singular value decomposition by one-sided Jacobi rotations
//! (Hestenes 1958; Demmel & Veselić 1992), in f64, for reference use.
//!
//! This is the exact reference behind [`crate::ExactPolar`] and the spectral
//! and nuclear norms of the generic backends: accurate to a few ulps of f64
//! relative to σ_max, `O(sweeps · min(m,n)² · max(m,n))` work, meant for
//! small and medium matrices (up to a few hundred rows). The
//! `orthogonalize` crate provides the fast polar factors.

use alloc::vec::Vec;

use num_traits::Float;

use crate::{LmoError, Scalar};

const MAX_SWEEPS: usize = 80;

/// Reusable storage for [`JacobiSvd::compute`]; no allocation once the
/// buffers have reached the size of the largest matrix seen.
#[derive(Clone, Debug, Default)]
pub struct JacobiSvd {
    m: usize,
    n: usize,
    k: usize,
    transposed: bool,
    /// Columns w_1..w_k of length p = max(m,n) (column-major), U·Σ at the end.
    w: Vec<f64>,
    /// Columns v_1..v_k of length k (column-major).
    v: Vec<f64>,
    sigma: Vec<f64>,
    order: Vec<usize>,
    amax: f64,
}

impl JacobiSvd {
    /// An empty workspace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Computes the reduced SVD `A = U·diag(σ)·Vᵀ` of the row-major `m × n`
    /// matrix `a` (entries finite). Every entry is divided by `max|a_ij|`
    /// first (a division, not a multiplication by the reciprocal, which
    /// overflows for a subnormal maximum), so no entry size over- or
    /// underflows.
    ///
    /// Errors: [`LmoError::ShapeMismatch`] if `a.len() != m·n` (expected
    /// `(m, n)`, found `(1, a.len())`), [`LmoError::NonFinite`] if an entry
    /// is NaN or ±Inf; `self` is left as it was.
    pub fn compute<S: Scalar>(&mut self, a: &[S], m: usize, n: usize) -> Result<(), LmoError> {
        if m.checked_mul(n) != Some(a.len()) {
            return Err(LmoError::ShapeMismatch {
                expected: (m, n),
                found: (1, a.len()),
            });
        }
        if a.iter().any(|x| !x.is_finite()) {
            return Err(LmoError::NonFinite);
        }
        self.m = m;
        self.n = n;
        self.transposed = m < n;
        let (p, k) = if self.transposed { (n, m) } else { (m, n) };
        self.k = k;
        self.amax = a
            .iter()
            .fold(0.0f64, |acc, x| Float::max(acc, Float::abs(x.as_f64())));
        let amax = if self.amax > 0.0 { self.amax } else { 1.0 };
        self.w.clear();
        self.w.resize(p * k, 0.0);
        // w column c holds column c of B = A (m ≥ n) or of B = Aᵀ (m < n).
        for i in 0..m {
            for j in 0..n {
                let x = a[i * n + j].as_f64() / amax;
                if self.transposed {
                    self.w[i * p + j] = x; // B = Aᵀ (n × m): column i, row j
                } else {
                    self.w[j * p + i] = x; // B = A: column j, row i
                }
            }
        }
        self.v.clear();
        self.v.resize(k * k, 0.0);
        for c in 0..k {
            self.v[c * k + c] = 1.0;
        }
        if self.amax > 0.0 {
            self.sweep(p, k);
        }
        self.sigma.clear();
        for c in 0..k {
            let col = &mut self.w[c * p..(c + 1) * p];
            let s = Float::sqrt(col.iter().map(|x| x * x).sum::<f64>());
            if s > 0.0 {
                col.iter_mut().for_each(|x| *x /= s);
            }
            self.sigma.push(s);
        }
        self.order.clear();
        self.order.extend(0..k);
        let sig = &self.sigma;
        self.order.sort_by(|&x, &y| sig[y].total_cmp(&sig[x]));
        Ok(())
    }

    fn sweep(&mut self, p: usize, k: usize) {
        let eps = f64::EPSILON;
        for _ in 0..MAX_SWEEPS {
            let mut rotated = false;
            for i in 0..k {
                for j in (i + 1)..k {
                    let (wi, wj) = two_cols(&mut self.w, p, i, j);
                    let mut alpha = 0.0;
                    let mut beta = 0.0;
                    let mut gamma = 0.0;
                    for (x, y) in wi.iter().zip(wj.iter()) {
                        alpha += x * x;
                        beta += y * y;
                        gamma += x * y;
                    }
                    if gamma == 0.0 || Float::abs(gamma) <= eps * Float::sqrt(alpha * beta) {
                        continue;
                    }
                    rotated = true;
                    let zeta = (beta - alpha) / (2.0 * gamma);
                    let t =
                        Float::signum(zeta) / (Float::abs(zeta) + Float::sqrt(1.0 + zeta * zeta));
                    let c = 1.0 / Float::sqrt(1.0 + t * t);
                    let s = c * t;
                    rotate(wi, wj, c, s);
                    let (vi, vj) = two_cols(&mut self.v, k, i, j);
                    rotate(vi, vj, c, s);
                }
            }
            if !rotated {
                break;
            }
        }
    }

    /// Singular values in descending order (length `min(m, n)`), in units
    /// of the input.
    pub fn singular_values(&self) -> impl Iterator<Item = f64> + '_ {
        self.order.iter().map(move |&c| self.sigma[c] * self.amax)
    }

    /// Largest singular value `σ_max` (spectral norm); 0 for an empty or
    /// zero matrix.
    pub fn sigma_max(&self) -> f64 {
        self.singular_values().next().unwrap_or(0.0)
    }

    /// Sum of singular values (nuclear norm).
    pub fn nuclear(&self) -> f64 {
        self.sigma.iter().sum::<f64>() * self.amax
    }

    /// Writes the polar factor `U·Vᵀ` (row-major `m × n`) into `out`, where
    /// the sum runs over the singular pairs with `σ_j > rtol·σ_max` (the
    /// partial isometry of the numerical range; `rtol` = `max(m,n)·ε_f64` is
    /// the usual choice). A zero matrix gives zero.
    ///
    /// Errors: [`LmoError::ShapeMismatch`] if `out.len()` is not `m·n` of
    /// the last [`JacobiSvd::compute`] (expected `(m, n)`, found
    /// `(1, out.len())`); `out` is left untouched.
    pub fn polar_into<S: Scalar>(&self, rtol: f64, out: &mut [S]) -> Result<(), LmoError> {
        let (m, n, k) = (self.m, self.n, self.k);
        if out.len() != m * n {
            return Err(LmoError::ShapeMismatch {
                expected: (m, n),
                found: (1, out.len()),
            });
        }
        out.iter_mut().for_each(|x| *x = S::zero());
        let smax = self.sigma.iter().fold(0.0f64, |a, &b| Float::max(a, b));
        if smax == 0.0 {
            return Ok(());
        }
        let p = m.max(n);
        for c in 0..k {
            if self.sigma[c] <= rtol * smax {
                continue;
            }
            let wc = &self.w[c * p..(c + 1) * p];
            let vc = &self.v[c * k..(c + 1) * k];
            // B = W Vᵀ-factorization: B = Σ_c w_c σ_c v_cᵀ, polar(B) = Σ_c w_c v_cᵀ.
            // A = B (not transposed): polar(A)[i][j] = Σ_c w_c[i] v_c[j].
            // A = Bᵀ: polar(A)[i][j] = Σ_c v_c[i] w_c[j].
            for i in 0..m {
                for j in 0..n {
                    let add = if self.transposed {
                        vc[i] * wc[j]
                    } else {
                        wc[i] * vc[j]
                    };
                    out[i * n + j] = out[i * n + j] + S::of(add);
                }
            }
        }
        Ok(())
    }
}

fn two_cols(buf: &mut [f64], len: usize, i: usize, j: usize) -> (&mut [f64], &mut [f64]) {
    debug_assert!(i < j);
    let (lo, hi) = buf.split_at_mut(j * len);
    (&mut lo[i * len..(i + 1) * len], &mut hi[..len])
}

#[inline]
fn rotate(x: &mut [f64], y: &mut [f64], c: f64, s: f64) {
    for (a, b) in x.iter_mut().zip(y.iter_mut()) {
        let (xa, yb) = (*a, *b);
        *a = c * xa - s * yb;
        *b = s * xa + c * yb;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagonal_and_rank_one() {
        // diag(3, -2) has σ = (3, 2) and polar factor diag(1, -1).
        let a = [3.0f64, 0.0, 0.0, -2.0];
        let mut s = JacobiSvd::new();
        s.compute(&a, 2, 2).unwrap();
        let sv: Vec<f64> = s.singular_values().collect();
        assert!((sv[0] - 3.0).abs() < 1e-14 && (sv[1] - 2.0).abs() < 1e-14);
        let mut p = [0.0f64; 4];
        s.polar_into(1e-12, &mut p).unwrap();
        let want = [1.0, 0.0, 0.0, -1.0];
        for (x, y) in p.iter().zip(want) {
            assert!((x - y).abs() < 1e-14);
        }
        // u vᵀ with u = (1,2)/√5, v = (2,-1,2)/3, σ = 7: polar = u vᵀ.
        let u = [1.0 / 5f64.sqrt(), 2.0 / 5f64.sqrt()];
        let v = [2.0 / 3.0, -1.0 / 3.0, 2.0 / 3.0];
        let a: Vec<f64> = (0..6).map(|k| 7.0 * u[k / 3] * v[k % 3]).collect();
        s.compute(&a, 2, 3).unwrap();
        assert!((s.sigma_max() - 7.0).abs() < 1e-13);
        assert!((s.nuclear() - 7.0).abs() < 1e-13);
        let mut p = [0.0f64; 6];
        s.polar_into(1e-12, &mut p).unwrap();
        for k in 0..6 {
            assert!((p[k] - u[k / 3] * v[k % 3]).abs() < 1e-14);
        }
    }
}
