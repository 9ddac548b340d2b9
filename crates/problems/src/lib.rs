//! # lmo-problems
//!
//! Small deterministic problems with exact, hand-written gradients, in f64
//! on ndarray, for tests, trajectory snapshots and demos:
//! [`Quadratic`] (convex), [`LogisticRegression`] and [`Mlp`] (a 2-hidden-
//! layer tanh network on a generated two-spirals dataset).
//!
//! Each parameter carries a [`Role`] (hidden matrix, embedding = input
//! layer, head = output layer, vector = bias) that an optimizer maps to its
//! parameter groups.

use ndarray::{Array2, ArrayD, Axis, Ix2, IxDyn};
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};

/// What a parameter tensor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A 2-D hidden weight matrix.
    Hidden,
    /// The input layer.
    Embedding,
    /// The output layer.
    Head,
    /// A bias vector.
    Vector,
}

/// A differentiable objective over a list of parameter tensors.
pub trait Problem {
    /// A short name.
    fn name(&self) -> &'static str;
    /// Initial parameters and their roles (deterministic).
    fn init(&self) -> Vec<(Role, ArrayD<f64>)>;
    /// The loss at `params`, writing `∇f` into `grads` (same shapes).
    fn loss_grad(&self, params: &[ArrayD<f64>], grads: &mut [ArrayD<f64>]) -> f64;
}

fn gaussian(rng: &mut StdRng, m: usize, n: usize, s: f64) -> Array2<f64> {
    Array2::from_shape_fn((m, n), |_| {
        let z: f64 = StandardNormal.sample(rng);
        s * z
    })
}

fn m2(x: &ArrayD<f64>) -> ndarray::ArrayView2<'_, f64> {
    x.view()
        .into_dimensionality::<Ix2>()
        .expect("matrix parameter")
}

/// `f(X) = ½·tr((X−C)ᵀ·H·(X−C))` with `H` symmetric positive definite
/// (eigenvalues in [0.5, 5]); `X` is an 8×6 hidden matrix; `f* = 0` at
/// `X = C`.
pub struct Quadratic {
    h: Array2<f64>,
    c: Array2<f64>,
}

impl Quadratic {
    /// The instance for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let q = gaussian(&mut rng, 8, 8, 1.0);
        // H = Q·diag(λ)·Qᵀ with a Gram–Schmidt-orthonormalized Q.
        let mut qo = q.clone();
        for j in 0..8 {
            for i in 0..j {
                let d = qo.column(i).dot(&qo.column(j));
                let ci = qo.column(i).to_owned();
                qo.column_mut(j).scaled_add(-d, &ci);
            }
            let n = qo.column(j).dot(&qo.column(j)).sqrt();
            qo.column_mut(j).mapv_inplace(|v| v / n);
        }
        let lam = Array2::from_diag(&ndarray::Array1::from_iter(
            (0..8).map(|i| 0.5 + 4.5 * i as f64 / 7.0),
        ));
        let h = qo.dot(&lam).dot(&qo.t());
        let c = gaussian(&mut rng, 8, 6, 1.0);
        Quadratic { h, c }
    }
}

impl Problem for Quadratic {
    fn name(&self) -> &'static str {
        "quadratic"
    }
    fn init(&self) -> Vec<(Role, ArrayD<f64>)> {
        vec![(Role::Hidden, Array2::<f64>::zeros((8, 6)).into_dyn())]
    }
    fn loss_grad(&self, params: &[ArrayD<f64>], grads: &mut [ArrayD<f64>]) -> f64 {
        let r = &m2(&params[0]) - &self.c;
        let hr = self.h.dot(&r);
        grads[0].assign(&hr.clone().into_dyn());
        0.5 * (&r * &hr).sum()
    }
}

