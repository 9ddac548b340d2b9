//! Build script: links libtorch for the binary (`crates/adapters/tch/link.rs`).
include!("../../crates/adapters/tch/link.rs");
