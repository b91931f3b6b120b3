//! `vinfra`: the command line of a vinfra host's API (`vinfra-host run`) and of the
//! management server's (`vinfra-center`, with `--server` or after `vinfra login`).
//!
//! ```text
//! export VINFRA_HOST=http://127.0.0.1:7401 VINFRA_KEY_FILE=cluster.key
//! vinfra host status
//! vinfra vm create web1 --kernel /guests/ready.elf --memory-mib 64 --disk-mib 16
//! vinfra vm start web1              # follows the task with a progress bar
//! vinfra --json vm list             # for scripts
//! vinfra vm migrate web1 --to 2
//! vinfra vm console web1            # Ctrl-] leaves
//!
//! vinfra login --server https://127.0.0.1:8443 --ca-cert /tmp/center/tls/cert.pem
//! vinfra vm migrate web-1 --to esx-2   # through the center, with the stored session
//! vinfra logout
//! ```
//!
//! Exit status: 0 success, 1 any error (printed as `vinfra: <message>`), a task that
//! ended in error included.

mod center;
mod client;
mod console;
mod show;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::de::DeserializeOwned;
use vinfra_host::api::{
    ApiToken, BackupRequest, CloneRequest, DiskSpec, HostEvent, HostInfo, MigrateRequest, NicSpec,
    RestoreDiskRequest, RestoreRequest, RevertRequest, ShutdownRequest, SnapshotRequest, TaskInfo,
    TaskStarted, TaskState, VmInfo, VmSpec,
};

use crate::client::{CliError, Client};

