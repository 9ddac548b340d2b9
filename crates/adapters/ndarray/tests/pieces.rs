//! Views of tensors that are not one matrix (lmo-core's `View` and
//! `Pieces`, SPEC §1: "4-D convolution kernels are handled by reshaping …
//! the choice is explicit"): the product norm with the max over the pieces,
//! checked against references computed on the pieces cut out with ndarray
//! itself (reshape, `index_axis`, row slices) and against the defining
//! properties of a norm's LMO:
//! - `‖X‖ = max_i ‖X_i‖`, `‖G‖_* = Σ_i ‖G_i‖_*`, `lmo(G)` piecewise;
//! - `<G, lmo(G)> = −‖G‖_*`, `‖lmo(G)‖ = 1`, and `‖G‖_* ≥ <G, X>/‖X‖`
//!   for random `X` (the dual norm is the supremum);
//! - bad views and bad inputs are typed errors that leave `out` untouched.

use lmo_core::{Frobenius, LmoError, Norm, Pieces, Shape, Spectral, View};
use lmo_ndarray::Nd64;
use ndarray::{ArrayD, Axis, IxDyn, s};
use rand::{Rng, SeedableRng, rngs::StdRng};

type Dyn = Box<dyn Norm<Nd64> + Send>;

fn random(dims: &[usize], rng: &mut StdRng) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(dims), |_| rng.random_range(-1.0..1.0))
}

/// The `Pieces` norm of `view` on `dims` with a spectral (exact polar) norm
/// on every piece.
fn spectral_pieces(view: &View, dims: &[usize]) -> Result<Pieces<Nd64>, LmoError> {
    let shape = Shape::new(dims)?;
    let parts = view
        .pieces(&shape)?
        .into_iter()
        .map(|s| (s, Box::new(Spectral::<Nd64>::new()) as Dyn))
        .collect();
    Pieces::new(shape, parts)
}

/// The defining properties of an LMO on `g`, with random `x` for the
/// supremum: returns `(‖g‖_*, lmo(g))`.
fn check_lmo(n: &mut Pieces<Nd64>, g: &ArrayD<f64>, rng: &mut StdRng) -> (f64, ArrayD<f64>) {
    let mut d = ArrayD::zeros(g.raw_dim());
    let ip = n.lmo(g, &mut d).unwrap();
    let dual = n.dual_norm(g).unwrap();
    let recomputed: f64 = (g * &d).sum();
    assert!(
        (ip + dual).abs() <= 1e-10 * dual,
        "<G, lmo> = {ip}, dual {dual}"
    );
    assert!((recomputed - ip).abs() <= 1e-10 * dual);
    assert!((n.norm(&d).unwrap() - 1.0).abs() < 1e-10, "‖lmo(G)‖ ≠ 1");
    for _ in 0..20 {
        let x = random(g.shape(), rng);
        let bound = (g * &x).sum() / n.norm(&x).unwrap();
        assert!(
            dual >= bound - 1e-10 * dual,
            "dual {dual} < <G,X>/‖X‖ = {bound}"
        );
    }
    (dual, d)
}

#[test]
fn flatten_is_the_norm_of_the_reshaped_kernel() {
    let mut rng = StdRng::seed_from_u64(7);
    let dims = [4, 3, 2, 2];
    let g = random(&dims, &mut rng);
    let mut n = spectral_pieces(&View::Flatten, &dims).unwrap();
    assert_eq!(n.len(), 1);
    let (dual, d) = check_lmo(&mut n, &g, &mut rng);
    // Reference: the spectral LMO of the (4, 12) matrix ndarray reshapes.
    let flat = g.clone().into_shape_with_order(IxDyn(&[4, 12])).unwrap();
    let mut spec = Spectral::<Nd64>::new();
    let mut want = ArrayD::zeros(flat.raw_dim());
    let ip = spec.lmo(&flat, &mut want).unwrap();
    assert!((dual + ip).abs() < 1e-12 * dual);
    let got = d.into_shape_with_order(IxDyn(&[4, 12])).unwrap();
    assert!((&got - &want).iter().all(|v| v.abs() < 1e-12));
    // D Dᵀ = I for the 4×12 polar factor (full row rank).
    let m = got.into_dimensionality::<ndarray::Ix2>().unwrap();
    let ddt = m.dot(&m.t());
    for ((i, j), v) in ddt.indexed_iter() {
        let e = if i == j { 1.0 } else { 0.0 };
        assert!((v - e).abs() < 1e-10, "DDᵀ[{i},{j}] = {v}");
    }
}

