//! The tch backend against the ndarray backend (the CPU reference) on
//! identical inputs: every Backend op, every norm's LMO, and whole
//! optimizer steps of every preset. f64 agrees to rounding (1e-10
//! relative); f32 within f32 tolerance (1e-4 relative after several
//! steps); bf16 storage within bf16's rounding of the f32 result.

use gluon_optim::presets::{self, ScionRadii};
use gluon_optim::{AdamWGroup, Config, Label, Optimizer};
use lmo_core::{
    Backend, ColNorm, Frobenius, L1, Norm, RowNorm, SignInf, Spectral, Trans, VectorRms,
};
use lmo_ndarray::{Nd32, Nd64};
use lmo_tch::{Tch32, Tch64, TchTensor};
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;
use tch::{Device, Kind, Tensor};

fn randn(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.sample(StandardNormal)).collect()
}

fn nd64(v: &[f64], dims: &[usize]) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(dims), v.to_vec()).unwrap()
}

fn nd32(v: &[f64], dims: &[usize]) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(dims), v.iter().map(|&x| x as f32).collect()).unwrap()
}

fn tt(v: &[f64], dims: &[usize], kind: Kind) -> TchTensor {
    let d: Vec<i64> = dims.iter().map(|&x| x as i64).collect();
    TchTensor::new(Tensor::from_slice(v).view(d.as_slice()).to_kind(kind))
}

fn host(t: &TchTensor) -> Vec<f64> {
    let c = t.copy();
    let n = c.numel();
    let mut v = vec![0.0; n];
    c.to_kind(Kind::Double).contiguous().copy_data(&mut v, n);
    v
}

/// max |a − b| / max(1, max |b|); a NaN difference counts as +∞.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1.0f64, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (x - y).abs();
            if d.is_nan() { f64::INFINITY } else { d }
        })
        .fold(0.0, f64::max)
        / scale
}

