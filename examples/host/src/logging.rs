//! The `tracing` subscriber the binaries install.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Sends `tracing` events to stderr, filtered by `RUST_LOG` or, when it is unset or
/// invalid, by `default_filter` (e.g. `"warn"`). stdout stays free for what the
/// binary prints (a guest's console, a command's answer). Colours only when stderr is
/// a terminal.
///
/// Call it once, first thing in `main`.
pub fn init(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .init();
}
