//! Native bf16 GEMM and syrk for x86-64 CPUs with AVX-512 BF16
//! (`vdpbf16ps`: Intel Cooper Lake and Sapphire Rapids, AMD Zen 4 and
//! later), chosen at run time.
//!
//! `C = α·A·B + β·C` with A and B rounded to bf16 (round to nearest even)
//! while they are packed, products and sums in f32 (`vdpbf16ps` multiplies
//! bf16 pairs exactly and adds them into f32 accumulators), `C` kept in f32
//! across the whole inner dimension and rounded to bf16 once, in the
//! epilogue. That is the "bf16 storage, f32 accumulation" contract of
//! [`NdBf16`](crate::NdBf16), at twice the multiply-add rate of f32 FMA.
//!
//! Structure (Goto & van de Geijn 2008, "Anatomy of high-performance matrix
//! multiplication"): the inner dimension in blocks of [`KC`], `B` packed
//! per block into `NR`-column panels of bf16 pairs, `A` packed per
//! [`MC`]-row block into `MR`-row panels, an `MR × NR = 12 × 32` register
//! kernel (24 zmm accumulators). Row blocks run in parallel (rayon) unless
//! the caller is itself a rayon worker (then the caller's parallelism, e.g.
//! [`BatchPolar`-style] batches, already fills the cores). Packing buffers
//! live in thread-local storage and are reused: no allocation per call once
//! they have grown.

use std::cell::Cell;

use rayon::prelude::*;

/// Register-tile rows.
pub const MR: usize = 12;
/// Register-tile columns (two zmm registers of 16 f32).
pub const NR: usize = 32;
/// Inner-dimension block (even): a `KC × NR` bf16 panel of `B` is 16 KiB
/// and stays in L1 while the `MR`-row panels of `A` stream past it.
pub const KC: usize = 1024;
/// Row block of `A` packed at once (a multiple of [`MR`]): 48 KiB of bf16,
/// held in L2.
pub const MC: usize = 96;

/// Below this many multiply-adds a product runs on one thread.
const PAR_MIN_WORK: usize = 96 * 96 * 96;

/// Whether this CPU runs the native kernel (AVX-512 F/BW and BF16).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A strided f32 operand read as `rows × inner`: entry `(r, p)` lies at
/// `ptr + r·rs + p·ps` (for `A`, `r` is the row; for `B`, `r` is the
/// column and `p` the row).
#[derive(Clone, Copy, Debug)]
pub struct Operand {
    /// Address of entry (0, 0).
    pub ptr: *const f32,
    /// Stride between consecutive `r`, in elements.
    pub rs: isize,
    /// Stride between consecutive `p`, in elements.
    pub ps: isize,
}

