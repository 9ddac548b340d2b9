use lmo_core::{Backend, Trans};
use lmo_ndarray::Nd32;
use ndarray::{ArrayD, IxDyn};
use std::time::Instant;
fn t(name: &str, f: &mut dyn FnMut()) {
    f();
    let r = 5;
    let s = Instant::now();
    for _ in 0..r {
        f();
    }
    println!(
        "{name}: {:.2} ms",
        s.elapsed().as_secs_f64() / r as f64 * 1e3
    );
}
fn main() {
    let n: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let x = ArrayD::<f32>::from_shape_fn(IxDyn(&[n, n]), |ix| {
        ((ix[0] * 7 + ix[1] * 3) % 11) as f32 / 11.0 - 0.5
    });
    let mut a = ArrayD::<f32>::zeros(IxDyn(&[n, n]));
    let mut b = a.clone();
    let mut y = a.clone();
    t("syrk X", &mut || Nd32::syrk(1.0, &x, 0.0, &mut a));
    t("syrk A add", &mut || Nd32::syrk(0.5, &x, 1.0, &mut b));
    t("gemm B X add", &mut || {
        Nd32::gemm(1.0, &b, Trans::No, &x, Trans::No, 1.0, &mut y)
    });
    t("gemm B X replace", &mut || {
        Nd32::gemm(1.0, &b, Trans::No, &x, Trans::No, 0.0, &mut y)
    });
    t("scale", &mut || Nd32::scale(0.5, &x, &mut y));
    let mut m2 = a.clone();
    t("mirror only (naive idx)", &mut || {
        let k = n;
        let mut v = m2.view_mut().into_dimensionality::<ndarray::Ix2>().unwrap();
        let s = v.as_slice_mut().unwrap();
        for i in 0..k {
            for j in 0..i {
                s[j * k + i] = s[i * k + j];
            }
        }
    });
    t("mirror tiled", &mut || {
        let k = n;
        let mut v = m2.view_mut().into_dimensionality::<ndarray::Ix2>().unwrap();
        let s = v.as_slice_mut().unwrap();
        const B: usize = 32;
        for ib in (0..k).step_by(B) {
            let iend = (ib + B).min(k);
            for jb in (0..=ib).step_by(B) {
                for i in ib..iend {
                    let jend = (jb + B).min(i);
                    for j in jb..jend {
                        s[j * k + i] = s[i * k + j];
                    }
                }
            }
        }
    });
    t("norm2", &mut || {
        std::hint::black_box(Nd32::norm2(&x));
    });
}
#[allow(dead_code)]
fn unused() {}
