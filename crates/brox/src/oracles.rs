//! Exact and inexact ball-proximal oracles (SPEC §4).

use lmo_core::{Backend, Norm};

use crate::{Brox, BroxError, Certificate, TrsSolution, check, trs::Trs};

fn norm2(v: &[f64]) -> f64 {
    let m = v.iter().fold(0.0f64, |a, x| a.max(x.abs()));
    if m == 0.0 {
        return 0.0;
    }
    m * v.iter().map(|x| (x / m) * (x / m)).sum::<f64>().sqrt()
}

/// `f(z) = <g, z>` over the ball of any lmo-core norm `N` on any f64
/// [`Backend`] `B`: `brox_f^t(x) = x + t·lmo(g)` (SPEC §4, first oracle).
/// `g` is a tensor of the backend (vector or matrix), so that matrix norms
/// (spectral, column, …) apply; points are its row-major entries.
///
/// Certificate (see [`Certificate`]): with `d = lmo(g)`,
/// `<g, u − x> = t·<g, d> = −t·‖g‖_*`, so `w = −g/‖g‖_*` has `‖w‖_* = 1`
/// and `<w, u − x> = t = ‖u − x‖`, i.e. `w ∈ ∂‖·‖(u − x)` and
/// `g + ‖g‖_*·w = 0`: the ball multiplier is `μ = ‖g‖_* = −<g, d>` for
/// every norm (exactly so for exact LMOs; with an inexact orthogonalizer
/// the attained `−<g, d>`). The Euclidean multiplier `c` with
/// `c·(x − u) = g`, i.e. `g = −c·t·d`, exists only when `d` is parallel to
/// `−g` (the Frobenius and RMS norms, or by coincidence); it is reported,
/// as `c = −<g, d>/(t·‖d‖₂²)`, only when `‖g + c·t·d‖₂ ≤ 1e-12·‖g‖₂`, and
/// is `None` otherwise.
pub struct Linear<B: Backend<Scalar = f64>, N: Norm<B>> {
    g: B::Tensor,
    /// `g`, row-major on the host (for `value` and `gradient`).
    gh: Vec<f64>,
    norm: N,
    d: B::Tensor,
    dh: Vec<f64>,
}

impl<B: Backend<Scalar = f64>, N: Norm<B>> Linear<B, N> {
    /// `f(z) = <g, z>` over the ball of `norm`; non-finite `g` →
    /// [`BroxError::NonFinite`].
    pub fn new(g: B::Tensor, norm: N) -> Result<Self, BroxError> {
        if !B::all_finite(&g) {
            return Err(BroxError::NonFinite);
        }
        let n = B::shape(&g).numel();
        let mut gh = vec![0.0; n];
        B::copy_to_slice(&g, &mut gh);
        let d = B::zeros_like(&g);
        Ok(Linear {
            g,
            gh,
            norm,
            d,
            dh: vec![0.0; n],
        })
    }
}

impl<B: Backend<Scalar = f64>, N: Norm<B>> Brox for Linear<B, N> {
    fn dim(&self) -> usize {
        self.gh.len()
    }
    fn value(&self, z: &[f64]) -> f64 {
        self.gh.iter().zip(z).map(|(a, b)| a * b).sum()
    }
    fn gradient(&self, _z: &[f64], out: &mut [f64]) -> bool {
        out.copy_from_slice(&self.gh);
        true
    }
    fn brox(&mut self, x: &[f64], t: f64, out: &mut [f64]) -> Result<Certificate, BroxError> {
        check(self.dim(), x, t, out)?;
        let ip = self
            .norm
            .lmo(&self.g, &mut self.d)
            .map_err(BroxError::Lmo)?;
        B::copy_to_slice(&self.d, &mut self.dh);
        for ((o, xi), di) in out.iter_mut().zip(x).zip(&self.dh) {
            *o = xi + t * di;
        }
        // μ = ‖g‖_* = −<g, lmo(g)> ≥ 0 (0 for g = 0, where d = 0 and u = x).
        let dual = (-ip).max(0.0);
        let dn = norm2(&self.dh);
        let multiplier = if dual == 0.0 || dn == 0.0 {
            // g = 0 (an exact LMO gives −<g, d> > 0 for g ≠ 0): c = 0.
            (norm2(&self.gh) == 0.0).then_some(0.0)
        } else {
            // The least-squares c in g ≈ −c·t·d, kept only if it is exact.
            let c = dual / (t * dn) / dn;
            let res = norm2(
                &self
                    .gh
                    .iter()
                    .zip(&self.dh)
                    .map(|(g, d)| g + c * t * d)
                    .collect::<Vec<_>>(),
            );
            (res <= 1e-12 * norm2(&self.gh)).then_some(c)
        };
        Ok(Certificate {
            boundary: dual > 0.0,
            multiplier,
            ball_multiplier: Some(dual),
            tolerance: 0.0,
            iterations: 0,
        })
    }
}

