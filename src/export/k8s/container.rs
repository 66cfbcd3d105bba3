//! A Service's container: its command line and environment, its security context and
//! its resource limits.
//!
//! The environment never holds an env-file value: a variable that is exactly one
//! `${VAR}` becomes a `secretKeyRef` into the Stack's Secret; text around variables
//! becomes a `$(…)` expansion of helper variables (`OBSD_ENV_<VAR>`, themselves
//! `secretKeyRef`s), which Kubernetes expands in env values, command and args alike.

use super::workload::Svc;
use super::{refs, Cx, HELPER_PREFIX};
use crate::desired::model::service::{parse_memory, ServiceSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, EnvVar, EnvVarSource, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::{BTreeMap, BTreeSet};

/// The container's command line and environment.
pub(super) struct Env {
    /// Helper variables first, then the Service's, by name.
    pub vars: Vec<EnvVar>,
    /// From `entrypoint` (Kubernetes' `command` is Docker's entrypoint).
    pub command: Option<Vec<String>>,
    /// From `command`.
    pub args: Option<Vec<String>>,
}

/// `env`, `secretEnv`, `command` and `entrypoint` with every env-file value a reference
/// into the Stack's Secret; the keys used are recorded for the next steps.
pub(super) fn env(cx: &mut Cx, svc: &ServiceSpec) -> Env {
    // Variables used inside a longer value: each gets a helper variable.
    let mut helpers: BTreeSet<String> = BTreeSet::new();
    let mut vars: Vec<EnvVar> = Vec::new();
    for (k, v) in &svc.env {
        match refs::pieces(v).as_slice() {
            [refs::Piece::Var(one)] => vars.push(secret_var(cx, k.clone(), one)),
            _ => vars.push(EnvVar {
                name: k.clone(),
                value: Some(expand(v, &mut helpers)),
                ..Default::default()
            }),
        }
    }
    for (k, key) in &svc.secret_env {
        vars.push(secret_var(cx, k.clone(), key));
    }
    vars.sort_by(|a, b| a.name.cmp(&b.name));
    let args = expand_all(svc.command.as_deref(), &mut helpers);
    let command = expand_all(svc.entrypoint.as_deref(), &mut helpers);
    // Helpers first: `$(X)` only resolves to variables defined earlier in the list.
    let mut all: Vec<EnvVar> = helpers
        .iter()
        .map(|n| secret_var(cx, helper(n), n))
        .collect();
    all.extend(vars);
    Env {
        vars: all,
        command,
        args,
    }
}

/// Variable `name` from key `key` of the Stack's Secret. The key is recorded: the next
/// steps name every key the Secret must hold.
fn secret_var(cx: &mut Cx, name: String, key: &str) -> EnvVar {
    cx.secret_keys.insert(key.to_string());
    EnvVar {
        name,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: cx.secret_name.clone(),
                key: key.to_string(),
                optional: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The helper variable that carries env-file variable `n` into `$(…)` expansions.
fn helper(n: &str) -> String {
    format!("{HELPER_PREFIX}{n}")
}

/// `s` with each `${VAR}` as `$(OBSD_ENV_VAR)`, the variables noted in `helpers`.
fn expand(s: &str, helpers: &mut BTreeSet<String>) -> String {
    helpers.extend(refs::vars(s).into_iter().map(str::to_string));
    refs::expansion(s, helper)
}

/// A command line, each word as [`expand`] writes it.
fn expand_all(words: Option<&[String]>, helpers: &mut BTreeSet<String>) -> Option<Vec<String>> {
    words.map(|c| c.iter().map(|a| expand(a, helpers)).collect())
}

/// `user`, capabilities, `privileged`, `readOnly` and `securityOpt` as the container's
/// securityContext; `None` when none is set, so the image's defaults hold. Names
/// (Kubernetes needs numeric IDs) and options without an equivalent are warned.
pub(super) fn security_context(s: &mut Svc) -> Option<SecurityContext> {
    let svc = s.spec;
    let mut sc = SecurityContext::default();
    if let Some(u) = &svc.user {
        let (uid, gid) = u
            .split_once(':')
            .map(|(a, b)| (a, Some(b)))
            .unwrap_or((u.as_str(), None));
        match (uid.parse::<i64>(), gid.map(|g| g.parse::<i64>())) {
            (Ok(uid), None) => sc.run_as_user = Some(uid),
            (Ok(uid), Some(Ok(gid))) => {
                sc.run_as_user = Some(uid);
                sc.run_as_group = Some(gid);
            }
            _ => s.warn("spec.user", format!("user `{u}` is a name; Kubernetes needs numeric IDs (runAsUser/runAsGroup): left to the image's default")),
        }
    }
    if !svc.cap_add.is_empty() || !svc.cap_drop.is_empty() {
        sc.capabilities = Some(Capabilities {
            add: (!svc.cap_add.is_empty()).then(|| capabilities(&svc.cap_add)),
            drop: (!svc.cap_drop.is_empty()).then(|| capabilities(&svc.cap_drop)),
        });
    }
    if svc.privileged {
        sc.privileged = Some(true);
        if !s.node() {
            s.warn("spec.privileged", "privileged container on a service that is not node-level: most clusters' Pod Security admission rejects it");
        }
    }
    if svc.read_only {
        sc.read_only_root_filesystem = Some(true);
    }
    for (i, o) in svc.security_opt.iter().enumerate() {
        let norm = o.replace('=', ":");
        match norm.as_str() {
            "no-new-privileges" | "no-new-privileges:true" => {
                sc.allow_privilege_escalation = Some(false);
            }
            "seccomp:unconfined" => {
                sc.seccomp_profile = Some(SeccompProfile {
                    type_: "Unconfined".into(),
                    localhost_profile: None,
                });
            }
            _ => s.warn(format!("spec.securityOpt[{i}]"), format!("`{o}` has no direct Kubernetes equivalent (use the pod's securityContext: seccompProfile, appArmorProfile, seLinuxOptions); dropped")),
        }
    }
    (sc != SecurityContext::default()).then_some(sc)
}

/// Docker's `cap_net_admin` or `NET_ADMIN` as Kubernetes writes it: `NET_ADMIN`.
fn capabilities(v: &[String]) -> Vec<String> {
    v.iter()
        .map(|c| {
            c.trim()
                .to_ascii_uppercase()
                .trim_start_matches("CAP_")
                .to_string()
        })
        .collect()
}

/// Memory and CPU limits; Kubernetes has no per-container process limit, so
/// `pidsLimit` is warned.
pub(super) fn resources(s: &mut Svc) -> Option<ResourceRequirements> {
    let res = s.spec.resources.as_ref()?;
    let mut limits = BTreeMap::new();
    if let Some(m) = res.memory.as_deref().and_then(parse_memory) {
        limits.insert("memory".to_string(), Quantity(memory_quantity(m)));
    }
    if let Some(c) = res.cpus {
        limits.insert(
            "cpu".to_string(),
            Quantity(format!("{}m", (c * 1000.0).round() as i64)),
        );
    }
    if res.pids_limit.is_some() {
        s.warn("spec.resources.pidsLimit", "Kubernetes limits processes per node (kubelet podPidsLimit), not per container; dropped");
    }
    (!limits.is_empty()).then(|| ResourceRequirements {
        limits: Some(limits),
        ..Default::default()
    })
}

/// `512m` → `512Mi`, other byte counts as plain numbers.
pub(super) fn memory_quantity(bytes: i64) -> String {
    const GI: i64 = 1024 * 1024 * 1024;
    const MI: i64 = 1024 * 1024;
    const KI: i64 = 1024;
    if bytes > 0 && bytes % GI == 0 {
        format!("{}Gi", bytes / GI)
    } else if bytes > 0 && bytes % MI == 0 {
        format!("{}Mi", bytes / MI)
    } else if bytes > 0 && bytes % KI == 0 {
        format!("{}Ki", bytes / KI)
    } else {
        bytes.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities() {
        assert_eq!(memory_quantity(512 * 1024 * 1024), "512Mi");
        assert_eq!(memory_quantity(2 * 1024 * 1024 * 1024), "2Gi");
        assert_eq!(memory_quantity(1000), "1000");
    }
}
