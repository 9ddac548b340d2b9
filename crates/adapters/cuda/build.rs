//! Builds the CPU kernel emulator (feature `emu`): the kernels of
//! `src/cuda_kernels.cu`, unchanged, compiled as C++20 against the thread
//! model of `src/emu/emu.h`. Without the feature nothing is built.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "emu")]
    {
        for f in ["src/cuda_kernels.cu", "src/emu/emu.h", "src/emu/emu.cpp"] {
            println!("cargo:rerun-if-changed={f}");
        }
        cc::Build::new()
            .cpp(true)
            .std("c++20")
            .file("src/emu/emu.cpp")
            // Plain IEEE arithmetic: no fused multiply-adds, no fast-math,
            // and no instructions the build machine has but a test machine
            // may lack.
            .flag("-ffp-contract=off")
            .flag_if_supported("-pthread")
            .warnings(true)
            .compile("lmo_cuda_emu");
    }
}
