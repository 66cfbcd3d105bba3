//! `obsctl rollout status|retry NAME`: a Service's rollout through the daemon's API.
//! Exit codes (product.md): `status` 0 in sync, 2 drift (`rolled_back` among others),
//! 1 error; `retry` 0 queued, 1 error.

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
            Ok(if v.status.resource.in_sync {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
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
