//! The exact trust-region subproblem (SPEC §4):
//! `min_s ½·sᵀA·s + gᵀs` subject to `‖s‖₂ ≤ t`, `A` symmetric (any
//! inertia).
//!
//! Scale invariance: for every `c > 0` the data `(c·A, c·g, t)` has the
//! same minimizers `s` and multiplier `c·λ`; for every `d > 0` the data
//! `(A, g, t)` has the minimizers `s = d·u`, `u` those of
//! `(d²·A, d·g, t/d)`. The solver uses both, with exact powers of two
//! (see [`Trs`]), to solve a problem with `‖A‖`, `‖g‖/t` and `t` of order
//! one, whatever the magnitudes in the finite range of the data. Every
//! tolerance of the solver is relative — to the natural multiplier scale
//! `‖A‖ + ‖g‖/t`, to `‖g‖`, to `t`, or to the current iterate — and none
//! is an absolute constant, so that the returned step is the same (to
//! rounding) for any such `c` and `d`.

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
///
/// Extreme data (see [`Trs`] for the normalization): `s` and `norm` are
/// always finite, with `‖s‖ ≤ t·(1 + 1e-12)` even for `t` near
/// `f64::MAX` or subnormal. The scalar fields are the exact quantities
/// rounded to `f64`, and where one lies beyond the range it saturates:
/// `lambda` can be `+∞` (e.g. `‖g‖/t > f64::MAX`, or `A` with entries near
/// `−f64::MAX`) or underflow to 0, `lambda_min` can be `±∞`
/// (`|λ_min(A)| ≤ n·max|A_ij|` may exceed `f64::MAX`), and `value` can be
/// `−∞` (e.g. `A` near `−f64::MAX·I` and `t = 1e300`: `−½·1e600·f64::MAX`)
/// or underflow to `±0`. The residuals are dimensionless and always finite.
#[derive(Clone, Debug, PartialEq)]
pub struct TrsSolution {
    /// The step `s` (finite; components below the subnormal range round
    /// towards zero, so that rounding never leaves the ball).
    pub s: Vec<f64>,
    /// The multiplier λ ≥ 0 (`+∞` where it exceeds `f64::MAX`).
    pub lambda: f64,
    /// `‖s‖₂`, computed without overflow (finite, `≤ t·(1 + 1e-12)`).
    pub norm: f64,
    /// The smallest eigenvalue of `A` when the eigendecomposition path ran;
    /// `None` on the Cholesky path, where the successful factorization of
    /// `A + λI` itself proves `A + λI ≻ 0`, and for `n = 0`. `±∞` where
    /// beyond the range.
    pub lambda_min: Option<f64>,
    /// `true` in the hard case (g ⟂ the bottom eigenspace, λ = −λ_min).
    pub hard_case: bool,
    /// `‖(A + λI)s + g‖ / (‖A‖·‖s‖ + ‖g‖ + λ‖s‖)` (‖A‖ bounded by the max
    /// absolute row sum). Invariant under `(A, g) → (c·A, c·g)`. Computed
    /// with each of `A`, `g`, `λ` and `s` on its own power-of-two scale
    /// (see [`Trs`]), so that it is finite for any data; `s` is taken
    /// before its final rounding into the caller's units, which differs
    /// from the returned `s` only in components in the subnormal range
    /// (or flushed to 0 there).
    pub kkt_residual: f64,
    /// The relative violation of the ball constraint,
    /// `max(0, ‖s‖₂ − t) / t` (0 when `s` is feasible; dimensionless, so
    /// invariant under `(A, g) → (c·A, c·g)`). The solver guarantees
    /// `‖s‖ ≤ t·(1 + 1e-12)`: the root finders stop within `1e-14·t` of the
    /// sphere and a step that still overshoots it by rounding is scaled
    /// back onto it (which moves the KKT residual by at most the same
    /// relative amount), so this is at the level of `ε` in practice.
    pub constraint_residual: f64,
    /// The model value `½·sᵀA·s + gᵀs`, its two terms computed on their
    /// own scales (`−∞` where below `−f64::MAX`).
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
///
/// # Data anywhere in the finite range
///
/// Both paths work with exact powers of two, so that no intermediate
/// overflows or underflows needlessly for finite data of any magnitude.
/// The constructor stores `Â = A·2^−e_A` with `max|Â_ij| ∈ [1, 2)` (exact,
/// but for entries below `2^−1074·2^e_A`, under `2^−1074·max|A_ij|` and so
/// far below the `ε·‖A‖` accuracy of any eigendecomposition, which flush to
/// 0), and decomposes `Â`: `A`'s eigenvalues are `Â`'s times `2^e_A`. A
/// solve with `(g, t)` writes `t = τ·2^e_t`, `τ ∈ [1, 2)`, and seeks
/// `s = u·2^e_t`, `‖u‖ ≤ τ`.
///
/// - The Cholesky path minimizes `½uᵀ(α·Â)u + ĝᵀu`, the objective divided
///   by `2^k`: `α = 2^(2e_t + e_A − k)`, `ĝ = g·2^(e_t − k)`, with `k` such
///   that the larger of `α` and `max|ĝ_i|` lies in `[1, 2)` (their ratio,
///   about `‖A‖·t/‖g‖`, is intrinsic), and `λ = λ̂·2^(k − 2e_t)`. It is
///   used where `ĝ`'s largest component stays normal; where `g` is below
///   about `2^−969·‖A‖·t` the eigen path solves instead.
/// - The eigen path takes `A`'s eigenvalues on `Â`'s scale and `g` on its
///   own, `g0 = g·2^−e_g`, `max|g0_i| ∈ [1, 2)`; its secular equation is
///   solved for `u` with the shifted eigenvalues `d_i` scaled by
///   `2^(e_t − e_g)` (exact, or saturating to `+∞` — a term far below
///   rounding — or to 0 — an eigenvalue deep in the bottom tolerance), so
///   that `g`'s direction in the (near-)bottom eigenspace counts however
///   small `‖g‖` is against `‖A‖·t`; the hard case completes on the side
///   given by the sign of `g0`'s bottom component.
/// - An interior step (`λ = 0`) is computed on its own scale, as
///   `−(Â)⁻¹g0·2^(e_g − e_A)`, not only to the precision of the ball's.
/// - The certificate and the value are computed with `A`, `g`, `λ` and
///   the step each on its own scale (see [`TrsSolution`]).
///
/// Quantities beyond the range saturate as [`TrsSolution`] describes; the
/// step itself is always finite and inside the ball.
///
/// Accuracy is that of a backward-stable solver: the step is the exact
/// one for data within about `ε·‖A‖` of `A` (and `g`, `t` to rounding).
/// On strongly graded matrices, whose entries span far more than `1/ε`
/// (say 1e270 next to 1), the structure that decides the step can lie
/// below `ε·‖A‖`, where the eigendecomposition does not resolve it (faer's
/// 2 × 2 one returns 0 for the eigenvalue 1e-20 of `diag(1e-20, 1)`): there
/// a solve on the eigen path whose step has a positive value for `A`
/// (worse than `s = 0`) tries the Cholesky path and keeps the better
/// step, but no path is guaranteed to resolve such structure.
pub struct Trs {
    n: usize,
    /// `Â = A·2^−ea`, column-major.
    a: Mat<f64>,
    ea: i32,
    /// The eigendecomposition of `Â`.
    eig: OnceLock<(Mat<f64>, Vec<f64>)>,
    /// `‖Â‖_∞`.
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

/// `x·2^e` with a single rounding (C's `scalbn`, as musl computes it): exact
/// unless the result is subnormal, and `±∞` or `±0` beyond the range, for
/// any `e`.
fn ldexp(mut x: f64, mut e: i32) -> f64 {
    const UP: f64 = f64::from_bits(0x7fe << 52); // 2^1023
    const DOWN: f64 = f64::from_bits(54 << 52); // 2^-969 = 2^-1022·2^53
    if e > 1023 {
        x *= UP;
        e -= 1023;
        if e > 1023 {
            x *= UP;
            e -= 1023;
            e = e.min(1023);
        }
    } else if e < -1022 {
        // Stay 53 binades above the subnormals, so that only the last
        // multiplication rounds.
        x *= DOWN;
        e += 969;
        if e < -1022 {
            x *= DOWN;
            e += 969;
            e = e.max(-1022);
        }
    }
    x * f64::from_bits(((1023 + e) as u64) << 52)
}

/// `x·2^e` rounded towards zero (`|result| ≤ |x|·2^e` exactly).
fn ldexp_toward_zero(x: f64, e: i32) -> f64 {
    let y = ldexp(x, e);
    if e < 0 && y != 0.0 && ldexp(y, -e).abs() > x.abs() {
        // Scaling a subnormal back up is exact: y was rounded away from 0.
        f64::from_bits(y.to_bits() - 1)
    } else {
        y
    }
}

/// `⌊log₂ x⌋` for finite `x > 0`, subnormals included.
fn exponent(x: f64) -> i32 {
    let b = ((x.to_bits() >> 52) & 0x7ff) as i32;
    if b == 0 {
        exponent(x * 18446744073709551616.0) - 64 // 2^64
    } else {
        b - 1023
    }
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
        let tol = 1e-12 * amax;
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
        let ea = if amax > 0.0 { exponent(amax) } else { 0 };
        // Column-major from row-major: column j of A is row j of a (A is
        // symmetric), read contiguously. Exact, but for entries below
        // 2^−1074·2^ea ≤ 2^−1074·max|a| (negligible), which flush to 0.
        let ahat = Mat::from_fn(n, n, |i, j| ldexp(a[j * n + i], -ea));
        // ‖Â‖₂ ≤ ‖Â‖_∞ (max absolute row sum) for symmetric Â; ≤ 2n.
        let anorm = (0..n)
            .map(|j| ahat.col(j).iter().map(|v| v.abs()).sum::<f64>())
            .fold(0.0, f64::max);
        Ok(Trs {
            n,
            a: ahat,
            ea,
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

    /// The eigendecomposition of `Â`.
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
    /// Any finite data is solved (see [`Trs`]): the step is finite and
    /// inside the ball; [`TrsSolution`] says which scalars can saturate.
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
        // The normalization (see `Trs`): t = τ·2^et, s = u·2^et; the
        // balanced scale divides the objective by 2^k.
        let et = exponent(t);
        let tau = ldexp(t, -et);
        let gmax = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let eg = if gmax > 0.0 { exponent(gmax) } else { 0 };
        let pa = (self.anorm > 0.0).then_some(2 * et + self.ea);
        let pg = (gmax > 0.0).then_some(et + eg);
        let k = match (pa, pg) {
            (Some(x), Some(y)) => x.max(y),
            (Some(x), None) | (None, Some(x)) => x,
            (None, None) => 0,
        };
        let alpha = pa.map_or(0.0, |p| ldexp(1.0, p - k));
        let ghat: Vec<f64> = g.iter().map(|v| ldexp(*v, et - k)).collect();
        // g on its own scale, max|g0_i| ∈ [1, 2).
        let g0: Vec<f64> = g.iter().map(|v| ldexp(*v, -eg)).collect();
        // ĝ's largest component lost bits to underflow (g below
        // 2^−969·‖A‖·t): its direction may still matter along the
        // (near-)null space of A + λI, and the eigen path keeps g on its
        // own scale. (Smaller components lose bits only below ε·max|g_i|,
        // under the bottom-eigenspace tolerance.)
        let lossy = pg.is_some_and(|p| p - k < -969);
        let cholesky = || {
            self.solve_cholesky(
                alpha,
                &ghat,
                tau,
                &g0,
                k - 2 * et,
                eg - self.ea + pa.unwrap_or(k) - k,
            )
        };
        let tried = self.eig.get().is_none() && !lossy;
        if tried && let Some(step) = cholesky() {
            return Ok(self.finish(step, et, tau, &g0, eg).0);
        }
        let (sol, scale) = self.finish(self.solve_eigen(&g0, eg, et, tau), et, tau, &g0, eg);
        // The eigendecomposition's eigenvalues are accurate to ε·‖A‖ only
        // (faer's 2 × 2 one returns 0 for diag(1e-20, 1)): on graded data
        // its step can be that of a nearby problem with a positive value
        // for A itself — worse than s = 0. Moré–Sorensen's factorizations
        // are accurate there; keep the better step.
        if !tried
            && sol.value > 1e-10 * scale
            && let Some(step) = cholesky()
        {
            let other = self.finish(step, et, tau, &g0, eg).0;
            if other.value < sol.value {
                return Ok(other);
            }
        }
        Ok(sol)
    }

    /// The solution from a step of the normalized problem, and the scale
    /// `|½sᵀAs| + |gᵀs|` of its value.
    fn finish(&self, step: Step, et: i32, tau: f64, g0: &[f64], eg: i32) -> (TrsSolution, f64) {
        // The step s = w·2^ew: the interior step on its own scale where
        // it is inside the ball, else u (ew = et); rounded towards zero
        // (where s is subnormal), so that the rounding stays in the ball.
        let to_s = |w: &[f64], ew: i32| -> Vec<f64> {
            w.iter().map(|x| ldexp_toward_zero(*x, ew)).collect()
        };
        let (w, ew, s) = match step.interior.and_then(|(w, ew)| {
            let s = to_s(&w, ew);
            (w.iter().all(|x| x.is_finite())
                && norm(&s.iter().map(|x| ldexp(*x, -et)).collect::<Vec<_>>()) <= tau)
                .then_some((w, ew, s))
        }) {
            Some(x) => x,
            None => {
                let u = into_ball(step.u, tau);
                let s = to_s(&u, et);
                (u, et, s)
            }
        };
        // Certified before the rounding into the caller's units.
        let (kkt_residual, value, scale) = self.certify(&w, ew, g0, eg, step.lambda);
        let nu = norm(&s.iter().map(|x| ldexp(*x, -et)).collect::<Vec<_>>());
        (
            TrsSolution {
                s,
                lambda: ldexp(step.lambda.0, step.lambda.1),
                norm: ldexp(nu, et),
                lambda_min: step.lambda_min,
                hard_case: step.hard,
                kkt_residual,
                constraint_residual: (nu - tau).max(0.0) / tau,
                value,
            },
            scale,
        )
    }

    /// Moré–Sorensen on Cholesky factorizations of `α·Â + λI`; `None` when
    /// the (near-)hard case or slow progress calls for the
    /// eigendecomposition.
    ///
    /// The first λ is the multiplier of the same problem restricted to the
    /// Krylov space of 40 Lanczos steps from `g` (GLTR's estimate, Gould et
    /// al. 1999), usually within 1e-6 of λ*, so that two or three
    /// factorizations finish the Newton iteration; the Ritz value also
    /// gives the lower bound λ* ≥ −λ_min ≥ −θ.
    ///
    /// Works on the balanced scale `(α·Â, ĝ, τ)`; the returned multiplier
    /// is `λ̂·2^lam_exp`, and an interior step (`λ = 0`) also comes as
    /// `s = −A⁻¹g` on its own scale: `w = −(α·Â)⁻¹g0` from the same
    /// factorization, `s = w·2^int_exp`.
    fn solve_cholesky(
        &self,
        alpha: f64,
        g: &[f64],
        t: f64,
        g0: &[f64],
        lam_exp: i32,
        int_exp: i32,
    ) -> Option<Step> {
        use faer::dyn_stack::{MemBuffer, MemStack};
        use faer::linalg::cholesky::llt;
        let n = self.n;
        let gnorm = norm(g);
        let anorm = alpha * self.anorm;
        let par = faer::get_global_parallelism();
        let mut buf = Mat::<f64>::zeros(n, n);
        let mut mem = MemBuffer::new(
            llt::factor::cholesky_in_place_scratch::<f64>(n, par, Default::default())
                .or(llt::solve::solve_in_place_scratch::<f64>(n, 1, par)),
        );
        // Factors α·Â + λI into the lower triangle of `buf`; false if it is
        // not positive definite.
        let factor = |l: f64, buf: &mut Mat<f64>, mem: &mut MemBuffer| {
            for j in 0..n {
                let (src, dst) = (self.a.col(j), buf.col_mut(j));
                for (i, (d, s)) in dst.iter_mut().zip(src.iter()).enumerate().skip(j) {
                    *d = if i == j { alpha * s + l } else { alpha * s };
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
        let mindiag = (0..n)
            .map(|i| alpha * self.a[(i, i)])
            .fold(f64::INFINITY, f64::min);
        let (theta, krylov) = self.lanczos(alpha, g, t);
        let mut lo = 0.0f64.max(-mindiag).max(gnorm / t - anorm).max(-theta);
        let mut hi = (gnorm / t + anorm).max(lo);
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
                let u = into_ball(sv, t);
                // As accurate as the eigen path, or leave it to it.
                let au = self.matvec(alpha, &u);
                let res = norm(&(0..n).map(|i| au[i] + l * u[i] + g[i]).collect::<Vec<_>>());
                let nu = norm(&u);
                let denom = anorm * nu + gnorm + l * nu;
                if denom > 0.0 && res > 1e-12 * denom {
                    return None;
                }
                let interior = (l == 0.0).then(|| {
                    let mut w = Mat::from_fn(n, 1, |i, _| -g0[i]);
                    llt::solve::solve_in_place_with_conj(
                        lower,
                        faer::Conj::No,
                        w.as_mut(),
                        par,
                        MemStack::new(&mut mem),
                    );
                    ((0..n).map(|i| w[(i, 0)]).collect(), int_exp)
                });
                return Some(Step {
                    u,
                    interior,
                    lambda: (l, lam_exp),
                    hard: false,
                    lambda_min: None,
                });
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

    /// `α·Â·v` through faer's GEMM (column-major friendly).
    fn matvec(&self, alpha: f64, v: &[f64]) -> Vec<f64> {
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
        (0..n).map(|i| alpha * y[(i, 0)]).collect()
    }

    /// `min(n, 40)` Lanczos steps on `α·Â` from `g` (or `e_1` when
    /// `g = 0`): returns the smallest Ritz value θ (an upper bound on
    /// `λ_min(α·Â)`, usually close to it) and the multiplier of the
    /// trust-region problem restricted to the Krylov space
    /// (`min ½yᵀTy + ‖g‖y₁`, `‖y‖ ≤ t`, T the Lanczos tridiagonal).
    /// `O(40·n²)`, memory-bound.
    fn lanczos(&self, alpha: f64, g: &[f64], t: f64) -> (f64, f64) {
        let n = self.n;
        let k = n.min(40);
        let gnorm = norm(g);
        let anorm = alpha * self.anorm;
        let mut v: Vec<f64> = if gnorm > 0.0 {
            g.to_vec()
        } else {
            (0..n).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect()
        };
        let nv = norm(&v);
        v.iter_mut().for_each(|x| *x /= nv);
        let mut prev = vec![0.0; n];
        let (mut alpha_t, mut beta) = (Vec::with_capacity(k), Vec::with_capacity(k));
        let mut b = 0.0;
        for _ in 0..k {
            let mut w = self.matvec(alpha, &v);
            let a = w.iter().zip(&v).map(|(x, y)| x * y).sum::<f64>();
            for i in 0..n {
                w[i] -= a * v[i] + b * prev[i];
            }
            alpha_t.push(a);
            b = norm(&w);
            if b <= 1e-12 * anorm.max(f64::MIN_POSITIVE) {
                break;
            }
            beta.push(b);
            prev = std::mem::replace(&mut v, w.iter().map(|x| x / b).collect());
        }
        let m = alpha_t.len();
        let tri = Mat::from_fn(m, m, |i, j| {
            if i == j {
                alpha_t[i]
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

    /// The eigendecomposition path: the secular equation `‖s(λ)‖ = t`,
    /// `s(λ) = −Σ_i γ_i/(λ_i+λ)·q_i`, `γ = Qᵀg`, solved by safeguarded
    /// Newton with O(n) evaluations; the hard case adds the bottom
    /// eigenvector to reach the boundary.
    ///
    /// The multiplier is written `λ = λ_lo + ν`, `λ_lo = max(0, −λ_1)`,
    /// with the shifted eigenvalues `d_i = λ_i + λ_lo ≥ 0` (`d_1 = 0` when
    /// `λ_1 < 0`): `λ_i + λ = d_i + ν` then keeps full relative precision
    /// near the (near-)hard case, where `λ_i + λ` would otherwise cancel.
    /// Tolerances: eigenvalues with `d_i ≤ 1e-12·max(‖A‖₂, ‖g‖/t)` form the
    /// bottom eigenspace; the hard case is declared when `g`'s component
    /// there is `≤ 1e-12·‖g‖` and the rest of the step at `ν = 0` fits in
    /// the ball.
    ///
    /// Scales: `λ_i`, `λ_lo` and `d_i` are computed from `Â`'s eigenvalues
    /// (times `2^ea`); the secular equation is solved for
    /// `u = s·2^−et` (`‖u‖ = τ`) with `g` on its own scale, `g0 = g·2^−eg`,
    /// where `u = −Σ_i γ0_i/(d̃_i + ν̃)·q_i` with `d̃_i = d_i·2^(et−eg)`
    /// and `ν = ν̃·2^(eg−et)`: every `d̃_i` is exact or saturates, to `+∞`
    /// (a term far below rounding) or to 0 (an eigenvalue far inside the
    /// bottom tolerance), so that `g`'s direction is kept however small
    /// `‖g‖` is against `‖A‖·t`.
    fn solve_eigen(&self, g0: &[f64], eg: i32, et: i32, t: f64) -> Step {
        let n = self.n;
        let (q, lam) = self.eigen();
        let gamma: Vec<f64> = (0..n)
            .map(|j| (0..n).map(|i| q[(i, j)] * g0[i]).sum())
            .collect();
        // faer returns the eigenvalues in ascending order.
        let lmax = lam.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let gnorm = norm(g0);
        let lower = (-lam[0]).max(0.0);
        let dhat: Vec<f64> = lam.iter().map(|li| li + lower).collect();
        let d: Vec<f64> = dhat.iter().map(|x| ldexp(*x, self.ea + et - eg)).collect();
        // d_i ≤ 1e-12·max(‖A‖₂, ‖g‖/t), each side on its own scale.
        let in_bottom = |i: usize| dhat[i] <= 1e-12 * lmax || d[i] <= 1e-12 * (gnorm / t);
        let bottom = norm(
            &(0..n)
                .filter(|i| in_bottom(*i))
                .map(|i| gamma[i])
                .collect::<Vec<_>>(),
        );
        // ‖u(ν = 0)‖/τ without the bottom eigenspace.
        let rest = norm(
            &(0..n)
                .filter(|i| !in_bottom(*i))
                .map(|i| gamma[i] / (d[i] * t))
                .collect::<Vec<_>>(),
        );
        let (nu, hard) = if bottom <= 1e-12 * gnorm && rest <= 1.0 {
            // λ = λ_lo: interior (λ_lo = 0) or the hard case (λ_lo > 0,
            // the step is completed to the sphere along q_1 below).
            (0.0, lower > 0.0)
        } else {
            (secular_root(&gamma, &d, t), false)
        };
        let mut y: Vec<f64> = (0..n)
            .map(|i| {
                if gamma[i] == 0.0 || (nu == 0.0 && in_bottom(i)) {
                    0.0
                } else {
                    -gamma[i] / (d[i] + nu)
                }
            })
            .collect();
        if hard {
            let yn = norm(&y);
            // Along q_1, against g's (negligible) component there.
            // τ = √(t² − ‖y‖²), as t·√((1 − r)(1 + r)), r = ‖y‖/t.
            let r = (yn / t).min(1.0);
            let tau = t * ((1.0 - r) * (1.0 + r)).sqrt();
            y[0] = if gamma[0] > 0.0 { -tau } else { tau };
        }
        let qy = |y: &[f64]| -> Vec<f64> {
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
            (0..n).map(|i| sm[(i, 0)]).collect()
        };
        // The interior step s = −A⁺g on its own scale, 2^(eg−ea): u may
        // have lost it to underflow when ‖s‖ ≪ t.
        let interior = (nu == 0.0 && lower == 0.0).then(|| {
            let v: Vec<f64> = (0..n)
                .map(|i| {
                    if gamma[i] == 0.0 || in_bottom(i) {
                        0.0
                    } else {
                        -gamma[i] / lam[i]
                    }
                })
                .collect();
            (qy(&v), eg - self.ea)
        });
        // λ = λ_lo·2^ea + ν̃·2^(eg−et), on the scale of the larger term.
        let lambda = if nu == 0.0 {
            (lower, self.ea)
        } else if lower == 0.0 {
            (nu, eg - et)
        } else {
            let e = self.ea.max(eg - et);
            (ldexp(lower, self.ea - e) + ldexp(nu, eg - et - e), e)
        };
        Step {
            u: qy(&y),
            interior,
            lambda,
            hard,
            lambda_min: Some(ldexp(lam[0], self.ea)),
        }
    }

    /// The certificate of the step `s = w·2^ew` for the multiplier
    /// `λ = lam.0·2^lam.1`: the relative KKT residual and the value, each
    /// computed on scales where nothing overflows — `s = v·2^es` with
    /// `max|v_i| ∈ [1, 2)`, `A = Â·2^ea`, `g = g0·2^eg` — and the terms of
    /// `(A + λI)s + g` and of its scale brought to the largest of them.
    fn certify(&self, w: &[f64], ew: i32, g0: &[f64], eg: i32, lam: (f64, i32)) -> (f64, f64, f64) {
        let n = self.n;
        let wmax = w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let ev = if wmax > 0.0 { exponent(wmax) } else { 0 };
        let es = ew + ev;
        let v: Vec<f64> = w.iter().map(|x| ldexp(*x, -ev)).collect();
        let av = self.matvec(1.0, &v);
        let (nv, ng) = (norm(&v), norm(g0));
        let quad = 0.5 * v.iter().zip(&av).map(|(a, b)| a * b).sum::<f64>();
        let lin = v.iter().zip(g0).map(|(a, b)| a * b).sum::<f64>();
        let value = sum2(quad, self.ea + 2 * es, lin, eg + es);
        let scale = sum2(quad.abs(), self.ea + 2 * es, lin.abs(), eg + es);
        let (ea, el) = (self.ea + es, lam.1 + es);
        let Some(top) = [
            (self.anorm * nv > 0.0).then_some(ea),
            (lam.0 * nv > 0.0).then_some(el),
            (ng > 0.0).then_some(eg),
        ]
        .into_iter()
        .flatten()
        .max() else {
            return (0.0, value, scale);
        };
        let r: Vec<f64> = (0..n)
            .map(|i| {
                ldexp(av[i], ea - top) + ldexp(lam.0 * v[i], el - top) + ldexp(g0[i], eg - top)
            })
            .collect();
        let denom =
            ldexp(self.anorm * nv, ea - top) + ldexp(lam.0 * nv, el - top) + ldexp(ng, eg - top);
        (norm(&r) / denom, value, scale)
    }
}

/// A solution of the normalized problem (see [`Trs`]), before its
/// certificate.
struct Step {
    /// The step on the scale of the ball, `u = s·2^−et`.
    u: Vec<f64>,
    /// For an interior step (`λ = 0`), `s = w·2^e` as `(w, e)`, computed
    /// on its own scale (used where finite and inside the ball).
    interior: Option<(Vec<f64>, i32)>,
    /// `λ = lambda.0·2^lambda.1`.
    lambda: (f64, i32),
    hard: bool,
    /// `λ_min(A)` (the eigen path).
    lambda_min: Option<f64>,
}

/// `u` scaled back into the ball `‖u‖ ≤ τ` (computed) where rounding left
/// it just outside (the root finders stop within `1e-14·τ` of the sphere).
fn into_ball(mut u: Vec<f64>, tau: f64) -> Vec<f64> {
    let nu = norm(&u);
    if nu > tau {
        let u0 = u.clone();
        let mut f = tau / nu;
        for _ in 0..8 {
            u.iter_mut().zip(&u0).for_each(|(x, y)| *x = y * f);
            if norm(&u) <= tau {
                break;
            }
            f *= 1.0 - 2.0 * f64::EPSILON;
        }
    }
    u
}

/// `a·2^ea + b·2^eb`, saturating only where the sum is beyond the range.
fn sum2(a: f64, ea: i32, b: f64, eb: i32) -> f64 {
    let (x, y) = (ldexp(a, ea), ldexp(b, eb));
    if x.is_finite() && y.is_finite() {
        x + y
    } else {
        let m = ea.max(eb);
        ldexp(ldexp(a, ea - m) + ldexp(b, eb - m), m)
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