#[derive(Debug, Parser)]
#[command(
    name = "vinfra",
    version,
    about = "Talk to a vinfra host's API or the management server's: hosts, VMs and their operations, tasks, DRS",
    after_help = "Exit status: 0 success, 1 error (the API's message is printed as `vinfra: <message>`), 2 bad arguments.\n\
                  Which API: --server (the center's), else --host (a host's), else the session of `vinfra login`."
)]
pub(crate) struct Cli {
    /// The host's API (http://HOST:PORT).
    #[arg(long, env = "VINFRA_HOST", global = true)]
    host: Option<String>,
    /// The management server (https://HOST:PORT); the token is the stored session's
    /// (`vinfra login`).
    #[arg(long, env = "VINFRA_SERVER", global = true)]
    server: Option<String>,
    /// Trust the server's certificate through this CA certificate (PEM; the center's
    /// self-signed one is `<state-dir>/tls/cert.pem`).
    #[arg(long, global = true, conflicts_with = "insecure")]
    ca_cert: Option<PathBuf>,
    /// Do not check the server's certificate at all (prints a warning).
    #[arg(long, global = true)]
    insecure: bool,
    /// The cluster key file (64 hex digits): the API token is derived from it.
    #[arg(long, env = "VINFRA_KEY_FILE", global = true)]
    key_file: Option<PathBuf>,
    /// Print the API's JSON instead of tables (tasks: the final task, no progress bar).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// The host itself.
    #[command(subcommand)]
    Host(HostCommand),
    /// Virtual machines.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Long operations.
    #[command(subcommand)]
    Task(TaskCommand),
    /// The host's event log (the center's, through the center).
    Events {
        /// Only events numbered above this.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Log in to the management server and store the session (mode 0600).
    Login(center::LoginArgs),
    /// End the stored session and remove it.
    Logout,
    /// DRS of a cluster (through the management server).
    #[command(subcommand)]
    Drs(center::DrsCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum HostCommand {
    /// The center's hosts (through the management server).
    List,
    /// Identity, capacity, load, page sharing, HA view, VM counts.
    Status {
        /// Through the management server: this host only (all of them otherwise).
        name: Option<String>,
    },
    /// Enter maintenance mode (every VM is moved to the other hosts by live migration;
    /// the host then takes no VM) or, with `--exit`, leave it.
    Maintenance {
        /// Leave maintenance mode.
        #[arg(long)]
        exit: bool,
        /// Print the task's id and return at once.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum VmCommand {
    /// Every VM of the cluster.
    List,
    /// One VM: definition, state, where it runs, statistics.
    Show { name: String },
    /// Define a VM (shut off) with blank disks.
    Create(CreateArgs),
    /// Delete a VM that is off, with its disks.
    Delete { name: String },
    /// Power on.
    Start(OpArgs),
    /// Hard power off.
    Stop(OpArgs),
    /// Reboot in place.
    Reset(OpArgs),
    /// Ask the guest to shut down (its ACPI power button) and wait for it to power off.
    Shutdown {
        #[command(flatten)]
        op: OpArgs,
        /// How long the host waits for the guest to power off (default 30000).
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Stop it hard when the guest has not powered off in time.
        #[arg(long)]
        force_after: bool,
    },
    /// Move a running VM to another host (VMotion).
    Migrate {
        #[command(flatten)]
        op: OpArgs,
        /// The destination host (id or name).
        #[arg(long)]
        to: String,
    },
    /// Snapshot the disks.
    Snapshot {
        #[command(flatten)]
        op: OpArgs,
        /// The snapshot's name.
        #[arg(long = "snapshot-name")]
        snapshot_name: Option<String>,
    },
    /// Go back to a snapshot (the latest by default).
    Revert {
        #[command(flatten)]
        op: OpArgs,
        /// The snapshot.
        #[arg(long)]
        snapshot: Option<String>,
    },
    /// A new VM from this one (linked clone unless --full).
    Clone {
        #[command(flatten)]
        op: OpArgs,
        /// The new VM's name.
        new_name: String,
        /// Copy the disks instead of a linked clone.
        #[arg(long)]
        full: bool,
    },
    /// Back up the disks into a repository (also while it runs).
    Backup {
        #[command(flatten)]
        op: OpArgs,
        /// The repository (a path on the host).
        #[arg(long)]
        repository: String,
        /// Only the blocks changed since the last backup.
        #[arg(long)]
        incremental: bool,
        /// Only this disk (by index; repeat for more; all by default).
        #[arg(long = "disk")]
        disks: Vec<u32>,
    },
    /// A new VM from a backup of NAME.
    Restore {
        #[command(flatten)]
        op: OpArgs,
        #[command(flatten)]
        from: FromBackup,
        /// The new VM's name.
        #[arg(long = "as")]
        new_name: String,
    },
    /// Write one disk of a backup of NAME back into NAME (the VM must be off).
    RestoreDisk {
        #[command(flatten)]
        op: OpArgs,
        #[command(flatten)]
        from: FromBackup,
        /// The disk, by index.
        #[arg(long)]
        disk: u32,
    },
    /// Attach to the serial console (Ctrl-] leaves).
    Console { name: String },
}

/// Where a restore reads from.
#[derive(Debug, Args)]
pub(crate) struct FromBackup {
    /// The repository (a path on the host).
    #[arg(long)]
    pub(crate) repository: String,
    /// The backup (the VM's latest that holds what is restored, by default).
    #[arg(long)]
    pub(crate) backup: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct OpArgs {
    /// The VM.
    pub(crate) name: String,
    /// Print the task's id and return instead of following it.
    #[arg(long)]
    pub(crate) no_wait: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The VM's name.
    name: String,
    /// The guest kernel (a path on the hosts).
    #[arg(long)]
    kernel: String,
    /// An initramfs (a path on the hosts).
    #[arg(long)]
    initrd: Option<String>,
    /// The kernel command line.
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 64)]
    memory_mib: u32,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// A blank disk of this many MiB (repeat for more disks).
    #[arg(long = "disk-mib")]
    disks: Vec<u64>,
    /// A NIC on a port group, `PORTGROUP` or `PORTGROUP=MAC` (repeat for more).
    #[arg(long = "nic")]
    nics: Vec<String>,
    /// HA restart priority: disabled, low, medium, high.
    #[arg(long, default_value = "medium", value_parser = snake::<vinfra_host::api::RestartPriority>)]
    priority: vinfra_host::api::RestartPriority,
    /// What an isolated host does with it: leave-on, power-off, shut-down.
    #[arg(long, default_value = "leave-on", value_parser = snake::<vinfra_host::api::IsolationResponse>)]
    isolation_response: vinfra_host::api::IsolationResponse,
    /// CPU reservation in MHz.
    #[arg(long, default_value_t = 0)]
    cpu_mhz: u32,
    /// DRS shares (500 low, 1000 normal, 2000 high).
    #[arg(long, default_value_t = 1000)]
    shares: u32,
    /// Memory reservation in MiB.
    #[arg(long, default_value_t = 0)]
    reservation_mib: u64,
    /// Memory limit in MiB.
    #[arg(long)]
    limit_mib: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TaskCommand {
    /// The host's tasks (running, and the last finished ones).
    List,
    /// One task.
    Show { id: u64 },
    /// Follow a task to its end (exit 1 if it failed).
    Wait { id: u64 },
}

/// A kebab-case value as the API's snake_case enum.
fn snake<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(text.replace('-', "_")))
        .map_err(|_| format!("unknown value {text:?}"))
}

fn main() -> ExitCode {
    // A reader that goes away (`vinfra vm list | head -1`) ends the program quietly, as
    // with other Unix tools, instead of a panic in `println!` (Rust ignores SIGPIPE). The
    // sockets are unaffected: the standard library sends with MSG_NOSIGNAL.
    // SAFETY: `signal` with the default disposition, before any thread is started; no
    // handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vinfra: {e}");
            ExitCode::FAILURE
        }
    }
}

