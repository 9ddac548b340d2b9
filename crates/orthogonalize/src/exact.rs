//! Exact polar factor through faer's SVD (pure Rust; no system library).

use faer::Mat;
use lmo_core::{Backend, LmoError, Orthogonalizer, Scalar};

/// Exact polar factor `polar(G) = Σ_{σ_j > rtol·σ_max} u_j·v_jᵀ` through
/// faer's thin SVD, computed in f64 whatever the backend precision, with
/// `rtol = max(m,n)·ε_f64` (singular pairs at rounding level count as zero,
/// the partial isometry Newton–Schulz also converges to).
///
/// Works on every [`Backend`]: the matrix is read through
/// [`Backend::copy_to_slice`] and written back through
/// [`Backend::copy_from_slice`] (host copies; the SVD allocates anyway).
/// The reference for accuracy tables and a user option for small
/// and medium matrices (`O(m·n·min(m,n))` flops, several times a
/// Newton–Schulz step). Zero → zero; empty → nothing; non-finite → error,
/// output untouched.
pub struct FaerPolar {
    a: Mat<f64>,
    p: Mat<f64>,
}

impl Default for FaerPolar {
    fn default() -> Self {
        Self {
            a: Mat::new(),
            p: Mat::new(),
        }
    }
}

impl FaerPolar {
    /// A new exact orthogonalizer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Singular values of `g` (descending, `min(m, n)` of them), in f64.
    /// The SVD runs on `g/max|g_ij|` and the values are scaled back, so
    /// subnormal and huge entries give accurate, finite values.
    pub fn singular_values<B: Backend>(&mut self, g: &B::Tensor) -> Result<Vec<f64>, LmoError> {
        let (m, n) = B::shape(g).as_matrix()?;
        B::check_finite(g)?;
        if m == 0 || n == 0 {
            return Ok(Vec::new());
        }
        let amax = self.load::<B>(g, m, n);
        if amax == 0.0 {
            return Ok(vec![0.0; m.min(n)]);
        }
        let s = self.a.singular_values().map_err(|_| LmoError::NonFinite)?;
        Ok(s.into_iter().map(|x| x * amax).collect())
    }

    /// Reads `g` (row-major) into `self.a`, divided by `max|g_ij|` (a
    /// division, exact in range for subnormal and huge maxima alike), and
    /// returns that maximum (0 for a zero matrix, left as it is).
    fn load<B: Backend>(&mut self, g: &B::Tensor, m: usize, n: usize) -> f64 {
        let mut buf = vec![B::Scalar::of(0.0); m * n];
        B::copy_to_slice(g, &mut buf);
        self.a.resize_with(m, n, |_, _| 0.0);
        let amax = buf.iter().fold(0.0f64, |a, v| a.max(v.as_f64().abs()));
        let d = if amax > 0.0 { amax } else { 1.0 };
        for i in 0..m {
            for j in 0..n {
                self.a[(i, j)] = buf[i * n + j].as_f64() / d;
            }
        }
        amax
    }
}

impl<B: Backend> Orthogonalizer<B> for FaerPolar {
    fn polar(&mut self, g: &B::Tensor, out: &mut B::Tensor) -> Result<(), LmoError> {
        self.run::<B>(g, out)
    }

    fn is_exact(&self) -> bool {
        true
    }
}

impl FaerPolar {
    /// Writes `polar(g)` into `out` on backend `B` (the
    /// [`Orthogonalizer`] method, callable with the backend named:
    /// `FaerPolar::new().run::<Nd64>(&g, &mut out)`).
    pub fn run<B: Backend>(&mut self, g: &B::Tensor, out: &mut B::Tensor) -> Result<(), LmoError> {
        let shape = B::shape(g);
        shape.check_eq(&B::shape(out))?;
        let (m, n) = shape.as_matrix()?;
        B::check_finite(g)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        // Scaled by max|g| so no entry size over/underflows inside the SVD.
        let amax = self.load::<B>(g, m, n);
        if amax == 0.0 {
            B::fill(out, B::Scalar::of(0.0));
            return Ok(());
        }
        let svd = self.a.thin_svd().map_err(|_| LmoError::NonFinite)?;
        let (u, s, v) = (svd.U(), svd.S().column_vector(), svd.V());
        let k = m.min(n);
        let smax = s[0];
        let rtol = m.max(n) as f64 * f64::EPSILON;
        let r = (0..k).take_while(|&j| s[j] > rtol * smax).count();
        self.p.resize_with(m, n, |_, _| 0.0);
        faer::linalg::matmul::matmul(
            self.p.as_mut(),
            faer::Accum::Replace,
            u.subcols(0, r),
            v.subcols(0, r).transpose(),
            1.0,
            faer::Par::Seq,
        );
        let vals: Vec<B::Scalar> = (0..m * n)
            .map(|k| B::Scalar::of(self.p[(k / n, k % n)]))
            .collect();
        B::copy_from_slice(&vals, out);
        Ok(())
    }
}
