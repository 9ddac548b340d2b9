//! The exact trust-region subproblem (SPEC §4):
//! `min_s ½·sᵀA·s + gᵀs` subject to `‖s‖₂ ≤ t`, `A` symmetric (any
//! inertia), solved through the eigendecomposition `A = Q·Λ·Qᵀ`.

use faer::{Mat, Side};

use crate::BroxError;

/// A solution with its KKT certificate: `(A + λI)·s = −g`, `λ ≥ 0`,
/// `A + λI ⪰ 0`, `λ·(t − ‖s‖) = 0` — necessary and sufficient for global
/// optimality (Moré & Sorensen 1983; Conn, Gould & Toint 2000, Thm 7.2.1).
#[derive(Clone, Debug, PartialEq)]
pub struct TrsSolution {
    /// The step `s`.
    pub s: Vec<f64>,
    /// The multiplier λ ≥ 0.
    pub lambda: f64,
    /// `‖s‖₂`.
    pub norm: f64,
    /// The smallest eigenvalue of `A`.
    pub lambda_min: f64,
    /// `true` in the hard case (g ⟂ the bottom eigenspace, λ = −λ_min).
    pub hard_case: bool,
    /// `‖(A + λI)s + g‖ / (‖A‖·‖s‖ + ‖g‖ + λ‖s‖)`, computed from `A` itself.
    pub kkt_residual: f64,
    /// The model value `½·sᵀA·s + gᵀs`.
    pub value: f64,
}

/// Solves trust-region subproblems for one matrix `A` (decomposed once,
/// reused for any `g` and `t`).
pub struct Trs {
    n: usize,
    a: Mat<f64>,
    q: Mat<f64>,
    lam: Vec<f64>,
    anorm: f64,
}

impl Trs {
    /// Decomposes the symmetric `n × n` matrix `a` (row-major). Errors:
    /// wrong length, non-finite entries, asymmetry beyond `1e-12·max|a|`.
    pub fn new(a: &[f64], n: usize) -> Result<Self, BroxError> {
        if a.len() != n * n {
            return Err(BroxError::DimensionMismatch {
                expected: n * n,
                found: a.len(),
            });
        }
        if a.iter().any(|v| !v.is_finite()) {
            return Err(BroxError::NonFinite);
        }
        let amax = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for i in 0..n {
            for j in 0..i {
                if (a[i * n + j] - a[j * n + i]).abs() > 1e-12 * amax.max(1e-300) {
                    return Err(BroxError::InvalidInput("A must be symmetric"));
                }
            }
        }
        let am = Mat::from_fn(n, n, |i, j| a[i * n + j]);
        let evd = am
            .self_adjoint_eigen(Side::Lower)
            .map_err(|_| BroxError::InvalidInput("eigendecomposition failed"))?;
        let lam: Vec<f64> = (0..n).map(|i| evd.S().column_vector()[i]).collect();
        let anorm = lam.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        Ok(Trs {
            n,
            q: evd.U().to_owned(),
            a: am,
            lam,
            anorm,
        })
    }

    /// The dimension.
    pub fn dim(&self) -> usize {
        self.n
    }

