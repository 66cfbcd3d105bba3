//! Exporters: the desired state in another system's format.
//!
//! Like the planner, an exporter is a pure function of values (no Docker, no clock):
//! [`k8s::export`] turns an [`k8s::Input`] into manifests and warnings. Reading what it
//! needs from disk is one separate, small step ([`k8s::read_input`]), and writing the
//! result is the CLI's job.

pub mod k8s;