/// `f(z) = ½‖z − c‖²` (Argmin f = {c}), Euclidean ball: move toward `c` by
/// `min(t, ‖x − c‖)` (SPEC §4, second oracle).
pub struct Distance {
    c: Vec<f64>,
}

impl Distance {
    /// The minimizer `c`.
    pub fn new(c: Vec<f64>) -> Result<Self, BroxError> {
        if c.iter().any(|v| !v.is_finite()) {
            return Err(BroxError::NonFinite);
        }
        Ok(Distance { c })
    }
}

impl Brox for Distance {
    fn dim(&self) -> usize {
        self.c.len()
    }
    fn value(&self, z: &[f64]) -> f64 {
        0.5 * z
            .iter()
            .zip(&self.c)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
    }
    fn gradient(&self, z: &[f64], out: &mut [f64]) -> bool {
        out.iter_mut()
            .zip(z.iter().zip(&self.c))
            .for_each(|(o, (a, b))| *o = a - b);
        true
    }
    fn brox(&mut self, x: &[f64], t: f64, out: &mut [f64]) -> Result<Certificate, BroxError> {
        check(self.dim(), x, t, out)?;
        let diff: Vec<f64> = self.c.iter().zip(x).map(|(c, x)| c - x).collect();
        let d = norm2(&diff);
        if d <= t {
            out.copy_from_slice(&self.c);
            return Ok(Certificate {
                boundary: false,
                multiplier: Some(0.0),
                ball_multiplier: Some(0.0),
                tolerance: 0.0,
                iterations: 0,
            });
        }
        for ((o, xi), di) in out.iter_mut().zip(x).zip(&diff) {
            *o = xi + t * di / d;
        }
        // ∇f(u) = u − c = (x − u)·(d − t)/t: c = (d − t)/t, μ = c·t.
        Ok(Certificate {
            boundary: true,
            multiplier: Some((d - t) / t),
            ball_multiplier: Some(d - t),
            tolerance: 0.0,
            iterations: 0,
        })
    }
}

/// `f(z) = ½zᵀA·z − bᵀz` (A symmetric, possibly indefinite; convex when
/// A ⪰ 0), Euclidean ball: the exact trust-region subproblem ([`Trs`])
/// with step `s = z − x` and linear term `A·x − b`.
pub struct Quadratic {
    trs: Trs,
    a: Vec<f64>,
    b: Vec<f64>,
    /// The last subproblem solution (certificate details).
    pub last: Option<TrsSolution>,
}

impl Quadratic {
    /// `A` (row-major `n × n`, symmetric) and `b`.
    pub fn new(a: Vec<f64>, b: Vec<f64>) -> Result<Self, BroxError> {
        let n = b.len();
        // BPM solves many subproblems with one A: decompose once.
        let trs = Trs::with_eigen(&a, n)?;
        if b.iter().any(|v| !v.is_finite()) {
            return Err(BroxError::NonFinite);
        }
        Ok(Quadratic {
            trs,
            a,
            b,
            last: None,
        })
    }

    fn ax(&self, z: &[f64]) -> Vec<f64> {
        let n = self.b.len();
        (0..n)
            .map(|i| {
                self.a[i * n..(i + 1) * n]
                    .iter()
                    .zip(z)
                    .map(|(a, b)| a * b)
                    .sum()
            })
            .collect()
    }
}