/// Binary logistic regression on 128 generated points in R⁵ (labels from a
/// noisy linear teacher): weights `w` (1×5, head) and bias `b` (vector).
/// `f = mean log(1 + exp(−y·(x·wᵀ + b)))`, `y ∈ {−1, 1}`.
pub struct LogisticRegression {
    x: Array2<f64>,
    y: ndarray::Array1<f64>,
}

impl LogisticRegression {
    /// The instance for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let x = gaussian(&mut rng, 128, 5, 1.0);
        let teacher = gaussian(&mut rng, 5, 1, 1.0);
        let noise = gaussian(&mut rng, 128, 1, 0.5);
        let y = (x.dot(&teacher) + noise)
            .column(0)
            .mapv(|v| if v > 0.0 { 1.0 } else { -1.0 });
        LogisticRegression { x, y }
    }
}

impl Problem for LogisticRegression {
    fn name(&self) -> &'static str {
        "logistic"
    }
    fn init(&self) -> Vec<(Role, ArrayD<f64>)> {
        vec![
            (Role::Head, ArrayD::zeros(IxDyn(&[1, 5]))),
            (Role::Vector, ArrayD::zeros(IxDyn(&[1]))),
        ]
    }
    fn loss_grad(&self, params: &[ArrayD<f64>], grads: &mut [ArrayD<f64>]) -> f64 {
        let w = m2(&params[0]);
        let b = params[1][[0]];
        let z = self.x.dot(&w.t()).column(0).mapv(|v| v + b);
        let n = self.y.len() as f64;
        let mut loss = 0.0;
        // dℓ/dz = −y·σ(−y·z)
        let dz = ndarray::Array1::from_iter(z.iter().zip(self.y.iter()).map(|(&z, &y)| {
            let m = -y * z;
            loss += if m > 0.0 {
                m + (-m).exp().ln_1p()
            } else {
                m.exp().ln_1p()
            };
            -y / (1.0 + (-m).exp()) / n
        }));
        grads[0].assign(&dz.view().insert_axis(Axis(0)).dot(&self.x).into_dyn());
        grads[1][[0]] = dz.sum();
        loss / n
    }
}

/// A 2 → 32 → 32 → 2 tanh MLP with softmax cross-entropy on a generated
/// two-spirals dataset (256 points): input layer (embedding role, 32×2),
/// hidden layer (32×32), output layer (head, 2×32) and three biases.
pub struct Mlp {
    x: Array2<f64>,
    y: Vec<usize>,
    seed: u64,
}

impl Mlp {
    /// The dataset and initialization for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = 256;
        let mut x = Array2::zeros((n, 2));
        let mut y = vec![0; n];
        for i in 0..n {
            let class = i % 2;
            let t = (i / 2) as f64 / (n / 2) as f64 * 3.0 * core::f64::consts::PI + 0.3;
            let r = t / (3.0 * core::f64::consts::PI);
            let sgn = if class == 0 { 1.0 } else { -1.0 };
            let jitter: f64 = StandardNormal.sample(&mut rng);
            x[[i, 0]] = sgn * r * t.cos() + 0.02 * jitter;
            x[[i, 1]] = sgn * r * t.sin() + 0.02 * jitter;
            y[i] = class;
        }
        Mlp { x, y, seed }
    }

    /// The same model (same initialization) on shard `rank` of `size` of
    /// the dataset: points `i` with `i mod size = rank`, for data-parallel
    /// training. With `size` dividing 256 every shard has `256/size`
    /// points, and the average of the shards' gradients is the full-batch
    /// gradient. `None` when `size = 0` or `rank ≥ size`.
    pub fn shard(&self, rank: usize, size: usize) -> Option<Self> {
        if size == 0 || rank >= size {
            return None;
        }
        let keep: Vec<usize> = (rank..self.y.len()).step_by(size).collect();
        Some(Mlp {
            x: self.x.select(Axis(0), &keep),
            y: keep.iter().map(|&i| self.y[i]).collect(),
            seed: self.seed,
        })
    }

    /// Classification accuracy of `params` on the dataset.
    pub fn accuracy(&self, params: &[ArrayD<f64>]) -> f64 {
        let (_, _, logits) = self.forward(params);
        let ok = logits
            .rows()
            .into_iter()
            .zip(&self.y)
            .filter(|(r, y)| (r[1] > r[0]) == (**y == 1))
            .count();
        ok as f64 / self.y.len() as f64
    }

    fn forward(&self, p: &[ArrayD<f64>]) -> (Array2<f64>, Array2<f64>, Array2<f64>) {
        let bias = |v: &ArrayD<f64>| {
            v.view()
                .into_dimensionality::<ndarray::Ix1>()
                .expect("bias")
                .to_owned()
        };
        let h1 = (self.x.dot(&m2(&p[0]).t()) + bias(&p[1])).mapv(f64::tanh);
        let h2 = (h1.dot(&m2(&p[2]).t()) + bias(&p[3])).mapv(f64::tanh);
        let logits = h2.dot(&m2(&p[4]).t()) + bias(&p[5]);
        (h1, h2, logits)
    }
}

