//! The desired state: a directory of YAML documents turned into a typed, validated
//! [`DesiredState`]. Nothing here talks to Docker or reads the clock, so a bad edit can
//! never disturb what is running.
//!
//! This file holds the types every stage shares (the loader builds them, validation
//! reads them, the reconciler and the jobs consume them); the stages are the modules.

pub mod compose;
pub mod config_files;
pub mod diag;
mod documents;
pub(crate) mod env;
pub mod load;
pub mod model;
pub(crate) mod names;
pub(crate) mod schedule;
pub mod schema;
pub mod validate;
pub mod validate_aws;
pub mod yaml;

use crate::desired::diag::Diagnostic;
use crate::desired::model::{JobSpec, NetworkSpec, ServiceSpec, StackSpec, VolumeSpec};
use crate::desired::yaml::{Node, PathSeg, Pos};
use crate::secret::Secret;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where a resource was declared; used to locate errors found after loading.
#[derive(Debug, Clone)]
pub struct Source {
    pub file: PathBuf,
    /// The document's tree, for looking up positions of fields by path.
    pub root: Node,
    /// `${VAR}`s left unexpanded because the env file is missing.
    pub unresolved: Vec<String>,
}

impl Source {
    pub fn pos(&self, path: &[PathSeg]) -> Pos {
        self.root.locate(path)
    }
}

/// A resource with its metadata and where it came from.
#[derive(Debug, Clone)]
pub struct Resource<S> {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub spec: S,
    pub source: Source,
}

/// Values from the env file (secret by default: any of them may be a credential).
#[derive(Debug, Clone, Default)]
pub struct EnvFile {
    pub path: Option<PathBuf>,
    /// False when the configured file does not exist (a warning at load; every secret
    /// lookup then fails for the service that needs it).
    pub present: bool,
    pub values: BTreeMap<String, Secret>,
}

impl EnvFile {
    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.values.get(name)
    }
}

/// A complete, validated desired state.
#[derive(Debug, Clone)]
pub struct DesiredState {
    pub dir: PathBuf,
    pub stack: Resource<StackSpec>,
    pub services: BTreeMap<String, Resource<ServiceSpec>>,
    pub volumes: BTreeMap<String, Resource<VolumeSpec>>,
    pub networks: BTreeMap<String, Resource<NetworkSpec>>,
    pub jobs: BTreeMap<String, Resource<JobSpec>>,
    pub env: EnvFile,
    /// Per service, the content hash of each `configFiles` entry (same order).
    pub config_hashes: BTreeMap<String, Vec<String>>,
    /// Per service, whether each `configFiles` source is a single file (not a directory).
    pub config_single_file: BTreeMap<String, Vec<bool>>,
    /// Non-fatal findings (e.g. env file missing).
    pub warnings: Vec<Diagnostic>,
    /// SHA-256 over every loaded byte (documents, config files, env file); changes
    /// whenever anything that could change the plan changes.
    pub digest: String,
}

impl DesiredState {
    pub fn project(&self) -> &str {
        &self.stack.spec.project
    }

    /// Docker name of a `Volume` resource.
    pub fn volume_docker_name(&self, name: &str) -> String {
        self.volumes
            .get(name)
            .and_then(|v| v.spec.name.clone())
            .unwrap_or_else(|| format!("{}_{}", self.project(), name))
    }

    /// Docker name of a `Network` resource.
    pub fn network_docker_name(&self, name: &str) -> String {
        self.networks
            .get(name)
            .and_then(|v| v.spec.name.clone())
            .unwrap_or_else(|| format!("{}_{}", self.project(), name))
    }

    /// Container name of a `Service`.
    pub fn container_name(&self, service: &str) -> String {
        format!("{}-{}", self.project(), service)
    }

    /// Networks a service joins, after applying the Stack default.
    pub fn service_networks(&self, svc: &ServiceSpec) -> Vec<String> {
        if svc.networks.is_empty() {
            self.stack.spec.default_network.iter().cloned().collect()
        } else {
            svc.networks.clone()
        }
    }
}
