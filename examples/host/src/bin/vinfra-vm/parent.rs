//! `--parent-lease-fd`: the VM stops with its host's volume lease.
//!
//! The host process (`vinfra-host run`) writes one byte to a pipe each time it confirmed
//! its own vmfs lease valid (every 50 ms tick). Here a thread reads them; a watchdog
//! that hears nothing for half the lease, or finds the pipe closed (the host died, or
//! gave the VM up), raises the flag the watch loop polls: the loop stops the VM and the
//! process exits with `exit_status::FENCED`. Should the loop be busy (a migration holds
//! it) the watchdog ends the process itself shortly after: a host whose lease lapsed
//! must not have its VM write on, since a peer may take the VM over a whole lease after
//! the host's last heartbeat.

use std::fs::File;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use vinfra_host::exit_status;

/// How long the watch loop has to stop the VM itself before the watchdog ends the process.
const GRACE: Duration = Duration::from_millis(500);

/// Watches the parent's lease on `fd` (inherited, the read end of a pipe); the flag rises
/// once the VM must stop.
pub fn watch(fd: i32, lease_ms: u64) -> Result<Arc<AtomicBool>, String> {
    // A pipe opened again through /proc is the same pipe (no unsafe `from_raw_fd`); the
    // inherited descriptor stays open beside it, which costs nothing for a read end.
    let path = format!("/proc/self/fd/{fd}");
    let mut pipe = File::open(&path).map_err(|e| format!("--parent-lease-fd {fd}: {e}"))?;
    let silence = Duration::from_millis((lease_ms / 2).max(1));
    let (tx, rx) = channel::<()>();
    std::thread::Builder::new()
        .name("parent-lease".into())
        .spawn(move || {
            let mut buf = [0u8; 64];
            // EOF or an error ends the thread; the dropped sender tells the watchdog.
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                let _ = n;
                if tx.send(()).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| format!("spawn the parent lease thread: {e}"))?;
    let fenced = Arc::new(AtomicBool::new(false));
    let flag = fenced.clone();
    std::thread::Builder::new()
        .name("parent-watchdog".into())
        .spawn(move || {
            let why = loop {
                match rx.recv_timeout(silence) {
                    Ok(()) => {}
                    Err(RecvTimeoutError::Timeout) => {
                        break format!("no word from the host for {} ms", silence.as_millis())
                    }
                    Err(RecvTimeoutError::Disconnected) => break "the host is gone".to_string(),
                }
            };
            eprintln!("\r\nvinfra-vm: {why}: its volume lease may have lapsed; stopping the VM\r");
            flag.store(true, Ordering::Release);
            std::thread::sleep(GRACE);
            eprintln!("vinfra-vm: the VM did not stop in time; exiting\r");
            std::process::exit(i32::from(exit_status::FENCED));
        })
        .map_err(|e| format!("spawn the parent watchdog: {e}"))?;
    Ok(fenced)
}
