//! Exit devices: the debug-exit port `0xf4` (guest exit code) and the i8042 reset line.

use std::fmt;
use std::sync::Arc;

use super::PioDevice;

/// Port of the exit device.
pub const EXIT_PORT: u16 = 0xf4;
/// Width of the exit device's window.
pub const EXIT_PORT_LEN: u16 = 4;
/// First port of the i8042 controller (data at 0x60, status/command at 0x64).
pub const I8042_BASE: u16 = 0x60;
/// Width of the i8042 window.
pub const I8042_LEN: u16 = 5;
const I8042_CMD_OFFSET: u16 = 4;
const I8042_CMD_RESET: u8 = 0xfe;

/// What a guest asked for through an exit device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestExit {
    /// The guest wrote this byte to port 0xf4.
    Poweroff(u8),
    /// The guest pulsed the i8042 reset line.
    Reboot,
}

/// Called when the guest asks to exit.
pub type ExitHandler = Arc<dyn Fn(GuestExit) + Send + Sync>;

/// The debug-exit port: a byte written stops the VM with that exit code.
pub struct ExitDevice {
    on_exit: ExitHandler,
}

impl ExitDevice {
    /// A device that reports to `on_exit`.
    pub fn new(on_exit: ExitHandler) -> Self {
        ExitDevice { on_exit }
    }
}

impl fmt::Debug for ExitDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExitDevice")
    }
}

impl PioDevice for ExitDevice {
    fn pio_read(&mut self, _offset: u16, data: &mut [u8]) {
        data.fill(0);
    }

    fn pio_write(&mut self, offset: u16, data: &[u8]) {
        if offset == 0 {
            if let Some(&code) = data.first() {
                (self.on_exit)(GuestExit::Poweroff(code));
            }
        }
    }
}

/// Just enough of an i8042 for the reset command; reads say "no data".
pub struct I8042 {
    on_exit: ExitHandler,
}

impl I8042 {
    /// A controller that reports resets to `on_exit`.
    pub fn new(on_exit: ExitHandler) -> Self {
        I8042 { on_exit }
    }
}

impl fmt::Debug for I8042 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("I8042")
    }
}

impl PioDevice for I8042 {
    fn pio_read(&mut self, _offset: u16, data: &mut [u8]) {
        data.fill(0);
    }

    fn pio_write(&mut self, offset: u16, data: &[u8]) {
        if offset == I8042_CMD_OFFSET && data.first() == Some(&I8042_CMD_RESET) {
            (self.on_exit)(GuestExit::Reboot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn exit_and_reset_report() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let h: ExitHandler = Arc::new(move |e| s.lock().unwrap().push(e));
        let mut x = ExitDevice::new(h.clone());
        x.pio_write(0, &[3]);
        let mut k = I8042::new(h);
        k.pio_write(0, &[0xfe]);
        k.pio_write(4, &[0x01]);
        k.pio_write(4, &[0xfe]);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![GuestExit::Poweroff(3), GuestExit::Reboot]
        );
    }
}