impl Brox for Quadratic {
    fn dim(&self) -> usize {
        self.b.len()
    }
    fn value(&self, z: &[f64]) -> f64 {
        let az = self.ax(z);
        0.5 * z.iter().zip(&az).map(|(a, b)| a * b).sum::<f64>()
            - z.iter().zip(&self.b).map(|(a, b)| a * b).sum::<f64>()
    }
    fn gradient(&self, z: &[f64], out: &mut [f64]) -> bool {
        let az = self.ax(z);
        out.iter_mut()
            .zip(az.iter().zip(&self.b))
            .for_each(|(o, (a, b))| *o = a - b);
        true
    }
    fn brox(&mut self, x: &[f64], t: f64, out: &mut [f64]) -> Result<Certificate, BroxError> {
        check(self.dim(), x, t, out)?;
        let mut g = vec![0.0; x.len()];
        self.gradient(x, &mut g);
        let sol = self.trs.solve(&g, t)?;
        for ((o, xi), si) in out.iter_mut().zip(x).zip(&sol.s) {
            *o = xi + si;
        }
        // ∇f(u) = A·s + g = −λ·s = λ·(x − u): c = λ, μ = λ·‖s‖.
        let cert = Certificate {
            boundary: sol.lambda > 0.0 || sol.hard_case,
            multiplier: Some(sol.lambda),
            ball_multiplier: Some(sol.lambda * sol.norm),
            tolerance: sol.kkt_residual,
            iterations: 0,
        };
        self.last = Some(sol);
        Ok(cert)
    }
}

/// `f(z) = ‖z − c‖₁` over the Euclidean ball, exactly: outside the ball
/// around `c`, the solution is `prox_{γf}(x)` (soft thresholding toward
/// `c`) with the γ that puts it on the sphere, found in closed form on the
/// sorted `|x_i − c_i|` (BPM = proximal point with γ_k; SPEC §4).
pub struct L1Distance {
    c: Vec<f64>,
}

impl L1Distance {
    /// The minimizer `c`.
    pub fn new(c: Vec<f64>) -> Result<Self, BroxError> {
        if c.iter().any(|v| !v.is_finite()) {
            return Err(BroxError::NonFinite);
        }
        Ok(L1Distance { c })
    }
}

impl Brox for L1Distance {
    fn dim(&self) -> usize {
        self.c.len()
    }
    fn value(&self, z: &[f64]) -> f64 {
        z.iter().zip(&self.c).map(|(a, b)| (a - b).abs()).sum()
    }
    fn gradient(&self, _z: &[f64], _out: &mut [f64]) -> bool {
        false
    }
    fn brox(&mut self, x: &[f64], t: f64, out: &mut [f64]) -> Result<Certificate, BroxError> {
        check(self.dim(), x, t, out)?;
        let d: Vec<f64> = x.iter().zip(&self.c).map(|(x, c)| x - c).collect();
        if norm2(&d) <= t {
            out.copy_from_slice(&self.c);
            return Ok(Certificate {
                boundary: false,
                multiplier: None,
                ball_multiplier: None,
                tolerance: 0.0,
                iterations: 0,
            });
        }
        // ‖u − x‖² = Σ_i min(|d_i|, γ)² = t²: with |d| sorted ascending and
        // k entries below γ: S_k + (n−k)·γ² = t².
        let mut a: Vec<f64> = d.iter().map(|v| v.abs()).collect();
        a.sort_by(f64::total_cmp);
        let n = a.len();
        let mut prefix = 0.0;
        let mut gamma = f64::NAN;
        for (k, &ak) in a.iter().enumerate() {
            let rest = (n - k) as f64;
            let g = ((t * t - prefix) / rest).max(0.0).sqrt();
            if g <= ak {
                gamma = g;
                break;
            }
            prefix += ak * ak;
        }
        for ((o, di), ci) in out.iter_mut().zip(&d).zip(&self.c) {
            *o = ci + di.signum() * (di.abs() - gamma).max(0.0);
        }
        // u = prox_{γf}(x): (x − u)/γ ∈ ∂f(u), c = 1/γ, μ = c·t.
        Ok(Certificate {
            boundary: true,
            multiplier: Some(1.0 / gamma),
            ball_multiplier: Some(t / gamma),
            tolerance: 0.0,
            iterations: 0,
        })
    }
}

/// A separable convex `f(z) = Σ_i f_i(z_i)` over the ℓ∞ ball (a box):
/// coordinate-wise exact, `u_i = clamp(c_i, x_i − t, x_i + t)` where `c_i`
/// minimizes `f_i` (for a convex 1-D function the constrained minimizer is
/// the projection of an unconstrained one).
pub struct SeparableBox<F: Fn(&[f64]) -> f64> {
    argmin: Vec<f64>,
    f: F,
}

impl<F: Fn(&[f64]) -> f64> SeparableBox<F> {
    /// The coordinate minimizers `c_i` and `f` itself (for values).
    pub fn new(argmin: Vec<f64>, f: F) -> Result<Self, BroxError> {
        if argmin.iter().any(|v| !v.is_finite()) {
            return Err(BroxError::NonFinite);
        }
        Ok(SeparableBox { argmin, f })
    }
}

