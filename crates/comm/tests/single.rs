//! The single-process world: every collective is the identity (or a copy)
//! and every argument error of MPI's rules is found before anything moves.

use half::bf16;
use lmo_comm::{CommError, Communicator, ReduceOp, SingleProcess};

#[test]
fn one_rank_collectives_are_identities() {
    let c = SingleProcess;
    assert_eq!((c.rank(), c.size()), (0, 1));
    let mut v = [1.5f32, -2.0, 3.25];
    c.all_reduce(&mut v, ReduceOp::Sum).unwrap();
    assert_eq!(v, [1.5, -2.0, 3.25]);
    let mut w = [0.5f64, 7.0];
    c.all_reduce(&mut w, ReduceOp::Max).unwrap();
    assert_eq!(w, [0.5, 7.0]);
    let mut h = [bf16::from_f32(1.0), bf16::from_f32(-0.5)];
    c.all_reduce(&mut h, ReduceOp::Sum).unwrap();
    assert_eq!(h, [bf16::from_f32(1.0), bf16::from_f32(-0.5)]);
    let mut r = [0u64; 2];
    c.all_gather(&[3u64, 4], &mut r).unwrap();
    assert_eq!(r, [3, 4]);
    let mut r = [0.0f32; 3];
    c.all_gather_var(&[1.0f32, 2.0, 3.0], &[3], &mut r).unwrap();
    assert_eq!(r, [1.0, 2.0, 3.0]);
    let mut r = [0.0f64; 2];
    c.reduce_scatter(&[5.0f64, 6.0], &mut r, ReduceOp::Sum)
        .unwrap();
    assert_eq!(r, [5.0, 6.0]);
    let mut b = [9.0f32];
    c.broadcast(&mut b, 0).unwrap();
    assert_eq!(b, [9.0]);
    let mut d = [2.5f64, -1.0];
    c.reduce(&mut d, 0, ReduceOp::Sum).unwrap();
    assert_eq!(d, [2.5, -1.0]);
    c.barrier().unwrap();
}

#[test]
fn argument_errors_are_found_before_anything_moves() {
    let c = SingleProcess;
    let arg = |r: Result<(), CommError>| matches!(r, Err(CommError::Argument(_)));
    let mut r = [7.0f32; 3];
    assert!(arg(c.all_gather(&[1.0f32, 2.0], &mut r)));
    assert!(arg(c.all_gather_var(&[1.0f32], &[1, 1], &mut r)));
    assert!(arg(c.all_gather_var(&[1.0f32], &[2], &mut r)));
    assert!(arg(c.all_gather_var(&[1.0f32, 2.0], &[2], &mut r)));
    assert!(arg(c.reduce_scatter(&[1.0f32, 2.0], &mut r, ReduceOp::Sum)));
    assert!(arg(c.broadcast(&mut r, 1)));
    assert!(arg(c.reduce(&mut r, 1, ReduceOp::Sum)));
    assert_eq!(r, [7.0; 3], "a refused call wrote its buffer");
    // Through a reference (several users share one world).
    let shared = &c;
    assert!(arg(shared.broadcast(&mut r, 3)));
}

#[test]
fn counted_counts_calls_and_payload_bytes() {
    use lmo_comm::{Counted, Traffic};
    let c = Counted::new(SingleProcess);
    let mut v = [1.0f32; 10];
    c.all_reduce(&mut v, ReduceOp::Sum).unwrap();
    let mut w = [0.0f64; 3];
    c.broadcast(&mut w, 0).unwrap();
    let mut r = [0u64; 1];
    c.all_gather(&[5u64], &mut r).unwrap();
    c.barrier().unwrap();
    assert_eq!(
        c.traffic(),
        Traffic {
            calls: 4,
            bytes: 40 + 24 + 8
        }
    );
    // A refused call is not counted (checked before it reaches the count).
    assert!(c.broadcast(&mut w, 1).is_err());
    assert_eq!(c.traffic().calls, 4);
}
