//! Networks and volumes: created when missing; owned ones no longer desired are
//! orphans — networks removed (when pruning), volumes only ever reported.

use super::{status, InfraAction, Observed, Plan, Reason, ResourceStatus};
use crate::desired::model::Kind;
use crate::desired::DesiredState;
use crate::docker::labels;
use std::collections::{BTreeMap, BTreeSet};

/// Desired (resource name, Docker name) pairs against the observed objects (Docker
/// name, labels): statuses of the desired ones, which are missing, which owned ones
/// are orphans. The same rule for networks and volumes.
struct Compared<'a> {
    statuses: Vec<ResourceStatus>,
    missing: Vec<(String, String)>,
    orphans: BTreeSet<&'a str>,
}

fn compare<'a>(
    kind: Kind,
    project: &str,
    desired: Vec<(String, String)>,
    observed: impl Iterator<Item = (&'a str, &'a BTreeMap<String, String>)> + Clone,
) -> Compared<'a> {
    let mut orphans: BTreeSet<&str> = observed
        .clone()
        .filter(|(_, l)| labels::owned(l, project))
        .map(|(n, _)| n)
        .collect();
    let mut c = Compared {
        statuses: Vec::new(),
        missing: Vec::new(),
        orphans: BTreeSet::new(),
    };
    for (name, docker_name) in desired {
        orphans.remove(docker_name.as_str());
        let mut st = status(kind, &name);
        if !observed.clone().any(|(n, _)| n == docker_name) {
            st.drift.push(Reason::Missing);
            c.missing.push((name, docker_name));
        }
        st.in_sync = st.drift.is_empty();
        c.statuses.push(st);
    }
    c.orphans = orphans;
    c
}

pub(super) fn networks(desired: &DesiredState, observed: &Observed, p: &mut Plan) {
    let wanted = desired
        .networks
        .keys()
        .map(|n| (n.clone(), desired.network_docker_name(n)))
        .collect();
    let seen = observed
        .networks
        .iter()
        .map(|n| (n.name.as_str(), &n.labels));
    let c = compare(Kind::Network, desired.project(), wanted, seen);
    p.resources.extend(c.statuses);
    for (name, docker_name) in c.missing {
        p.infra
            .push(InfraAction::CreateNetwork { name, docker_name });
    }
    for n in c.orphans {
        let mut st = status(Kind::Network, n);
        st.drift.push(Reason::Orphan);
        if desired.stack.spec.prune.networks {
            p.cleanup.push(InfraAction::RemoveNetwork {
                docker_name: n.to_string(),
            });
        }
        p.resources.push(st);
    }
}

/// Volumes are created when missing and never removed here: an orphan is reported
/// with the one command that deletes it.
pub(super) fn volumes(desired: &DesiredState, observed: &Observed, p: &mut Plan) {
    let wanted = desired
        .volumes
        .keys()
        .map(|n| (n.clone(), desired.volume_docker_name(n)))
        .collect();
    let seen = observed
        .volumes
        .iter()
        .map(|v| (v.name.as_str(), &v.labels));
    let c = compare(Kind::Volume, desired.project(), wanted, seen);
    p.resources.extend(c.statuses);
    for (name, docker_name) in c.missing {
        p.infra
            .push(InfraAction::CreateVolume { name, docker_name });
    }
    for v in c.orphans {
        let mut st = status(Kind::Volume, v);
        st.drift.push(Reason::Orphan);
        st.message = Some(format!(
            "no longer desired; kept with its data (delete only with `obsctl volume rm {v} --yes-delete-data`)"
        ));
        p.resources.push(st);
    }
}
