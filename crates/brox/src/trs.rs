//! The exact trust-region subproblem (SPEC §4):
//! `min_s ½·sᵀA·s + gᵀs` subject to `‖s‖₂ ≤ t`, `A` symmetric (any
//! inertia).
//!
//! Scale invariance: for every `c > 0` the data `(c·A, c·g)` has the same
//! minimizers `s` and multiplier `c·λ`. Every tolerance of the solver is
//! therefore relative — to the natural multiplier scale `‖A‖ + ‖g‖/t`, to
//! `‖g‖`, to `t`, or to the current iterate — and none is an absolute
//! constant, so that the returned step is the same (to rounding) for any
//! `c` in the normal floating-point range.

use std::sync::OnceLock;

use faer::{Mat, Side};

use crate::BroxError;

/// A solution with its KKT certificate: `(A + λI)·s = −g`, `λ ≥ 0`,
/// `A + λI ⪰ 0`, `‖s‖ ≤ t`, `λ·(t − ‖s‖) = 0` — necessary and sufficient
/// for global optimality (Moré & Sorensen 1983; Conn, Gould & Toint 2000,
/// Thm 7.2.1). The stationarity and feasibility parts are measured, as
/// relative residuals, by [`TrsSolution::kkt_residual`] and
/// [`TrsSolution::constraint_residual`].
///
/// For `n = 0` the solution is the empty step with `λ = 0`, value 0 and
/// zero residuals.
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
    /// `A + λI` itself proves `A + λI ≻ 0`, and for `n = 0`.
    pub lambda_min: Option<f64>,
    /// `true` in the hard case (g ⟂ the bottom eigenspace, λ = −λ_min).
    pub hard_case: bool,
    /// `‖(A + λI)s + g‖ / (‖A‖·‖s‖ + ‖g‖ + λ‖s‖)`, computed from `A` itself
    /// (‖A‖ bounded by the max absolute row sum). Invariant under
    /// `(A, g) → (c·A, c·g)`.
    pub kkt_residual: f64,
    /// The relative violation of the ball constraint,
    /// `max(0, ‖s‖₂ − t) / t` (0 when `s` is feasible; dimensionless, so
    /// invariant under `(A, g) → (c·A, c·g)`). The solver guarantees
    /// `‖s‖ ≤ t·(1 + 1e-12)`: the root finders stop within `1e-14·t` of the
    /// sphere and a step that still overshoots it by rounding is scaled
    /// back onto it (which moves the KKT residual by at most the same
    /// relative amount), so this is at the level of `ε` in practice.
    pub constraint_residual: f64,
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

/// `‖v‖₂`, scaled by `max|v_i|` so that no square overflows or underflows
/// for data anywhere in the floating-point range.
fn norm(v: &[f64]) -> f64 {
    let m = v.iter().fold(0.0f64, |a, x| a.max(x.abs()));
    if m == 0.0 || !m.is_finite() {
        return m;
    }
    m * v.iter().map(|x| (x / m) * (x / m)).sum::<f64>().sqrt()
}

