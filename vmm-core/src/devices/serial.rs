//! COM1: a vm-superio 16550 with its interrupt on an irqfd, output to a sink and input
//! from a host-side queue that tops up the UART's 64-byte FIFO as the guest drains it.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use vm_superio::serial::{NoEvents, SerialState};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::PioDevice;

/// COM1's base port.
pub const COM1_BASE: u16 = 0x3f8;
/// COM1's window.
pub const COM1_LEN: u16 = 8;
/// COM1's interrupt line.
pub const COM1_GSI: u32 = 4;
/// Most input bytes queued for the guest; beyond this input is dropped.
pub const INPUT_QUEUE_MAX_BYTES: usize = 1 << 20;

/// Raises the UART's interrupt by writing to an irqfd.
#[derive(Debug)]
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// A `Write` sink shared between the caller and the serial device.
#[derive(Clone)]
pub struct SharedWriter(pub Arc<Mutex<Box<dyn Write + Send>>>);

impl SharedWriter {
    /// Wraps a writer.
    pub fn new(w: impl Write + Send + 'static) -> Self {
        SharedWriter(Arc::new(Mutex::new(Box::new(w))))
    }
}

impl fmt::Debug for SharedWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedWriter")
    }
}

/// Where the guest's console bytes go.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConsoleSink {
    /// Process standard output, flushed per byte so prompts appear.
    Stdout,
    /// A file.
    File(File),
    /// A caller's writer.
    Writer(SharedWriter),
    /// Nowhere.
    Null,
}

impl Write for ConsoleSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ConsoleSink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(buf)?;
                out.flush()?;
                Ok(buf.len())
            }
            ConsoleSink::File(f) => f.write(buf),
            ConsoleSink::Writer(w) => {
                let mut w = w.0.lock().unwrap_or_else(|e| e.into_inner());
                w.write_all(buf)?;
                Ok(buf.len())
            }
            ConsoleSink::Null => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ConsoleSink::Stdout => io::stdout().flush(),
            ConsoleSink::File(f) => f.flush(),
            ConsoleSink::Writer(w) => w.0.lock().unwrap_or_else(|e| e.into_inner()).flush(),
            ConsoleSink::Null => Ok(()),
        }
    }
}

/// The UART's registers and receive FIFO, in a form serde can save (vm-superio's
/// `SerialState` has no serde support).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[allow(
    missing_docs,
    reason = "one field per 16550 register, named as in vm-superio"
)]
pub struct SerialSnapshot {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub in_buffer: Vec<u8>,
}

impl From<SerialState> for SerialSnapshot {
    fn from(s: SerialState) -> Self {
        SerialSnapshot {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<SerialSnapshot> for SerialState {
    fn from(s: SerialSnapshot) -> Self {
        SerialState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

/// Bytes through the console since the device was made (not carried by a snapshot or a
/// migration: they count this process's share).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ConsoleStats {
    /// Input bytes accepted for the guest to read.
    pub in_bytes: u64,
    /// Bytes the guest wrote to the transmit register.
    pub out_bytes: u64,
    /// Input bytes dropped because the queue was full.
    pub dropped_bytes: u64,
}

/// Line control register offset and its divisor-latch bit: with it set, offset 0 is the
/// divisor's low byte, not the transmit register.
const LCR_OFFSET: u16 = 3;
const LCR_DLAB: u8 = 0x80;

/// The serial port device.
pub struct SerialDevice {
    uart: Serial<EventFdTrigger, NoEvents, ConsoleSink>,
    pending: VecDeque<u8>,
    dropped: u64,
    in_bytes: u64,
    out_bytes: u64,
    dlab: bool,
}

impl std::fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialDevice")
            .field("pending", &self.pending.len())
            .field("dropped", &self.dropped)
            .finish()
    }
}

impl SerialDevice {
    /// A UART that interrupts through `irq` and writes to `sink`.
    pub fn new(irq: EventFd, sink: ConsoleSink) -> Self {
        SerialDevice {
            uart: Serial::new(EventFdTrigger(irq), sink),
            pending: VecDeque::new(),
            dropped: 0,
            in_bytes: 0,
            out_bytes: 0,
            dlab: false,
        }
    }

    /// A UART restored from `state`.
    pub fn from_state(state: &SerialState, irq: EventFd, sink: ConsoleSink) -> io::Result<Self> {
        let uart = Serial::from_state(state, EventFdTrigger(irq), NoEvents, sink)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))?;
        Ok(SerialDevice {
            uart,
            pending: VecDeque::new(),
            dropped: 0,
            in_bytes: 0,
            out_bytes: 0,
            dlab: state.line_control & LCR_DLAB != 0,
        })
    }

