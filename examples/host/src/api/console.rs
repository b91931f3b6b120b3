//! A VM console between the host and a WebSocket viewer: a pair of bounded channels.
//!
//! The host keeps the [`GuestConsole`] end (plain, blocking-free calls from its own
//! threads) and hands the [`Console`] end to the API server through
//! [`HostService::console`](super::HostService::console). Guest output never waits for a
//! slow viewer: when the viewer's queue is full the bytes are dropped and counted, and
//! the viewer is told how many it lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// The viewer has gone (its WebSocket closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the console viewer has gone")]
pub struct ConsoleClosed;

/// A console's two ends, with room for `capacity` chunks each way.
///
/// ```
/// let (mut viewer, mut guest) = vinfra_host::api::console_pair(16);
/// guest.send_output(b"login: ").unwrap();
/// viewer.try_send_input(b"root\n".to_vec()).unwrap();
/// assert_eq!(guest.try_recv_input().unwrap(), Some(b"root\n".to_vec()));
/// drop(viewer);
/// assert!(guest.send_output(b"x").is_err());
/// ```
#[must_use]
pub fn console_pair(capacity: usize) -> (Console, GuestConsole) {
    let capacity = capacity.max(1);
    let (out_tx, out_rx) = mpsc::channel(capacity);
    let (in_tx, in_rx) = mpsc::channel(capacity);
    let lost = Arc::new(AtomicU64::new(0));
    (
        Console {
            output: out_rx,
            input: in_tx,
            lost: Arc::clone(&lost),
        },
        GuestConsole {
            output: out_tx,
            input: in_rx,
            lost,
        },
    )
}

/// The viewer's end (the API server's).
#[derive(Debug)]
pub struct Console {
    output: mpsc::Receiver<Vec<u8>>,
    input: mpsc::Sender<Vec<u8>>,
    lost: Arc<AtomicU64>,
}

impl Console {
    /// The next chunk of guest output; `None` once the host dropped its end (the VM
    /// stopped).
    pub async fn recv_output(&mut self) -> Option<Vec<u8>> {
        self.output.recv().await
    }

    /// Sends input to the guest, waiting while the host's queue is full.
    pub async fn send_input(&self, bytes: Vec<u8>) -> Result<(), ConsoleClosed> {
        self.input.send(bytes).await.map_err(|_| ConsoleClosed)
    }

    /// Sends input to the guest without waiting (an error when full or closed).
    pub fn try_send_input(&self, bytes: Vec<u8>) -> Result<(), ConsoleClosed> {
        self.input.try_send(bytes).map_err(|_| ConsoleClosed)
    }

    /// Output bytes dropped since the last call because the viewer was too slow.
    pub fn take_lost(&self) -> u64 {
        self.lost.swap(0, Ordering::Relaxed)
    }
}

/// The host's end.
#[derive(Debug)]
pub struct GuestConsole {
    output: mpsc::Sender<Vec<u8>>,
    input: mpsc::Receiver<Vec<u8>>,
    lost: Arc<AtomicU64>,
}

impl GuestConsole {
    /// Hands guest output to the viewer without waiting: when its queue is full the
    /// bytes are dropped (and reported to the viewer as lost). An error once the viewer
    /// has gone: the host forgets this end.
    pub fn send_output(&self, bytes: &[u8]) -> Result<(), ConsoleClosed> {
        match self.output.try_send(bytes.to_vec()) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lost.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(ConsoleClosed),
        }
    }

    /// The next input from the viewer if there is one; an error once the viewer has gone.
    pub fn try_recv_input(&mut self) -> Result<Option<Vec<u8>>, ConsoleClosed> {
        match self.input.try_recv() {
            Ok(bytes) => Ok(Some(bytes)),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(ConsoleClosed),
        }
    }

    /// Waits for the next input; `None` once the viewer has gone. Blocks the thread:
    /// call it from a thread of the host, never from inside the API's async runtime.
    pub fn recv_input(&mut self) -> Option<Vec<u8>> {
        self.input.blocking_recv()
    }

    /// Whether the viewer has gone.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.output.is_closed()
    }
}
