//! obsd: a Kubernetes-style reconciling operator for one Docker host.
//!
//! The library holds everything; `src/bin/obsd.rs` (daemon) and `src/bin/obsctl.rs`
//! (CLI) are thin shells over it. See ARCHITECTURE.md for the code map and invariants.

pub mod diag;
pub mod jobs;
pub mod load;
pub mod model;
pub mod schedule;
pub mod secret;
pub mod validate;
pub mod yaml;
