//! The default grouping of a `VarStore`'s variables by name and shape.

use gluon_optim::Label;

/// The default grouping of a variable by its name and shape (the
/// conventions of GPT-style models, nanoGPT's names included):
/// - rank ≤ 1 (biases, norm gains): [`Label::Vector`];
/// - a name with a path component `wte`, `wpe`, `emb`, `embed`,
///   `embedding` or `tok_embeddings`: [`Label::Embedding`];
/// - a name with a path component `lm_head`, `head` or `output`:
///   [`Label::Head`];
/// - any other matrix (or higher rank: convolution kernels, which the
///   presets flatten to `(out, in·kh·kw)` through `View::Flatten`):
///   [`Label::Hidden`].
pub fn default_label(name: &str, dims: &[i64]) -> Label {
    if dims.len() <= 1 {
        return Label::Vector;
    }
    let parts: Vec<&str> = name.split('.').collect();
    let has = |keys: &[&str]| parts.iter().any(|p| keys.contains(p));
    if has(&["wte", "wpe", "emb", "embed", "embedding", "tok_embeddings"]) {
        Label::Embedding
    } else if has(&["lm_head", "head", "output"]) {
        Label::Head
    } else {
        Label::Hidden
    }
}
