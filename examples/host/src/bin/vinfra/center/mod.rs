//! `vinfra` against the management server (`vinfra-center`): `login`/`logout`, then the
//! same verbs as against a host (`host`, `vm`, `task`, `events`) plus `drs`, over the
//! center's REST API (vSphere Automation style routes). A long operation answers with a
//! center task, followed to its end as the host's tasks are.

pub mod client;
mod console;
mod session;
mod show;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use self::client::{typed, CenterClient, CenterError, Trust};
use self::show::{CenterEvent, CenterHost, CenterTask, CenterVm};
use crate::client::CliError;
use crate::{print_json, Cli, Command, HostCommand, OpArgs, TaskCommand, VmCommand};

/// `vinfra login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The user.
    #[arg(long, default_value = "admin")]
    user: String,
    /// Read the password from the first line of this file (asked on the terminal
    /// otherwise).
    #[arg(long)]
    password_file: Option<PathBuf>,
}

/// `vinfra drs`.
#[derive(Debug, Subcommand)]
pub enum DrsCommand {
    /// What DRS would move now, and why.
    Recommendations(ClusterArg),
    /// A pass now: a fully automated cluster starts its automatic moves.
    Run(ClusterArg),
    /// Carry out one move (a live migration, followed to its end).
    Apply {
        #[command(flatten)]
        op: OpArgs,
        /// The destination host.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        cluster: ClusterArg,
    },
}

/// The cluster DRS works on.
#[derive(Debug, Args)]
pub struct ClusterArg {
    /// The cluster.
    #[arg(long, default_value = "cluster-1")]
    cluster: String,
}

/// The refusal of a center verb in host mode.
pub fn only() -> CliError {
    CliError::Usage(
        "this needs the management server: give --server https://HOST:PORT or vinfra login".into(),
    )
}

/// Whether `vinfra login` left a session.
pub fn session_stored() -> bool {
    session::path().is_ok_and(|p| p.exists())
}

/// How the certificate is checked: the command line's choice, else `stored`.
fn trust(cli: &Cli, stored: Option<&Trust>) -> Result<Trust, CliError> {
    let trust = match (&cli.ca_cert, cli.insecure) {
        (Some(path), _) => Trust::CaCert(client::absolute(path)?),
        (None, true) => Trust::Insecure,
        (None, false) => stored.cloned().unwrap_or(Trust::Default),
    };
    if trust == Trust::Insecure {
        eprintln!("vinfra: warning: --insecure: the server's certificate is not checked");
    }
    Ok(trust)
}

/// `vinfra login --server URL [--user U] [--password-file F] [--ca-cert F | --insecure]`.
pub fn login(cli: &Cli, args: &LoginArgs) -> Result<(), CliError> {
    let server = cli.server.as_deref().ok_or_else(|| {
        CliError::Usage("which server? give --server https://HOST:PORT or set VINFRA_SERVER".into())
    })?;
    let trust = trust(cli, None)?;
    let password = session::password(args.password_file.as_deref(), &args.user)?;
    let (s, path) = session::login(server, trust, &args.user, &password)?;
    if cli.json {
        print_json(&json!({
            "server": s.server, "user": s.user, "role": s.role,
            "expires_ms": s.expires_ms, "session_file": path,
        }))
    } else {
        println!(
            "logged in to {} as {} ({}); session in {}",
            s.server,
            s.user,
            s.role,
            path.display()
        );
        Ok(())
    }
}

/// `vinfra logout`.
pub fn logout() -> Result<(), CliError> {
    if session::logout()? {
        println!("logged out");
    } else {
        println!("not logged in");
    }
    Ok(())
}

/// The client of the center named by `--server` (or the stored session's), with the
/// stored session's token when it is the same server.
fn connect(cli: &Cli) -> Result<CenterClient, CliError> {
    let stored = session::load()?;
    let server = match (&cli.server, &stored) {
        (Some(s), _) => client::server_url(s)?,
        (None, Some(s)) => s.server.clone(),
        (None, None) => return Err(only()),
    };
    let stored = stored.filter(|s| s.server == server);
    let Some(session) = stored else {
        return Err(CliError::Usage(format!(
            "not logged in to {server}: vinfra login --server {server}"
        )));
    };
    let trust = trust(cli, Some(&session.trust))?;
    Ok(CenterClient::new(&server, &trust, Some(session.token))?)
}

