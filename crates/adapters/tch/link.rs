// Links libtorch for this crate's test and example binaries: an rpath to
// `$LIBTORCH/lib` (so they run without `LD_LIBRARY_PATH`) and, with the
// `cuda` feature, `libtorch_cuda` with `--no-as-needed` (otherwise the
// linker drops it, no CUDA kernel registers, and
// `tch::Cuda::is_available()` is false).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(lt) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lt}/lib");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-ltorch");
    }
}
