//! obsd: a Kubernetes-style reconciling operator for one Docker host.
//!
//! The library holds everything; `src/bin/obsd.rs` (daemon) and `src/bin/obsctl/`
//! (CLI) are thin shells over it. One folder per box of ARCHITECTURE.md:
//!
//! * [`desired`] — YAML → `DesiredState`. No Docker, no clock.
//! * [`reconcile`] — one pass: observe, `plan` and `render` (pure), `exec` (the only IO,
//!   through the [`docker::Docker`] trait).
//! * [`docker`] — the trait, the bollard engine (the only bollard user) and the fake.
//! * [`daemon`] — the event loop, watchers, HTTP servers, metrics, alerting.
//! * [`jobs`] — scheduled reconcilers.
//! * [`api`] — the obsd ↔ obsctl wire types and the unix-socket client.
//! * [`registry`] — the anonymous registry client of image update checks.
//! * [`state`], [`secret`], [`fsutil`] — shared ground: the state directory, secrets and
//!   the host key, atomic file writes.

pub mod api;
pub mod daemon;
pub mod desired;
pub mod docker;
pub mod export;
pub mod fsutil;
pub mod jobs;
pub mod reconcile;
pub mod registry;
pub mod secret;
pub mod state;
