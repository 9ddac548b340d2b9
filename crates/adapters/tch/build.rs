//! Build script: links libtorch for this crate's test binaries (see
//! `link.rs`, shared with examples/nanogpt).
include!("link.rs");
