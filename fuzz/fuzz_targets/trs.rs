//! The exact trust-region subproblem (SPEC §4, brox's `Trs`):
//! `min ½sᵀAs + gᵀs` s.t. `‖s‖ ≤ t`, for arbitrary symmetric `A` (n ≤ 6,
//! n = 0 included), `g` and `t`, on the Cholesky path (`Trs::new`) and the
//! eigendecomposition path (`Trs::with_eigen`):
//! - no panic; NaN/Inf or a non-positive radius: a typed error;
//! - finite input: a finite step inside the ball (`‖s‖ ≤ t·(1 + 1e-9)`)
//!   whose value is at most the value at `s = 0` (that is, ≤ 0, up to
//!   rounding of the largest term) where A's nonzero entries span less
//!   than about 4.5e12 (the solver's documented resolution).
#![no_main]

use brox::Trs;
use libfuzzer_sys::fuzz_target;
use lmo_fuzz::Input;

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let n = inp.below(7);
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in i..n {
            let v = inp.value();
            a[i * n + j] = v;
            a[j * n + i] = v;
        }
    }
    let g: Vec<f64> = (0..n).map(|_| inp.value()).collect();
    let t = inp.value();
    let eigen = inp.byte() % 2 == 1;
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!("n {n} a {a:?} g {g:?} t {t:e} eigen {eigen}");
    }
    let finite = a.iter().chain(&g).all(|v| v.is_finite()) && t.is_finite() && t > 0.0;
    let trs = if eigen {
        Trs::with_eigen(&a, n)
    } else {
        Trs::new(&a, n)
    };
    let Ok(trs) = trs else {
        assert!(!a.iter().all(|v| v.is_finite()), "a finite symmetric A refused");
        return;
    };
    match trs.solve(&g, t) {
        Err(_) => assert!(!finite, "finite input refused"),
        Ok(sol) => {
            assert!(finite, "non-finite input or radius accepted");
            assert!(sol.s.iter().all(|v| v.is_finite()), "non-finite step");
            // ‖s‖ scaled by max|s_i| (t may be near f64::MAX).
            let top = sol.s.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let norm = if top > 0.0 {
                top * sol.s.iter().map(|v| (v / top) * (v / top)).sum::<f64>().sqrt()
            } else {
                0.0
            };
            assert!(norm <= t * (1.0 + 1e-9), "‖s‖ = {norm} > t = {t}");
            // q(s) = ½sᵀAs + gᵀs ≤ q(0) = 0, up to rounding of the sums.
            let mut q = 0.0;
            let mut scale = 0.0f64;
            for i in 0..n {
                let mut as_i = 0.0;
                for j in 0..n {
                    as_i += a[i * n + j] * sol.s[j];
                    scale = scale.max((a[i * n + j] * sol.s[j] * sol.s[i]).abs());
                }
                q += 0.5 * sol.s[i] * as_i + g[i] * sol.s[i];
                scale = scale.max((g[i] * sol.s[i]).abs());
            }
            // The value check holds where A's nonzero entries span less
            // than 1/ε·1e-3 (≈ 4.5e12): beyond that the structure deciding
            // the minimizer lies below what any single scale of A resolves,
            // and the step is exact only for a matrix within ε‖A‖ of A
            // (documented on `Trs`).
            let nz = a.iter().filter(|v| **v != 0.0).map(|v| v.abs());
            let (lo, hi) = nz.fold((f64::INFINITY, 0.0f64), |(l, h), v| (l.min(v), h.max(v)));
            let resolvable = hi == 0.0 || hi / lo < 1e-3 / f64::EPSILON;
            if q.is_finite() && resolvable {
                assert!(q <= 1e-9 * scale * (n * n) as f64, "q(s) = {q} > 0");
            }
        }
    }
});
