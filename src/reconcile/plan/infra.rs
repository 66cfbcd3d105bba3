//! Networks and volumes: created when missing; owned ones no longer desired are
//! orphans — networks removed (when pruning), volumes only ever reported.

use super::{status, InfraAction, Observed, Plan, Reason};
use crate::desired::model::Kind;
use crate::desired::DesiredState;
use crate::docker::labels;
use std::collections::BTreeSet;

pub(super) fn networks(desired: &DesiredState, observed: &Observed, p: &mut Plan) {
    let project = desired.project();
    let mut orphans: BTreeSet<&str> = observed
        .networks
        .iter()
        .filter(|n| labels::owned(&n.labels, project))
        .map(|n| n.name.as_str())
        .collect();
    for name in desired.networks.keys() {
        let dn = desired.network_docker_name(name);
        orphans.remove(dn.as_str());
        let mut st = status(Kind::Network, name);
        if !observed.networks.iter().any(|n| n.name == dn) {
            st.drift.push(Reason::Missing);
            p.infra.push(InfraAction::CreateNetwork {
                name: name.clone(),
                docker_name: dn,
            });
        }
        st.in_sync = st.drift.is_empty();
        p.resources.push(st);
    }
    for n in orphans {
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
    let project = desired.project();
    let mut orphans: BTreeSet<&str> = observed
        .volumes
        .iter()
        .filter(|v| labels::owned(&v.labels, project))
        .map(|v| v.name.as_str())
        .collect();
    for name in desired.volumes.keys() {
        let dn = desired.volume_docker_name(name);
        orphans.remove(dn.as_str());
        let mut st = status(Kind::Volume, name);
        if !observed.volumes.iter().any(|v| v.name == dn) {
            st.drift.push(Reason::Missing);
            p.infra.push(InfraAction::CreateVolume {
                name: name.clone(),
                docker_name: dn,
            });
        }
        st.in_sync = st.drift.is_empty();
        p.resources.push(st);
    }
    for v in orphans {
        let mut st = status(Kind::Volume, v);
        st.drift.push(Reason::Orphan);
        st.message = Some(format!(
            "no longer desired; kept with its data (delete only with `obsctl volume rm {v} --yes-delete-data`)"
        ));
        p.resources.push(st);
    }
}
