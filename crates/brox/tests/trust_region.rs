//! The trust-region method ("BPM on a model of f") on classic problems.

use brox::{BroxError, Model, Objective, TrOptions, trust_region};
use lmo_core::{Frobenius, SignInf, Spectral};
use lmo_ndarray::Nd64;
use ndarray::{ArrayD, IxDyn};

/// A zero f64 tensor of shape `dims` (the linear model's `like`).
fn zeros(dims: &[usize]) -> ArrayD<f64> {
    ArrayD::zeros(IxDyn(dims))
}

/// Rosenbrock in 2-D with exact Hessian-vector products.
struct Rosenbrock;

impl Objective for Rosenbrock {
    fn dim(&self) -> usize {
        2
    }
    fn value(&self, x: &[f64]) -> f64 {
        (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2)
    }
    fn gradient(&self, x: &[f64], g: &mut [f64]) {
        g[0] = -2.0 * (1.0 - x[0]) - 400.0 * x[0] * (x[1] - x[0] * x[0]);
        g[1] = 200.0 * (x[1] - x[0] * x[0]);
    }
    fn hessian_vector(&self, x: &[f64], v: &[f64], out: &mut [f64]) -> bool {
        let h00 = 2.0 - 400.0 * x[1] + 1200.0 * x[0] * x[0];
        let h01 = -400.0 * x[0];
        out[0] = h00 * v[0] + h01 * v[1];
        out[1] = h01 * v[0] + 200.0 * v[1];
        true
    }
}

/// ½‖W − C‖_F² on 3×4 matrices (no Hessian products given).
struct MatrixDistance;

impl Objective for MatrixDistance {
    fn dim(&self) -> usize {
        12
    }
    fn value(&self, x: &[f64]) -> f64 {
        x.iter()
            .enumerate()
            .map(|(i, v)| 0.5 * (v - i as f64 / 4.0).powi(2))
            .sum()
    }
    fn gradient(&self, x: &[f64], g: &mut [f64]) {
        g.iter_mut()
            .zip(x)
            .enumerate()
            .for_each(|(i, (g, v))| *g = v - i as f64 / 4.0);
    }
}

#[test]
fn quadratic_model_solves_rosenbrock() {
    let r = trust_region::<Nd64, Frobenius>(
        &Rosenbrock,
        &mut Model::Quadratic,
        &[-1.2, 1.0],
        &TrOptions::default(),
    )
    .unwrap();
    assert!(r.converged, "{:?}", r.history.last());
    assert!(
        (r.x[0] - 1.0).abs() < 1e-6 && (r.x[1] - 1.0).abs() < 1e-6,
        "{:?}",
        r.x
    );
    // Accepted steps never increase f.
    let acc: Vec<f64> = r
        .history
        .iter()
        .filter(|h| h.accepted)
        .map(|h| h.f)
        .collect();
    assert!(acc.windows(2).all(|w| w[1] <= w[0]));
    assert!(r.history.len() < 100);
}

#[test]
fn linear_models_decrease_f_in_any_norm() {
    let opts = TrOptions {
        t0: 0.5,
        max_iter: 300,
        grad_tol: 1e-6,
        ..Default::default()
    };
    let x0 = vec![0.0; 12];
    let f0 = MatrixDistance.value(&x0);
    let runs = [
        trust_region(
            &MatrixDistance,
            &mut Model::<Nd64, _>::Linear {
                norm: Frobenius::new(),
                like: zeros(&[12]),
            },
            &x0,
            &opts,
        ),
        trust_region(
            &MatrixDistance,
            &mut Model::<Nd64, _>::Linear {
                norm: SignInf::new(),
                like: zeros(&[12]),
            },
            &x0,
            &opts,
        ),
        trust_region(
            &MatrixDistance,
            &mut Model::<Nd64, _>::Linear {
                norm: Spectral::new(),
                like: zeros(&[3, 4]),
            },
            &x0,
            &opts,
        ),
    ];
    for r in runs {
        let r = r.unwrap();
        let f = MatrixDistance.value(&r.x);
        assert!(f < 1e-6 * f0, "final f = {f}");
    }
    // The quadratic model needs Hessian products.
    let e = trust_region::<Nd64, Frobenius>(&MatrixDistance, &mut Model::Quadratic, &x0, &opts);
    assert!(matches!(e, Err(BroxError::InvalidInput(_))));
}

#[test]
fn bad_input() {
    let o = TrOptions::default();
    let mut m = Model::<Nd64, Frobenius>::Quadratic;
    assert!(matches!(
        trust_region(&Rosenbrock, &mut m, &[1.0], &o),
        Err(BroxError::DimensionMismatch { .. })
    ));
    assert!(matches!(
        trust_region(&Rosenbrock, &mut m, &[f64::NAN, 0.0], &o),
        Err(BroxError::NonFinite)
    ));
    let bad = TrOptions {
        t0: -1.0,
        ..Default::default()
    };
    assert!(matches!(
        trust_region(&Rosenbrock, &mut m, &[0.0, 0.0], &bad),
        Err(BroxError::InvalidInput(_))
    ));
    let mut lin = Model::<Nd64, _>::Linear {
        norm: Frobenius::new(),
        like: zeros(&[3]),
    };
    assert!(matches!(
        trust_region(&Rosenbrock, &mut lin, &[0.0, 0.0], &o),
        Err(BroxError::DimensionMismatch { .. })
    ));
}