fn client(cli: &Cli) -> Result<Client, CliError> {
    let host = cli.host.as_deref().ok_or_else(|| {
        CliError::Usage("which host? give --host http://HOST:PORT or set VINFRA_HOST".into())
    })?;
    let key_file = cli.key_file.as_deref().ok_or_else(|| {
        CliError::Usage("no cluster key: give --key-file FILE or set VINFRA_KEY_FILE".into())
    })?;
    let token = ApiToken::from_key_file(key_file).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(Client::new(host, token)?)
}

pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Transport(format!("print JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

fn run(cli: &Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Login(args) => return center::login(cli, args),
        Command::Logout => return center::logout(),
        _ => {}
    }
    // An explicit server wins; a host given (flag or VINFRA_HOST) keeps the host mode
    // exactly as before `--server` existed; the stored session comes last.
    if cli.server.is_some() || (cli.host.is_none() && center::session_stored()) {
        return center::run(cli);
    }
    let client = client(cli)?;
    match &cli.command {
        Command::Login(_) | Command::Logout => Ok(()),
        Command::Drs(_) | Command::Host(HostCommand::List) => Err(center::only()),
        Command::Host(HostCommand::Status { name: Some(_) }) => Err(center::only()),
        Command::Host(HostCommand::Status { name: None }) => {
            let info: HostInfo = client.get("/host")?;
            if cli.json {
                print_json(&info)
            } else {
                show::host(&info);
                Ok(())
            }
        }
        Command::Host(HostCommand::Maintenance { exit, no_wait }) => {
            let started: TaskStarted = client.post(
                "/host/maintenance",
                &vinfra_host::api::MaintenanceRequest { enter: !exit },
            )?;
            follow(cli, &client, started, *no_wait)
        }
        Command::Events { after } => {
            let events: Vec<HostEvent> = client.get(&format!("/events?after={after}"))?;
            if cli.json {
                print_json(&events)
            } else {
                show::events(&events);
                Ok(())
            }
        }
        Command::Task(TaskCommand::List) => {
            let tasks: Vec<TaskInfo> = client.get("/tasks")?;
            if cli.json {
                print_json(&tasks)
            } else {
                show::tasks(&tasks);
                Ok(())
            }
        }
        Command::Task(TaskCommand::Show { id }) => {
            let task: TaskInfo = client.get(&format!("/tasks/{id}"))?;
            if cli.json {
                print_json(&task)
            } else {
                show::tasks(std::slice::from_ref(&task));
                Ok(())
            }
        }
        Command::Task(TaskCommand::Wait { id }) => wait(&client, cli.json, *id),
        Command::Vm(vm) => run_vm(cli, &client, vm),
    }
}

fn run_vm(cli: &Cli, client: &Client, command: &VmCommand) -> Result<(), CliError> {
    match command {
        VmCommand::List => {
            let vms: Vec<VmInfo> = client.get("/vms")?;
            if cli.json {
                print_json(&vms)
            } else {
                show::vms(&vms);
                Ok(())
            }
        }
        VmCommand::Show { name } => {
            let vm: VmInfo = client.get(&format!("/vms/{name}"))?;
            if cli.json {
                print_json(&vm)
            } else {
                show::vm(&vm);
                Ok(())
            }
        }
        VmCommand::Create(args) => {
            let spec = spec(args)?;
            let vm: VmInfo = client.post("/vms", &spec)?;
            if cli.json {
                print_json(&vm)
            } else {
                println!("created {} ({})", vm.spec.name, vm.state);
                Ok(())
            }
        }
        VmCommand::Delete { name } => {
            client.delete(&format!("/vms/{name}"))?;
            if cli.json {
                print_json(&serde_json::json!({ "deleted": name }))
            } else {
                println!("deleted {name}");
                Ok(())
            }
        }
        VmCommand::Start(op) => operation(cli, client, op, "start", &serde_json::json!({})),
        VmCommand::Stop(op) => operation(cli, client, op, "stop", &serde_json::json!({})),
        VmCommand::Reset(op) => operation(cli, client, op, "reset", &serde_json::json!({})),
        VmCommand::Shutdown {
            op,
            timeout_ms,
            force_after,
        } => {
            let req = ShutdownRequest {
                timeout_ms: *timeout_ms,
                force_after: *force_after,
            };
            operation(cli, client, op, "shutdown", &req)
        }
        VmCommand::Migrate { op, to } => operation(
            cli,
            client,
            op,
            "migrate",
            &MigrateRequest { to: to.clone() },
        ),
        VmCommand::Snapshot { op, snapshot_name } => operation(
            cli,
            client,
            op,
            "snapshot",
            &SnapshotRequest {
                name: snapshot_name.clone(),
            },
        ),
        VmCommand::Revert { op, snapshot } => operation(
            cli,
            client,
            op,
            "revert",
            &RevertRequest {
                snapshot: snapshot.clone(),
            },
        ),
        VmCommand::Clone { op, new_name, full } => operation(
            cli,
            client,
            op,
            "clone",
            &CloneRequest {
                name: new_name.clone(),
                full: *full,
            },
        ),
        VmCommand::Backup {
            op,
            repository,
            incremental,
            disks,
        } => operation(
            cli,
            client,
            op,
            "backup",
            &backup_request(repository, *incremental, disks),
        ),
        VmCommand::Restore { op, from, new_name } => operation(
            cli,
            client,
            op,
            "restore",
            &RestoreRequest {
                repository: from.repository.clone(),
                backup: from.backup.clone(),
                name: new_name.clone(),
            },
        ),
        VmCommand::RestoreDisk { op, from, disk } => operation(
            cli,
            client,
            op,
            "restore-disk",
            &RestoreDiskRequest {
                repository: from.repository.clone(),
                backup: from.backup.clone(),
                disk: *disk,
            },
        ),
        VmCommand::Console { name } => console::attach(client, name),
    }
}

/// The body of a backup: `--disk` given or not (all disks).
pub(crate) fn backup_request(repository: &str, incremental: bool, disks: &[u32]) -> BackupRequest {
    BackupRequest {
        repository: repository.to_string(),
        incremental,
        disks: (!disks.is_empty()).then(|| disks.to_vec()),
    }
}

pub(crate) fn spec(args: &CreateArgs) -> Result<VmSpec, CliError> {
    let mut spec = VmSpec::new(&args.name, &args.kernel, args.memory_mib);
    spec.initrd.clone_from(&args.initrd);
    spec.cmdline.clone_from(&args.cmdline);
    spec.vcpus = args.vcpus;
    spec.disks = args
        .disks
        .iter()
        .map(|&size_mib| DiskSpec { size_mib })
        .collect();
    spec.nics = args
        .nics
        .iter()
        .map(|nic| match nic.split_once('=') {
            Some((portgroup, mac)) => NicSpec {
                portgroup: portgroup.to_string(),
                mac: Some(mac.to_string()),
            },
            None => NicSpec {
                portgroup: nic.clone(),
                mac: None,
            },
        })
        .collect();
    spec.ha.priority = args.priority;
    spec.ha.isolation_response = args.isolation_response;
    spec.resources.cpu_mhz = args.cpu_mhz;
    spec.resources.shares = args.shares;
    spec.resources.reservation_mib = args.reservation_mib;
    spec.resources.limit_mib = args.limit_mib;
    // The host checks too; checking here says what is wrong before a round trip.
    spec.validate()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(spec)
}

fn operation<B: serde::Serialize>(
    cli: &Cli,
    client: &Client,
    op: &OpArgs,
    verb: &str,
    body: &B,
) -> Result<(), CliError> {
    let started: TaskStarted = client.post(&format!("/vms/{}/{verb}", op.name), body)?;
    follow(cli, client, started, op.no_wait)
}

/// Follows a started task to its end, or (`no_wait`) prints its id.
fn follow(cli: &Cli, client: &Client, started: TaskStarted, no_wait: bool) -> Result<(), CliError> {
    if !no_wait {
        return wait(client, cli.json, started.task);
    }
    if cli.json {
        print_json(&started)
    } else {
        println!("task {}", started.task);
        Ok(())
    }
}

/// How often a followed task is asked about.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// Follows a task to its end: a progress bar on a terminal, a line per change of its
/// message otherwise, nothing but the final JSON with `--json`.
fn wait(client: &Client, json: bool, id: u64) -> Result<(), CliError> {
    let mut progress = show::TaskProgress::new(id, json);
    let task = loop {
        let task: TaskInfo = client.get(&format!("/tasks/{id}"))?;
        if task.state != TaskState::Running {
            break task;
        }
        progress.update(&task);
        std::thread::sleep(POLL);
    };
    progress.finish(&task);
    if json {
        print_json(&task)?;
    }
    match (task.state, task.error) {
        (TaskState::Error, Some(detail)) => Err(CliError::TaskFailed {
            id,
            op: task.op.as_str().to_string(),
            vm: task.vm,
            detail,
        }),
        (TaskState::Error, None) => Err(CliError::Transport(format!(
            "task {id} failed without saying why"
        ))),
        _ => Ok(()),
    }
}
