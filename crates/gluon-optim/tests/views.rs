//! Tensors that are not one matrix (`LmoGroup::view`, SPEC §1 and §3): a
//! step on a flattened kernel, on a batch of heads or on a split QKV matrix
//! is the step the same optimizer takes on the matrices themselves, cut out
//! by ndarray (reshape, `index_axis`, row slices) and stepped as blocks of
//! their own (constant radius, so the radius does not couple the pieces).

use gluon_optim::{
    Config, GroupConfig, Label, LmoGroup, NormSpec, Optimizer, Orth, Radius, ShapeScale, View,
};
use lmo_ndarray::Nd64;
use ndarray::{ArrayD, Axis, IxDyn, concatenate, s};
use orthogonalize::NsConfig;
use rand::{Rng, SeedableRng, rngs::StdRng};

fn random(dims: &[usize], rng: &mut StdRng) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(dims), |_| rng.random_range(-1.0..1.0))
}

/// Muon-like hidden group (NS5, Nesterov, Muon's shape factor, weight
/// decay) with view `v`.
fn config(v: View) -> Config {
    Config::new().group(
        Label::Hidden,
        GroupConfig::Lmo(
            LmoGroup::new(
                NormSpec::Spectral(Orth::NewtonSchulz(NsConfig::muon())),
                Radius::Constant(0.05),
            )
            .shape_scale(ShapeScale::MuonRatio)
            .beta(0.9)
            .nesterov(true)
            .weight_decay(0.1)
            .view(v),
        ),
    )
}

/// Steps `x` (one tensor, view `v`) and `pieces` (the same numbers cut into
/// matrices, view `AsIs`, one block each) 5 times with the same gradients
/// (cut the same way by `cut`), and checks the results agree exactly.
fn same_as_pieces(
    v: View,
    x: ArrayD<f64>,
    cut: impl Fn(&ArrayD<f64>) -> Vec<ArrayD<f64>>,
    rng: &mut StdRng,
) {
    let mut whole = vec![x.clone()];
    let mut parts = cut(&x);
    let mut a = Optimizer::<Nd64>::new(config(v), vec![Label::Hidden], &whole).unwrap();
    let mut b =
        Optimizer::<Nd64>::new(config(View::AsIs), vec![Label::Hidden; parts.len()], &parts)
            .unwrap();
    for _ in 0..5 {
        let g = random(x.shape(), rng);
        let ra = a
            .step(&mut whole, std::slice::from_ref(&g))
            .unwrap()
            .clone();
        let rb = b.step(&mut parts, &cut(&g)).unwrap().clone();
        assert_eq!(cut(&whole[0]), parts);
        // The block's dual norm is the sum of the pieces' (product norm
        // with the max).
        let sum: f64 = rb.blocks.iter().map(|r| r.dual_norm).sum();
        assert!((ra.blocks[0].dual_norm - sum).abs() <= 1e-12 * sum);
    }
    assert_ne!(whole[0], x, "the step moved nothing");
}

#[test]
fn a_flattened_kernel_steps_as_its_matrix() {
    let mut rng = StdRng::seed_from_u64(1);
    let x = random(&[6, 4, 3, 3], &mut rng);
    same_as_pieces(
        View::Flatten,
        x,
        |t| vec![t.clone().into_shape_with_order(IxDyn(&[6, 36])).unwrap()],
        &mut rng,
    );
}

#[test]
fn a_batch_of_heads_steps_as_its_heads() {
    let mut rng = StdRng::seed_from_u64(2);
    let x = random(&[3, 8, 4], &mut rng);
    same_as_pieces(
        View::Batch,
        x,
        |t| {
            (0..3)
                .map(|h| t.index_axis(Axis(0), h).to_owned().into_dyn())
                .collect()
        },
        &mut rng,
    );
}

#[test]
fn a_split_qkv_steps_as_its_parts() {
    let mut rng = StdRng::seed_from_u64(3);
    let x = random(&[10, 4], &mut rng);
    let rows = [(0, 6), (6, 8), (8, 10)];
    same_as_pieces(
        View::SplitRows(vec![6, 2, 2]),
        x,
        |t| {
            rows.iter()
                .map(|&(a, b)| t.slice(s![a..b, ..]).to_owned().into_dyn())
                .collect()
        },
        &mut rng,
    );
    // The cut is a partition: the parts put back together are the tensor.
    let t = random(&[10, 4], &mut rng);
    let parts: Vec<_> = rows
        .iter()
        .map(|&(a, b)| {
            t.slice(s![a..b, ..])
                .into_dimensionality::<ndarray::Ix2>()
                .unwrap()
        })
        .collect();
    assert_eq!(concatenate(Axis(0), &parts).unwrap().into_dyn(), t);
}

#[test]
fn split_sizes_that_do_not_cover_the_rows_are_refused_even_one_part() {
    let x = vec![ArrayD::<f64>::zeros(IxDyn(&[3, 4]))];
    for sizes in [vec![5], vec![0], vec![1, 1]] {
        let e = Optimizer::<Nd64>::new(
            config(View::SplitRows(sizes.clone())),
            vec![Label::Hidden],
            &x,
        )
        .err();
        assert!(
            matches!(
                e,
                Some(gluon_optim::OptError::Lmo {
                    block: 0,
                    error: lmo_core::LmoError::InvalidHyperParameter(_)
                })
            ),
            "{sizes:?}: {e:?}"
        );
    }
    // One part covering every row is the matrix itself.
    assert!(
        Optimizer::<Nd64>::new(config(View::SplitRows(vec![3])), vec![Label::Hidden], &x).is_ok()
    );
}
