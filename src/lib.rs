//! obsd: a Kubernetes-style reconciling operator for one Docker host.
//!
//! The library holds everything; `src/bin/obsd.rs` (daemon) and `src/bin/obsctl/`
//! (CLI) are thin shells over it. See ARCHITECTURE.md for the code map and invariants.

pub mod alerting;
pub mod api;
pub mod compose;
pub mod daemon;
pub mod diag;
pub mod docker;
pub mod exec;
pub mod jobs;
pub mod load;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod reconcile;
pub mod render;
pub mod schedule;
pub mod schema;
pub mod secret;
pub mod state;
pub mod validate;
pub mod yaml;
