//! Runnable examples of the LMO optimizer toolkit; see the `[[example]]`
//! targets (`cargo run --release --example lmo_tour`).

/// The README's code blocks, compiled and run as doc tests so the README
/// stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
