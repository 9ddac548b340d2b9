//! "BPM on a model of f" (SPEC §4): the trust-region method. Each step
//! solves the ball-proximal problem of a model of f around x — a linear
//! model over any lmo-core norm ball (the step is `t·lmo(∇f)`, normalized /
//! LMO gradient descent) or a quadratic model over the Euclidean ball (the
//! exact trust-region subproblem) — and adapts the radius by the ratio of
//! actual to predicted decrease (Conn, Gould & Toint 2000, Alg. 6.1.1).

use lmo_core::{Backend, Norm};

use crate::{BroxError, Trs};

/// A smooth objective: value, gradient and, optionally, Hessian-vector
/// products.
pub trait Objective {
    /// The dimension n.
    fn dim(&self) -> usize;
    /// `f(x)`.
    fn value(&self, x: &[f64]) -> f64;
    /// Writes `∇f(x)`.
    fn gradient(&self, x: &[f64], out: &mut [f64]);
    /// Writes `∇²f(x)·v` and returns `true`, or returns `false` when not
    /// available (then only the linear model can be used).
    fn hessian_vector(&self, _x: &[f64], _v: &[f64], _out: &mut [f64]) -> bool {
        false
    }
}

/// The model minimized over the ball at each step, for norms on the f64
/// backend `B`.
pub enum Model<B: Backend<Scalar = f64>, N: Norm<B>> {
    /// `f(x) + <g, s>` over the ball of `norm`: step `t·lmo(g)`. `like` is
    /// a tensor of the backend with the variable's shape as the norm sees
    /// it (a vector, or a matrix for the spectral norm); its values are not
    /// read.
    Linear {
        /// The norm.
        norm: N,
        /// A tensor with the variable's shape.
        like: B::Tensor,
    },
    /// `f(x) + <g, s> + ½sᵀHs` over the Euclidean ball, with `H` built from
    /// n Hessian-vector products and the exact subproblem solver.
    Quadratic,
}

/// Options of [`trust_region`].
#[derive(Clone, Debug, PartialEq)]
pub struct TrOptions {
    /// Initial radius > 0.
    pub t0: f64,
    /// Largest radius.
    pub t_max: f64,
    /// Accept a step when actual/predicted decrease > `eta` (in [0, 0.25)).
    pub eta: f64,
    /// Iteration cap.
    pub max_iter: usize,
    /// Stop when the dual norm of the gradient is ≤ this.
    pub grad_tol: f64,
}

impl Default for TrOptions {
    fn default() -> Self {
        TrOptions {
            t0: 1.0,
            t_max: 1e3,
            eta: 0.1,
            max_iter: 500,
            grad_tol: 1e-8,
        }
    }
}

/// One iteration of [`trust_region`].
#[derive(Clone, Debug, PartialEq)]
pub struct TrIterate {
    /// Iteration k.
    pub k: usize,
    /// `f` at the (possibly unchanged) iterate after this step.
    pub f: f64,
    /// The radius used.
    pub t: f64,
    /// Actual / predicted decrease.
    pub rho: f64,
    /// Whether the step was taken.
    pub accepted: bool,
    /// `‖∇f(x)‖_*` before the step.
    pub grad_dual: f64,
}

/// The result of [`trust_region`].
#[derive(Clone, Debug, PartialEq)]
pub struct TrResult {
    /// The final iterate.
    pub x: Vec<f64>,
    /// Per-iteration records.
    pub history: Vec<TrIterate>,
    /// `true` if the gradient tolerance was met.
    pub converged: bool,
}

