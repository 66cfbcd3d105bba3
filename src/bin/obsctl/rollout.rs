//! `obsctl rollout status|history|retry|undo NAME`: a Service's rollout through the daemon's API.
//! Exit codes (product.md): 0 answered (for `status` whatever the drift; scripts read
//! `held`/`rolled_back` in `-o json`), `retry` 0 queued; 1 error (no daemon, no such
//! Service). `undo` exits 1 always: it changes nothing, it says what to revert.

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
    /// Say which desired-state change to revert to get back to the last good spec (the
    /// running one after a rollback): obsd never edits the desired-state files, so undo
    /// is yours to make (e.g. `git revert`). Always exit 1: nothing was changed.
    Undo { name: String },
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
        RolloutCmd::Undo { name } => {
            let v: wire::RolloutStatus = call(socket, "GET", &wire::rollout_path(&name))?;
            Ok(undo(&v))
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

/// `obsctl rollout undo NAME`: the fields (secrets masked) that differ between the
/// running container — after a rollback, the last good spec — and the desired state.
fn undo(v: &wire::RolloutStatus) -> ExitCode {
    let r = &v.status.resource;
    let name = &v.service;
    let good = v
        .status
        .rollouts
        .iter()
        .rev()
        .find(|e| e.outcome == "applied");
    out!("obsd never edits your desired-state files; undo is a change you make there.");
    if let Some(g) = good {
        out!(
            "last good revision of {name}: spec {} ({}), the container running now{}",
            g.spec_hash,
            g.image,
            if v.held { "" } else { " or before it" }
        );
    }
    if !r.changes.is_empty() {
        out!("to undo, set these fields of Service {name} back (running <- desired):");
        for c in &r.changes {
            out!("  {}: {} <- {}", c.path, c.applied, c.desired);
        }
        out!("then obsd rolls the running spec out again: nothing to replace, the held spec is forgotten");
    } else {
        out!("the desired state of {name} is what runs now: no rollout to undo here; revert its last change in your desired-state files (e.g. `git revert`) and obsd rolls that out");
    }
    eprintln!("obsctl: rollout undo changed nothing (by design); edit the desired state as shown");
    ExitCode::from(1)
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