impl Trs {
    /// Takes the symmetric `n × n` matrix `a` (row-major); `n = 0` (with
    /// an empty `a`) is accepted. Errors: `n·n` overflowing `usize`
    /// ([`BroxError::InvalidInput`]), wrong length, non-finite entries,
    /// asymmetry beyond `1e-12·max|a|`.
    pub fn new(a: &[f64], n: usize) -> Result<Self, BroxError> {
        let nn = n
            .checked_mul(n)
            .ok_or(BroxError::InvalidInput("n·n overflows usize"))?;
        if a.len() != nn {
            return Err(BroxError::DimensionMismatch {
                expected: nn,
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
        self.eig.get_or_init(|| {
            if self.n == 0 {
                return (Mat::zeros(0, 0), vec![]);
            }
            match self.a.self_adjoint_eigen(Side::Lower) {
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
            }
        })
    }

    /// `min ½sᵀAs + gᵀs` over `‖s‖ ≤ t` (t > 0), exactly (Moré & Sorensen
    /// 1983; Conn, Gould & Toint 2000, Ch. 7). The result is
    /// scale-invariant: `(c·A, c·g)` for any `c > 0` gives the same step
    /// and the multiplier and value times `c` (to rounding), with
    /// `‖s‖ ≤ t·(1 + 1e-12)`. For `n = 0` it is the empty step, value 0.
    ///
    /// Errors (nothing is computed): `g.len() ≠ n`, `t` not finite and
    /// `> 0`, non-finite `g`.
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
        if n == 0 {
            return Ok(TrsSolution {
                s: vec![],
                lambda: 0.0,
                norm: 0.0,
                lambda_min: None,
                hard_case: false,
                kkt_residual: 0.0,
                constraint_residual: 0.0,
                value: 0.0,
            });
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
                if lo >= hi {
                    // Even the upper bound failed (g = 0, A = −‖A‖·I, or
                    // rounding): leave it to the eigendecomposition.
                    return None;
                }
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
                return Some(self.certify(g, sv, l, false, t));
            }
            if ns < t {
                hi = l;
            } else {
                lo = l;
            }
            // Relative to λ itself (hi ≥ λ* ≥ lo ≥ 0), not to an absolute
            // constant: (c·A, c·g) must take the same path for every c > 0.
            if hi - lo <= 1e-12 * hi {
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
        let d: Vec<f64> = mu.iter().map(|m| m + lower).collect();
        (theta, lower + secular_root(&gamma, &d, t))
    }

    /// The eigendecomposition path: the secular equation
    /// `‖s(λ)‖ = t`, `s(λ) = −Σ_i γ_i/(λ_i+λ)·q_i`, `γ = Qᵀg`, solved by
    /// safeguarded Newton with O(n) evaluations; the hard case adds the
    /// bottom eigenvector to reach the boundary.
    ///
    /// The multiplier is written `λ = λ_lo + ν`, `λ_lo = max(0, −λ_1)`,
    /// with the shifted eigenvalues `d_i = λ_i + λ_lo ≥ 0` (`d_1 = 0` when
    /// `λ_1 < 0`): `λ_i + λ = d_i + ν` then keeps full relative precision
    /// near the (near-)hard case, where `λ_i + λ` would otherwise cancel.
    /// Tolerances: eigenvalues with `d_i ≤ 1e-12·max(‖A‖₂, ‖g‖/t)` form the
    /// bottom eigenspace; the hard case is declared when `g`'s component
    /// there is `≤ 1e-12·‖g‖` and the rest of the step at `ν = 0` fits in
    /// the ball.
    fn solve_eigen(&self, g: &[f64], t: f64) -> TrsSolution {
        let n = self.n;
        let (q, lam) = self.eigen();
        let gamma: Vec<f64> = (0..n)
            .map(|j| (0..n).map(|i| q[(i, j)] * g[i]).sum())
            .collect();
        // faer returns the eigenvalues in ascending order.
        let lmin = lam.first().copied().unwrap_or(0.0);
        let lmax = lam.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let gnorm = norm(g);
        let tol_deg = 1e-12 * lmax.max(gnorm / t);
        let lower = (-lmin).max(0.0);
        let d: Vec<f64> = lam.iter().map(|li| li + lower).collect();
        let in_bottom = |di: f64| di <= tol_deg;
        let bottom = norm(
            &gamma
                .iter()
                .zip(&d)
                .filter(|(_, di)| in_bottom(**di))
                .map(|(g, _)| *g)
                .collect::<Vec<_>>(),
        );
        // ‖s(λ_lo)‖ without the bottom eigenspace, scaled by 1/t.
        let rest = norm(
            &gamma
                .iter()
                .zip(&d)
                .filter(|(_, di)| !in_bottom(**di))
                .map(|(g, di)| g / (di * t))
                .collect::<Vec<_>>(),
        );
        let (nu, hard) = if bottom <= 1e-12 * gnorm && rest <= 1.0 {
            // λ = λ_lo: interior (λ_lo = 0) or the hard case (λ_lo > 0,
            // the step is completed to the sphere along q_1 below).
            (0.0, lower > 0.0)
        } else {
            (secular_root(&gamma, &d, t), false)
        };
        let lambda = lower + nu;
        let mut y: Vec<f64> = gamma
            .iter()
            .zip(&d)
            .map(|(g, di)| {
                if *g == 0.0 || (nu == 0.0 && in_bottom(*di)) {
                    0.0
                } else {
                    -g / (di + nu)
                }
            })
            .collect();
        if hard {
            let yn = norm(&y);
            // Along q_1, against g's (negligible) component there.
            // τ = √(t² − ‖y‖²), as t·√((1 − r)(1 + r)), r = ‖y‖/t: t² may
            // overflow where t and τ do not.
            let r = (yn / t).min(1.0);
            let tau = t * ((1.0 - r) * (1.0 + r)).sqrt();
            y[0] = if gamma[0] > 0.0 { -tau } else { tau };
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
        let mut sol = self.certify(g, s, lambda, hard, t);
        sol.lambda_min = Some(lmin);
        sol
    }

    /// The certificate of `s` for multiplier `λ`; a step outside the ball
    /// by rounding (the root finders stop within `1e-14·t` of the sphere)
    /// is first scaled back onto it.
    fn certify(&self, g: &[f64], mut s: Vec<f64>, lambda: f64, hard: bool, t: f64) -> TrsSolution {
        let n = self.n;
        let mut ns = norm(&s);
        if ns > t {
            let f = t / ns;
            s.iter_mut().for_each(|v| *v *= f);
            ns = norm(&s);
        }
        let as_ = self.matvec(&s);
        let res = (0..n)
            .map(|i| (as_[i] + lambda * s[i] + g[i]).powi(2))
            .sum::<f64>()
            .sqrt();
        let denom = self.anorm * ns + norm(g) + lambda * ns;
        let value = 0.5 * s.iter().zip(&as_).map(|(a, b)| a * b).sum::<f64>()
            + s.iter().zip(g).map(|(a, b)| a * b).sum::<f64>();
        TrsSolution {
            kkt_residual: if denom > 0.0 { res / denom } else { 0.0 },
            constraint_residual: (ns - t).max(0.0) / t,
            s,
            lambda,
            norm: ns,
            lambda_min: None,
            hard_case: hard,
            value,
        }
    }
}

/// The root `ν ≥ 0` of the secular equation `‖y(ν)‖ = t`,
/// `‖y(ν)‖² = Σ_i γ_i²/(d_i + ν)²`, `d_i ≥ 0` (decreasing in ν); 0 when
/// `‖y(0)‖ ≤ t` already (interior solution, or the hard case).
///
/// Newton on `φ(ν) = 1/‖y(ν)‖ − 1/t`, which is concave and increasing
/// on `ν > 0` (Moré & Sorensen 1983, §3; Conn, Gould & Toint 2000, Ch. 7),
/// safeguarded by the bracket `[lo, hi]`, `hi = ‖γ‖/t` (then
/// `‖y(hi)‖ ≤ ‖γ‖/hi = t` since `d ≥ 0`), with geometric bisection when a
/// step leaves it. All quantities are evaluated through `r_i = γ_i/((d_i +
/// ν)·t)` (`‖r‖ = ‖y‖/t`), so that the iteration is invariant under
/// `(γ, d, ν) → (c·γ, c·d, c·ν)` and never squares `γ`. Stops when
/// `|‖y‖ − t| ≤ 1e-14·t`, or returns the feasible end `hi` of the bracket
/// when rounding stalls the iteration first: the returned ν has
/// `‖y(ν)‖ ≤ t·(1 + 1e-14)`.
fn secular_root(gamma: &[f64], d: &[f64], t: f64) -> f64 {
    let gnorm = norm(gamma);
    if gnorm == 0.0 {
        return 0.0;
    }
    // (‖r‖², Σ r_i²/(d_i + ν)) at ν; the derivative of ‖r‖² is −2× the
    // second sum.
    let eval = |nu: f64| -> (f64, f64) {
        let (mut r2, mut r3) = (0.0, 0.0);
        for (g, di) in gamma.iter().zip(d) {
            if *g == 0.0 {
                continue;
            }
            let den = di + nu;
            if den <= 0.0 {
                return (f64::INFINITY, f64::INFINITY);
            }
            let r = g / (den * t);
            r2 += r * r;
            r3 += r * r / den;
        }
        (r2, r3)
    };
    if eval(0.0).0 <= 1.0 {
        return 0.0;
    }
    let (mut lo, mut hi) = (0.0f64, gnorm / t);
    for _ in 0..64 {
        if eval(hi).0 <= 1.0 {
            break;
        }
        hi *= 2.0; // rounding only
    }
    let mut nu = hi;
    for _ in 0..200 {
        let (r2, r3) = eval(nu);
        let rho = r2.sqrt();
        if (rho - 1.0).abs() <= 1e-14 {
            return nu;
        }
        if rho < 1.0 {
            hi = nu;
        } else {
            lo = nu;
        }
        // ν⁺ = ν − φ/φ' = ν + (‖y‖ − t)/t · ‖y‖²/Σ γ_i²/(d_i+ν)³.
        let mut next = nu + (rho - 1.0) * r2 / r3;
        if !(next > lo && next < hi) {
            next = if lo > 0.0 {
                (lo * hi).sqrt()
            } else {
                1e-3 * hi
            };
        }
        if !(next > lo && next < hi) {
            break; // lo and hi are adjacent floating-point numbers
        }
        nu = next;
    }
    hi
}