    /// `min ½sᵀAs + gᵀs` over `‖s‖ ≤ t` (t > 0), exactly: the secular
    /// equation `‖s(λ)‖ = t`, `s(λ) = −Σ_i γ_i/(λ_i+λ)·q_i`, `γ = Qᵀg`, is
    /// solved by safeguarded Newton on `1/‖s(λ)‖ − 1/t` (Moré–Sorensen) in
    /// the eigenbasis, where each evaluation costs O(n); the hard case adds
    /// the bottom eigenvector to reach the boundary.
    pub fn solve(&self, g: &[f64], t: f64) -> Result<TrsSolution, BroxError> {
        let n = self.n;
        if g.len() != n {
            return Err(BroxError::DimensionMismatch {
                expected: n,
                found: g.len(),
            });
        }
        if !(t.is_finite() && t > 0.0) {
            return Err(BroxError::InvalidRadius(t));
        }
        if g.iter().any(|v| !v.is_finite()) {
            return Err(BroxError::NonFinite);
        }
        // γ = Qᵀ g
        let gamma: Vec<f64> = (0..n)
            .map(|j| (0..n).map(|i| self.q[(i, j)] * g[i]).sum())
            .collect();
        let lmin = self.lam.first().copied().unwrap_or(0.0);
        let gnorm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        let scale = self.anorm.max(gnorm / t).max(f64::MIN_POSITIVE);
        let tol_deg = 1e-12 * scale;
        // ‖s(λ)‖² in the eigenbasis, ignoring components with |λ_i+λ| ~ 0.
        let snorm = |l: f64| -> f64 {
            gamma
                .iter()
                .zip(&self.lam)
                .map(|(g, li)| {
                    let d = li + l;
                    if d.abs() <= tol_deg {
                        0.0
                    } else {
                        (g / d) * (g / d)
                    }
                })
                .sum::<f64>()
                .sqrt()
        };
        let lower = (-lmin).max(0.0);
        let mut hard = false;
        let lambda;
        // Interior solution: A ≻ 0 (or ⪰ 0 with g in the range) and ‖A⁻¹g‖ ≤ t.
        let bottom_gamma: f64 = gamma
            .iter()
            .zip(&self.lam)
            .filter(|(_, li)| (**li - lmin).abs() <= tol_deg)
            .map(|(g, _)| g * g)
            .sum::<f64>()
            .sqrt();
        if lmin > tol_deg && snorm(0.0) <= t {
            lambda = 0.0;
        } else if bottom_gamma <= 1e-12 * gnorm.max(f64::MIN_POSITIVE) && snorm(lower) <= t {
            // Hard case: ‖s(−λ_min)‖ ≤ t with g ⟂ bottom eigenspace.
            lambda = lower;
            hard = true;
        } else {
            // ‖s(λ)‖ decreases on (lower, ∞); find λ with ‖s(λ)‖ = t.
            let mut lo = lower;
            let mut hi = lower + gnorm / t + self.anorm + 1.0;
            while snorm(hi) > t {
                hi *= 2.0;
            }
            let mut l = hi;
            for _ in 0..200 {
                // Newton on φ(λ) = 1/‖s‖ − 1/t (convex, increasing).
                let s2: f64 = gamma
                    .iter()
                    .zip(&self.lam)
                    .map(|(g, li)| (g / (li + l)).powi(2))
                    .sum();
                let s3: f64 = gamma
                    .iter()
                    .zip(&self.lam)
                    .map(|(g, li)| g * g / (li + l).powi(3))
                    .sum();
                let sn = s2.sqrt();
                let phi = 1.0 / sn - 1.0 / t;
                if phi.abs() <= 1e-15 / t {
                    break;
                }
                if phi > 0.0 {
                    hi = l
                } else {
                    lo = l
                }
                let dphi = s3 / (sn * s2);
                let mut next = l - phi / dphi;
                if !(next > lo && next < hi) {
                    next = 0.5 * (lo + hi);
                }
                if (next - l).abs() <= 1e-16 * l.abs().max(1.0) {
                    l = next;
                    break;
                }
                l = next;
            }
            lambda = l;
        }
        // s in the eigenbasis, then back.
        let mut y: Vec<f64> = gamma
            .iter()
            .zip(&self.lam)
            .map(|(g, li)| {
                let d = li + lambda;
                if d.abs() <= tol_deg { 0.0 } else { -g / d }
            })
            .collect();
        if hard {
            let yn = y.iter().map(|v| v * v).sum::<f64>().sqrt();
            let tau = (t * t - yn * yn).max(0.0).sqrt();
            y[0] += tau; // q_1, the first bottom eigenvector
        }
        let s: Vec<f64> = (0..n)
            .map(|i| (0..n).map(|j| self.q[(i, j)] * y[j]).sum())
            .collect();
        Ok(self.certify(g, t, s, lambda, lmin, hard))
    }

    fn certify(
        &self,
        g: &[f64],
        _t: f64,
        s: Vec<f64>,
        lambda: f64,
        lmin: f64,
        hard: bool,
    ) -> TrsSolution {
        let n = self.n;
        let as_: Vec<f64> = (0..n)
            .map(|i| (0..n).map(|j| self.a[(i, j)] * s[j]).sum())
            .collect();
        let norm = s.iter().map(|v| v * v).sum::<f64>().sqrt();
        let gnorm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        let res = (0..n)
            .map(|i| (as_[i] + lambda * s[i] + g[i]).powi(2))
            .sum::<f64>()
            .sqrt();
        let denom = self.anorm * norm + gnorm + lambda * norm;
        let value = 0.5 * s.iter().zip(&as_).map(|(a, b)| a * b).sum::<f64>()
            + s.iter().zip(g).map(|(a, b)| a * b).sum::<f64>();
        TrsSolution {
            kkt_residual: if denom > 0.0 { res / denom } else { 0.0 },
            s,
            lambda,
            norm,
            lambda_min: lmin,
            hard_case: hard,
            value,
        }
    }
}
