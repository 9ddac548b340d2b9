//! A GPT-2-style decoder in tch: token + position embeddings, pre-norm
//! blocks (causal self-attention, GELU MLP), final LayerNorm, tied or
//! untied head. Variable names follow nanoGPT (`wte`, `wpe`, `h.N.attn.c_attn`,
//! …, `lm_head`) so `lmo_tch::default_label` groups them.

use serde::{Deserialize, Serialize};
use tch::nn::{self, Init, LayerNormConfig, LinearConfig, Module};
use tch::{Kind, Tensor};

/// Model dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    /// Vocabulary size.
    pub vocab: i64,
    /// Context length.
    pub ctx: i64,
    /// Blocks.
    pub n_layer: i64,
    /// Attention heads.
    pub n_head: i64,
    /// Width.
    pub d: i64,
    /// Head shares the token embedding (GPT-2).
    pub tied: bool,
}

impl GptConfig {
    /// Parameters (embeddings included; the tied head counted once).
    pub fn params(&self) -> i64 {
        let d = self.d;
        let block =
            2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d);
        let head = if self.tied { 0 } else { self.vocab * d };
        self.vocab * d + self.ctx * d + self.n_layer * block + 2 * d + head
    }
}

struct Block {
    ln_1: nn::LayerNorm,
    c_attn: nn::Linear,
    attn_proj: nn::Linear,
    ln_2: nn::LayerNorm,
    c_fc: nn::Linear,
    mlp_proj: nn::Linear,
    n_head: i64,
}

/// `N(0, 0.02²)` weights, zero biases (GPT-2's initialization); residual
/// projections get `0.02/√(2·n_layer)`.
fn linear(p: nn::Path, i: i64, o: i64, std: f64) -> nn::Linear {
    let cfg = LinearConfig {
        ws_init: Init::Randn {
            mean: 0.0,
            stdev: std,
        },
        bs_init: Some(Init::Const(0.0)),
        bias: true,
    };
    nn::linear(p, i, o, cfg)
}

impl Block {
    fn new(p: nn::Path, c: &GptConfig) -> Self {
        let d = c.d;
        let res = 0.02 / ((2 * c.n_layer) as f64).sqrt();
        let ln = LayerNormConfig::default();
        Block {
            ln_1: nn::layer_norm(&p / "ln_1", vec![d], ln),
            c_attn: linear(&p / "attn" / "c_attn", d, 3 * d, 0.02),
            attn_proj: linear(&p / "attn" / "c_proj", d, d, res),
            ln_2: nn::layer_norm(&p / "ln_2", vec![d], ln),
            c_fc: linear(&p / "mlp" / "c_fc", d, 4 * d, 0.02),
            mlp_proj: linear(&p / "mlp" / "c_proj", 4 * d, d, res),
            n_head: c.n_head,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, t, d) = x.size3().expect("(batch, time, width)");
        let h = self.n_head;
        let qkv = self.c_attn.forward(&self.ln_1.forward(x));
        let split = qkv.split(d, 2);
        let heads = |z: &Tensor| z.view([b, t, h, d / h]).transpose(1, 2);
        let y = Tensor::scaled_dot_product_attention(
            &heads(&split[0]),
            &heads(&split[1]),
            &heads(&split[2]),
            None::<Tensor>,
            0.0,
            true,
            None,
            false,
        );
        let y = y.transpose(1, 2).contiguous().view([b, t, d]);
        let x = x + self.attn_proj.forward(&y);
        let m = self
            .mlp_proj
            .forward(&self.c_fc.forward(&self.ln_2.forward(&x)).gelu("tanh"));
        x + m
    }
}

/// The model.
pub struct Gpt {
    wte: nn::Embedding,
    wpe: nn::Embedding,
    blocks: Vec<Block>,
    ln_f: nn::LayerNorm,
    lm_head: Option<nn::Linear>,
    /// Its dimensions.
    pub config: GptConfig,
}

impl Gpt {
    /// Creates the variables under `p`.
    pub fn new(p: &nn::Path, c: GptConfig) -> Self {
        let emb = nn::EmbeddingConfig {
            ws_init: Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
            ..Default::default()
        };
        let lm_head = (!c.tied).then(|| {
            let cfg = LinearConfig {
                ws_init: Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
                bs_init: None,
                bias: false,
            };
            nn::linear(p / "lm_head", c.d, c.vocab, cfg)
        });
        Gpt {
            wte: nn::embedding(p / "wte", c.vocab, c.d, emb),
            wpe: nn::embedding(p / "wpe", c.ctx, c.d, emb),
            blocks: (0..c.n_layer)
                .map(|i| Block::new(p / "h" / i, &c))
                .collect(),
            ln_f: nn::layer_norm(p / "ln_f", vec![c.d], Default::default()),
            lm_head,
            config: c,
        }
    }

    /// Logits `(batch, time, vocab)` for token ids `(batch, time)`.
    pub fn forward(&self, idx: &Tensor) -> Tensor {
        let t = idx.size()[1];
        let pos = Tensor::arange(t, (Kind::Int64, idx.device()));
        let mut x = self.wte.forward(idx) + self.wpe.forward(&pos);
        for b in &self.blocks {
            x = b.forward(&x);
        }
        let x = self.ln_f.forward(&x);
        match &self.lm_head {
            Some(h) => h.forward(&x),
            None => x.matmul(&self.wte.ws.tr()),
        }
    }

    /// Samples `n` tokens after `prompt` (temperature `temp`, libtorch's
    /// generator), cropping the context to the model's length.
    pub fn generate(&self, prompt: &[i64], n: usize, temp: f64) -> Vec<i64> {
        let device = self.wte.ws.device();
        let mut ids = prompt.to_vec();
        tch::no_grad(|| {
            for _ in 0..n {
                let start = ids.len().saturating_sub(self.config.ctx as usize);
                let x = Tensor::from_slice(&ids[start..])
                    .view([1, -1])
                    .to_device(device);
                let logits = self.forward(&x).to_kind(Kind::Float).select(1, -1) / temp;
                let next = logits.softmax(-1, Kind::Float).multinomial(1, true);
                ids.push(next.int64_value(&[0, 0]));
            }
        });
        ids
    }

    /// Mean cross-entropy of predicting `targets` (computed in f32 even
    /// for bf16 models).
    pub fn loss(&self, idx: &Tensor, targets: &Tensor) -> Tensor {
        let logits = self.forward(idx).to_kind(Kind::Float);
        let v = logits.size()[2];
        logits
            .view([-1, v])
            .cross_entropy_for_logits(&targets.view([-1]))
    }
}
