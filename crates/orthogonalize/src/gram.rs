//! The Gram form of the Newton–Schulz iteration ([`crate::NsForm::Gram`]):
//! the steps on `k × k` matrices, with restarts and a guard.

use lmo_core::num_traits::{One, Zero};
use lmo_core::{Backend, Scalar, Shape, Trans};

use crate::NsConfig;
use crate::ns::Buffers;

/// The `k × k` matrices of the Gram form.
pub(crate) struct GramBuffers<T> {
    r: T,
    z: T,
    q: T,
    t: T,
    eye: T,
    /// Power-iteration vectors (`k × 1`): the fixed start and two iterates.
    v0: T,
    v: T,
    w: T,
    /// `k × 1`: the middle vector of the result's power iteration.
    u: T,
    /// The Gram matrix `X·Xᵀ` formed at the last (re-)formation of `X`.
    rr: T,
}

impl<T> GramBuffers<T> {
    fn new<B: Backend<Tensor = T>>(like: &T, k: usize) -> Self {
        let mut eye = B::zeros(like, Shape::matrix(k, k));
        for i in 0..k {
            B::set(&mut eye, i * k + i, B::Scalar::one());
        }
        // A fixed start vector with entries spread over (0.5, 1.5) and no
        // structure that an input could align with by accident.
        let mut v = B::zeros(like, Shape::matrix(k, 1));
        for i in 0..k {
            let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            B::set(
                &mut v,
                i,
                B::Scalar::of(0.5 + h as f64 / (1u64 << 24) as f64),
            );
        }
        Self {
            v: B::zeros(like, Shape::matrix(k, 1)),
            v0: v,
            w: B::zeros(like, Shape::matrix(k, 1)),
            u: B::zeros(like, Shape::matrix(k, 1)),
            rr: B::zeros(like, Shape::matrix(k, k)),
            r: B::zeros(like, Shape::matrix(k, k)),
            z: B::zeros(like, Shape::matrix(k, k)),
            q: B::zeros(like, Shape::matrix(k, k)),
            t: B::zeros(like, Shape::matrix(k, k)),
            eye,
        }
    }
}

/// Power-iteration steps per check of a tracked `R`.
const POWER: usize = 4;

/// The guard's bounds: `s[i]`, the largest `|p_i ∘ … ∘ p_1(σ)|` over
/// `σ ∈ [0, 1]` (evaluated on a grid of 4097 points; `s[0] = 1`), the
/// largest singular value a healthy iterate has after `i` steps.
#[derive(Clone)]
pub(crate) struct Guard {
    s: Vec<f64>,
}

impl Guard {
    pub(crate) fn new(cfg: &NsConfig) -> Self {
        const GRID: usize = 4096;
        let mut s = vec![0.0f64; cfg.steps + 1];
        for j in 0..=GRID {
            let mut x = j as f64 / GRID as f64;
            s[0] = s[0].max(x);
            for i in 0..cfg.steps {
                let [a, b, c] = cfg.coefficients.step(i);
                let x2 = x * x;
                x *= a + x2 * (b + c * x2);
                s[i + 1] = s[i + 1].max(x.abs());
            }
        }
        Self { s }
    }

    /// `R` (the tracked `X·Xᵀ`, `k × k`) looks like the Gram matrix of a
    /// healthy iterate: finite, `‖R‖_F ≤ tr(R)·(1 + 10⁻²)` (a necessary
    /// condition for positive semi-definiteness), and its largest
    /// eigenvalue in magnitude, estimated by [`POWER`] power-iteration
    /// steps (`O(k²)` each, continuing from the previous check's vector),
    /// at most `2·s[i]²` for the iterate after `i` steps. An eigenvalue the
    /// polynomial is amplifying stands out from the healthy ones
    /// (`≤ s[i]²`) by a growing factor each step, which is what makes a few
    /// power steps enough.
    fn gram_ok<B: Backend>(&self, g: &mut GramBuffers<B::Tensor>, i: usize) -> bool {
        let fro = B::norm2(&g.r).as_f64();
        let tr = B::dot(&g.r, &g.eye).as_f64();
        if !(fro.is_finite() && tr.is_finite() && fro <= tr * (1.0 + 1e-2)) {
            return false;
        }
        let r = &g.r;
        let est = power::<B>(&mut g.v, &mut g.w, |s, v, w| {
            B::gemm(s, r, Trans::No, v, Trans::No, B::Scalar::zero(), w)
        });
        est.is_some_and(|e| e <= 2.0 * self.s[i] * self.s[i])
    }

    /// The result `Q·X` (with `X` and `R_r = X·Xᵀ` from the last
    /// (re-)formation) has a largest singular value of at most `1.5·s[N]`
    /// after the `N` steps: `σ_max(Q·X)² = λ_max(Q·R_r·Q)`, estimated by
    /// [`POWER`] power-iteration steps on `k × k` matrices (three
    /// matrix–vector products each, from the fixed start vector) rather
    /// than on the `k × l` result.
    fn out_ok<B: Backend>(&self, g: &mut GramBuffers<B::Tensor>) -> bool {
        B::scale(B::Scalar::one(), &g.v0, &mut g.v);
        let (q, rr, u) = (&g.q, &g.rr, &mut g.u);
        let est = power::<B>(&mut g.v, &mut g.w, |s, v, w| {
            let zero = B::Scalar::zero();
            let one = B::Scalar::one();
            // w = s·Q·R_r·Q·v, through u.
            B::gemm(s, q, Trans::No, v, Trans::No, zero, w);
            B::gemm(one, rr, Trans::No, w, Trans::No, zero, u);
            B::gemm(one, q, Trans::No, u, Trans::No, zero, w);
        });
        est.is_some_and(|e| e.sqrt() <= 1.5 * self.s[self.s.len() - 1])
    }
}

