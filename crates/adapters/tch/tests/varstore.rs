//! The VarStore optimizer on a small model: training decreases the loss,
//! errors leave everything untouched, and checkpoint → resume continues
//! with the same losses.

use gluon_optim::{Label, OptError, presets};
use lmo_comm::SingleProcess;
use lmo_tch::{ShardedVarStoreOptimizer, TchOptError, VarStoreOptimizer, default_label};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

struct Net {
    emb: nn::Embedding,
    fc: nn::Linear,
    head: nn::Linear,
}

impl Net {
    fn new(p: &nn::Path) -> Self {
        Net {
            emb: nn::embedding(p / "wte", 10, 16, Default::default()),
            fc: nn::linear(p / "fc", 16, 32, Default::default()),
            head: nn::linear(p / "lm_head", 32, 10, Default::default()),
        }
    }

    /// Cross-entropy of predicting `(x + 3) mod 10` from `x`.
    fn loss(&self, x: &Tensor) -> Tensor {
        let y = (x + 3).remainder(10);
        let h = self.fc.forward(&self.emb.forward(x)).relu();
        self.head.forward(&h).cross_entropy_for_logits(&y)
    }
}

fn data() -> Tensor {
    Tensor::arange(10, (Kind::Int64, Device::Cpu)).repeat([8])
}

/// libtorch's generator is global and tests run in parallel: seeding and
/// initializing happen under one lock.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn setup(seed: i64) -> (nn::VarStore, Net) {
    let _lock = RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Net::new(&vs.root());
    (vs, net)
}

fn train(net: &Net, opt: &mut VarStoreOptimizer, steps: usize) -> Vec<f64> {
    let x = data();
    (0..steps)
        .map(|_| {
            let loss = net.loss(&x);
            opt.zero_grad();
            loss.backward();
            opt.step().unwrap();
            loss.double_value(&[])
        })
        .collect()
}

#[test]
fn default_labels_follow_names_and_shapes() {
    assert_eq!(default_label("wte.weight", &[50, 8]), Label::Embedding);
    assert_eq!(
        default_label("transformer.wpe.weight", &[64, 8]),
        Label::Embedding
    );
    assert_eq!(default_label("lm_head.weight", &[50, 8]), Label::Head);
    assert_eq!(
        default_label("h.0.attn.c_attn.weight", &[24, 8]),
        Label::Hidden
    );
    assert_eq!(default_label("h.0.ln_1.weight", &[8]), Label::Vector);
    assert_eq!(default_label("fc.bias", &[32]), Label::Vector);
    // A substring is not a path component.
    assert_eq!(default_label("header.weight", &[4, 4]), Label::Hidden);
    let (vs, _) = setup(0);
    let opt = VarStoreOptimizer::new(&vs, presets::muon(0.02, 1e-3)).unwrap();
    let got: Vec<(String, Label)> = opt
        .names()
        .iter()
        .cloned()
        .zip(opt.labels().iter().cloned())
        .collect();
    assert_eq!(
        got,
        vec![
            ("fc.bias".into(), Label::Vector),
            ("fc.weight".into(), Label::Hidden),
            ("lm_head.bias".into(), Label::Vector),
            ("lm_head.weight".into(), Label::Head),
            ("wte.weight".into(), Label::Embedding),
        ]
    );
}

#[test]
fn every_optimizer_decreases_the_loss() {
    let radii = presets::ScionRadii {
        hidden: 10.0,
        embedding_head: 10.0,
        vector: 1.0,
    };
    for (name, cfg) in [
        ("muon", presets::muon(0.05, 1e-2)),
        ("scion", presets::scion_with(0.02, false, radii)),
        ("gluon", presets::gluon((1.0, 5.0), (1.0, 5.0), 0.9)),
        (
            "adamw",
            presets::adamw(gluon_optim::AdamWGroup {
                lr: 1e-2,
                ..Default::default()
            }),
        ),
    ] {
        let (vs, net) = setup(1);
        let mut opt = VarStoreOptimizer::new(&vs, cfg).unwrap();
        let losses = train(&net, &mut opt, 30);
        let (first, last) = (losses[0], losses[losses.len() - 1]);
        assert!(last < 0.5 * first, "{name}: {first} → {last}");
        assert_eq!(opt.optimizer().steps(), 30);
    }
}