/// Prints `value` as JSON, or as `T` for people.
fn print<T: serde::de::DeserializeOwned>(
    cli: &Cli,
    value: Value,
    people: impl FnOnce(&T),
) -> Result<(), CliError> {
    if cli.json {
        return print_json(&value);
    }
    people(&typed::<T>(value)?);
    Ok(())
}

/// A verb of the command line, through the center.
pub fn run(cli: &Cli) -> Result<(), CliError> {
    let c = connect(cli)?;
    match &cli.command {
        Command::Login(_) | Command::Logout => Ok(()),
        Command::Host(HostCommand::List) => {
            print(cli, c.get("/api/vcenter/host")?, |h: &Vec<CenterHost>| {
                show::hosts(h);
            })
        }
        Command::Host(HostCommand::Status { name: Some(name) }) => print(
            cli,
            c.get(&format!("/api/vcenter/host/{name}"))?,
            show::host,
        ),
        Command::Host(HostCommand::Status { name: None }) => print(
            cli,
            c.get("/api/vcenter/host")?,
            |hosts: &Vec<CenterHost>| {
                for (i, h) in hosts.iter().enumerate() {
                    if i > 0 {
                        println!();
                    }
                    show::host(h);
                }
            },
        ),
        Command::Host(HostCommand::Maintenance { .. }) => Err(CliError::Usage(
            "host maintenance is not yet offered through the center: give --host".into(),
        )),
        Command::Events { after } => print(
            cli,
            c.get(&format!("/api/vinfra/events?after={after}"))?,
            |e: &Vec<CenterEvent>| show::events(e),
        ),
        Command::Task(TaskCommand::List) => {
            print(cli, c.get("/api/cis/tasks")?, |t: &Vec<CenterTask>| {
                show::tasks(t);
            })
        }
        Command::Task(TaskCommand::Show { id }) => print(
            cli,
            c.get(&format!("/api/cis/tasks/{id}"))?,
            |t: &CenterTask| {
                show::tasks(std::slice::from_ref(t));
            },
        ),
        Command::Task(TaskCommand::Wait { id }) => wait(&c, cli.json, *id),
        Command::Vm(vm) => run_vm(cli, &c, vm),
        Command::Drs(drs) => run_drs(cli, &c, drs),
    }
}

fn run_vm(cli: &Cli, c: &CenterClient, command: &VmCommand) -> Result<(), CliError> {
    let power = |op: &OpArgs, action: &str| {
        let started = c.post(
            &format!("/api/vcenter/vm/{}/power?action={action}", op.name),
            &json!({}),
        )?;
        follow(cli, c, &started, op.no_wait)
    };
    let action = |op: &OpArgs, action: &str, body: Value| {
        let started = c.post(
            &format!("/api/vcenter/vm/{}?action={action}", op.name),
            &body,
        )?;
        follow(cli, c, &started, op.no_wait)
    };
    let body = |v: Result<Value, serde_json::Error>| {
        v.map_err(|e| CliError::Transport(format!("request body: {e}")))
    };
    match command {
        VmCommand::List => print(cli, c.get("/api/vcenter/vm")?, |v: &Vec<CenterVm>| {
            show::vms(v);
        }),
        VmCommand::Show { name } => {
            print(cli, c.get(&format!("/api/vcenter/vm/{name}"))?, show::vm)
        }
        VmCommand::Create(args) => {
            let spec = crate::spec(args)?;
            let created = c.post("/api/vcenter/vm", &json!({ "spec": spec }))?;
            print(cli, created, |vm: &CenterVm| {
                println!(
                    "created {} ({})",
                    vm.name,
                    crate::show::json_word(&vm.info.state)
                );
            })
        }
        VmCommand::Delete { name } => {
            c.delete(&format!("/api/vcenter/vm/{name}"))?;
            if cli.json {
                print_json(&json!({ "deleted": name }))
            } else {
                println!("deleted {name}");
                Ok(())
            }
        }
        VmCommand::Start(op) => power(op, "start"),
        VmCommand::Stop(op) => power(op, "stop"),
        VmCommand::Reset(op) => power(op, "reset"),
        VmCommand::Shutdown {
            op,
            timeout_ms,
            force_after,
        } => {
            if timeout_ms.is_some() || *force_after {
                return Err(CliError::Usage(
                    "--timeout-ms and --force-after are the host API's: give --host".into(),
                ));
            }
            power(op, "shutdown")
        }
        VmCommand::Migrate { op, to } => action(op, "relocate", json!({ "host": to })),
        VmCommand::Snapshot { op, snapshot_name } => {
            action(op, "snapshot", json!({ "name": snapshot_name }))
        }
        VmCommand::Revert { op, snapshot } => action(op, "revert", json!({ "snapshot": snapshot })),
        VmCommand::Clone { op, new_name, full } => {
            action(op, "clone", json!({ "name": new_name, "full": full }))
        }
        VmCommand::Backup {
            op,
            repository,
            incremental,
            disks,
        } => action(
            op,
            "backup",
            body(serde_json::to_value(crate::backup_request(
                repository,
                *incremental,
                disks,
            )))?,
        ),
        VmCommand::RestoreDisk { op, from, disk } => action(
            op,
            "restore-disk",
            body(serde_json::to_value(vinfra_host::api::RestoreDiskRequest {
                repository: from.repository.clone(),
                backup: from.backup.clone(),
                disk: *disk,
            }))?,
        ),
        VmCommand::Restore { op, from, new_name } => action(
            op,
            "restore",
            body(serde_json::to_value(vinfra_host::api::RestoreRequest {
                repository: from.repository.clone(),
                backup: from.backup.clone(),
                name: new_name.clone(),
            }))?,
        ),
        VmCommand::Console { name } => console::attach(c, name),
    }
}

