//! Exact polar factor through faer's SVD (pure Rust; no system library).

use faer::Mat;
use lmo_core::{Backend, LmoError, Orthogonalizer};
use lmo_ndarray::{NdBackend, NdScalar};
use ndarray::ArrayD;

/// Exact polar factor `polar(G) = Σ_{σ_j > rtol·σ_max} u_j·v_jᵀ` through
/// faer's thin SVD, computed in f64 whatever the backend precision, with
/// `rtol = max(m,n)·ε_f64` (singular pairs at rounding level count as zero,
/// the partial isometry Newton–Schulz also converges to).
///
/// The reference for accuracy tables and a user option for small and
/// medium matrices (`O(m·n·min(m,n))` flops, several times a Newton–Schulz
/// step). Zero → zero; empty → nothing; non-finite → error, output untouched.
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

    /// Singular values of `g` (descending), in f64.
    pub fn singular_values<S: NdScalar>(&mut self, g: &ArrayD<S>) -> Result<Vec<f64>, LmoError> {
        let (m, n) = NdBackend::<S>::shape(g).as_matrix()?;
        NdBackend::<S>::check_finite(g)?;
        if m == 0 || n == 0 {
            return Ok(Vec::new());
        }
        self.load(g, m, n);
        self.a.singular_values().map_err(|_| LmoError::NonFinite)
    }

    fn load<S: NdScalar>(&mut self, g: &ArrayD<S>, m: usize, n: usize) {
        self.a.resize_with(m, n, |_, _| 0.0);
        for ((i, j), v) in g
            .view()
            .into_dimensionality::<ndarray::Ix2>()
            .expect("matrix")
            .indexed_iter()
        {
            self.a[(i, j)] = v.as_f64();
        }
    }
}

impl<S: NdScalar> Orthogonalizer<NdBackend<S>> for FaerPolar {
    fn polar(&mut self, g: &ArrayD<S>, out: &mut ArrayD<S>) -> Result<(), LmoError> {
        let shape = NdBackend::<S>::shape(g);
        shape.check_eq(&NdBackend::<S>::shape(out))?;
        let (m, n) = shape.as_matrix()?;
        NdBackend::<S>::check_finite(g)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        self.load(g, m, n);
        // Scale by max|g| so no entry size over/underflows inside the SVD.
        let amax = g.iter().fold(0.0f64, |a, v| a.max(v.as_f64().abs()));
        if amax == 0.0 {
            out.fill(S::zero());
            return Ok(());
        }
        for j in 0..n {
            for i in 0..m {
                self.a[(i, j)] /= amax;
            }
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
        for ((i, j), o) in out
            .view_mut()
            .into_dimensionality::<ndarray::Ix2>()
            .expect("matrix")
            .indexed_iter_mut()
        {
            *o = S::of(self.p[(i, j)]);
        }
        Ok(())
    }

    fn is_exact(&self) -> bool {
        true
    }
}
