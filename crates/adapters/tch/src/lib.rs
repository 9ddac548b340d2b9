//! The libtorch (tch) adapter of the LMO toolkit: `gluon-optim`'s layer-wise
//! LMO step (SPEC §3: Gluon, Muon, Scion, AdamW, …) on `tch::Tensor`s, on
//! the CPU or on CUDA, with the same optimizer logic as every other backend.
//!
//! - [`Tch`] ([`Tch32`], [`Tch64`]): the lmo-core [`lmo_core::Backend`] on
//!   libtorch tensors. f32, bf16 and f16 tensors keep their storage type;
//!   the polar factor (Newton–Schulz, SPEC §2) then runs as libtorch
//!   matmuls in that type (bf16 on CUDA: tensor cores, f32 accumulation).
//! - [`VarStoreOptimizer`]: groups the variables of a [`tch::nn::VarStore`]
//!   by name and shape ([`default_label`]: hidden matrices, embeddings,
//!   head, vectors), reads their gradients and steps them in place under
//!   `no_grad`; its state saves to JSON next to the `VarStore` checkpoint.
//! - [`ShardedVarStoreOptimizer`]: the same over the ranks of an
//!   `lmo_comm::Communicator` (MPI): gradients averaged over the ranks,
//!   each block's optimizer state on one rank (`gluon_optim::ShardedOptimizer`).
//! - `device` (feature `device-step`): zero-copy views of libtorch CUDA
//!   tensors for the CUDA backend and `gluon_optim::cuda::DeviceOptimizer`.
//!
//! libtorch comes from the PyPI wheel `torch==2.11.0` (tch `=0.24.0`):
//! `cargo xtask test` and `cargo xtask nanogpt` install it into
//! `target/torch` and set `LIBTORCH`. The `cuda` feature links
//! `libtorch_cuda` explicitly so that `tch::Cuda::is_available()` is true on
//! a GPU machine (see `build.rs`).
//!
//! ```no_run
//! use gluon_optim::presets;
//! use lmo_tch::VarStoreOptimizer;
//! use tch::{nn, nn::Module, Device, Kind, Tensor};
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! let net = nn::seq()
//!     .add(nn::linear(vs.root() / "fc1", 8, 32, Default::default()))
//!     .add_fn(|x| x.relu())
//!     .add(nn::linear(vs.root() / "head", 32, 1, Default::default()));
//! let mut opt = VarStoreOptimizer::new(&vs, presets::muon(0.02, 3e-3)).unwrap();
//! let x = Tensor::randn([64, 8], (Kind::Float, Device::Cpu));
//! for _ in 0..10 {
//!     let loss = net.forward(&x).square().mean(Kind::Float);
//!     opt.zero_grad();
//!     loss.backward();
//!     opt.step().unwrap();
//! }
//! ```

mod backend;
#[cfg(feature = "device-step")]
pub mod device;
mod error;
mod label;
mod optimizer;
mod sharded;
mod vars;

pub use backend::{Tch, Tch32, Tch64, TchScalar, TchTensor, shape_of};
pub use error::TchOptError;
pub use label::default_label;
pub use optimizer::VarStoreOptimizer;
pub use sharded::ShardedVarStoreOptimizer;
pub use vars::SavedOptimizer;