fn run_drs(cli: &Cli, c: &CenterClient, command: &DrsCommand) -> Result<(), CliError> {
    match command {
        DrsCommand::Recommendations(ClusterArg { cluster }) => print(
            cli,
            c.get(&format!(
                "/api/vcenter/cluster/{cluster}/drs/recommendations"
            ))?,
            show::drs,
        ),
        DrsCommand::Run(ClusterArg { cluster }) => print(
            cli,
            c.post(
                &format!("/api/vcenter/cluster/{cluster}/drs?action=run"),
                &json!({}),
            )?,
            show::drs,
        ),
        DrsCommand::Apply {
            op,
            to,
            cluster: ClusterArg { cluster },
        } => {
            let started = c.post(
                &format!("/api/vcenter/cluster/{cluster}/drs/recommendations?action=apply"),
                &json!({ "vm": op.name, "to": to }),
            )?;
            follow(cli, c, &started, op.no_wait)
        }
    }
}

/// Follows a started center task (`{"task": ID}`) to its end, or (`no_wait`) prints its id.
fn follow(cli: &Cli, c: &CenterClient, started: &Value, no_wait: bool) -> Result<(), CliError> {
    let id = started["task"].as_u64().ok_or_else(|| {
        CliError::Center(CenterError::Transport(format!(
            "{}: no task in the answer {started}",
            c.base()
        )))
    })?;
    if !no_wait {
        return wait(c, cli.json, id);
    }
    if cli.json {
        print_json(started)
    } else {
        println!("task {id}");
        Ok(())
    }
}

/// Follows center task `id` to its end: a progress bar on a terminal, a line per change
/// otherwise, only the final JSON with `--json`. A failed task is an error (exit 1).
fn wait(c: &CenterClient, json: bool, id: u64) -> Result<(), CliError> {
    let mut progress = crate::show::TaskProgress::new(id, json);
    let (value, task) = loop {
        let value = c.get(&format!("/api/cis/tasks/{id}"))?;
        let task: CenterTask = typed(value.clone())?;
        if task.state != "running" {
            break (value, task);
        }
        progress.step(
            task.progress,
            &format!("{} {}", task.kind, task.target),
            &task.message,
        );
        std::thread::sleep(crate::POLL);
    };
    let what = format!("{} {}", task.kind, task.target);
    let succeeded = task.state == "succeeded";
    progress.done(&what, succeeded.then_some(task.result.as_ref()));
    if json {
        print_json(&value)?;
    }
    if succeeded {
        return Ok(());
    }
    match task.error {
        Some(detail) => Err(CliError::TaskFailed {
            id,
            op: task.kind,
            vm: task.target,
            detail,
        }),
        None => Err(CliError::Transport(format!(
            "task {id} ended {} without saying why",
            task.state
        ))),
    }
}
