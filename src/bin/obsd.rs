//! `obsd`: the daemon. Thin: parses arguments, sets up logging, runs the library.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "obsd",
    version,
    about = "Reconciling operator for one Docker host"
)]
struct Args {
    /// Desired-state directory.
    #[arg(long, default_value = "desired-state")]
    desired_state: PathBuf,
    /// State directory (default: the Stack's stateDir; env OBSD_STATE_DIR).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Address for /metrics and /healthz, e.g. 127.0.0.1:9850; repeat it for several
    /// (the shipped unit adds the Docker bridge address the stack's Prometheus scrapes).
    /// Without it nothing is served.
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// Unix socket for the obsctl API (default: <state-dir>/obsd.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Converge once and exit (0 converged, 1 error).
    #[arg(long)]
    once: bool,
    /// Run only the scheduled jobs, without a Docker engine (how obsd runs on Kubernetes):
    /// job metrics and the jobs' series on --listen's /metrics.
    #[arg(long, conflicts_with_all = ["once", "socket"])]
    jobs_only: bool,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("OBSD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("obsd: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if args.jobs_only {
        if args.listen.len() > 1 {
            eprintln!("obsd: --jobs-only serves one --listen address");
            return ExitCode::from(2);
        }
        let cfg = obsd::daemon::jobs_only::Config {
            desired_dir: args.desired_state,
            state_dir: args.state_dir,
            listen: args.listen.first().copied(),
        };
        return exit(rt.block_on(obsd::daemon::jobs_only::run(cfg, CancellationToken::new())));
    }
    let cfg = obsd::daemon::Config {
        desired_dir: args.desired_state,
        state_dir: args.state_dir,
        listen: args.listen,
        socket: args.socket,
        once: args.once,
    };
    let shutdown = CancellationToken::new();
    exit(rt.block_on(obsd::daemon::run(cfg, shutdown)))
}

fn exit(r: Result<(), obsd::daemon::DaemonError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("obsd: {e:#}");
            ExitCode::from(1)
        }
    }
}
