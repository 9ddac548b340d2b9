include!("../../crates/adapters/tch/build.rs");