#[test]
fn backend_ops_match_ndarray_f64() {
    let mut rng = StdRng::seed_from_u64(1);
    let (m, n) = (7, 5);
    let a = randn(&mut rng, m * n);
    let b = randn(&mut rng, m * n);
    let (an, bn) = (nd64(&a, &[m, n]), nd64(&b, &[m, n]));
    let (at, bt) = (tt(&a, &[m, n], Kind::Double), tt(&b, &[m, n], Kind::Double));
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * (1.0 + y.abs());
    assert!(close(Tch64::dot(&at, &bt), Nd64::dot(&an, &bn)));
    assert!(close(Tch64::sum_abs(&at), Nd64::sum_abs(&an)));
    assert!(close(Tch64::norm2(&at), Nd64::norm2(&an)));
    assert_eq!(Tch64::argmax_abs(&at), Nd64::argmax_abs(&an));
    let (mut c1, mut c2) = (vec![0.0; n], vec![0.0; n]);
    Tch64::col_norms(&at, &mut c1);
    Nd64::col_norms(&an, &mut c2);
    assert!(rel(&c1, &c2) < 1e-12);
    let (mut r1, mut r2) = (vec![0.0; m], vec![0.0; m]);
    Tch64::row_norms(&at, &mut r1);
    Nd64::row_norms(&an, &mut r2);
    assert!(rel(&r1, &r2) < 1e-12);

    // Elementwise ops.
    let (mut ot, mut on) = (Tch64::zeros_like(&at), Nd64::zeros_like(&an));
    Tch64::sign(-0.5, &at, &mut ot);
    Nd64::sign(-0.5, &an, &mut on);
    assert_eq!(host(&ot), on.iter().copied().collect::<Vec<_>>());
    Tch64::axpby(0.3, &at, -1.7, &mut ot);
    Nd64::axpby(0.3, &an, -1.7, &mut on);
    assert!(rel(&host(&ot), on.as_slice().unwrap()) < 1e-14);
    let s: Vec<f64> = (0..n).map(|k| k as f64 - 1.5).collect();
    Tch64::scale_cols(&at, &s, &mut ot);
    Nd64::scale_cols(&an, &s, &mut on);
    assert!(rel(&host(&ot), on.as_slice().unwrap()) < 1e-14);
    let s: Vec<f64> = (0..m).map(|k| 0.5 * k as f64 - 1.0).collect();
    Tch64::scale_rows(&at, &s, &mut ot);
    Nd64::scale_rows(&an, &s, &mut on);
    assert!(rel(&host(&ot), on.as_slice().unwrap()) < 1e-14);
    Tch64::set(&mut ot, 12, 9.0);
    Nd64::set(&mut on, 12, 9.0);
    assert_eq!(host(&ot)[12], 9.0);
    assert!(rel(&host(&ot), on.as_slice().unwrap()) < 1e-14);

    // Products, every transposition.
    for (ta, tb, cm, cn) in [(Trans::No, Trans::Yes, m, m), (Trans::Yes, Trans::No, n, n)] {
        let c0 = randn(&mut rng, cm * cn);
        let (mut ct, mut cnd) = (tt(&c0, &[cm, cn], Kind::Double), nd64(&c0, &[cm, cn]));
        Tch64::gemm(0.7, &at, ta, &bt, tb, -0.4, &mut ct);
        Nd64::gemm(0.7, &an, ta, &bn, tb, -0.4, &mut cnd);
        assert!(rel(&host(&ct), cnd.as_slice().unwrap()) < 1e-13);
    }
    let (mut st, mut sn) = (
        tt(&vec![0.0; m * m], &[m, m], Kind::Double),
        nd64(&vec![0.0; m * m], &[m, m]),
    );
    Tch64::syrk(1.3, &at, 0.0, &mut st);
    Nd64::syrk(1.3, &an, 0.0, &mut sn);
    assert!(rel(&host(&st), sn.as_slice().unwrap()) < 1e-13);
    let (mut tr_t, mut tr_n) = (
        tt(&vec![0.0; m * n], &[n, m], Kind::Double),
        nd64(&vec![0.0; m * n], &[n, m]),
    );
    Tch64::transpose_into(2.0, &at, &mut tr_t);
    Nd64::transpose_into(2.0, &an, &mut tr_n);
    assert!(rel(&host(&tr_t), tr_n.as_slice().unwrap()) < 1e-15);

    // Host copies round-trip.
    let mut buf = vec![0.0; m * n];
    Tch64::copy_to_slice(&at, &mut buf);
    assert_eq!(buf, a);
    let mut z = Tch64::zeros_like(&at);
    Tch64::copy_from_slice(&b, &mut z);
    assert_eq!(host(&z), b);
    assert!(!Tch64::all_finite(&tt(
        &[1.0, f64::NAN],
        &[2],
        Kind::Double
    )));
    assert!(Tch64::all_finite(&at));
}

#[test]
fn norms_do_not_overflow_in_f32_or_f64() {
    for kind in [Kind::Float, Kind::Double] {
        let big = tt(&[3e30, 4e30], &[2], kind);
        let tiny = tt(&[3e-30, 4e-30], &[2], kind);
        let (nb, nt) = if kind == Kind::Float {
            (Tch32::norm2(&big) as f64, Tch32::norm2(&tiny) as f64)
        } else {
            (Tch64::norm2(&big), Tch64::norm2(&tiny))
        };
        assert!((nb / 5e30 - 1.0).abs() < 1e-6, "{kind:?}: {nb}");
        assert!((nt / 5e-30 - 1.0).abs() < 1e-6, "{kind:?}: {nt}");
    }
    let huge = tt(&[1e300, 1e300], &[1, 2], Kind::Double);
    let mut out = [0.0];
    Tch64::row_norms(&huge, &mut out);
    assert!((out[0] / (1e300 * 2f64.sqrt()) - 1.0).abs() < 1e-12);
}