// SAFETY: an Operand is a read-only view; the caller of `gemm` guarantees
// the memory outlives the call and is not written during it.
unsafe impl Send for Operand {}
unsafe impl Sync for Operand {}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint row blocks of C.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}
impl OutPtr {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

#[derive(Clone, Copy)]
struct PackPtr(*mut u16);
// SAFETY: packing tasks write disjoint panels; readers start after the
// packing pass has finished.
unsafe impl Send for PackPtr {}
unsafe impl Sync for PackPtr {}
impl PackPtr {
    fn get(&self) -> *mut u16 {
        self.0
    }
}

thread_local! {
    static A_BUF: Cell<Vec<u16>> = const { Cell::new(Vec::new()) };
    static B_BUF: Cell<Vec<u16>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on a thread-local buffer of at least `len` elements, taken out
/// of its slot for the duration (a re-entrant call finds the slot empty and
/// grows its own, so nesting is safe).
fn with_buf<R>(
    slot: &'static std::thread::LocalKey<Cell<Vec<u16>>>,
    len: usize,
    f: impl FnOnce(&mut [u16]) -> R,
) -> R {
    let mut v = slot.with(Cell::take);
    if v.len() < len {
        v.resize(len, 0);
    }
    let r = f(&mut v[..len]);
    slot.with(|s| s.set(v));
    r
}

/// `C = α·A·B + β·C` (or only its lower triangle, `lower_only`, for
/// `A·Aᵀ`-type products), `C` row-major `m × n` with row stride `ldc`;
/// `A` is `m × k`, `B` is `k × n` read as `n × k` (see [`Operand`]). With
/// `round`, every written entry of `C` is rounded to bf16. `β = 0` never
/// reads `C`. With `lower_only`, tiles above the diagonal are skipped and
/// tiles across it also write some upper entries (the caller mirrors).
///
/// # Safety
/// [`available`] must be true; `a`, `b` must address `m × k` and `n × k`
/// readable f32 values and `c` `m` rows of `n` writable ones, with no
/// overlap between `c` and the operands; `k ≥ 1`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Operand,
    b: Operand,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    lower_only: bool,
    round: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let parallel =
            m * n * k >= PAR_MIN_WORK && rayon::current_thread_index().is_none() && m > MC;
        let npanels = n.div_ceil(NR);
        let c = OutPtr(c);
        with_buf(&B_BUF, npanels * NR * KC, |bpack| {
            let bp = PackPtr(bpack.as_mut_ptr());
            for pc in (0..k).step_by(KC) {
                let pn = KC.min(k - pc);
                let kq = pn.div_ceil(2);
                let pack_b = |jp: usize| {
                    let j0 = jp * NR;
                    // SAFETY: panel jp occupies [jp·NR·2·kq, (jp+1)·NR·2·kq).
                    unsafe {
                        x86::pack(
                            b,
                            j0,
                            NR.min(n - j0),
                            NR,
                            pc,
                            pn,
                            bp.get().add(jp * NR * 2 * kq),
                        )
                    }
                };
                if parallel {
                    (0..npanels).into_par_iter().for_each(pack_b);
                } else {
                    (0..npanels).for_each(pack_b);
                }
                let beta_k = if pc == 0 { beta } else { 1.0 };
                let round_k = round && pc + KC >= k;
                let block = |blk: usize| {
                    let ic = blk * MC;
                    let mc = MC.min(m - ic);
                    with_buf(&A_BUF, MC * KC, |apack| {
                        let ap = apack.as_mut_ptr();
                        for ir in (0..mc).step_by(MR) {
                            // SAFETY: MR-row panels of the MC block, disjoint.
                            unsafe {
                                x86::pack(
                                    a,
                                    ic + ir,
                                    MR.min(mc - ir),
                                    MR,
                                    pc,
                                    pn,
                                    ap.add(ir * 2 * kq),
                                )
                            };
                        }
                        let jmax = if lower_only { (ic + mc).min(n) } else { n };
                        for j0 in (0..jmax).step_by(NR) {
                            let bpanel = unsafe { bp.get().add((j0 / NR) * NR * 2 * kq) };
                            for ir in (0..mc).step_by(MR) {
                                let i0 = ic + ir;
                                let mr = MR.min(mc - ir);
                                if lower_only && i0 + mr <= j0 {
                                    continue;
                                }
                                // SAFETY: the tile (i0.., j0..) lies in C and
                                // belongs to this row block.
                                unsafe {
                                    x86::kernel(
                                        kq,
                                        ap.add(ir * 2 * kq) as *const u32,
                                        bpanel,
                                        c.get().add(i0 * ldc + j0),
                                        ldc,
                                        mr,
                                        NR.min(n - j0),
                                        alpha,
                                        beta_k,
                                        round_k,
                                    )
                                };
                            }
                        }
                    })
                };
                if parallel {
                    (0..m.div_ceil(MC)).into_par_iter().for_each(block);
                } else {
                    (0..m.div_ceil(MC)).for_each(block);
                }
            }
        });
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, n, k, alpha, a, b, beta, c, ldc, lower_only, round);
        unreachable!("bf16_native::gemm called where available() is false");
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MR, NR, Operand};
    use std::arch::x86_64::*;

    /// Packs rows `r0 .. r0+rn` (zero rows up to `rr`) and inner indices
    /// `p0 .. p0+pn` (zero-padded to even) of `op` as bf16 pairs:
    /// `out[(q·rr + r)·2 + t] = bf16(op(r0 + r, p0 + 2q + t))`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack(
        op: Operand,
        r0: usize,
        rn: usize,
        rr: usize,
        p0: usize,
        pn: usize,
        out: *mut u16,
    ) {
        let kq = pn.div_ceil(2);
        let out32 = out as *mut u32;
        // SAFETY (whole body): `out` holds kq·rr pairs; reads stay inside
        // the operand by the caller's contract (masked lanes are not read).
        unsafe {
            let at = |r: usize, p: usize| {
                op.ptr
                    .offset((r0 + r) as isize * op.rs + (p0 + p) as isize * op.ps)
            };
            if op.ps == 1 {
                // Pairs are contiguous along a row: convert 16 rows × 16
                // pairs, transpose the 16 × 16 block of u32 pairs in
                // registers and store a row of `rr` pairs per inner index.
                for c in (0..rr).step_by(16) {
                    let lanes = mask16((rr - c).min(16));
                    let mut q0 = 0;
                    while q0 < kq {
                        let rem = pn - 2 * q0;
                        let m_lo = mask16(rem.min(16));
                        let m_hi = mask16(rem.saturating_sub(16).min(16));
                        let mut v = [_mm512_setzero_si512(); 16];
                        for (i, vi) in v.iter_mut().enumerate() {
                            let r = c + i;
                            if r < rn && r < rr {
                                let row = at(r, 2 * q0);
                                let lo = _mm512_maskz_loadu_ps(m_lo, row);
                                let hi = _mm512_maskz_loadu_ps(m_hi, row.add(16));
                                *vi = std::mem::transmute::<__m512bh, __m512i>(
                                    _mm512_cvtne2ps_pbh(hi, lo),
                                );
                            }
                        }
                        let t = transpose16(&v);
                        for (j, tj) in t.iter().enumerate().take((kq - q0).min(16)) {
                            _mm512_mask_storeu_epi32(
                                out32.add((q0 + j) * rr + c) as *mut i32,
                                lanes,
                                *tj,
                            );
                        }
                        q0 += 16;
                    }
                }
            } else if op.rs == 1 && rr % 16 == 0 {
                // Rows are contiguous: interleave two inner indices.
                let idx = _mm512_set_epi16(
                    31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21,
                    5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0,
                );
                for q in 0..kq {
                    let has1 = 2 * q + 1 < pn;
                    for c in (0..rr).step_by(16) {
                        let m = mask16(rn.saturating_sub(c).min(16));
                        let lo = _mm512_maskz_loadu_ps(m, at(c, 2 * q));
                        let hi = if has1 {
                            _mm512_maskz_loadu_ps(m, at(c, 2 * q + 1))
                        } else {
                            _mm512_setzero_ps()
                        };
                        let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                        let v = _mm512_permutexvar_epi16(idx, v);
                        _mm512_storeu_si512(out.add((q * rr + c) * 2) as *mut __m512i, v);
                    }
                }
            } else {
                for q in 0..kq {
                    for r in 0..rr {
                        let (lo, hi) = if r < rn {
                            let lo = *at(r, 2 * q);
                            let hi = if 2 * q + 1 < pn {
                                *at(r, 2 * q + 1)
                            } else {
                                0.0
                            };
                            (lo, hi)
                        } else {
                            (0.0, 0.0)
                        };
                        *out.add((q * rr + r) * 2) = half::bf16::from_f32(lo).to_bits();
                        *out.add((q * rr + r) * 2 + 1) = half::bf16::from_f32(hi).to_bits();
                    }
                }
            }
        }
    }

    /// Transposes a 16 × 16 block of 32-bit lanes (`out[j][i] = v[i][j]`):
    /// 32-bit and 64-bit unpacks within 128-bit lanes, then two rounds of
    /// 128-bit lane shuffles (64 shuffles in all).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn transpose16(v: &[__m512i; 16]) -> [__m512i; 16] {
        let mut t = [_mm512_setzero_si512(); 16];
        for k in 0..8 {
            t[2 * k] = _mm512_unpacklo_epi32(v[2 * k], v[2 * k + 1]);
            t[2 * k + 1] = _mm512_unpackhi_epi32(v[2 * k], v[2 * k + 1]);
        }
        // u[4g + s]: within 128-bit lane L, column 4L + s of rows 4g..4g+4.
        let mut u = [_mm512_setzero_si512(); 16];
        for g in 0..4 {
            let (a0, a1, b0, b1) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
            u[4 * g] = _mm512_unpacklo_epi64(a0, b0);
            u[4 * g + 1] = _mm512_unpackhi_epi64(a0, b0);
            u[4 * g + 2] = _mm512_unpacklo_epi64(a1, b1);
            u[4 * g + 3] = _mm512_unpackhi_epi64(a1, b1);
        }
        let mut out = [_mm512_setzero_si512(); 16];
        for s in 0..4 {
            let v0 = _mm512_shuffle_i32x4::<0x44>(u[s], u[4 + s]);
            let v1 = _mm512_shuffle_i32x4::<0xEE>(u[s], u[4 + s]);
            let w0 = _mm512_shuffle_i32x4::<0x44>(u[8 + s], u[12 + s]);
            let w1 = _mm512_shuffle_i32x4::<0xEE>(u[8 + s], u[12 + s]);
            out[s] = _mm512_shuffle_i32x4::<0x88>(v0, w0);
            out[4 + s] = _mm512_shuffle_i32x4::<0xDD>(v0, w0);
            out[8 + s] = _mm512_shuffle_i32x4::<0x88>(v1, w1);
            out[12 + s] = _mm512_shuffle_i32x4::<0xDD>(v1, w1);
        }
        out
    }

    fn mask16(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// Rounds 16 f32 lanes to the nearest bf16 (ties to even).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    fn round_ps(x: __m512) -> __m512 {
        let h: __m256i = unsafe { std::mem::transmute(_mm512_cvtneps_pbh(x)) };
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }

    /// The `MR × NR` register kernel over `kq` bf16 pairs, then
    /// `C[..mr, ..nr] = α·acc + β·C` (β = 0: C not read), rounded to bf16
    /// with `round`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn kernel(
        kq: usize,
        a: *const u32,
        b: *const u16,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        alpha: f32,
        beta: f32,
        round: bool,
    ) {
        // SAFETY (whole body): `a` holds kq·MR pairs, `b` kq·NR pairs, and
        // the tile's mr rows × nr columns lie in C (masked beyond nr).
        unsafe {
            if beta != 0.0 {
                for i in 0..MR.min(mr) {
                    _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc) as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc + 16) as *const i8);
                }
            }
            let mut acc = [_mm512_setzero_ps(); 2 * MR];
            let mut ap = a;
            let mut bp = b;
            for _ in 0..kq {
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp as *const __m512i));
                let b1: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(bp.add(32) as *const __m512i));
                for i in 0..MR {
                    let ai: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ap.add(i) as i32));
                    acc[2 * i] = _mm512_dpbf16_ps(acc[2 * i], ai, b0);
                    acc[2 * i + 1] = _mm512_dpbf16_ps(acc[2 * i + 1], ai, b1);
                }
                ap = ap.add(MR);
                bp = bp.add(2 * NR);
            }
            let va = _mm512_set1_ps(alpha);
            let vb = _mm512_set1_ps(beta);
            let masks = [mask16(nr.min(16)), mask16(nr.saturating_sub(16))];
            for i in 0..MR {
                if i >= mr {
                    break;
                }
                let row = c.add(i * ldc);
                for (v, &m) in masks.iter().enumerate() {
                    if m == 0 {
                        continue;
                    }
                    let p = row.add(16 * v);
                    let mut r = _mm512_mul_ps(acc[2 * i + v], va);
                    if beta != 0.0 {
                        r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, p), r);
                    }
                    if round {
                        r = round_ps(r);
                    }
                    _mm512_mask_storeu_ps(p, m, r);
                }
            }
        }
    }
}
