//! `obsctl`: the operator's CLI. Thin: parses arguments and calls the library.
//! Exit codes are contract (product.md): 0 ok / in sync, 2 drift or changes pending,
//! 1 error.

/// `println!` that never panics: once stdout is closed (`obsctl status | head -1`) the
/// rest of the output is dropped and the command ends with its own exit code.
macro_rules! out {
    ($($t:tt)*) => { $crate::write_out(format_args!($($t)*), true) };
}

/// `print!` counterpart of [`out!`].
macro_rules! out_raw {
    ($($t:tt)*) => { $crate::write_out(format_args!($($t)*), false) };
}

mod backup;
mod commands;
mod export;
mod rollout;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

/// Output format.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Text,
    Json,
}

#[derive(Parser)]
#[command(
    name = "obsctl",
    version,
    about = "Inspect and drive obsd, the reconciling operator for one Docker host"
)]
struct Cli {
    /// The daemon's API socket (default: `obsd.sock` in the state directory).
    #[arg(long, env = "OBSD_SOCKET", global = true)]
    socket: Option<PathBuf>,
    /// The daemon's state directory, where its socket is: give the `--state-dir` obsd
    /// was started with (default: /var/lib/obsd).
    #[arg(long, env = "OBSD_STATE_DIR", global = true)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Strict load and validation of a desired-state directory (0 valid, 1 invalid).
    Validate {
        #[command(flatten)]
        dir: DirArg,
        /// Print diagnostics as JSON.
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Print the JSON Schema of desired-state documents.
    Schema,
    /// Regenerate the crds-docs/ reference pages from the schema.
    #[command(hide = true)]
    GenDocs {
        #[arg(default_value = "crds-docs")]
        dir: PathBuf,
    },
    /// Convert a docker-compose file into desired-state documents (stdout).
    ImportCompose { file: PathBuf },
    /// Per resource: desired vs observed, drift, last action and error (0 in sync, 2 drift, 1 error).
    Status {
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// The plan the reconciler would run, without changing anything (0 nothing to do, 2 changes, 1 error).
    Diff {
        #[command(flatten)]
        dir: DirArg,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// One-shot converge without the daemon (0 converged, 1 error).
    Apply {
        #[command(flatten)]
        dir: DirArg,
        /// Print the plan only.
        #[arg(long)]
        dry_run: bool,
    },
    /// List jobs, or run one now.
    Jobs {
        #[command(subcommand)]
        cmd: Option<JobsCmd>,
        /// Also after `run NAME` (`obsctl jobs run NAME --wait -o json`).
        #[arg(short = 'o', long, value_enum, default_value = "table", global = true)]
        output: Output,
    },
    /// Named volumes: list owned ones, or delete one by name (the only way obsd deletes a volume).
    Volume {
        #[command(subcommand)]
        cmd: VolumeCmd,
    },
    /// The backup bucket: complete days and what they hold.
    Backup {
        #[command(subcommand)]
        cmd: BackupCmd,
    },
    /// Restore from the backup bucket.
    Restore {
        #[command(subcommand)]
        cmd: RestoreCmd,
    },
    /// Export the desired state for another system (`export k8s`).
    Export {
        #[command(subcommand)]
        cmd: export::ExportCmd,
    },
    /// A Service's rollout: why it rolled back, or try a rolled-back spec again.
    Rollout {
        #[command(subcommand)]
        cmd: rollout::RolloutCmd,
    },
    /// Shell completion script.
    Completions { shell: clap_complete::Shell },
}

/// The desired-state directory, the same way on every command that reads one: as an
/// argument or with `--desired-state` (default: `desired-state`).
#[derive(clap::Args)]
struct DirArg {
    /// Desired-state directory.
    #[arg(value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Desired-state directory (the same as DIR).
    #[arg(long = "desired-state", value_name = "DIR", conflicts_with = "dir")]
    desired_state: Option<PathBuf>,
}

impl DirArg {
    fn path(self) -> PathBuf {
        self.dir
            .or(self.desired_state)
            .unwrap_or_else(|| PathBuf::from("desired-state"))
    }
}

#[derive(Subcommand)]
enum JobsCmd {
    /// Run a job now.
    Run {
        name: String,
        /// Wait for the run to finish and exit with its result.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
enum BackupCmd {
    /// Run the backup Job once now, in this process (no daemon needed).
    Run {
        #[arg(long, default_value = "desired-state")]
        desired_state: PathBuf,
        /// The backup Job (default: the only one).
        #[arg(long)]
        job: Option<String>,
        /// Run as if it were 03:30 UTC on this day (benchmarks, simulations).
        #[arg(long, hide = true)]
        as_of: Option<String>,
    },
    /// Complete days (newest first), per volume: bytes, stored bytes, files, checksum.
    List {
        #[arg(long, default_value = "desired-state")]
        desired_state: PathBuf,
        /// The backup Job (default: the only one).
        #[arg(long)]
        job: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
enum RestoreCmd {
    /// Restore a volume (the `Volume` resource name): every checksum is verified before
    /// anything is written; into a new volume `NAME-restored-<date>` by default.
    Volume {
        name: String,
        /// The day (`YYYY-MM-DD`, a complete one); default the newest holding the volume.
        #[arg(long)]
        date: Option<String>,
        /// The new volume to create and fill.
        #[arg(long)]
        into: Option<String>,
        /// age identity file (`AGE-SECRET-KEY-1…`) for an encrypted backup.
        #[arg(long)]
        identity: Option<PathBuf>,
        /// Restore into the live volume: stops the containers mounting it, writes the
        /// backup over it (files not in the backup stay), starts them again.
        #[arg(long)]
        overwrite: bool,
        #[arg(long, default_value = "desired-state")]
        desired_state: PathBuf,
        /// The backup Job (default: the only one).
        #[arg(long)]
        job: Option<String>,
    },
}

#[derive(Subcommand)]
enum VolumeCmd {
    /// Owned volumes and whether the desired state still uses them.
    Ls {
        #[arg(long, default_value = "desired-state")]
        desired_state: PathBuf,
    },
    /// Delete one owned volume, by its Docker name, with the data in it.
    Rm {
        name: String,
        #[arg(long, default_value = "desired-state")]
        desired_state: PathBuf,
        /// Required: confirms that the data in the volume is to be destroyed.
        #[arg(long)]
        yes_delete_data: bool,
    },
}

/// stdout was closed under us; nothing more is written to it.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes to stdout unless it is closed; a closed pipe is not an error (the reader has
/// all it wanted), any other write error is reported once on stderr.
fn write_out(args: std::fmt::Arguments, newline: bool) {
    use std::io::Write;
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut o = std::io::stdout().lock();
    let r = o
        .write_fmt(args)
        .and_then(|_| if newline { o.write_all(b"\n") } else { Ok(()) });
    if let Err(e) = r {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("obsctl: writing stdout: {e}");
        }
    }
}

/// Whether a panic is a `print!` into a closed pipe.
fn broken_pipe_panic(payload: &(dyn std::any::Any + Send)) -> bool {
    let msg = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or_default();
    msg.contains("failed printing to stdout") || msg.contains("Broken pipe")
}

fn main() -> ExitCode {
    // A safety net for output not written with `out!` (a library printing, a command
    // added later): a `print!` into a closed pipe ends the command quietly, like
    // `export` does, instead of with a panic message.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !broken_pipe_panic(info.payload()) {
            default_hook(info);
        }
    }));
    let cli = Cli::parse();
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("obsctl: {e:#}");
            ExitCode::from(1)
        }
        Err(p) if broken_pipe_panic(p.as_ref()) => ExitCode::SUCCESS,
        Err(p) => std::panic::resume_unwind(p),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let state_dir = cli.state_dir.clone();
    let socket = commands::Socket::new(cli.socket, cli.state_dir);
    match cli.cmd {
        Cmd::Validate { dir, output } => commands::validate(&dir.path(), output),
        Cmd::Schema => {
            out!(
                "{}",
                serde_json::to_string_pretty(&obsd::desired::schema::json_schema())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::GenDocs { dir } => {
            let k8s_page = (
                "kubernetes.md".to_string(),
                obsd::export::k8s::docs::render(),
            );
            for (name, content) in obsd::desired::schema::render_docs()
                .into_iter()
                .chain([k8s_page])
            {
                std::fs::write(dir.join(&name), content)?;
                out!("wrote {}", dir.join(name).display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::ImportCompose { file } => commands::import_compose(&file),
        Cmd::Status { output } => commands::status(&socket, output),
        Cmd::Diff { dir, output } => commands::diff(&dir.path(), output),
        Cmd::Apply { dir, dry_run } => commands::apply(&dir.path(), dry_run),
        Cmd::Jobs { cmd, output } => match cmd {
            None => commands::jobs_list(&socket, output),
            Some(JobsCmd::Run { name, wait }) => commands::jobs_run(&socket, &name, wait, output),
        },
        Cmd::Volume { cmd } => match cmd {
            VolumeCmd::Ls { desired_state } => commands::volume_ls(&desired_state),
            VolumeCmd::Rm {
                name,
                desired_state,
                yes_delete_data,
            } => commands::volume_rm(&desired_state, &name, yes_delete_data),
        },
        Cmd::Backup {
            cmd:
                BackupCmd::Run {
                    desired_state,
                    job,
                    as_of,
                },
        } => backup::run_now(
            &desired_state,
            job.as_deref(),
            as_of.as_deref(),
            state_dir.as_deref(),
        ),
        Cmd::Backup {
            cmd:
                BackupCmd::List {
                    desired_state,
                    job,
                    output,
                },
        } => backup::list(&desired_state, job.as_deref(), output),
        Cmd::Restore {
            cmd:
                RestoreCmd::Volume {
                    name,
                    date,
                    into,
                    identity,
                    overwrite,
                    desired_state,
                    job,
                },
        } => backup::restore_volume(backup::RestoreArgs {
            dir: &desired_state,
            job: job.as_deref(),
            name: &name,
            date: date.as_deref(),
            into: into.as_deref(),
            identity: identity.as_deref(),
            overwrite,
            state_dir: state_dir.as_deref(),
        }),
        Cmd::Export { cmd } => export::run(cmd),
        Cmd::Rollout { cmd } => rollout::run(&socket, cmd),
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "obsctl", &mut script);
            out_raw!("{}", String::from_utf8_lossy(&script));
            Ok(ExitCode::SUCCESS)
        }
    }
}