#[test]
fn batch_steps_each_matrix_on_its_own() {
    let mut rng = StdRng::seed_from_u64(8);
    let dims = [3, 4, 5];
    let g = random(&dims, &mut rng);
    let x = random(&dims, &mut rng);
    let mut n = spectral_pieces(&View::Batch, &dims).unwrap();
    assert_eq!(n.len(), 3);
    let (dual, d) = check_lmo(&mut n, &g, &mut rng);
    let mut spec = Spectral::<Nd64>::new();
    let (mut sum, mut max) = (0.0, 0.0f64);
    for h in 0..3 {
        let gh = g.index_axis(Axis(0), h).to_owned().into_dyn();
        let mut want = ArrayD::zeros(gh.raw_dim());
        sum -= spec.lmo(&gh, &mut want).unwrap();
        let dh = d.index_axis(Axis(0), h);
        assert!((&dh - &want).iter().all(|v| v.abs() < 1e-12), "head {h}");
        let xh = x.index_axis(Axis(0), h).to_owned().into_dyn();
        max = max.max(spec.norm(&xh).unwrap());
    }
    assert!(
        (dual - sum).abs() < 1e-12 * sum,
        "dual {dual}, Σ nuclear {sum}"
    );
    assert!((n.norm(&x).unwrap() - max).abs() < 1e-12 * max);
}

