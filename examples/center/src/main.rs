//! `vinfra-center`: the management server. Prints the console's URL and, at first
//! start, the login; stops cleanly on SIGINT or SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use vinfra_center::config::Args;
use vinfra_center::{auth, clock, server};
use vinfra_host::terminal::{install_stop_signals, stop_requested};

fn main() -> ExitCode {
    // Logs to stderr, filtered by RUST_LOG (warnings by default), as the host's binaries.
    vinfra_host::logging::init("warn");
    let args = Args::parse();
    let settings = match args.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vinfra-center: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = install_stop_signals() {
        eprintln!("vinfra-center: signals: {e}");
        return ExitCode::FAILURE;
    }
    let center = match server::start(&settings, clock::system()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vinfra-center: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("vinfra-center: console at {}", center.url());
    match center.first_password() {
        Some(password) => println!(
            "vinfra-center: log in as {} with password {password} (shown this once)",
            auth::FIRST_USER
        ),
        None => match &settings.admin_password_file {
            Some(file) => println!(
                "vinfra-center: log in as {} with the password in {} (unless changed since)",
                auth::FIRST_USER,
                file.display()
            ),
            None => println!(
                "vinfra-center: log in as an existing user (the first one is {})",
                auth::FIRST_USER
            ),
        },
    }
    println!(
        "vinfra-center: managing {} host(s) from the command line; state in {}",
        settings.hosts.len(),
        settings.state_dir.display()
    );
    // Loops until a signal: the handler only sets a flag.
    while !stop_requested() {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("vinfra-center: stopping");
    center.stop();
    ExitCode::SUCCESS
}
