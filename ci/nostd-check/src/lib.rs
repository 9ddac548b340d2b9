//! A `#![no_std]` staticlib that uses lmo-core. If any dependency pulled in
//! `std`, linking std's `panic_impl` next to the handler below fails with
//! E0152 (duplicate lang item).
#![no_std]

extern crate alloc;

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

use lmo_core::{JacobiSvd, LmoError, Shape};

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

/// A bump allocator over a static arena (the check never frees much).
struct Bump {
    arena: UnsafeCell<[u8; 1 << 16]>,
    next: AtomicUsize,
}

unsafe impl Sync for Bump {}

unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let size = layout.size();
        let align = layout.align();
        let mut start = 0;
        let r = self.next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            start = (n + align - 1) & !(align - 1);
            if start + size <= 1 << 16 { Some(start + size) } else { None }
        });
        match r {
            Ok(_) => unsafe { (self.arena.get() as *mut u8).add(start) },
            Err(_) => core::ptr::null_mut(),
        }
    }
    unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
}

#[global_allocator]
static ALLOC: Bump = Bump { arena: UnsafeCell::new([0; 1 << 16]), next: AtomicUsize::new(0) };

/// Nuclear norm of a 2×2 matrix through lmo-core's Jacobi SVD, exported
/// with the C ABI so the code is kept.
#[unsafe(no_mangle)]
pub extern "C" fn lmo_nostd_nuclear_2x2(a: *const f64) -> f64 {
    let a = unsafe { core::slice::from_raw_parts(a, 4) };
    let mut svd = JacobiSvd::new();
    match svd.compute(a, 2, 2) {
        Ok(()) => svd.nuclear(),
        Err(_) => f64::NAN,
    }
}

/// Exercises the shape and error types.
#[unsafe(no_mangle)]
pub extern "C" fn lmo_nostd_rank_error(rank: usize) -> i32 {
    let dims = [1usize; 6];
    match Shape::new(&dims[..rank.min(6)]) {
        Ok(s) => s.rank() as i32,
        Err(LmoError::UnsupportedRank(r)) => -(r as i32),
        Err(_) => i32::MIN,
    }
}
