//! Every sharded-step check on every rank of an MPI job:
//!
//! ```text
//! mpirun -np 2 dist-check [--save FILE | --load FILE]
//! mpirun -np 2 dist-check --exit-early     # a rank leaves: the job must end
//! ```
//!
//! Exits 0 when every check passed on this rank; a failing check panics
//! (and MPI ends the job).

use std::path::PathBuf;

use lmo_comm::{Communicator, MpiComm};

fn main() {
    let comm = MpiComm::init().expect("MPI initializes");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let file = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
    };
    if args.iter().any(|a| a == "--exit-early") {
        // The last rank leaves before a collective the others enter.
        let mut v = [1.0f64];
        if comm.rank() == comm.size() - 1 {
            eprintln!("dist-check: rank {} exits early", comm.rank());
            std::process::exit(3);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        comm.all_reduce(&mut v, lmo_comm::ReduceOp::Sum)
            .expect("all-reduce");
        eprintln!(
            "dist-check: rank {} finished an all-reduce without its peer",
            comm.rank()
        );
        std::process::exit(0);
    }
    let (save, load) = (file("--save"), file("--load"));
    let f = match (&save, &load) {
        (Some(p), _) => Some((p.as_path(), true)),
        (None, Some(p)) => Some((p.as_path(), false)),
        _ => None,
    };
    lmo_dist_tests::all(&comm, f);
    if comm.rank() == 0 {
        println!("dist-check (world {}): all checks passed", comm.size());
    }
}
