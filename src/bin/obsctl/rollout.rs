//! `obsctl rollout status|history|retry NAME`: a Service's rollout through the daemon's API.
//! Exit codes (product.md): 0 answered (for `status` whatever the drift; scripts read
//! `held`/`rolled_back` in `-o json`), `retry` 0 queued; 1 error (no daemon, no such
//! Service).

use crate::Output;
use obsd::api::wire;
use std::path::PathBuf;
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
}

pub fn run(socket: Option<PathBuf>, cmd: RolloutCmd) -> anyhow::Result<ExitCode> {
    let socket =
        socket.unwrap_or_else(|| obsd::api::socket_in(&obsd::state::resolve_dir(None, None)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cmd {
        RolloutCmd::Status { name, output } => {
            let v: wire::RolloutStatus =
                rt.block_on(obsd::api::call(&socket, "GET", &wire::rollout_path(&name)))?;
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&v);
            }
            Ok(ExitCode::SUCCESS)
        }
        RolloutCmd::History { name, output } => {
            let v: wire::RolloutStatus =
                rt.block_on(obsd::api::call(&socket, "GET", &wire::rollout_path(&name)))?;
            let h = &v.status.rollouts;
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(h)?);
            } else {
                println!(
                    "{:<25} {:<13} {:<18} {:<40} DETAIL",
                    "WHEN", "SPEC", "OUTCOME", "IMAGE"
                );
                for e in h {
                    let when = chrono::DateTime::from_timestamp_millis(e.at_ms)
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                        .unwrap_or_default();
                    println!(
                        "{when:<25} {:<13} {:<18} {:<40} {}",
                        e.spec_hash, e.outcome, e.image, e.detail
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RolloutCmd::Retry { name } => {
            let v: wire::RolloutRetry = rt.block_on(obsd::api::call(
                &socket,
                "POST",
                &wire::rollout_retry_path(&name),
            ))?;
            if v.held {
                println!("{name}: the held spec is tried again in the next pass (queued)");
            } else {
                println!("{name}: nothing was held; a pass is queued");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_status(v: &wire::RolloutStatus) {
    let r = &v.status.resource;
    let drift: Vec<&str> = r.drift.iter().map(|d| d.as_str()).collect();
    println!("service:   {}", v.service);
    println!(
        "state:     {}",
        if r.in_sync {
            "in sync".to_string()
        } else {
            drift.join(", ")
        }
    );
    if let Some(c) = &r.container {
        println!("container: {c}");
    }
    if let Some(a) = &v.status.last_action {
        println!("last:      {a}");
    }
    if let Some(m) = &r.message {
        println!("message:   {m}");
    }
    if let Some(t) = r.log_tail.as_deref().filter(|t| !t.trim().is_empty()) {
        println!("log tail of the failed container:");
        for l in t.lines() {
            println!("  {l}");
        }
    }
    if v.held {
        println!(
            "held until the spec changes; `obsctl rollout retry {}` tries it again",
            v.service
        );
    }
}
