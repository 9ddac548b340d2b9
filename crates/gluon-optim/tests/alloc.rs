//! No allocation per step after the first (DESIGN.md): a counting global
//! allocator around later steps of every preset on the MLP. Sequential
//! mode: exactly zero. Parallel mode: faer's GEMM keeps a scratch buffer
//! per worker thread, allocated the first time a worker runs a product of a
//! given size, so a few one-time allocations may show up after warm-up —
//! bounded by the worker count, never per step.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use gluon_optim::Optimizer;
use lmo_ndarray::Nd64;
use lmo_problems::{Mlp, Problem};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steps_after_the_first_do_not_allocate() {
    let p = Mlp::new(3);
    for parallel in [false, true] {
        for (name, mut cfg) in common::all_presets() {
            cfg.parallel = parallel;
            let (labels, mut params) = common::setup(&p);
            let mut grads = params.clone();
            p.loss_grad(&params, &mut grads);
            let mut opt = Optimizer::<Nd64>::new(cfg, labels, &params).unwrap();
            for _ in 0..3 {
                opt.step(&mut params, &grads).unwrap();
            }
            let before = ALLOCS.load(Ordering::SeqCst);
            let steps = 20;
            for _ in 0..steps {
                opt.step(&mut params, &grads).unwrap();
            }
            let n = ALLOCS.load(Ordering::SeqCst) - before;
            if parallel {
                let bound = 4 * rayon::current_num_threads();
                assert!(
                    n <= bound,
                    "{name} (parallel): {n} allocations in {steps} steps (bound {bound})"
                );
            } else {
                assert_eq!(n, 0, "{name}: {n} allocations in {steps} sequential steps");
            }
        }
    }
}
