//! The arithmetic peak of one core from a register-only loop: 12
//! independent accumulators, no memory traffic, f32 FMA (`vfmadd231ps`,
//! AVX-512) and bf16 dot products (`vdpbf16ps`, AVX-512 BF16) where the CPU
//! has them. The ceiling the GEMM kernels of `lmo_ndarray::native` are
//! measured against in docs/orthogonalize.md.
//!
//! ```text
//! cargo run --release -p lmo-bench --example peak
//! ```

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::time::Instant;

    const ITERS: usize = 20_000_000;

    /// Runs `$step` on `N` named accumulators (named locals, not an
    /// array: with an array LLVM rotated and spilled registers inside the
    /// loop, so the loop measured stores, not arithmetic).
    macro_rules! unrolled {
        ($n:expr, $init:expr, $step:expr, $($a:ident)+) => {{
            $(let mut $a = $init;)+
            for _ in 0..$n {
                $($a = $step($a);)+
            }
            let mut s = 0.0f32;
            $(s += _mm512_reduce_add_ps($a);)+
            s
        }};
    }

    /// Independent accumulators per loop: 2 FMA ports × 4 cycles latency
    /// need 8; 12 leave room and fit in the 32 zmm registers.
    const ACCS: f64 = 12.0;

    #[target_feature(enable = "avx512f")]
    fn fma(n: usize) -> f32 {
        let (x, y) = (_mm512_set1_ps(1.000_000_1), _mm512_set1_ps(-1e-9));
        unrolled!(n, _mm512_set1_ps(1.0), |a| _mm512_fmadd_ps(a, x, y),
            a0 a1 a2 a3 a4 a5 a6 a7 a8 a9 a10 a11)
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    fn dpbf16(n: usize) -> f32 {
        // SAFETY: same-size reinterpretation of 16 lanes of bf16 pairs.
        let (x, y): (__m512bh, __m512bh) = unsafe {
            (
                std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(0x3f80_3f80)),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(0x3a80_3a80)),
            )
        };
        unrolled!(n, _mm512_setzero_ps(), |a| _mm512_dpbf16_ps(a, x, y),
            a0 a1 a2 a3 a4 a5 a6 a7 a8 a9 a10 a11)
    }

    fn report(name: &str, flops_per_iter: f64, f: impl FnOnce() -> f32) {
        let t = Instant::now();
        let sink = f();
        let s = t.elapsed().as_secs_f64();
        println!(
            "{name:<28} {:>7.1} GFLOP/s per core (checksum {sink:.3e})",
            ITERS as f64 * flops_per_iter / s / 1e9
        );
    }

    pub fn main() {
        if !std::is_x86_feature_detected!("avx512f") {
            println!("no AVX-512F on this CPU: nothing to measure");
            return;
        }
        // ACCS zmm registers × 16 lanes × 2 flops.
        // SAFETY: avx512f detected above.
        report("f32 FMA (vfmadd231ps)", ACCS * 32.0, || unsafe {
            fma(ITERS)
        });
        if std::is_x86_feature_detected!("avx512bf16") {
            // ACCS zmm × 16 lanes × 2 products × 2 flops.
            // SAFETY: avx512f and avx512bf16 detected.
            report("bf16 dot (vdpbf16ps)", ACCS * 64.0, || unsafe {
                dpbf16(ITERS)
            });
        } else {
            println!("no avx512_bf16 on this CPU: bf16 peak not measured");
        }
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    x86::main();
    #[cfg(not(target_arch = "x86_64"))]
    println!("x86-64 only");
}
