//! The exact trust-region subproblem (SPEC §4):
//! `min_s ½·sᵀA·s + gᵀs` subject to `‖s‖₂ ≤ t`, `A` symmetric (any
//! inertia).

use std::sync::OnceLock;

use faer::linalg::solvers::Solve;
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
    /// The smallest eigenvalue of `A` when the eigendecomposition path ran;
    /// `None` on the Cholesky path, where the successful factorization of
    /// `A + λI` itself proves `A + λI ≻ 0`.
    pub lambda_min: Option<f64>,
    /// `true` in the hard case (g ⟂ the bottom eigenspace, λ = −λ_min).
    pub hard_case: bool,
    /// `‖(A + λI)s + g‖ / (‖A‖·‖s‖ + ‖g‖ + λ‖s‖)`, computed from `A` itself
    /// (‖A‖ bounded by the max absolute row sum).
    pub kkt_residual: f64,
    /// The model value `½·sᵀA·s + gᵀs`.
    pub value: f64,
}

/// Solves trust-region subproblems for one matrix `A`.
///
/// Two exact paths: Moré–Sorensen Newton iterations on the secular
/// equation `1/‖s(λ)‖ = 1/t` with a Cholesky factorization of `A + λI` per
/// iteration (`n³/3` flops each, a handful of them; a successful
/// factorization proves `A + λI ≻ 0`), and the eigendecomposition
/// `A = QΛQᵀ` (about `9n³` once, then `O(n²)` per solve), which settles the
/// hard case exactly. A solve takes the Cholesky path unless the
/// eigendecomposition is already there, and falls back to it when the
/// Cholesky iteration detects the (near-)hard case; [`Trs::with_eigen`]
/// decomposes up front for many solves with one `A` (BPM on a quadratic).
pub struct Trs {
    n: usize,
    a: Mat<f64>,
    eig: OnceLock<(Mat<f64>, Vec<f64>)>,
    anorm: f64,
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

impl Trs {
    /// Takes the symmetric `n × n` matrix `a` (row-major). Errors: wrong
    /// length, non-finite entries, asymmetry beyond `1e-12·max|a|`.
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
        // ‖A‖₂ ≤ ‖A‖_∞ (max absolute row sum) for symmetric A.
        let anorm = (0..n)
            .map(|i| a[i * n..(i + 1) * n].iter().map(|v| v.abs()).sum::<f64>())
            .fold(0.0, f64::max);
        Ok(Trs {
            n,
            a: Mat::from_fn(n, n, |i, j| a[i * n + j]),
            eig: OnceLock::new(),
            anorm,
        })
    }

    /// As [`Trs::new`], with the eigendecomposition computed now.
    pub fn with_eigen(a: &[f64], n: usize) -> Result<Self, BroxError> {
        let t = Self::new(a, n)?;
        t.eigen();
        Ok(t)
    }

    /// The dimension.
    pub fn dim(&self) -> usize {
        self.n
    }

    fn eigen(&self) -> &(Mat<f64>, Vec<f64>) {
        self.eig
            .get_or_init(|| match self.a.self_adjoint_eigen(Side::Lower) {
                Ok(evd) => {
                    let lam: Vec<f64> = (0..self.n).map(|i| evd.S().column_vector()[i]).collect();
                    (evd.U().to_owned(), lam)
                }
                // faer's symmetric EVD does not fail on finite input; keep a
                // defined value anyway.
                Err(_) => (
                    Mat::identity(self.n, self.n),
                    (0..self.n).map(|i| self.a[(i, i)]).collect(),
                ),
            })
    }

