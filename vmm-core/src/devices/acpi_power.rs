//! The ACPI power device of this hardware-reduced machine: the FADT's sleep control and
//! status registers (how a guest enters S5, i.e. powers off, through ACPI) and the status
//! register of the Generic Event Device (GED, `ACPI0013`) whose one event is the power
//! button, as QEMU's `system_powerdown` presses it.
//!
//! | port | register |
//! |---|---|
//! | `0x3c0` | sleep control: a write with `SLP_EN` (bit 5) and `SLP_TYP` (bits 2–4) 5 powers off |
//! | `0x3c1` | sleep status: reads 0 (the machine never sleeps, it only powers off) |
//! | `0x3c2` | GED event status: bit 0 power button; a write of 1 clears it |
//! | `0x3c3` | reads [`SIGNATURE`] (`'V'`), so that a guest can tell the device is there |
//!
//! A press sets bit 0 and raises GSI [`GED_GSI`] (edge): an ACPI OS runs the GED's
//! `_EVT`, which notifies `\_SB.PWRB` (`PNP0C0C`) with `0x80` (Linux: `KEY_POWER`, then
//! systemd-logind or acpid shuts down and enters S5 here). A guest without an ACPI
//! interpreter (our test guests) polls the status port.

use std::fmt;

use vmm_sys_util::eventfd::EventFd;

use super::exit::{ExitHandler, GuestExit};
use super::PioDevice;

/// First port of the device.
pub const ACPI_POWER_PORT: u16 = 0x3c0;
/// Width of the device's port window.
pub const ACPI_POWER_LEN: u16 = 4;
/// Offset of the sleep control register.
pub const SLEEP_CONTROL_OFFSET: u16 = 0;
/// Offset of the sleep status register.
pub const SLEEP_STATUS_OFFSET: u16 = 1;
/// Offset of the GED event status register.
pub const GED_STATUS_OFFSET: u16 = 2;
/// Offset of the signature byte.
pub const SIGNATURE_OFFSET: u16 = 3;
/// What the signature byte reads: `'V'`. A port nobody decodes reads `0xff`, and where
/// these ports are VGA's (a PC machine in QEMU) they read other things.
pub const SIGNATURE: u8 = b'V';
/// GED event status bit: the power button was pressed.
pub const GED_POWER_BUTTON: u8 = 1;
/// The GED's interrupt: ISA IRQ 3 (COM2's, which this machine does not have), a pin
/// that neither COM1 (4) nor the virtio-mmio devices (5 and up) use.
pub const GED_GSI: u32 = 3;
/// The `\_S5` sleep type, and so the `SLP_TYP` that powers off.
pub const S5_SLEEP_TYPE: u8 = 5;
const SLP_EN: u8 = 1 << 5;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0b111;

/// The sleep registers and the GED status (see the module's table).
pub struct AcpiPower {
    on_exit: ExitHandler,
    irq: EventFd,
    ged_status: u8,
}

impl AcpiPower {
    /// A device that reports power-off to `on_exit` and raises `irq` (GSI [`GED_GSI`]).
    pub fn new(on_exit: ExitHandler, irq: EventFd) -> Self {
        AcpiPower {
            on_exit,
            irq,
            ged_status: 0,
        }
    }

    /// Presses the power button: sets the GED status bit and raises the interrupt.
    pub fn press_power_button(&mut self) -> std::io::Result<()> {
        self.ged_status |= GED_POWER_BUTTON;
        self.irq.write(1)
    }

    /// The GED status register (bit 0: a press the guest has not acknowledged).
    pub fn ged_status(&self) -> u8 {
        self.ged_status
    }
}

impl fmt::Debug for AcpiPower {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcpiPower")
            .field("ged_status", &self.ged_status)
            .finish_non_exhaustive()
    }
}

impl PioDevice for AcpiPower {
    fn pio_read(&mut self, offset: u16, data: &mut [u8]) {
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = match offset {
                GED_STATUS_OFFSET => self.ged_status,
                SIGNATURE_OFFSET => SIGNATURE,
                _ => 0,
            };
        }
    }

    fn pio_write(&mut self, offset: u16, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            SLEEP_CONTROL_OFFSET
                if v & SLP_EN != 0 && (v >> SLP_TYP_SHIFT) & SLP_TYP_MASK == S5_SLEEP_TYPE =>
            {
                (self.on_exit)(GuestExit::Poweroff(0));
            }
            GED_STATUS_OFFSET => self.ged_status &= !v,
            // Other sleep states are not offered (no _S1.._S4): ignored.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    fn device() -> (AcpiPower, Arc<Mutex<Vec<GuestExit>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let h: ExitHandler = Arc::new(move |e| s.lock().unwrap().push(e));
        (AcpiPower::new(h, EventFd::new(EFD_NONBLOCK).unwrap()), seen)
    }

    #[test]
    fn power_button_sets_status_raises_the_irq_and_is_cleared_by_the_guest() {
        let (mut d, _) = device();
        let mut b = [0xffu8];
        d.pio_read(SIGNATURE_OFFSET, &mut b);
        assert_eq!(b[0], b'V');
        d.pio_read(GED_STATUS_OFFSET, &mut b);
        assert_eq!(b[0], 0);
        assert!(d.irq.read().is_err(), "no interrupt before a press");
        d.press_power_button().unwrap();
        assert_eq!(d.irq.read().unwrap(), 1);
        d.pio_read(GED_STATUS_OFFSET, &mut b);
        assert_eq!(b[0], GED_POWER_BUTTON);
        // Reading does not acknowledge; writing the bit does.
        d.pio_read(GED_STATUS_OFFSET, &mut b);
        assert_eq!(b[0], GED_POWER_BUTTON);
        d.pio_write(GED_STATUS_OFFSET, &[GED_POWER_BUTTON]);
        d.pio_read(GED_STATUS_OFFSET, &mut b);
        assert_eq!(b[0], 0);
    }

    #[test]
    fn only_slp_en_with_s5_powers_off() {
        let (mut d, seen) = device();
        d.pio_write(SLEEP_CONTROL_OFFSET, &[S5_SLEEP_TYPE << SLP_TYP_SHIFT]); // no SLP_EN
        d.pio_write(SLEEP_CONTROL_OFFSET, &[SLP_EN | (3 << SLP_TYP_SHIFT)]); // S3
        d.pio_write(SLEEP_STATUS_OFFSET, &[0xff]);
        assert!(seen.lock().unwrap().is_empty());
        d.pio_write(
            SLEEP_CONTROL_OFFSET,
            &[SLP_EN | (S5_SLEEP_TYPE << SLP_TYP_SHIFT)],
        );
        assert_eq!(*seen.lock().unwrap(), vec![GuestExit::Poweroff(0)]);
    }
}
