//! Builds the CPU kernel emulator (feature `cuda-emu`): the kernels of
//! `src/cuda_kernels.cu`, unchanged, compiled as C++20 against the thread
//! model of `src/cuda/emu/emu.h`. Without the feature nothing is built.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "cuda-emu")]
    {
        for f in [
            "src/cuda_kernels.cu",
            "src/cuda/emu/emu.h",
            "src/cuda/emu/emu.cpp",
        ] {
            println!("cargo:rerun-if-changed={f}");
        }
        cc::Build::new()
            .cpp(true)
            .std("c++20")
            .file("src/cuda/emu/emu.cpp")
            // Plain IEEE arithmetic: no fused multiply-adds, no fast-math,
            // and no instructions the build machine has but a test machine
            // may lack.
            .flag("-ffp-contract=off")
            .flag_if_supported("-pthread")
            .warnings(true)
            .compile("lmo_cuda_emu");
    }
}
