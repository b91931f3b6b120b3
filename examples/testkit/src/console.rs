//! A console capture that tests can wait on with deadlines.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Everything written so far, and a condition variable woken on each write.
#[derive(Debug, Default)]
struct Shared {
    bytes: Mutex<Vec<u8>>,
    grew: Condvar,
}

impl Shared {
    /// The bytes; a writer that panicked mid-write cannot leave them inconsistent (they
    /// are only ever appended to), so a poisoned lock is still read.
    fn bytes(&self) -> MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A capture of console output (a VM's serial port, a child's log): code under test writes
/// into a [`ConsoleWriter`] from any thread, the test reads the text or waits for a pattern
/// until a deadline.
///
/// Clones share the same output. To feed a vmm-core serial port, wrap the writer:
/// `SerialOutput::Writer(SharedWriter::new(console.writer()))`.
#[derive(Debug, Clone, Default)]
pub struct Console(Arc<Shared>);

impl Console {
    /// An empty console.
    pub fn new() -> Self {
        Self::default()
    }

    /// A `Write` sink that appends to this console and wakes its waiters.
    pub fn writer(&self) -> ConsoleWriter {
        ConsoleWriter(self.clone())
    }

    /// The output so far, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.bytes()).into_owned()
    }

    /// The number of bytes written so far: an offset for [`Console::wait_for_from`].
    pub fn len(&self) -> usize {
        self.0.bytes().len()
    }

    /// True when nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until the output contains `pattern`; returns the byte offset just past the
    /// first match.
    ///
    /// # Panics
    ///
    /// When `timeout` passes first, with the output so far in the message.
    #[track_caller]
    pub fn wait_for(&self, pattern: &str, timeout: Duration) -> usize {
        self.wait_for_from(0, pattern, timeout)
    }

    /// Waits until the output after byte `from` contains `pattern`; returns the byte
    /// offset just past the first such match (so a test can wait for the next prompt
    /// after the last one).
    ///
    /// # Panics
    ///
    /// When `timeout` passes first, with the output so far in the message.
    #[track_caller]
    pub fn wait_for_from(&self, from: usize, pattern: &str, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut bytes = self.0.bytes();
        loop {
            if bytes.len() > from {
                let text = String::from_utf8_lossy(&bytes[from..]);
                if let Some(i) = text.find(pattern) {
                    return from + i + pattern.len();
                }
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {pattern:?}; console:\n{}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            bytes = self
                .0
                .grew
                .wait_timeout(bytes, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// The writing end of a [`Console`]; `Send + 'static`, so it can be handed to a device
/// thread.
#[derive(Debug, Clone)]
pub struct ConsoleWriter(Console);

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let shared = &(self.0).0;
        shared.bytes().extend_from_slice(buf);
        shared.grew.notify_all();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_return_offsets_past_each_match() {
        let con = Console::new();
        assert!(con.is_empty());
        con.writer()
            .write_all(b"login: root\nlogin: again\n")
            .unwrap();
        let first = con.wait_for("login:", Duration::ZERO);
        assert_eq!(first, 6);
        let second = con.wait_for_from(first, "login:", Duration::ZERO);
        assert_eq!(second, 18);
        assert_eq!(con.len(), 25);
        assert_eq!(con.text(), "login: root\nlogin: again\n");
    }

    #[test]
    fn a_wait_wakes_on_a_write_from_another_thread() {
        let con = Console::new();
        let mut w = con.writer();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w.write_all(b"VINFRA-READY").unwrap();
        });
        assert_eq!(con.wait_for("READY", Duration::from_secs(10)), 12);
        t.join().unwrap();
    }

    #[test]
    #[should_panic(expected = "timed out after 10ms waiting for \"never\"; console:\nsome text")]
    fn a_timeout_shows_the_output_so_far() {
        let con = Console::new();
        con.writer().write_all(b"some text").unwrap();
        con.wait_for("never", Duration::from_millis(10));
    }
}