/// [`POWER`] steps of the power iteration `v ← A·v/‖v‖` for the symmetric
/// positive operator or symmetric matrix `A` that `apply(s, v, w)` writes
/// as `w = s·A·v`; returns the last `‖A·v/‖v‖‖` (the estimate of the
/// largest eigenvalue in magnitude), or `None` when a norm is not finite
/// or the vector vanished.
fn power<B: Backend>(
    v: &mut B::Tensor,
    w: &mut B::Tensor,
    mut apply: impl FnMut(B::Scalar, &B::Tensor, &mut B::Tensor),
) -> Option<f64> {
    let mut est = 0.0;
    for _ in 0..POWER {
        let nv = B::norm2(v).as_f64();
        if !(nv.is_finite() && nv > 0.0) {
            return None;
        }
        apply(B::Scalar::of(1.0 / nv), v, w);
        est = B::norm2(w).as_f64();
        core::mem::swap(v, w);
    }
    est.is_finite().then_some(est)
}

/// Runs the Gram form on the normalized `buf.x` (`k × l`, `k ≤ l`; the
/// transpose of the input where `wide` is false) and writes the result to
/// `out`. Returns `false` when the guard refused the matrix (then `buf.x`
/// and `out` hold intermediate values and the caller starts again).
pub(crate) fn run<B: Backend>(
    cfg: &NsConfig,
    restarts: &[usize],
    guard: &Guard,
    buf: &mut Buffers<B::Tensor>,
    wide: bool,
    out: &mut B::Tensor,
) -> bool {
    let k = buf.k;
    let one = B::Scalar::one();
    let zero = B::Scalar::zero();
    let g = buf
        .gram
        .get_or_insert_with(|| GramBuffers::new::<B>(&buf.x, k));
    let (x, y) = (&mut buf.x, &mut buf.y);
    // Every matrix starts the guard's power iteration from the same vector.
    B::scale(one, &g.v0, &mut g.v);
    B::syrk(one, x, zero, &mut g.r);
    B::scale(one, &g.r, &mut g.rr);
    if !guard.gram_ok::<B>(g, 0) {
        return false;
    }
    // Q = I is kept implicit until the first step writes it.
    let mut q_is_eye = true;
    let steps = cfg.steps;
    for i in 0..steps {
        if restarts.contains(&i) && !q_is_eye {
            B::gemm(one, &g.q, Trans::No, x, Trans::No, zero, y);
            core::mem::swap(x, y);
            B::syrk(one, x, zero, &mut g.r);
            B::scale(one, &g.r, &mut g.rr);
            q_is_eye = true;
            if !guard.gram_ok::<B>(g, i) {
                return false;
            }
        }
        let [a, b, c] = cfg.coefficients.step(i).map(B::Scalar::of);
        // Z = b·R + c·R² (R is symmetric: R·Rᵀ = R²).
        B::scale(b, &g.r, &mut g.z);
        if c != zero {
            B::syrk(c, &g.r, one, &mut g.z);
        }
        // Q ← a·Q + Z·Q.
        if q_is_eye {
            B::scale(one, &g.z, &mut g.q);
            B::axpby(a, &g.eye, one, &mut g.q);
            q_is_eye = false;
        } else {
            // A full product although Z·Q is symmetric in exact arithmetic:
            // Z comes from the tracked R, which has drifted from R₀, so
            // forcing symmetry here (one triangle, mirrored) measured worse
            // in bf16 (docs/orthogonalize.md, "Gram Newton–Schulz").
            B::gemm_from(one, &g.z, Trans::No, &g.q, Trans::No, a, &g.q, &mut g.t);
            core::mem::swap(&mut g.q, &mut g.t);
        }
        // R ← P·R·P with P = a·I + Z, unless R is re-formed or unused next.
        if i + 1 < steps && !restarts.contains(&(i + 1)) {
            // Z, R and T = P·R commute: both products are symmetric.
            B::gemm_sym_from(one, &g.z, &g.r, a, &g.r, &mut g.t);
            B::gemm_sym_from(one, &g.t, &g.z, a, &g.t, &mut g.r);
            if !guard.gram_ok::<B>(g, i + 1) {
                return false;
            }
        }
    }
    // The result is checked before it is formed: a refused matrix costs
    // no k × l product.
    if !guard.out_ok::<B>(g) {
        return false;
    }
    if wide {
        B::gemm(one, &g.q, Trans::No, x, Trans::No, zero, out);
    } else {
        // out = (Q·X)ᵀ = Xᵀ·Qᵀ in one product, no transpose pass.
        B::gemm(one, x, Trans::Yes, &g.q, Trans::Yes, zero, out);
    }
    true
}