#[test]
fn checkpoint_and_resume_give_the_same_losses() {
    let dir = std::env::temp_dir().join(format!("lmo-tch-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = || presets::muon(0.05, 1e-2);
    // Reference: 20 uninterrupted steps.
    let (vs, net) = setup(2);
    let mut opt = VarStoreOptimizer::new(&vs, cfg()).unwrap();
    let full = train(&net, &mut opt, 20);
    // 10 steps, save, fresh model from another seed, load, 10 more.
    let (vs, net) = setup(2);
    let mut opt = VarStoreOptimizer::new(&vs, cfg()).unwrap();
    let mut resumed = train(&net, &mut opt, 10);
    vs.save(dir.join("model.safetensors")).unwrap();
    opt.save(&dir.join("opt.json")).unwrap();
    let (mut vs2, net2) = setup(99);
    vs2.load(dir.join("model.safetensors")).unwrap();
    let mut opt2 = VarStoreOptimizer::new(&vs2, cfg()).unwrap();
    opt2.load(&dir.join("opt.json")).unwrap();
    assert_eq!(opt2.optimizer().steps(), 10);
    resumed.extend(train(&net2, &mut opt2, 10));
    assert_eq!(
        full, resumed,
        "resumed run must repeat the losses exactly:\n{full:?}\n{resumed:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn errors_leave_variables_and_state_untouched() {
    let (vs, net) = setup(3);
    let mut opt = VarStoreOptimizer::new(&vs, presets::muon(0.05, 1e-2)).unwrap();
    // No backward yet: no gradients.
    match opt.step() {
        Err(TchOptError::MissingGradient { name }) => assert_eq!(name, "fc.bias"),
        other => panic!("expected MissingGradient, got {other:?}"),
    }
    train(&net, &mut opt, 2);
    let before: Vec<Tensor> = opt.params().iter().map(|p| p.copy()).collect();
    let state = opt.saved();
    // A NaN gradient: the step is refused, nothing moves.
    let loss = net.loss(&data());
    opt.zero_grad();
    loss.backward();
    tch::no_grad(|| {
        let _ = vs.variables()["fc.weight"]
            .grad()
            .get(0)
            .get(0)
            .fill_(f64::NAN);
    });
    let err = opt.step().unwrap_err();
    assert!(err.to_string().contains("NaN"), "{err}");
    for (b, p) in before.iter().zip(opt.params()) {
        assert!(b.equal(&p.copy()));
    }
    assert_eq!(opt.saved(), state);
    // A state for other variables is refused.
    let mut other = state.clone();
    other.names[0] = "nope".into();
    assert!(matches!(opt.restore(&other), Err(TchOptError::Mismatch(_))));
    assert_eq!(opt.saved(), state);
}

/// The data-parallel optimizer at one rank is the single-process one: the
/// same losses and parameters bit for bit (SPEC §3; the sharded step at
/// one rank steps in place and the average of one gradient is itself),
/// and their checkpoints load into each other.
#[test]
fn sharded_optimizer_at_one_rank_is_the_single_process_step() {
    let dir = std::env::temp_dir().join(format!("lmo-tch-sharded-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for cfg in [
        || presets::muon(0.05, 1e-2),
        || presets::gluon((1.0, 5.0), (1.0, 5.0), 0.9),
    ] {
        let (vs, net) = setup(4);
        let mut single = VarStoreOptimizer::new(&vs, cfg()).unwrap();
        let want = train(&net, &mut single, 8);
        let (vs2, net2) = setup(4);
        let mut dp = ShardedVarStoreOptimizer::new(&vs2, cfg(), SingleProcess).unwrap();
        let x = data();
        let mut got = vec![];
        for _ in 0..4 {
            let loss = net2.loss(&x);
            dp.zero_grad();
            loss.backward();
            dp.step().unwrap();
            got.push(loss.double_value(&[]));
        }
        // Continue in a single-process optimizer from the sharded one's
        // checkpoint.
        dp.save(&dir.join("dp.json")).unwrap();
        let mut cont = VarStoreOptimizer::new(&vs2, cfg()).unwrap();
        cont.load(&dir.join("dp.json")).unwrap();
        got.extend(train(&net2, &mut cont, 4));
        assert_eq!(want, got);
        for (a, b) in single.params().iter().zip(cont.params()) {
            assert!(a.copy().equal(&b.copy()));
        }
        // And back: the single-process state into the sharded optimizer.
        single.save(&dir.join("one.json")).unwrap();
        dp.load(&dir.join("one.json")).unwrap();
        assert_eq!(dp.saved().unwrap(), single.saved());
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sharded_optimizer_errors_change_nothing() {
    let (vs, net) = setup(5);
    let mut opt =
        ShardedVarStoreOptimizer::new(&vs, presets::muon(0.05, 1e-2), SingleProcess).unwrap();
    match opt.step() {
        Err(TchOptError::MissingGradient { name }) => assert_eq!(name, "fc.bias"),
        other => panic!("expected MissingGradient, got {other:?}"),
    }
    let loss = net.loss(&data());
    opt.zero_grad();
    loss.backward();
    opt.step().unwrap();
    let before: Vec<Tensor> = opt.params().iter().map(|p| p.copy()).collect();
    let state = opt.saved().unwrap();
    let loss = net.loss(&data());
    opt.zero_grad();
    loss.backward();
    tch::no_grad(|| {
        let _ = vs.variables()["lm_head.weight"]
            .grad()
            .get(1)
            .get(2)
            .fill_(f64::INFINITY);
    });
    // Blocks follow the saved variable names.
    let head = state
        .names
        .iter()
        .position(|n| n == "lm_head.weight")
        .unwrap();
    let err = opt.step().unwrap_err();
    assert!(
        matches!(err, TchOptError::Opt(OptError::NonFiniteGradient { block }) if block == head),
        "{err:?}, expected NonFiniteGradient {{ block: {head} }}"
    );
    assert_eq!(before.len(), opt.params().len());
    for (b, p) in before.iter().zip(opt.params()) {
        assert!(b.equal(&p.copy()));
    }
    assert_eq!(opt.saved().unwrap(), state);
    // A missing file and a state for other variables: refused, unchanged.
    let missing = std::env::temp_dir().join("lmo-tch-no-such-file.json");
    assert!(matches!(opt.load(&missing), Err(TchOptError::Io(_))));
    let mut other = state.clone();
    other.names.pop();
    assert!(matches!(opt.restore(&other), Err(TchOptError::Mismatch(_))));
    assert_eq!(opt.saved().unwrap(), state);
    assert_eq!(opt.optimizer().steps(), 1);
}
