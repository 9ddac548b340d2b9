use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, Mat, MatMut, MatRef, Par};
use std::time::Instant;
fn syrk(c: MatMut<f32>, x: MatRef<f32>, leaf: usize, tri_ms: &mut f64, gemm_ms: &mut f64) {
    let k = c.nrows();
    if k <= leaf {
        let t = Instant::now();
        triangular::matmul(
            c,
            BlockStructure::TriangularLower,
            Accum::Replace,
            x,
            BlockStructure::Rectangular,
            x.transpose(),
            BlockStructure::Rectangular,
            1.0,
            Par::rayon(0),
        );
        *tri_ms += t.elapsed().as_secs_f64() * 1e3;
        return;
    }
    let h = (k / 2).div_ceil(64) * 64;
    let (x1, x2) = x.split_at_row(h);
    let (c11, _c12, c21, c22) = c.split_at_mut(h, h);
    syrk(c11, x1, leaf, tri_ms, gemm_ms);
    let t = Instant::now();
    faer::linalg::matmul::matmul(c21, Accum::Replace, x2, x1.transpose(), 1.0, Par::rayon(0));
    *gemm_ms += t.elapsed().as_secs_f64() * 1e3;
    syrk(c22, x2, leaf, tri_ms, gemm_ms);
}
fn main() {
    let n: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    // row-major x: faer col-major of xᵀ, transposed view
    let xt = Mat::<f32>::from_fn(n, n, |i, j| ((i * 7 + j * 3) % 11) as f32 / 11.0 - 0.5);
    let x = xt.transpose();
    let mut ct = Mat::<f32>::zeros(n, n);
    for leaf in [64, 128, 256, 512, 1024] {
        let (mut a, mut b) = (0.0, 0.0);
        syrk(ct.as_mut().transpose_mut(), x, leaf, &mut a, &mut b);
        let (mut a, mut b) = (0.0, 0.0);
        let t = Instant::now();
        for _ in 0..3 {
            syrk(ct.as_mut().transpose_mut(), x, leaf, &mut a, &mut b);
        }
        println!(
            "n={n} leaf={leaf}: total {:.1} ms (tri {:.1}, gemm {:.1})",
            t.elapsed().as_secs_f64() * 1e3 / 3.0,
            a / 3.0,
            b / 3.0
        );
    }
    let t = Instant::now();
    for _ in 0..3 {
        faer::linalg::matmul::matmul(
            ct.as_mut().transpose_mut(),
            Accum::Replace,
            x,
            x.transpose(),
            1.0,
            Par::rayon(0),
        );
    }
    println!("full gemm: {:.1} ms", t.elapsed().as_secs_f64() * 1e3 / 3.0);
}
