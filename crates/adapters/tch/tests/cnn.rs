//! A convolutional network trains with the default labelling and the
//! presets (issue: tensors that real models train). Convolution kernels
//! `(out, in, kh, kw)` are labelled hidden and the presets flatten them to
//! `(out, in·kh·kw)` (`View::Flatten`, SPEC §1), as KellerJordan/Muon does;
//! a hidden group that takes tensors as they are (`View::AsIs`) refuses them
//! when the optimizer is built, naming the variable's block and rank.

use gluon_optim::{GroupConfig, Label, OptError, View, presets};
use lmo_core::LmoError;
use lmo_tch::{TchOptError, VarStoreOptimizer, default_label};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Two convolutions, a pooling and a linear head over 8×8 images.
struct Cnn {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    head: nn::Linear,
}

impl Cnn {
    fn new(p: &nn::Path) -> Self {
        let pad = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        Cnn {
            conv1: nn::conv2d(p / "conv1", 1, 8, 3, pad),
            conv2: nn::conv2d(p / "conv2", 8, 16, 3, pad),
            head: nn::linear(p / "head", 16, 4, Default::default()),
        }
    }

    fn logits(&self, x: &Tensor) -> Tensor {
        let h = self.conv1.forward(x).relu().max_pool2d_default(2);
        let h = self.conv2.forward(&h).relu().adaptive_avg_pool2d([1, 1]);
        self.head.forward(&h.view([-1, 16]))
    }
}

/// 256 noisy 8×8 images of a bar: vertical, horizontal, diagonal or
/// anti-diagonal (class 0–3), at a random offset, with uniform noise of
/// amplitude 0.3; a fixed LCG makes them the same on every run.
fn data() -> (Tensor, Tensor) {
    let mut state = 12345u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f32 / (1u64 << 31) as f32
    };
    let (n, mut xs, mut ys) = (256usize, vec![], vec![]);
    for i in 0..n {
        let class = i % 4;
        let off = (next() * 6.0) as usize + 1;
        for r in 0..8 {
            for c in 0..8 {
                let on = match class {
                    0 => c == off,
                    1 => r == off,
                    2 => r == c,
                    _ => r + c == 7,
                };
                xs.push(if on { 1.0 } else { 0.0 } + 0.3 * (next() - 0.5));
            }
        }
        ys.push(class as i64);
    }
    (
        Tensor::from_slice(&xs).view([n as i64, 1, 8, 8]),
        Tensor::from_slice(&ys),
    )
}

/// libtorch's generator is global and tests run in parallel: seeding and
/// initializing happen under one lock.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn setup() -> (nn::VarStore, Cnn) {
    let _lock = RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Cnn::new(&vs.root());
    (vs, net)
}

#[test]
fn a_cnn_trains_with_muon_its_kernels_flattened() {
    let (vs, net) = setup();
    let mut opt = VarStoreOptimizer::new(&vs, presets::muon(0.05, 1e-2)).unwrap();
    let labels: Vec<(String, Label)> = opt
        .names()
        .iter()
        .cloned()
        .zip(opt.labels().iter().cloned())
        .collect();
    assert!(labels.contains(&("conv2.weight".into(), Label::Hidden)));
    assert_eq!(default_label("conv1.weight", &[8, 1, 3, 3]), Label::Hidden);
    let (x, y) = data();
    let before = tch::no_grad(|| vs.variables()["conv2.weight"].copy());
    let mut first = 0.0;
    for k in 0..150 {
        let loss = net.logits(&x).cross_entropy_for_logits(&y);
        opt.zero_grad();
        loss.backward();
        opt.step().unwrap();
        if k == 0 {
            first = loss.double_value(&[]);
            // The first update of a kernel is the NS5 polar factor of its
            // flattened (16, 72) momentum times the step: 16 singular
            // values, all within NS5's band around lr = 0.05 (the Muon
            // shape factor max(1, 16/72)^½ is 1).
            let delta = vs.variables()["conv2.weight"].copy() - &before;
            let (_, s, _) = delta.view([16, 72]).svd(true, false);
            let s = Vec::<f64>::try_from(s.to_kind(Kind::Double)).unwrap();
            assert_eq!(s.len(), 16);
            for v in s {
                assert!((0.02..0.065).contains(&v), "singular value {v}");
            }
        }
    }
    let logits = tch::no_grad(|| net.logits(&x));
    let last = logits.cross_entropy_for_logits(&y).double_value(&[]);
    let acc = logits
        .argmax(-1, false)
        .eq_tensor(&y)
        .to_kind(Kind::Double)
        .mean(Kind::Double)
        .double_value(&[]);
    assert!(last < 0.2 * first, "loss {first} → {last}");
    assert!(acc >= 0.95, "training accuracy {acc}");
}

#[test]
fn a_hidden_group_without_a_view_refuses_a_kernel_when_built() {
    let (vs, _net) = setup();
    let mut cfg = presets::muon(0.05, 1e-2);
    if let Some(GroupConfig::Lmo(g)) = cfg.groups.get_mut(&Label::Hidden) {
        g.view = View::AsIs;
    }
    let e = VarStoreOptimizer::new(&vs, cfg).err();
    // Variables are in name order: conv1.bias, conv1.weight, …
    assert!(
        matches!(
            e,
            Some(TchOptError::Opt(OptError::Lmo {
                block: 1,
                error: LmoError::UnsupportedRank(4)
            }))
        ),
        "{e:?}"
    );
}
