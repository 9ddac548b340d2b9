//! Native AVX-512 GEMM and syrk kernels, chosen at run time: bf16 inputs
//! on CPUs with AVX-512 BF16 (`vdpbf16ps`: Intel Cooper Lake and Sapphire
//! Rapids, AMD Zen 4 and later), f32 on CPUs with AVX-512F.
//!
//! `C = α·A·B + β·C`. In [`Kind::Bf16`], A and B are rounded to bf16 (round
//! to nearest even) while they are packed, products and sums are f32
//! (`vdpbf16ps` multiplies bf16 pairs exactly and adds them into f32
//! accumulators), `C` stays f32 across the whole inner dimension and is
//! rounded to bf16 once, in the epilogue: the "bf16 storage, f32
//! accumulation" contract of [`NdBf16`](crate::NdBf16), at twice the
//! multiply-add rate of f32 FMA. In [`Kind::F32`] everything is f32 FMA;
//! its use is the one-triangle Gram product (`syrk`) of
//! [`Nd32`](crate::Nd32), where a general GEMM library does twice the work.
//!
//! Structure (Goto & van de Geijn 2008, "Anatomy of high-performance matrix
//! multiplication"): the inner dimension in blocks of [`KW`] 32-bit words
//! (a word is a bf16 pair or one f32), `B` packed per block into
//! [`NR`]-column panels, `A` packed per [`MC`]-row block into [`MR`]-row
//! panels, an `MR × NR = 12 × 32` register kernel (24 zmm accumulators);
//! `A·Aᵀ` products skip the tiles above the diagonal. Row blocks run in
//! parallel (rayon) unless the caller is itself a rayon worker (then the
//! caller's parallelism, e.g. blocks of an optimizer step, already fills
//! the cores). Packing buffers live in thread-local storage and are reused:
//! no allocation per call once they have grown.

use std::cell::Cell;

use rayon::prelude::*;

/// Register-tile rows.
pub const MR: usize = 12;
/// Register-tile columns (two zmm registers of 16 f32).
pub const NR: usize = 32;
/// Inner-dimension block in 32-bit words (1024 bf16 or 512 f32): a
/// `KW × NR` panel of `B` is 64 KiB and an `MC × KW` block of `A` 192 KiB,
/// both in L2; the register kernel needs 176 bytes per 24 multiply-adds of
/// them. Measured best of {128, 256, 384, 512} at 2048³ (bf16, Zen 4).
pub const KW: usize = 512;
/// Row block of `A` packed at once (a multiple of [`MR`]).
pub const MC: usize = 96;

/// The element type of the products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// bf16 operands (rounded on packing), f32 accumulation, optional bf16
    /// rounding of `C`.
    Bf16,
    /// f32 operands and accumulation.
    F32,
}

/// Below this many multiply-adds a product runs on one thread.
const PAR_MIN_WORK: usize = 96 * 96 * 96;