/// Runs the trust-region method from `x0` with the given model.
pub fn trust_region<B: Backend<Scalar = f64>, N: Norm<B>>(
    obj: &dyn Objective,
    model: &mut Model<B, N>,
    x0: &[f64],
    o: &TrOptions,
) -> Result<TrResult, BroxError> {
    let n = obj.dim();
    if x0.len() != n {
        return Err(BroxError::DimensionMismatch {
            expected: n,
            found: x0.len(),
        });
    }
    if x0.iter().any(|v| !v.is_finite()) {
        return Err(BroxError::NonFinite);
    }
    if !(o.t0.is_finite() && o.t0 > 0.0 && o.t_max >= o.t0 && (0.0..0.25).contains(&o.eta)) {
        return Err(BroxError::InvalidInput(
            "need 0 < t0 ≤ t_max and 0 ≤ eta < 0.25",
        ));
    }
    let mut work = match model {
        Model::Linear { like, .. } => {
            let found = B::shape(like).numel();
            if found != n {
                return Err(BroxError::DimensionMismatch { expected: n, found });
            }
            Some((B::zeros_like(like), B::zeros_like(like)))
        }
        Model::Quadratic => None,
    };
    let mut x = x0.to_vec();
    let mut fx = obj.value(&x);
    let mut g = vec![0.0; n];
    let mut t = o.t0;
    let mut history = vec![];
    let mut hcol = vec![0.0; n];
    let mut e = vec![0.0; n];
    for k in 0..o.max_iter {
        obj.gradient(&x, &mut g);
        if g.iter().any(|v| !v.is_finite()) {
            return Err(BroxError::NonFinite);
        }
        let (step, predicted, grad_dual) = match model {
            Model::Linear { norm, .. } => {
                let Some((ga, d)) = work.as_mut() else {
                    return Err(BroxError::InvalidInput("linear model without workspace"));
                };
                B::copy_from_slice(&g, ga);
                let ip = norm.lmo(ga, d).map_err(BroxError::Lmo)?;
                let mut step = vec![0.0; n];
                B::copy_to_slice(d, &mut step);
                step.iter_mut().for_each(|v| *v *= t);
                (step, -t * ip, -ip)
            }
            Model::Quadratic => {
                let mut h = vec![0.0; n * n];
                for j in 0..n {
                    e.iter_mut()
                        .enumerate()
                        .for_each(|(i, v)| *v = if i == j { 1.0 } else { 0.0 });
                    if !obj.hessian_vector(&x, &e, &mut hcol) {
                        return Err(BroxError::InvalidInput(
                            "the quadratic model needs Hessian-vector products",
                        ));
                    }
                    for i in 0..n {
                        h[i * n + j] = hcol[i];
                    }
                }
                // Symmetrize what the products gave (rounding).
                for i in 0..n {
                    for j in 0..i {
                        let m = 0.5 * (h[i * n + j] + h[j * n + i]);
                        h[i * n + j] = m;
                        h[j * n + i] = m;
                    }
                }
                let sol = Trs::new(&h, n)?.solve(&g, t)?;
                let gd = g.iter().map(|v| v * v).sum::<f64>().sqrt();
                (sol.s, -sol.value, gd)
            }
        };
        if grad_dual <= o.grad_tol {
            return Ok(TrResult {
                x,
                history,
                converged: true,
            });
        }
        let trial: Vec<f64> = x.iter().zip(&step).map(|(a, b)| a + b).collect();
        let ft = obj.value(&trial);
        let rho = if predicted > 0.0 {
            (fx - ft) / predicted
        } else {
            f64::NEG_INFINITY
        };
        let accepted = rho > o.eta && ft.is_finite();
        let used = t;
        if rho < 0.25 || !ft.is_finite() {
            t *= 0.25;
        } else if rho > 0.75 {
            t = (2.0 * t).min(o.t_max);
        }
        if accepted {
            x = trial;
            fx = ft;
        }
        history.push(TrIterate {
            k,
            f: fx,
            t: used,
            rho,
            accepted,
            grad_dual,
        });
        if t < 1e-300 {
            break;
        }
    }
    obj.gradient(&x, &mut g);
    let gd = g.iter().map(|v| v * v).sum::<f64>().sqrt();
    Ok(TrResult {
        x,
        history,
        converged: gd <= o.grad_tol,
    })
}