#[test]
fn split_rows_is_a_fused_qkv_in_three_parts() {
    let mut rng = StdRng::seed_from_u64(9);
    let g = random(&[12, 4], &mut rng);
    let mut n = spectral_pieces(&View::SplitRows(vec![4, 4, 4]), &[12, 4]).unwrap();
    let (dual, d) = check_lmo(&mut n, &g, &mut rng);
    let mut spec = Spectral::<Nd64>::new();
    let mut sum = 0.0;
    for k in 0..3 {
        let gk = g.slice(s![4 * k..4 * (k + 1), ..]).to_owned().into_dyn();
        let mut want = ArrayD::zeros(gk.raw_dim());
        sum -= spec.lmo(&gk, &mut want).unwrap();
        let dk = d.slice(s![4 * k..4 * (k + 1), ..]);
        assert!((&dk - &want).iter().all(|v| v.abs() < 1e-12), "part {k}");
        // Each part of the direction is orthogonal: D_kᵀ D_k = I (4×4).
        let dk = dk.to_owned();
        let dtd = dk.t().dot(&dk);
        assert!(
            dtd.indexed_iter()
                .all(|((i, j), v)| (v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-10)
        );
    }
    assert!((dual - sum).abs() < 1e-12 * sum);
    // Uneven parts (a grouped-query QKV: q 8 rows, k and v 2 each).
    let mut n = spectral_pieces(&View::SplitRows(vec![8, 2, 2]), &[12, 4]).unwrap();
    check_lmo(&mut n, &g, &mut rng);
}

#[test]
fn frobenius_pieces_normalize_each_piece() {
    // Entrywise norms take pieces too: Frobenius per head is a different
    // norm from Frobenius on the whole (each head gets unit norm).
    let mut rng = StdRng::seed_from_u64(10);
    let dims = [2, 3, 3];
    let mut g = random(&dims, &mut rng);
    g.index_axis_mut(Axis(0), 1).mapv_inplace(|v| 100.0 * v);
    let shape = Shape::new(&dims).unwrap();
    let parts = View::Batch
        .pieces(&shape)
        .unwrap()
        .into_iter()
        .map(|s| (s, Box::new(Frobenius::new()) as Dyn))
        .collect();
    let mut n = Pieces::new(shape, parts).unwrap();
    let (_, d) = check_lmo(&mut n, &g, &mut rng);
    for h in 0..2 {
        let nh = d.index_axis(Axis(0), h).iter().map(|v| v * v).sum::<f64>();
        assert!((nh - 1.0).abs() < 1e-12, "head {h}: ‖D_h‖² = {nh}");
    }
}

#[test]
fn bad_views_and_inputs_are_typed_errors_that_change_nothing() {
    let v4 = Shape::new(&[4]).unwrap();
    let m = Shape::matrix(6, 2);
    assert_eq!(View::Flatten.pieces(&v4), Err(LmoError::UnsupportedRank(1)));
    assert_eq!(View::Batch.pieces(&v4), Err(LmoError::UnsupportedRank(1)));
    let conv = Shape::new(&[2, 3, 1, 1]).unwrap();
    assert_eq!(
        View::SplitRows(vec![1, 1]).pieces(&conv),
        Err(LmoError::UnsupportedRank(4))
    );
    for sizes in [vec![], vec![3, 0, 3], vec![3, 2], vec![usize::MAX, 7]] {
        assert!(
            matches!(
                View::SplitRows(sizes.clone()).pieces(&m),
                Err(LmoError::InvalidHyperParameter(_))
            ),
            "{sizes:?}"
        );
    }
    // Pieces that do not cover the tensor, and a piece its norm refuses.
    let two = vec![(
        Shape::matrix(3, 2),
        Box::new(Spectral::<Nd64>::new()) as Dyn,
    )];
    assert!(matches!(
        Pieces::new(m, two),
        Err(LmoError::InvalidHyperParameter(_))
    ));
    let vec_piece = vec![(Shape::vector(12), Box::new(Spectral::<Nd64>::new()) as Dyn)];
    assert_eq!(
        Pieces::new(m, vec_piece).err().map(|e| format!("{e:?}")),
        Some(format!("{:?}", LmoError::UnsupportedRank(1)))
    );
    // Wrong shapes and NaN: typed errors, output untouched.
    let mut n = spectral_pieces(&View::SplitRows(vec![3, 3]), &[6, 2]).unwrap();
    let g = ArrayD::<f64>::ones(IxDyn(&[6, 2]));
    let mut wrong = ArrayD::<f64>::from_elem(IxDyn(&[2, 6]), 5.0);
    assert!(matches!(
        n.lmo(&g, &mut wrong),
        Err(LmoError::ShapeMismatch { .. })
    ));
    assert!(wrong.iter().all(|&v| v == 5.0));
    let mut out = ArrayD::<f64>::from_elem(IxDyn(&[6, 2]), 5.0);
    let mut bad = g.clone();
    bad[[5, 1]] = f64::NAN;
    assert_eq!(n.lmo(&bad, &mut out), Err(LmoError::NonFinite));
    assert!(out.iter().all(|&v| v == 5.0));
    assert!(matches!(
        n.norm(&wrong),
        Err(LmoError::ShapeMismatch { .. })
    ));
}

#[test]
fn zero_input_and_an_empty_batch_give_zero() {
    let mut n = spectral_pieces(&View::Batch, &[2, 3, 3]).unwrap();
    let z = ArrayD::<f64>::zeros(IxDyn(&[2, 3, 3]));
    let mut out = ArrayD::<f64>::from_elem(IxDyn(&[2, 3, 3]), 5.0);
    assert_eq!(n.lmo(&z, &mut out).unwrap(), 0.0);
    assert!(out.iter().all(|&v| v == 0.0));
    let mut e = spectral_pieces(&View::Batch, &[0, 3, 3]).unwrap();
    assert!(e.is_empty());
    let z = ArrayD::<f64>::zeros(IxDyn(&[0, 3, 3]));
    let mut out = z.clone();
    assert_eq!(e.lmo(&z, &mut out).unwrap(), 0.0);
    assert_eq!(e.dual_norm(&z).unwrap(), 0.0);
    assert_eq!(e.norm(&z).unwrap(), 0.0);
}