    /// The UART's registers and FIFO, for a snapshot.
    pub fn state(&self) -> SerialState {
        self.uart.state()
    }

    /// Queues `bytes` for the guest to read; returns how many were accepted.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        let room = INPUT_QUEUE_MAX_BYTES.saturating_sub(self.pending.len());
        let n = bytes.len().min(room);
        self.pending.extend(&bytes[..n]);
        self.in_bytes += n as u64;
        if n < bytes.len() {
            self.dropped += (bytes.len() - n) as u64;
            tracing::warn!(dropped = bytes.len() - n, "serial input queue full");
        }
        self.pump();
        n
    }

    /// The console's byte counts.
    pub fn stats(&self) -> ConsoleStats {
        ConsoleStats {
            in_bytes: self.in_bytes,
            out_bytes: self.out_bytes,
            dropped_bytes: self.dropped,
        }
    }

    /// Moves queued input into the UART FIFO as far as it has room.
    fn pump(&mut self) {
        while !self.pending.is_empty() && self.uart.fifo_capacity() > 0 {
            let n = self.uart.fifo_capacity().min(self.pending.len());
            let chunk: Vec<u8> = self.pending.drain(..n).collect();
            if let Err(e) = self.uart.enqueue_raw_bytes(&chunk) {
                tracing::debug!(error = ?e, "serial enqueue");
                break;
            }
        }
    }
}

impl PioDevice for SerialDevice {
    fn pio_read(&mut self, offset: u16, data: &mut [u8]) {
        self.pump();
        let v = self.uart.read(u8::try_from(offset).unwrap_or(u8::MAX));
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
        self.pump();
    }

    fn pio_write(&mut self, offset: u16, data: &[u8]) {
        if let Some(&b) = data.first() {
            match offset {
                0 if !self.dlab => self.out_bytes += 1,
                LCR_OFFSET => self.dlab = b & LCR_DLAB != 0,
                _ => {}
            }
            if let Err(e) = self.uart.write(u8::try_from(offset).unwrap_or(u8::MAX), b) {
                tracing::debug!(error = ?e, "serial write");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_reaches_the_sink_and_long_input_arrives_in_order() {
        let buf = Buf::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut s = SerialDevice::new(irq, ConsoleSink::Writer(SharedWriter::new(buf.clone())));
        for b in b"hi\n" {
            s.pio_write(0, &[*b]);
        }
        assert_eq!(&*buf.0.lock().unwrap(), b"hi\n");
        // Divisor writes (DLAB set) are not output.
        s.pio_write(3, &[0x80]);
        s.pio_write(0, &[1]);
        s.pio_write(3, &[0x03]);
        assert_eq!(s.stats().out_bytes, 3);
        let input: Vec<u8> = (0..200u8).collect();
        assert_eq!(s.feed(&input), 200);
        let mut got = Vec::new();
        for _ in 0..1000 {
            let mut lsr = [0u8];
            s.pio_read(5, &mut lsr);
            if lsr[0] & 1 == 0 {
                break;
            }
            let mut rbr = [0u8];
            s.pio_read(0, &mut rbr);
            got.push(rbr[0]);
        }
        assert_eq!(got, input);
        assert_eq!(s.stats().in_bytes, 200);
    }
}