    /// `min ½sᵀAs + gᵀs` over `‖s‖ ≤ t` (t > 0), exactly.
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
        if self.eig.get().is_none()
            && let Some(sol) = self.solve_cholesky(g, t)
            && sol.kkt_residual <= 1e-12
        {
            return Ok(sol);
        }
        Ok(self.solve_eigen(g, t))
    }

    /// Moré–Sorensen on Cholesky factorizations; `None` when the
    /// (near-)hard case or slow progress calls for the eigendecomposition.
    fn solve_cholesky(&self, g: &[f64], t: f64) -> Option<TrsSolution> {
        let n = self.n;
        let gnorm = norm(g);
        let rhs = Mat::from_fn(n, 1, |i, _| -g[i]);
        let factor = |l: f64| {
            Mat::from_fn(n, n, |i, j| self.a[(i, j)] + if i == j { l } else { 0.0 })
                .llt(Side::Lower)
                .ok()
        };
        let mindiag = (0..n).map(|i| self.a[(i, i)]).fold(f64::INFINITY, f64::min);
        // A Ritz value θ ≥ λ_min from a short Lanczos run gives the valid
        // lower bound λ* ≥ −λ_min ≥ −θ, close to the answer.
        let theta = self.lanczos_min(g);
        let mut lo = 0.0f64.max(-mindiag).max(gnorm / t - self.anorm).max(-theta);
        let mut hi = (gnorm / t + self.anorm).max(lo);
        let mut l = lo;
        for _ in 0..60 {
            let Some(llt) = factor(l) else {
                // A + λI is not positive definite: λ ≤ −λ_min.
                lo = l;
                l = if hi > lo {
                    (lo * hi).sqrt().max(lo + 0.01 * (hi - lo))
                } else {
                    hi
                };
                continue;
            };
            let s = llt.solve(rhs.as_ref());
            let sv: Vec<f64> = (0..n).map(|i| s[(i, 0)]).collect();
            let ns = norm(&sv);
            if (l == 0.0 && ns <= t) || (ns - t).abs() <= 1e-14 * t {
                return Some(self.certify(g, sv, l, false));
            }
            if ns < t {
                hi = l;
            } else {
                lo = l;
            }
            if hi - lo <= 1e-12 * hi.max(1.0) {
                return None; // λ pinned near −λ_min with ‖s‖ < t: hard case
            }
            // Newton on φ(λ) = 1/‖s‖ − 1/t: λ⁺ = λ + (‖s‖/‖w‖)²·(‖s‖ − t)/t, w = L⁻¹s.
            let mut w = s;
            faer::linalg::triangular_solve::solve_lower_triangular_in_place(
                llt.L(),
                w.as_mut(),
                faer::Par::Seq,
            );
            let nw2 = (0..n).map(|i| w[(i, 0)] * w[(i, 0)]).sum::<f64>();
            let next = l + (ns * ns / nw2) * (ns - t) / t;
            l = if next > lo && next < hi {
                next
            } else {
                0.5 * (lo + hi)
            };
        }
        None
    }

    /// `A·v` through faer's GEMM (column-major friendly).
    fn matvec(&self, v: &[f64]) -> Vec<f64> {
        let n = self.n;
        let x = Mat::from_fn(n, 1, |i, _| v[i]);
        let mut y = Mat::<f64>::zeros(n, 1);
        faer::linalg::matmul::matmul(
            y.as_mut(),
            faer::Accum::Replace,
            self.a.as_ref(),
            x.as_ref(),
            1.0,
            faer::Par::Seq,
        );
        (0..n).map(|i| y[(i, 0)]).collect()
    }

    /// The smallest Ritz value of `A` after `min(n, 40)` Lanczos steps from
    /// `g` (or `e_1` when `g = 0`): an upper bound on `λ_min(A)` that is
    /// usually close to it. `O(40·n²)`, memory-bound.
    fn lanczos_min(&self, g: &[f64]) -> f64 {
        let n = self.n;
        let k = n.min(40);
        let mut v: Vec<f64> = if norm(g) > 0.0 {
            g.to_vec()
        } else {
            (0..n).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect()
        };
        let nv = norm(&v);
        v.iter_mut().for_each(|x| *x /= nv);
        let mut prev = vec![0.0; n];
        let (mut alpha, mut beta) = (Vec::with_capacity(k), Vec::with_capacity(k));
        let mut b = 0.0;
        for _ in 0..k {
            let mut w = self.matvec(&v);
            let a = w.iter().zip(&v).map(|(x, y)| x * y).sum::<f64>();
            for i in 0..n {
                w[i] -= a * v[i] + b * prev[i];
            }
            alpha.push(a);
            b = norm(&w);
            if b <= 1e-12 * self.anorm.max(f64::MIN_POSITIVE) {
                break;
            }
            beta.push(b);
            prev = std::mem::replace(&mut v, w.iter().map(|x| x / b).collect());
        }
        let m = alpha.len();
        let tri = Mat::from_fn(m, m, |i, j| {
            if i == j {
                alpha[i]
            } else if i + 1 == j || j + 1 == i {
                beta[i.min(j)]
            } else {
                0.0
            }
        });
        tri.self_adjoint_eigenvalues(Side::Lower)
            .ok()
            .and_then(|e| e.first().copied())
            .unwrap_or(f64::INFINITY)
    }

    /// The eigendecomposition path: the secular equation
    /// `‖s(λ)‖ = t`, `s(λ) = −Σ_i γ_i/(λ_i+λ)·q_i`, `γ = Qᵀg`, solved by
    /// safeguarded Newton with O(n) evaluations; the hard case adds the
    /// bottom eigenvector to reach the boundary.
    fn solve_eigen(&self, g: &[f64], t: f64) -> TrsSolution {
        let n = self.n;
        let (q, lam) = self.eigen();
        let gamma: Vec<f64> = (0..n)
            .map(|j| (0..n).map(|i| q[(i, j)] * g[i]).sum())
            .collect();
        let lmin = lam.first().copied().unwrap_or(0.0);
        let lmax = lam.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let gnorm = norm(g);
        let scale = lmax.max(gnorm / t).max(f64::MIN_POSITIVE);
        let tol_deg = 1e-12 * scale;
        let snorm = |l: f64| -> f64 {
            gamma
                .iter()
                .zip(lam)
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
        let bottom: f64 = gamma
            .iter()
            .zip(lam)
            .filter(|(_, li)| (**li - lmin).abs() <= tol_deg)
            .map(|(g, _)| g * g)
            .sum::<f64>()
            .sqrt();
        let mut hard = false;
        let lambda = if lmin > tol_deg && snorm(0.0) <= t {
            0.0
        } else if bottom <= 1e-12 * gnorm.max(f64::MIN_POSITIVE) && snorm(lower) <= t {
            hard = true;
            lower
        } else {
            // ‖s(λ)‖ decreases on (lower, ∞): bracket, then Newton on
            // φ(λ) = 1/‖s‖ − 1/t with bisection safeguards.
            let mut lo = lower;
            let mut hi = lower + gnorm / t + lmax + 1.0;
            while snorm(hi) > t {
                hi *= 2.0;
            }
            let mut l = hi;
            for _ in 0..200 {
                let s2: f64 = gamma
                    .iter()
                    .zip(lam)
                    .map(|(g, li)| (g / (li + l)).powi(2))
                    .sum();
                let s3: f64 = gamma
                    .iter()
                    .zip(lam)
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
                let mut next = l - phi / (s3 / (sn * s2));
                if !(next > lo && next < hi) {
                    next = 0.5 * (lo + hi);
                }
                let done = (next - l).abs() <= 1e-16 * l.abs().max(1.0);
                l = next;
                if done {
                    break;
                }
            }
            l
        };
        let mut y: Vec<f64> = gamma
            .iter()
            .zip(lam)
            .map(|(g, li)| {
                let d = li + lambda;
                if d.abs() <= tol_deg { 0.0 } else { -g / d }
            })
            .collect();
        if hard {
            let yn = norm(&y);
            y[0] += (t * t - yn * yn).max(0.0).sqrt(); // along q_1
        }
        let ym = Mat::from_fn(n, 1, |i, _| y[i]);
        let mut sm = Mat::<f64>::zeros(n, 1);
        faer::linalg::matmul::matmul(
            sm.as_mut(),
            faer::Accum::Replace,
            q.as_ref(),
            ym.as_ref(),
            1.0,
            faer::Par::Seq,
        );
        let s: Vec<f64> = (0..n).map(|i| sm[(i, 0)]).collect();
        let mut sol = self.certify(g, s, lambda, hard);
        sol.lambda_min = Some(lmin);
        sol
    }

    fn certify(&self, g: &[f64], s: Vec<f64>, lambda: f64, hard: bool) -> TrsSolution {
        let n = self.n;
        let as_ = self.matvec(&s);
        let ns = norm(&s);
        let res = (0..n)
            .map(|i| (as_[i] + lambda * s[i] + g[i]).powi(2))
            .sum::<f64>()
            .sqrt();
        let denom = self.anorm * ns + norm(g) + lambda * ns;
        let value = 0.5 * s.iter().zip(&as_).map(|(a, b)| a * b).sum::<f64>()
            + s.iter().zip(g).map(|(a, b)| a * b).sum::<f64>();
        TrsSolution {
            kkt_residual: if denom > 0.0 { res / denom } else { 0.0 },
            s,
            lambda,
            norm: ns,
            lambda_min: None,
            hard_case: hard,
            value,
        }
    }
}
