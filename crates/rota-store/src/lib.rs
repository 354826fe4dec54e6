//! The storage seam: the [`Store`] trait every Rota backend implements.
//!
//! The trait is batch-shaped (insert many, claim many, complete many), so one round trip
//! and one commit serve many jobs, and dyn-compatible, so the engine and server hold an
//! `Arc<dyn Store>` chosen at run time. Every params struct that reads or writes time carries
//! `now` from the injected [`rota_core::Clock`]; backends never read the clock themselves.
//! Errors are [`StoreError`], classified by [`ErrorKind`]; what differs between backends is
//! reported as [`Capabilities`]. The behaviour every backend must have is specified once, in
//! the [`conformance`] suite (feature `conformance`), which each backend runs unchanged.

mod capability;
mod error;
mod insert;
mod params;
mod store;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use capability::Capabilities;
pub use error::{ErrorKind, StoreError};
pub use insert::{check_insert, queue_not_declared, unique_key_blocks, PolicyDefaults};
pub use params::*;
pub use store::Store;