/// Every norm's LMO on the same matrix: the same direction and the same
/// `<g, lmo(g)>` (SPEC §1) on both backends, in f64.
#[test]
fn every_lmo_matches_ndarray_f64() {
    let mut rng = StdRng::seed_from_u64(2);
    let (m, n) = (6, 9);
    let g = randn(&mut rng, m * n);
    let (gt, gn) = (tt(&g, &[m, n], Kind::Double), nd64(&g, &[m, n]));
    fn check<NT: Norm<Tch64>, NN: Norm<Nd64>>(
        mut a: NT,
        mut b: NN,
        gt: &TchTensor,
        gn: &ArrayD<f64>,
    ) {
        let (mut dt, mut dn) = (Tch64::zeros_like(gt), Nd64::zeros_like(gn));
        let it = a.lmo(gt, &mut dt).unwrap();
        let inn = b.lmo(gn, &mut dn).unwrap();
        assert!(
            (it - inn).abs() < 1e-9 * (1.0 + inn.abs()),
            "{}: {it} vs {inn}",
            a.name()
        );
        assert!(
            rel(&host(&dt), dn.as_slice().unwrap()) < 1e-9,
            "{}",
            a.name()
        );
        let (x, y) = (a.dual_norm(gt).unwrap(), b.dual_norm(gn).unwrap());
        assert!((x - y).abs() < 1e-9 * y, "{}", a.name());
    }
    check(Frobenius::new(), Frobenius::new(), &gt, &gn);
    check(SignInf::new(), SignInf::new(), &gt, &gn);
    check(L1::new(), L1::new(), &gt, &gn);
    check(ColNorm::<f64>::new(), ColNorm::<f64>::new(), &gt, &gn);
    check(RowNorm::<f64>::new(), RowNorm::<f64>::new(), &gt, &gn);
    check(VectorRms::new(), VectorRms::new(), &gt, &gn);
    check(Spectral::<Tch64>::new(), Spectral::<Nd64>::new(), &gt, &gn);
    check(
        Spectral::<Tch64>::new().rms_to_rms(),
        Spectral::<Nd64>::new().rms_to_rms(),
        &gt,
        &gn,
    );
    // The spectral norms from libtorch's SVD against the Jacobi SVD.
    let (smax, nuc) = Tch64::spectral_norms(&gt).unwrap();
    let (a, b) = (
        Spectral::<Nd64>::new().norm(&gn).unwrap(),
        Spectral::<Nd64>::new().dual_norm(&gn).unwrap(),
    );
    assert!((smax - a).abs() < 1e-12 * a && (nuc - b).abs() < 1e-12 * b);
}

/// Labels and shapes of a small MLP-like model with every group.
fn model(rng: &mut StdRng) -> (Vec<Label>, Vec<Vec<usize>>, Vec<Vec<f64>>) {
    let spec = [
        (Label::Embedding, vec![16, 8]),
        (Label::Hidden, vec![8, 12]),
        (Label::Hidden, vec![12, 8]),
        (Label::Vector, vec![8]),
        (Label::Head, vec![8, 5]),
    ];
    let labels = spec.iter().map(|s| s.0.clone()).collect();
    let dims: Vec<Vec<usize>> = spec.iter().map(|s| s.1.clone()).collect();
    let vals = dims
        .iter()
        .map(|d| {
            randn(rng, d.iter().product())
                .iter()
                .map(|x| 0.3 * x)
                .collect()
        })
        .collect();
    (labels, dims, vals)
}

fn configs() -> Vec<(&'static str, Config)> {
    let adam = AdamWGroup {
        lr: 0.01,
        weight_decay: 0.1,
        ..Default::default()
    };
    let radii = ScionRadii {
        hidden: 10.0,
        embedding_head: 10.0,
        vector: 1.0,
    };
    vec![
        ("adamw", presets::adamw(adam)),
        ("muon", presets::muon(0.05, 0.01)),
        ("scion", presets::scion_with(0.05, false, radii)),
        ("scion-constrained", presets::scion_with(0.05, true, radii)),
        ("gluon", presets::gluon((0.5, 2.0), (0.5, 1.0), 0.9)),
        ("normalized-sgd", presets::normalized_sgd(0.05, 0.9)),
        ("sign-sgd", presets::sign_sgd(0.01, 0.9)),
    ]
}