impl Problem for Mlp {
    fn name(&self) -> &'static str {
        "mlp"
    }
    fn init(&self) -> Vec<(Role, ArrayD<f64>)> {
        let mut rng = StdRng::seed_from_u64(self.seed + 1);
        // Uniform-variance (1/fan_in) Gaussian init.
        vec![
            (
                Role::Embedding,
                gaussian(&mut rng, 32, 2, (1.0f64 / 2.0).sqrt()).into_dyn(),
            ),
            (Role::Vector, ArrayD::zeros(IxDyn(&[32]))),
            (
                Role::Hidden,
                gaussian(&mut rng, 32, 32, (1.0f64 / 32.0).sqrt()).into_dyn(),
            ),
            (Role::Vector, ArrayD::zeros(IxDyn(&[32]))),
            (
                Role::Head,
                gaussian(&mut rng, 2, 32, (1.0f64 / 32.0).sqrt()).into_dyn(),
            ),
            (Role::Vector, ArrayD::zeros(IxDyn(&[2]))),
        ]
    }
    fn loss_grad(&self, p: &[ArrayD<f64>], g: &mut [ArrayD<f64>]) -> f64 {
        let (h1, h2, logits) = self.forward(p);
        let n = self.y.len() as f64;
        let mut loss = 0.0;
        let mut d3 = logits.clone();
        for (i, mut row) in d3.rows_mut().into_iter().enumerate() {
            let mx = row.fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            row.mapv_inplace(|v| (v - mx).exp());
            let s = row.sum();
            row.mapv_inplace(|v| v / s);
            loss -= row[self.y[i]].ln();
            row[self.y[i]] -= 1.0;
            row.mapv_inplace(|v| v / n);
        }
        g[4].assign(&d3.t().dot(&h2).into_dyn());
        g[5].assign(&d3.sum_axis(Axis(0)).into_dyn());
        let d2 = d3.dot(&m2(&p[4])) * h2.mapv(|v| 1.0 - v * v);
        g[2].assign(&d2.t().dot(&h1).into_dyn());
        g[3].assign(&d2.sum_axis(Axis(0)).into_dyn());
        let d1 = d2.dot(&m2(&p[2])) * h1.mapv(|v| 1.0 - v * v);
        g[0].assign(&d1.t().dot(&self.x).into_dyn());
        g[1].assign(&d1.sum_axis(Axis(0)).into_dyn());
        loss / n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central finite differences against the hand-written gradients.
    fn check(p: &dyn Problem) {
        let params: Vec<ArrayD<f64>> = p.init().into_iter().map(|(_, t)| t).collect();
        // Move off the (often symmetric) initial point.
        let params: Vec<ArrayD<f64>> = params
            .iter()
            .enumerate()
            .map(|(k, t)| t.mapv(|v| v + 0.05 * (k as f64 + 1.0)))
            .collect();
        let mut g: Vec<ArrayD<f64>> = params.iter().map(|t| t.clone() * 0.0).collect();
        p.loss_grad(&params, &mut g);
        let mut scratch = g.clone();
        let h = 1e-6;
        // Every entry of small blocks; in larger ones a stride coprime to
        // the row length, so every row and every column is hit, plus the
        // last entry (one perturbed copy, restored exactly after each).
        fn gcd(a: usize, b: usize) -> usize {
            if b == 0 { a } else { gcd(b, a % b) }
        }
        let mut x = params.clone();
        for (b, t) in params.iter().enumerate() {
            let cols = t.shape().last().copied().unwrap_or(1).max(1);
            let stride = if t.len() <= 64 {
                1
            } else {
                (7..).find(|&s| gcd(s, cols) == 1).unwrap()
            };
            let mut picked: Vec<usize> = (0..t.len()).step_by(stride).collect();
            if picked.last() != Some(&(t.len() - 1)) {
                picked.push(t.len() - 1);
            }
            let (rows_hit, cols_hit): (
                std::collections::BTreeSet<_>,
                std::collections::BTreeSet<_>,
            ) = picked.iter().map(|&i| (i / cols, i % cols)).unzip();
            assert_eq!(
                (rows_hit.len(), cols_hit.len()),
                (t.len() / cols, cols),
                "{} block {b}: the sample misses a row or a column",
                p.name()
            );
            for idx in picked {
                let v = t.as_slice().unwrap()[idx];
                x[b].as_slice_mut().unwrap()[idx] = v + h;
                let lp = p.loss_grad(&x, &mut scratch);
                x[b].as_slice_mut().unwrap()[idx] = v - h;
                let lm = p.loss_grad(&x, &mut scratch);
                x[b].as_slice_mut().unwrap()[idx] = v;
                let fd = (lp - lm) / (2.0 * h);
                let an = g[b].as_slice().unwrap()[idx];
                assert!(
                    (fd - an).abs() < 1e-6 * (1.0 + an.abs()),
                    "{} block {b} entry {idx}: {fd} vs {an}",
                    p.name()
                );
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        check(&Quadratic::new(1));
        check(&LogisticRegression::new(2));
        check(&Mlp::new(3));
        check(&Mlp::new(3).shard(1, 4).expect("shard"));
    }

    /// The average of the shards' gradients is the full-batch gradient
    /// (to rounding: the sums run in another order), and bad shards are
    /// refused.
    #[test]
    fn shard_gradients_average_to_the_full_batch() {
        let p = Mlp::new(3);
        let params: Vec<ArrayD<f64>> = p.init().into_iter().map(|(_, t)| t).collect();
        let mut full: Vec<ArrayD<f64>> = params.iter().map(|t| t.mapv(|_| 0.0)).collect();
        let loss = p.loss_grad(&params, &mut full);
        for size in [1, 2, 4, 8] {
            let mut avg: Vec<ArrayD<f64>> = full.iter().map(|t| t.mapv(|_| 0.0)).collect();
            let mut avg_loss = 0.0;
            for r in 0..size {
                let s = p.shard(r, size).expect("shard");
                let mut g = avg.clone();
                avg_loss += s.loss_grad(&params, &mut g) / size as f64;
                for (a, b) in avg.iter_mut().zip(&g) {
                    *a = &*a + &(b / size as f64);
                }
            }
            assert!((avg_loss - loss).abs() <= 1e-14 * loss.abs());
            for (a, f) in avg.iter().zip(&full) {
                let e = (a - f).mapv(f64::abs).sum();
                assert!(
                    e <= 1e-13 * (1.0 + f.mapv(f64::abs).sum()),
                    "size {size}: {e:e}"
                );
            }
        }
        assert!(p.shard(2, 2).is_none() && p.shard(0, 0).is_none());
    }
}
