//! The exact trust-region subproblem (SPEC §4):
//! `min_s ½·sᵀA·s + gᵀs` subject to `‖s‖₂ ≤ t`, `A` symmetric (any
//! inertia).

use std::sync::OnceLock;

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
        // Blocked, so that the transposed reads stay in cache.
        const BS: usize = 64;
        let tol = 1e-12 * amax.max(1e-300);
        for bi in (0..n).step_by(BS) {
            for bj in (0..=bi).step_by(BS) {
                for i in bi..(bi + BS).min(n) {
                    for j in bj..(bj + BS).min(i) {
                        if (a[i * n + j] - a[j * n + i]).abs() > tol {
                            return Err(BroxError::InvalidInput("A must be symmetric"));
                        }
                    }
                }
            }
        }
        // ‖A‖₂ ≤ ‖A‖_∞ (max absolute row sum) for symmetric A.
        let anorm = (0..n)
            .map(|i| a[i * n..(i + 1) * n].iter().map(|v| v.abs()).sum::<f64>())
            .fold(0.0, f64::max);
        Ok(Trs {
            n,
            // Column-major from row-major: column j of A is row j of a
            // (A is symmetric), read contiguously.
            a: Mat::from_fn(n, n, |i, j| a[j * n + i]),
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
    ///
    /// The first λ is the multiplier of the same problem restricted to the
    /// Krylov space of 40 Lanczos steps from `g` (GLTR's estimate, Gould et
    /// al. 1999), usually within 1e-6 of λ*, so that two or three
    /// factorizations finish the Newton iteration; the Ritz value also
    /// gives the lower bound λ* ≥ −λ_min ≥ −θ.
    fn solve_cholesky(&self, g: &[f64], t: f64) -> Option<TrsSolution> {
        use faer::dyn_stack::{MemBuffer, MemStack};
        use faer::linalg::cholesky::llt;
        let n = self.n;
        let gnorm = norm(g);
        let par = faer::get_global_parallelism();
        let mut buf = Mat::<f64>::zeros(n, n);
        let mut mem = MemBuffer::new(
            llt::factor::cholesky_in_place_scratch::<f64>(n, par, Default::default())
                .or(llt::solve::solve_in_place_scratch::<f64>(n, 1, par)),
        );
        // Factors A + λI into the lower triangle of `buf`; false if it is
        // not positive definite.
        let factor = |l: f64, buf: &mut Mat<f64>, mem: &mut MemBuffer| {
            for j in 0..n {
                let (src, dst) = (self.a.col(j), buf.col_mut(j));
                for (i, (d, s)) in dst.iter_mut().zip(src.iter()).enumerate().skip(j) {
                    *d = if i == j { s + l } else { *s };
                }
            }
            llt::factor::cholesky_in_place(
                buf.as_mut(),
                Default::default(),
                par,
                MemStack::new(mem),
                Default::default(),
            )
            .is_ok()
        };
        let mindiag = (0..n).map(|i| self.a[(i, i)]).fold(f64::INFINITY, f64::min);
        let (theta, krylov) = self.lanczos(g, t);
        let mut lo = 0.0f64.max(-mindiag).max(gnorm / t - self.anorm).max(-theta);
        let mut hi = (gnorm / t + self.anorm).max(lo);
        let mut l = krylov.clamp(lo, hi);
        let mut s = Mat::<f64>::zeros(n, 1);
        for _ in 0..60 {
            if !factor(l, &mut buf, &mut mem) {
                // A + λI is not positive definite: λ ≤ −λ_min.
                lo = l;
                l = if hi > lo {
                    (lo * hi).sqrt().max(lo + 0.01 * (hi - lo))
                } else {
                    hi
                };
                continue;
            }
            let lower = buf.as_ref();
            for i in 0..n {
                s[(i, 0)] = -g[i];
            }
            llt::solve::solve_in_place_with_conj(
                lower,
                faer::Conj::No,
                s.as_mut(),
                par,
                MemStack::new(&mut mem),
            );
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
            let mut w = s.clone();
            faer::linalg::triangular_solve::solve_lower_triangular_in_place(
                lower,
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

    /// `min(n, 40)` Lanczos steps from `g` (or `e_1` when `g = 0`):
    /// returns the smallest Ritz value θ (an upper bound on `λ_min(A)`,
    /// usually close to it) and the multiplier of the trust-region problem
    /// restricted to the Krylov space (`min ½yᵀTy + ‖g‖y₁`, `‖y‖ ≤ t`, T
    /// the Lanczos tridiagonal). `O(40·n²)`, memory-bound.
    fn lanczos(&self, g: &[f64], t: f64) -> (f64, f64) {
        let n = self.n;
        let k = n.min(40);
        let gnorm = norm(g);
        let mut v: Vec<f64> = if gnorm > 0.0 {
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
        let Ok(evd) = tri.self_adjoint_eigen(Side::Lower) else {
            return (f64::INFINITY, 0.0);
        };
        let mu: Vec<f64> = (0..m).map(|i| evd.S().column_vector()[i]).collect();
        let gamma: Vec<f64> = (0..m).map(|i| gnorm * evd.U()[(0, i)]).collect();
        let theta = mu.first().copied().unwrap_or(f64::INFINITY);
        let lower = (-theta).max(0.0);
        (theta, secular_root(&gamma, &mu, t, lower))
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
            secular_root(gamma.as_slice(), lam, t, lower)
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

/// The root λ > `lower` of the secular equation `‖s(λ)‖ = t`,
/// `‖s(λ)‖² = Σ_i γ_i²/(μ_i + λ)²` (decreasing on `(−μ_min, ∞)`), by Newton
/// on `φ(λ) = 1/‖s(λ)‖ − 1/t` with bisection safeguards; `lower` when
/// `‖s(lower)‖ ≤ t` already (λ = 0, or the hard case).
fn secular_root(gamma: &[f64], mu: &[f64], t: f64, lower: f64) -> f64 {
    let gnorm = norm(gamma);
    let mmax = mu.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let s2 = |l: f64| -> f64 {
        gamma
            .iter()
            .zip(mu)
            .map(|(g, m)| {
                if *g == 0.0 {
                    0.0
                } else {
                    (g / (m + l)).powi(2)
                }
            })
            .sum()
    };
    let mut lo = lower;
    let mut hi = lower + gnorm / t + mmax + 1.0;
    while s2(hi).sqrt() > t {
        hi *= 2.0;
    }
    let mut l = hi;
    for _ in 0..200 {
        let sq = s2(l);
        let s3: f64 = gamma
            .iter()
            .zip(mu)
            .map(|(g, m)| {
                if *g == 0.0 {
                    0.0
                } else {
                    g * g / (m + l).powi(3)
                }
            })
            .sum();
        let sn = sq.sqrt();
        let phi = 1.0 / sn - 1.0 / t;
        if phi.abs() <= 1e-15 / t {
            break;
        }
        if phi > 0.0 {
            hi = l
        } else {
            lo = l
        }
        let mut next = l - phi / (s3 / (sn * sq));
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
}