/// Runs `steps` steps of `cfg` with the same gradients on both backends
/// and returns the final parameters (tch, ndarray), flattened.
fn run_both<T, N>(
    cfg: &Config,
    steps: usize,
    to_t: impl Fn(&[f64], &[usize]) -> T::Tensor,
    to_n: impl Fn(&[f64], &[usize]) -> N::Tensor,
    read_t: impl Fn(&T::Tensor) -> Vec<f64>,
    read_n: impl Fn(&N::Tensor) -> Vec<f64>,
) -> (Vec<f64>, Vec<f64>)
where
    T: lmo_core::Bf16Storage,
    N: lmo_core::Bf16Storage,
    T::Tensor: Send + Sync,
    N::Tensor: Send + Sync,
{
    let mut rng = StdRng::seed_from_u64(3);
    let (labels, dims, vals) = model(&mut rng);
    let mut pt: Vec<T::Tensor> = vals.iter().zip(&dims).map(|(v, d)| to_t(v, d)).collect();
    let mut pn: Vec<N::Tensor> = vals.iter().zip(&dims).map(|(v, d)| to_n(v, d)).collect();
    let mut ot = Optimizer::<T>::new(cfg.clone(), labels.clone(), &pt).unwrap();
    let mut on = Optimizer::<N>::new(cfg.clone(), labels, &pn).unwrap();
    for _ in 0..steps {
        let gv: Vec<Vec<f64>> = dims
            .iter()
            .map(|d| randn(&mut rng, d.iter().product()))
            .collect();
        let gt: Vec<T::Tensor> = gv.iter().zip(&dims).map(|(v, d)| to_t(v, d)).collect();
        let gn: Vec<N::Tensor> = gv.iter().zip(&dims).map(|(v, d)| to_n(v, d)).collect();
        let rt = ot.step(&mut pt, &gt).unwrap().clone();
        let rn = on.step(&mut pn, &gn).unwrap().clone();
        for (a, b) in rt.blocks.iter().zip(&rn.blocks) {
            assert!((a.radius - b.radius).abs() <= 1e-4 * (1.0 + b.radius.abs()));
        }
    }
    (
        pt.iter().flat_map(&read_t).collect(),
        pn.iter().flat_map(&read_n).collect(),
    )
}

#[test]
fn optimizer_steps_match_ndarray_f64() {
    for (name, cfg) in configs() {
        let (a, b) = run_both::<Tch64, Nd64>(
            &cfg,
            5,
            |v, d| tt(v, d, Kind::Double),
            nd64,
            host,
            |x| x.iter().copied().collect(),
        );
        let e = rel(&a, &b);
        assert!(e < 1e-10, "{name}: f64 relative difference {e:e}");
    }
}

#[test]
fn optimizer_steps_match_ndarray_f32() {
    for (name, cfg) in configs() {
        let (a, b) = run_both::<Tch32, Nd32>(
            &cfg,
            5,
            |v, d| tt(v, d, Kind::Float),
            nd32,
            host,
            |x| x.iter().map(|&y| y as f64).collect(),
        );
        let e = rel(&a, &b);
        // sign-based LMOs flip with an entry's sign: the inputs are the
        // same f32 numbers, so rounding stays at f32 level.
        assert!(e < 1e-4, "{name}: f32 relative difference {e:e}");
    }
}

/// bf16 storage (what PyTorch Muon uses on GPUs): the Muon step on bf16
/// tensors agrees with the f32 step to bf16's resolution (8 bits: 2⁻⁸
/// relative per rounding, a few roundings per step).
#[test]
fn bf16_muon_step_tracks_f32() {
    let cfg = presets::muon(0.05, 0.01);
    let (b, f) = run_both::<Tch32, Tch32>(
        &cfg,
        3,
        |v, d| tt(v, d, Kind::BFloat16),
        |v, d| tt(v, d, Kind::Float),
        host,
        host,
    );
    let e = rel(&b, &f);
    assert!(e < 3e-2, "bf16 vs f32: {e:e}");
    assert!(e > 0.0, "bf16 storage must round");
}

#[test]
fn device_is_reported() {
    // CUDA tests live in the CUDA suite; here say what ran.
    let cuda = tch::Cuda::is_available();
    eprintln!(
        "libtorch {} threads, CUDA available: {cuda}{}",
        tch::get_num_threads(),
        if cuda { "" } else { " (GPU checks skipped)" }
    );
    let t = TchTensor::new(Tensor::ones([2, 2], (Kind::Float, Device::Cpu)));
    assert_eq!(Tch32::norm2(&t), 2.0);
}