impl<F: Fn(&[f64]) -> f64> Brox for SeparableBox<F> {
    fn dim(&self) -> usize {
        self.argmin.len()
    }
    fn value(&self, z: &[f64]) -> f64 {
        (self.f)(z)
    }
    fn gradient(&self, _z: &[f64], _out: &mut [f64]) -> bool {
        false
    }
    fn brox(&mut self, x: &[f64], t: f64, out: &mut [f64]) -> Result<Certificate, BroxError> {
        check(self.dim(), x, t, out)?;
        let mut boundary = false;
        for ((o, xi), ci) in out.iter_mut().zip(x).zip(&self.argmin) {
            *o = ci.clamp(xi - t, xi + t);
            boundary |= (*o - xi).abs() == t;
        }
        Ok(Certificate {
            boundary,
            multiplier: None,
            ball_multiplier: None,
            tolerance: 0.0,
            iterations: 0,
        })
    }
}

/// A general smooth convex `f` with an `L`-Lipschitz gradient over the
/// Euclidean ball, solved inexactly by projected gradient
/// `u ← P_B(u − ∇f(u)/L)` until the gradient-mapping norm
/// `L·‖u⁺ − u‖ ≤ tol` or `max_iter` (the certificate reports both).
pub struct SmoothConvex<F: Fn(&[f64]) -> f64, G: Fn(&[f64], &mut [f64])> {
    n: usize,
    f: F,
    grad: G,
    lipschitz: f64,
    /// Stopping tolerance on the gradient mapping.
    pub tol: f64,
    /// Iteration cap.
    pub max_iter: usize,
}

impl<F: Fn(&[f64]) -> f64, G: Fn(&[f64], &mut [f64])> SmoothConvex<F, G> {
    /// `f`, `∇f` and a Lipschitz constant `L > 0` of `∇f` on `R^n`.
    pub fn new(n: usize, f: F, grad: G, lipschitz: f64) -> Result<Self, BroxError> {
        if !(lipschitz.is_finite() && lipschitz > 0.0) {
            return Err(BroxError::InvalidInput(
                "Lipschitz constant must be finite and > 0",
            ));
        }
        Ok(SmoothConvex {
            n,
            f,
            grad,
            lipschitz,
            tol: 1e-10,
            max_iter: 100_000,
        })
    }
}

impl<F: Fn(&[f64]) -> f64, G: Fn(&[f64], &mut [f64])> Brox for SmoothConvex<F, G> {
    fn dim(&self) -> usize {
        self.n
    }
    fn value(&self, z: &[f64]) -> f64 {
        (self.f)(z)
    }
    fn gradient(&self, z: &[f64], out: &mut [f64]) -> bool {
        (self.grad)(z, out);
        true
    }
    fn brox(&mut self, x: &[f64], t: f64, out: &mut [f64]) -> Result<Certificate, BroxError> {
        check(self.dim(), x, t, out)?;
        let n = self.n;
        let mut u = x.to_vec();
        let mut g = vec![0.0; n];
        let mut next = vec![0.0; n];
        let mut gm = f64::INFINITY;
        let mut it = 0;
        while it < self.max_iter {
            it += 1;
            (self.grad)(&u, &mut g);
            for i in 0..n {
                next[i] = u[i] - g[i] / self.lipschitz - x[i];
            }
            let r = norm2(&next);
            if r > t {
                next.iter_mut().for_each(|v| *v *= t / r);
            }
            let mut moved = 0.0;
            for i in 0..n {
                let v = x[i] + next[i];
                moved += (v - u[i]) * (v - u[i]);
                u[i] = v;
            }
            gm = self.lipschitz * moved.sqrt();
            if gm <= self.tol {
                break;
            }
        }
        out.copy_from_slice(&u);
        let step: Vec<f64> = u.iter().zip(x).map(|(a, b)| a - b).collect();
        let sn = norm2(&step);
        let boundary = sn >= t * (1.0 - 1e-9);
        (self.grad)(&u, &mut g);
        let multiplier = if boundary {
            Some(-g.iter().zip(&step).map(|(a, b)| a * b).sum::<f64>() / (sn * sn))
        } else {
            Some(0.0)
        };
        Ok(Certificate {
            boundary,
            multiplier,
            ball_multiplier: multiplier.map(|c| c * sn),
            tolerance: gm,
            iterations: it,
        })
    }
}