/// Whether this CPU runs the native kernel of `kind` (bf16: AVX-512 F, BW
/// and BF16; f32: AVX-512 F and BW).
pub fn available(kind: Kind) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && (kind == Kind::F32 || std::is_x86_feature_detected!("avx512bf16"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = kind;
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

impl Operand {
    /// An f32 matrix view read as `rows × inner`; `transposed` reads the
    /// view's columns as rows (the `B` side of `A·B`).
    pub fn of_view(v: &ndarray::ArrayView2<'_, f32>, transposed: bool) -> Self {
        let s = v.strides();
        let (rs, ps) = if transposed {
            (s[1], s[0])
        } else {
            (s[0], s[1])
        };
        Operand {
            ptr: v.as_ptr(),
            rs,
            ps,
        }
    }
}

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
struct PackPtr(*mut u32);
// SAFETY: packing tasks write disjoint panels; readers start after the
// packing pass has finished.
unsafe impl Send for PackPtr {}
unsafe impl Sync for PackPtr {}
impl PackPtr {
    fn get(&self) -> *mut u32 {
        self.0
    }
}

thread_local! {
    static A_BUF: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
    static B_BUF: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on a thread-local buffer of at least `len` elements, taken out
/// of its slot for the duration (a re-entrant call finds the slot empty and
/// grows its own, so nesting is safe).
fn with_buf<R>(
    slot: &'static std::thread::LocalKey<Cell<Vec<u32>>>,
    len: usize,
    f: impl FnOnce(&mut [u32]) -> R,
) -> R {
    let mut v = slot.with(Cell::take);
    if v.len() < len {
        v.resize(len, 0);
    }
    let r = f(&mut v[..len]);
    slot.with(|s| s.set(v));
    r
}

/// `C = α·A·B + β·C` in `kind` (or only its lower triangle, `lower_only`,
/// for `A·Aᵀ`-type products), `C` row-major `m × n` with row stride `ldc`;
/// `A` is `m × k`, `B` is `k × n` read as `n × k` (see [`Operand`]). With
/// `round` (bf16 only), every written entry of `C` is rounded to bf16. `β = 0` never
/// reads `C`. With `src = Some((ptr, ld))`, `β` multiplies that matrix
/// (same shape, row stride `ld`, not overlapping `C`) instead of `C`:
/// `C = α·A·B + β·S` in one pass. With `lower_only`, tiles above the diagonal are skipped and
/// tiles across it also write some upper entries (the caller mirrors).
///
/// # Safety
/// [`available`]`(kind)` must be true; `a`, `b` must address `m × k` and `n × k`
/// readable f32 values and `c` `m` rows of `n` writable ones, with no
/// overlap between `c` and the operands; `k ≥ 1`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    kind: Kind,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Operand,
    b: Operand,
    beta: f32,
    src: Option<(*const f32, usize)>,
    c: *mut f32,
    ldc: usize,
    lower_only: bool,
    round: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let parallel =
            m * n * k >= PAR_MIN_WORK && rayon::current_thread_index().is_none() && m > MC;
        let bf16 = kind == Kind::Bf16;
        let per_word = if bf16 { 2 } else { 1 };
        let kc = KW * per_word;
        let (pack, kernel): (x86::PackFn, x86::KernelFn) = if bf16 {
            (x86::pack_bf16, x86::kernel_bf16)
        } else {
            (x86::pack_f32, x86::kernel_f32)
        };
        let npanels = n.div_ceil(NR);
        let c = OutPtr(c);
        let src = src.map(|(p, ld)| (OutPtr(p as *mut f32), ld));
        with_buf(&B_BUF, npanels * NR * KW, |bpack| {
            let bp = PackPtr(bpack.as_mut_ptr());
            for pc in (0..k).step_by(kc) {
                let pn = kc.min(k - pc);
                let kq = pn.div_ceil(per_word);
                let pack_b = |jp: usize| {
                    let j0 = jp * NR;
                    // SAFETY: panel jp occupies words [jp·NR·kq, (jp+1)·NR·kq)
                    // of the npanels·NR·KW-word buffer (kq ≤ KW, jp < npanels):
                    // the `add` stays in bounds.
                    unsafe {
                        pack(
                            b,
                            j0,
                            NR.min(n - j0),
                            NR,
                            pc,
                            pn,
                            bp.get().add(jp * NR * kq),
                        )
                    }
                };
                if parallel {
                    (0..npanels).into_par_iter().for_each(pack_b);
                } else {
                    (0..npanels).for_each(pack_b);
                }
                let beta_k = if pc == 0 { beta } else { 1.0 };
                // The first inner block reads β·S (or β·C); later ones add
                // onto the partial C.
                let first_src = if pc == 0 { src } else { None };
                let round_k = bf16 && round && pc + kc >= k;
                let block = |blk: usize| {
                    let ic = blk * MC;
                    let mc = MC.min(m - ic);
                    with_buf(&A_BUF, MC * KW, |apack| {
                        let ap = apack.as_mut_ptr();
                        for ir in (0..mc).step_by(MR) {
                            // SAFETY: MR-row panels of the MC block, disjoint;
                            // ir + MR ≤ MC (ir < mc ≤ MC, both multiples of MR)
                            // and kq ≤ KW, so `ap + ir·kq` and the panel's
                            // MR·kq words lie in the MC·KW-word buffer.
                            unsafe {
                                pack(a, ic + ir, MR.min(mc - ir), MR, pc, pn, ap.add(ir * kq))
                            };
                        }
                        let jmax = if lower_only { (ic + mc).min(n) } else { n };
                        for j0 in (0..jmax).step_by(NR) {
                            // SAFETY: panel j0/NR of the packed B (see pack_b):
                            // j0 < n, so j0/NR < npanels and the `add` is in bounds.
                            let bpanel = unsafe { bp.get().add((j0 / NR) * NR * kq) };
                            for ir in (0..mc).step_by(MR) {
                                let i0 = ic + ir;
                                let mr = MR.min(mc - ir);
                                if lower_only && i0 + mr <= j0 {
                                    continue;
                                }
                                // SAFETY: the tile (i0.., j0..) lies in C and
                                // belongs to this row block. i0 < m and j0 < n,
                                // so entry (i0, j0) of S (or C) and of C exists:
                                // the three `add`s stay in their allocations
                                // (and `ap + ir·kq` as in the packing above).
                                unsafe {
                                    let (sp, lds) = match first_src {
                                        Some((s, ld)) => {
                                            (s.get().add(i0 * ld + j0) as *const f32, ld)
                                        }
                                        None => (c.get().add(i0 * ldc + j0) as *const f32, ldc),
                                    };
                                    kernel(
                                        kq,
                                        ap.add(ir * kq),
                                        bpanel,
                                        sp,
                                        lds,
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
        let _ = (
            kind, m, n, k, alpha, a, b, beta, src, c, ldc, lower_only, round,
        );
        unreachable!("native::gemm called where available() is false");
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MR, NR, Operand};
    use std::arch::x86_64::*;

    /// The signature of [`pack`].
    pub(super) type PackFn = unsafe fn(Operand, usize, usize, usize, usize, usize, *mut u32);
    /// The signature of [`kernel`].
    pub(super) type KernelFn = unsafe fn(
        usize,
        *const u32,
        *const u32,
        *const f32,
        usize,
        *mut f32,
        usize,
        usize,
        usize,
        f32,
        f32,
        bool,
    );

    /// Packs rows `r0 .. r0+rn` (zero rows up to `rr`) and inner indices
    /// `p0 .. p0+pn` of `op` as 32-bit words, `out[q·rr + r]` = word `q` of
    /// row `r`: with `BF16` the pair `bf16(op(r, 2q)), bf16(op(r, 2q+1))`
    /// (low half first, zero-padded to even), else the f32 `op(r, q)`.
    ///
    /// Inlined into [`pack_bf16`] / [`pack_f32`], which enable the target
    /// features of each variant.
    #[inline(always)]
    unsafe fn pack<const BF16: bool>(
        op: Operand,
        r0: usize,
        rn: usize,
        rr: usize,
        p0: usize,
        pn: usize,
        out: *mut u32,
    ) {
        let per = if BF16 { 2 } else { 1 };
        let kq = pn.div_ceil(per);
        // SAFETY (whole body): `out` holds kq·rr words; reads stay inside
        // the operand by the caller's contract (masked lanes are not read).
        // Pointer arithmetic: `offset`/`add` only where the result addresses
        // an existing entry (or one past the end); addresses that may lie
        // outside the operand (lanes a mask switches off) use `wrapping_*`,
        // which is defined for any result.
        unsafe {
            // Entry (r, p): callers pass r < rn, p < pn only, an entry of
            // the operand, so the `offset` stays in its allocation.
            let at = |r: usize, p: usize| {
                op.ptr
                    .offset((r0 + r) as isize * op.rs + (p0 + p) as isize * op.ps)
            };
            // The address of (r, p) for any r < rr, p < pn: rows rn..rr are
            // padding that the operand need not have (their loads are fully
            // masked), so this address may lie outside it.
            let at_wrapping = |r: usize, p: usize| {
                op.ptr
                    .wrapping_offset((r0 + r) as isize * op.rs + (p0 + p) as isize * op.ps)
            };
            // 16 words of row `row` from inner index `p` on (`rem` elements
            // left in the block).
            let words = |row: *const f32, rem: usize| -> __m512i {
                if BF16 {
                    let lo = _mm512_maskz_loadu_ps(mask16(rem.min(16)), row);
                    // With rem < 16 the row (and the operand) may end before
                    // row + 16: wrapping, and the load's mask is then 0.
                    let hi = _mm512_maskz_loadu_ps(
                        mask16(rem.saturating_sub(16).min(16)),
                        row.wrapping_add(16),
                    );
                    std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo))
                } else {
                    _mm512_castps_si512(_mm512_maskz_loadu_ps(mask16(rem.min(16)), row))
                }
            };
            if op.ps == 1 {
                // Words are contiguous along a row: read 16 rows × 16 words,
                // transpose the block in registers, store a row of `rr`
                // words per inner word index.
                for c in (0..rr).step_by(16) {
                    let lanes = mask16((rr - c).min(16));
                    let mut q0 = 0;
                    while q0 < kq {
                        let rem = pn - per * q0;
                        let mut v = [_mm512_setzero_si512(); 16];
                        for (i, vi) in v.iter_mut().enumerate() {
                            let r = c + i;
                            if r < rn && r < rr {
                                *vi = words(at(r, per * q0), rem);
                            }
                        }
                        let t = transpose16(&v);
                        for (j, tj) in t.iter().enumerate().take((kq - q0).min(16)) {
                            // q0 + j < kq and c < rr: inside `out`.
                            _mm512_mask_storeu_epi32(
                                out.add((q0 + j) * rr + c) as *mut i32,
                                lanes,
                                *tj,
                            );
                        }
                        q0 += 16;
                    }
                }
            } else if op.rs == 1 && rr.is_multiple_of(16) {
                // Rows are contiguous: a word row is one inner index (f32)
                // or two interleaved (bf16).
                let idx = _mm512_set_epi16(
                    31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21,
                    5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0,
                );
                for q in 0..kq {
                    for c in (0..rr).step_by(16) {
                        // c ≥ rn (padding rows of the last panel): m = 0 and
                        // row c need not exist, hence `at_wrapping`.
                        let m = mask16(rn.saturating_sub(c).min(16));
                        let v = if BF16 {
                            let lo = _mm512_maskz_loadu_ps(m, at_wrapping(c, 2 * q));
                            let hi = if 2 * q + 1 < pn {
                                _mm512_maskz_loadu_ps(m, at_wrapping(c, 2 * q + 1))
                            } else {
                                _mm512_setzero_ps()
                            };
                            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                            _mm512_permutexvar_epi16(idx, v)
                        } else {
                            _mm512_castps_si512(_mm512_maskz_loadu_ps(m, at_wrapping(c, q)))
                        };
                        // q < kq, c + 16 ≤ rr (rr a multiple of 16): inside `out`.
                        _mm512_storeu_si512(out.add(q * rr + c) as *mut __m512i, v);
                    }
                }
            } else {
                for q in 0..kq {
                    for r in 0..rr {
                        // `at` only for entries of the operand (r < rn, p < pn).
                        let get = |p: usize| {
                            if r < rn && p < pn { *at(r, p) } else { 0.0 }
                        };
                        *out.add(q * rr + r) = if BF16 {
                            let lo = half::bf16::from_f32(get(2 * q)).to_bits() as u32;
                            let hi = half::bf16::from_f32(get(2 * q + 1)).to_bits() as u32;
                            lo | (hi << 16)
                        } else {
                            get(q).to_bits()
                        };
                    }
                }
            }
        }
    }

    /// A target-feature wrapper around a `BF16`-generic body (`#[inline(always)]`,
    /// so the body is compiled with the wrapper's features).
    macro_rules! variant {
        ($(#[$doc:meta])* $name:ident = $body:ident::<$bf16:literal>, $features:literal,
         ($($arg:ident: $ty:ty),*)) => {
            $(#[$doc])*
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name($($arg: $ty),*) {
                // SAFETY: the caller's contract, and the features are enabled.
                unsafe { $body::<$bf16>($($arg),*) }
            }
        };
    }
    variant!(
        /// [`pack`] of bf16 pairs (AVX-512 F, BW, BF16).
        pack_bf16 = pack::<true>, "avx512f,avx512bw,avx512bf16",
        (op: Operand, r0: usize, rn: usize, rr: usize, p0: usize, pn: usize, out: *mut u32)
    );
    variant!(
        /// [`pack`] of f32 (AVX-512 F, BW).
        pack_f32 = pack::<false>, "avx512f,avx512bw",
        (op: Operand, r0: usize, rn: usize, rr: usize, p0: usize, pn: usize, out: *mut u32)
    );
    variant!(
        /// [`kernel`] on bf16 pairs (AVX-512 F, BW, BF16).
        kernel_bf16 = kernel::<true>, "avx512f,avx512bw,avx512bf16",
        (kq: usize, a: *const u32, b: *const u32, csrc: *const f32, ldsrc: usize, c: *mut f32,
         ldc: usize, mr: usize, nr: usize, alpha: f32, beta: f32, round: bool)
    );
    variant!(
        /// [`kernel`] on f32 (AVX-512 F, BW).
        kernel_f32 = kernel::<false>, "avx512f,avx512bw",
        (kq: usize, a: *const u32, b: *const u32, csrc: *const f32, ldsrc: usize, c: *mut f32,
         ldc: usize, mr: usize, nr: usize, alpha: f32, beta: f32, round: bool)
    );

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

    /// The `MR × NR` register kernel over `kq` packed words (`vdpbf16ps` on
    /// bf16 pairs, or `vfmadd231ps` on f32), then
    /// `C[..mr, ..nr] = α·acc + β·S` with `S` at `csrc` (row stride `ldsrc`;
    /// `C` itself or another matrix; β = 0: not read), rounded to bf16 with
    /// `round`.
    ///
    /// Inlined into [`kernel_bf16`] / [`kernel_f32`].
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn kernel<const BF16: bool>(
        kq: usize,
        a: *const u32,
        b: *const u32,
        csrc: *const f32,
        ldsrc: usize,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        alpha: f32,
        beta: f32,
        round: bool,
    ) {
        // SAFETY (whole body): `a` holds kq·MR words, `b` kq·NR words, and
        // the tile's mr rows × nr columns lie in C (masked beyond nr).
        unsafe {
            if beta != 0.0 {
                for i in 0..MR.min(mr) {
                    // Row i < mr of S exists: `add` is in bounds. Column 16
                    // exists only for nr > 16 (the last row may end the
                    // allocation before it): `wrapping_add`; a prefetch of
                    // any address is harmless.
                    _mm_prefetch::<_MM_HINT_T0>(csrc.add(i * ldsrc) as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(csrc.wrapping_add(i * ldsrc + 16) as *const i8);
                }
            }
            let mut acc = [_mm512_setzero_ps(); 2 * MR];
            let mut ap = a;
            let mut bp = b;
            // In the loop, ap/bp point at word q of the panels (q < kq):
            // `bp + 16` and `ap + i` (i < MR) are entries of them, and the
            // increments end at `a + kq·MR` / `b + kq·NR`, one past each
            // panel, still inside (or one past the end of) the packing
            // buffer: every `add` is in bounds.
            for _ in 0..kq {
                let b0 = _mm512_loadu_si512(bp as *const __m512i);
                let b1 = _mm512_loadu_si512(bp.add(16) as *const __m512i);
                for i in 0..MR {
                    let ai = _mm512_set1_epi32(*ap.add(i) as i32);
                    if BF16 {
                        let ai: __m512bh = std::mem::transmute(ai);
                        acc[2 * i] = _mm512_dpbf16_ps(
                            acc[2 * i],
                            ai,
                            std::mem::transmute::<__m512i, __m512bh>(b0),
                        );
                        acc[2 * i + 1] = _mm512_dpbf16_ps(
                            acc[2 * i + 1],
                            ai,
                            std::mem::transmute::<__m512i, __m512bh>(b1),
                        );
                    } else {
                        let ai = _mm512_castsi512_ps(ai);
                        acc[2 * i] = _mm512_fmadd_ps(ai, _mm512_castsi512_ps(b0), acc[2 * i]);
                        acc[2 * i + 1] =
                            _mm512_fmadd_ps(ai, _mm512_castsi512_ps(b1), acc[2 * i + 1]);
                    }
                }
                ap = ap.add(MR);
                bp = bp.add(NR);
            }
            let va = _mm512_set1_ps(alpha);
            let vb = _mm512_set1_ps(beta);
            let masks = [mask16(nr.min(16)), mask16(nr.saturating_sub(16))];
            for i in 0..MR {
                if i >= mr {
                    break;
                }
                // i < mr: row i of C and of S exists, so these `add`s
                // are in bounds; `16·v` is added only when the mask is
                // non-zero, i.e. v = 0 or nr > 16 (column 16 exists).
                let row = c.add(i * ldc);
                let srow = csrc.add(i * ldsrc);
                for (v, &m) in masks.iter().enumerate() {
                    if m == 0 {
                        continue;
                    }
                    let p = row.add(16 * v);
                    let mut r = _mm512_mul_ps(acc[2 * i + v], va);
                    if beta != 0.0 {
                        r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, srow.add(16 * v)), r);
                    }
                    if BF16 && round {
                        r = round_ps(r);
                    }
                    _mm512_mask_storeu_ps(p, m, r);
                }
            }
        }
    }
}
