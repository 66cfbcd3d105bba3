//! `obsctl`: the operator's CLI. Thin: parses arguments and calls the library.
//! Exit codes are contract (product.md): 0 ok / in sync, 2 drift or changes pending,
//! 1 error.

mod backup;
mod commands;
mod export;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// The daemon's API socket (default: the socket in the default state directory).
    #[arg(long, env = "OBSD_SOCKET", global = true)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Strict load and validation of a desired-state directory (0 valid, 1 invalid).
    Validate {
        /// Desired-state directory.
        #[arg(default_value = "desired-state")]
        dir: PathBuf,
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
        #[arg(long, default_value = "desired-state")]
        desired_state: PathBuf,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// One-shot converge without the daemon (0 converged, 1 error).
    Apply {
        #[arg(long, default_value = "desired-state")]
        desired_state: PathBuf,
        /// Print the plan only.
        #[arg(long)]
        dry_run: bool,
    },
    /// List jobs, or run one now.
    Jobs {
        #[command(subcommand)]
        cmd: Option<JobsCmd>,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
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
    /// Shell completion script.
    Completions { shell: clap_complete::Shell },
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("obsctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Validate { dir, output } => commands::validate(&dir, output),
        Cmd::Schema => {
            println!(
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
                println!("wrote {}", dir.join(name).display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::ImportCompose { file } => commands::import_compose(&file),
        Cmd::Status { output } => commands::status(cli.socket, output),
        Cmd::Diff {
            desired_state,
            output,
        } => commands::diff(&desired_state, output),
        Cmd::Apply {
            desired_state,
            dry_run,
        } => commands::apply(&desired_state, dry_run),
        Cmd::Jobs { cmd, output } => match cmd {
            None => commands::jobs_list(cli.socket, output),
            Some(JobsCmd::Run { name, wait }) => commands::jobs_run(cli.socket, &name, wait),
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
        } => backup::run_now(&desired_state, job.as_deref(), as_of.as_deref()),
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
        }),
        Cmd::Export { cmd } => export::run(cmd),
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "obsctl", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}
