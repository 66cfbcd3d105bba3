//! `obsctl rollout status|history|retry|undo NAME`: a Service's rollout through the daemon's API.
//! Exit codes (product.md): 0 answered (for `status` whatever the drift; scripts read
//! `held`/`rolled_back` in `-o json`), `retry` 0 queued; 1 error (no daemon, no such
//! Service). `undo` changes nothing: exit 0 when it named the fields to set back, 1
//! when there is no earlier revision to go back to.

use crate::commands::{call, Socket};
use crate::Output;
use obsd::api::wire;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum RolloutCmd {
    /// The Service's rollout: drift, why it rolled back, the failed container's last log lines.
    Status {
        name: String,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// The Service's last rollouts (kept in the state directory): when, spec, image, outcome.
    History {
        name: String,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Try a held spec again (rolled back, refused by its check, or stopped after a crash
    /// loop); otherwise it is held until the spec changes.
    Retry { name: String },
    /// Name the desired-state fields to set back to return to an earlier revision: the
    /// running spec after a rollback or a refused check, otherwise the revision applied
    /// before the current one (or `--to SPEC`, a spec hash from `rollout history`). obsd
    /// never edits the desired-state files, so the edit is yours (e.g. `git revert`).
    /// Exit 0 with the fields named, 1 when there is nothing to go back to.
    Undo {
        name: String,
        /// The revision to go back to: a spec hash (or its prefix) from `rollout history`.
        #[arg(long)]
        to: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
}

pub fn run(socket: &Socket, cmd: RolloutCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        RolloutCmd::Status { name, output } => {
            let v: wire::RolloutStatus = call(socket, "GET", &wire::rollout_path(&name))?;
            if output == Output::Json {
                out!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&v);
            }
            Ok(ExitCode::SUCCESS)
        }
        RolloutCmd::History { name, output } => {
            let v: wire::RolloutStatus = call(socket, "GET", &wire::rollout_path(&name))?;
            let h = &v.status.rollouts;
            if output == Output::Json {
                out!("{}", serde_json::to_string_pretty(h)?);
            } else {
                out!(
                    "{:<25} {:<13} {:<18} {:<40} DETAIL",
                    "WHEN",
                    "SPEC",
                    "OUTCOME",
                    "IMAGE"
                );
                for e in h {
                    let when = chrono::DateTime::from_timestamp_millis(e.at_ms)
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                        .unwrap_or_default();
                    out!(
                        "{when:<25} {:<13} {:<18} {:<40} {}",
                        e.spec_hash,
                        e.outcome,
                        e.image,
                        e.detail
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RolloutCmd::Undo { name, to, output } => {
            let v: wire::RolloutStatus = call(socket, "GET", &wire::rollout_path(&name))?;
            undo(&v, to.as_deref(), output)
        }
        RolloutCmd::Retry { name } => {
            let v: wire::RolloutRetry = call(socket, "POST", &wire::rollout_retry_path(&name))?;
            if v.held {
                out!("{name}: the held spec is tried again in the next pass (queued)");
            } else {
                out!("{name}: nothing was held; a pass is queued");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What `obsctl rollout undo` found: the revision to return to and the fields to set
/// back in the desired state (`-o json`).
#[derive(serde::Serialize)]
struct UndoPlan<'a> {
    service: &'a str,
    /// Always false: obsd never edits the desired-state files.
    changed: bool,
    /// The revision to return to (absent when none is recorded).
    to: Option<Revision<'a>>,
    /// `[path, set back to, desired now]`, secrets masked.
    fields: Vec<obsd::reconcile::plan::FieldChange>,
}

#[derive(serde::Serialize)]
struct Revision<'a> {
    spec_hash: &'a str,
    image: &'a str,
    at_ms: i64,
}

/// `obsctl rollout undo NAME`: after a rollback or a refused check, the fields (secrets
/// masked) that differ between the running container and the desired state; otherwise
/// those between the revision applied now and the one before it (or `--to`), from the
/// masked specs the rollout history keeps.
fn undo(v: &wire::RolloutStatus, to: Option<&str>, output: Output) -> anyhow::Result<ExitCode> {
    let r = &v.status.resource;
    let name = v.service.as_str();
    let applied: Vec<&obsd::state::RolloutEntry> = v
        .status
        .rollouts
        .iter()
        .filter(|e| e.outcome == "applied")
        .collect();
    fn revision<'e>(e: &&'e obsd::state::RolloutEntry) -> Revision<'e> {
        Revision {
            spec_hash: &e.spec_hash,
            image: &e.image,
            at_ms: e.at_ms,
        }
    }
    let plan = if v.held && to.is_none() {
        // What runs is the last good revision: set the desired fields back to it.
        UndoPlan {
            service: name,
            changed: false,
            to: applied.last().map(revision),
            fields: r.changes.clone(),
        }
    } else {
        let current = applied.last();
        let target = match to {
            Some(t) => applied.iter().rev().find(|e| e.spec_hash.starts_with(t)),
            None => current.and_then(|c| {
                applied
                    .iter()
                    .rev()
                    .find(|e| e.spec_hash != c.spec_hash && e.spec.is_some())
            }),
        };
        let fields = match (current.and_then(|c| c.spec.as_ref()), target) {
            (Some(now), Some(t)) => match &t.spec {
                Some(then) => obsd::reconcile::render::diff_fields(then, now),
                None => Vec::new(),
            },
            _ => Vec::new(),
        };
        if to.is_some() && target.is_none() {
            anyhow::bail!(
                "no applied revision of {name} matches spec {}; see `obsctl rollout history {name}`",
                to.unwrap_or_default()
            );
        }
        if let Some(t) = target.filter(|t| t.spec.is_none()) {
            anyhow::bail!(
                "revision {} of {name} was recorded before obsd kept specs in the history; its fields are unknown",
                t.spec_hash
            );
        }
        UndoPlan {
            service: name,
            changed: false,
            to: target.map(revision),
            fields,
        }
    };
    if output == Output::Json {
        out!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        out!("obsd never edits your desired-state files; undo is a change you make there.");
        if let Some(t) = &plan.to {
            let when = chrono::DateTime::from_timestamp_millis(t.at_ms)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default();
            out!(
                "revision to return to: spec {} ({}), applied {when}{}",
                t.spec_hash,
                t.image,
                if v.held && to.is_none() {
                    ", the container running now"
                } else {
                    ""
                }
            );
        }
        if !plan.fields.is_empty() {
            out!("set these fields of Service {name} back (revision <- desired now):");
            for c in &plan.fields {
                out!("  {}: {} <- {}", c.path, c.applied, c.desired);
            }
            out!("then obsd rolls that revision out through the health gate");
        }
    }
    if plan.to.is_none() || plan.fields.is_empty() {
        eprintln!(
            "obsctl: {name}: no earlier revision with a different spec is recorded; revert the last change in your desired-state files (e.g. `git revert`)"
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(v: &wire::RolloutStatus) {
    let r = &v.status.resource;
    let drift: Vec<&str> = r.drift.iter().map(|d| d.as_str()).collect();
    out!("service:   {}", v.service);
    out!(
        "state:     {}",
        if r.in_sync {
            "in sync".to_string()
        } else {
            drift.join(", ")
        }
    );
    if let Some(c) = &r.container {
        out!("container: {c}");
    }
    if let Some(a) = &v.status.last_action {
        out!("last:      {a}");
    }
    if let Some(m) = &r.message {
        out!("message:   {m}");
    }
    if let Some(t) = r.log_tail.as_deref().filter(|t| !t.trim().is_empty()) {
        out!("log tail of the failed container:");
        for l in t.lines() {
            out!("  {l}");
        }
    }
    if v.held {
        out!(
            "held until the spec changes; `obsctl rollout retry {}` tries it again",
            v.service
        );
    }
}
