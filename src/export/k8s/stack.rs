//! Warnings about the Stack as a whole: its env file, its Networks, its alerting and its
//! Volumes — what no single Service's mapping sees.

use super::Cx;
use std::collections::BTreeMap;

/// Warnings about the env file, networks and Stack settings.
pub(super) fn warnings(cx: &mut Cx) {
    let input = cx.input;
    let st = &input.state;
    let env = &input.env;
    if let Some(p) = &env.path_display {
        if !env.present {
            cx.warn(
                "env file",
                "",
                format!("{p} does not exist: each `${{VAR}}` it should provide became a Secret reference, and each `${{VAR:-default}}` took its default; export where the env file is for an exact result"),
            );
        }
        if !env.kubectl_incompatible_lines.is_empty() {
            let lines: Vec<String> = env
                .kubectl_incompatible_lines
                .iter()
                .map(|l| l.to_string())
                .collect();
            cx.warn(
                "env file",
                "",
                format!("{p} lines {} quote their value or start with `export`; `kubectl create secret generic --from-env-file` keeps quotes in the value and rejects `export`: remove them before creating the Secret", lines.join(", ")),
            );
        }
    }
    let mut nets = Vec::new();
    for (name, n) in &st.networks {
        let what = if n.spec.internal {
            "an internal network (no route out)"
        } else {
            "a network"
        };
        nets.push((
            format!("Network/{name}"),
            format!("{what} has no Kubernetes equivalent: every pod of the namespace reaches every Service; write NetworkPolicies to isolate or to block egress"),
        ));
    }
    for (s, m) in nets {
        cx.warn(s, "", m);
    }
    if st.stack.spec.alerting.is_some() {
        cx.warn(
            format!("Stack/{}", st.stack.name),
            "spec.alerting",
            "obsd's own alerting is about reconcile passes, which do not exist on Kubernetes (jobs-only mode does not send it); the shipped rules ObsdJobFailing and ObsdJobStale cover the jobs",
        );
    }
}

/// Volumes that are shared, unused, or use a driver.
pub(super) fn volume_warnings(cx: &mut Cx) {
    let input = cx.input;
    let st = &input.state;
    let mut users: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (svc, r) in &st.services {
        for v in &r.spec.volumes {
            let e = users.entry(v.volume.as_str()).or_default();
            if !e.contains(&svc.as_str()) {
                e.push(svc);
            }
        }
    }
    let mut out = Vec::new();
    for (name, v) in &st.volumes {
        let subject = format!("Volume/{name}");
        match users.get(name.as_str()) {
            None => out.push((subject.clone(), String::new(), "not mounted by any Service: no claim is generated for it; if it holds data, create a PVC and restore it there".to_string())),
            Some(u) if u.len() > 1 => out.push((subject.clone(), String::new(), format!(
                "mounted by {}: each StatefulSet gets its own claim (the data is no longer shared; sharing needs ReadWriteMany storage)",
                u.join(", ")
            ))),
            _ => {}
        }
        if let Some(d) = &v.spec.driver {
            if d != "local" {
                out.push((subject.clone(), "spec.driver".into(), format!("driver `{d}` has no Kubernetes equivalent; the claim uses the storage class")));
            }
        }
    }
    for (s, f, m) in out {
        cx.warn(s, f, m);
    }
}
