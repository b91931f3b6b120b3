//! The API's console viewers of each VM ([`crate::api::GuestConsole`]): guest output
//! handed to every viewer, viewers' input carried to the VM on the host's tick. A viewer
//! that has gone is forgotten only after what it typed was delivered: a WebSocket client
//! may send a line and disconnect at once, before the next tick.

use std::collections::BTreeMap;

use crate::api::GuestConsole;

/// The viewers of each VM's console.
#[derive(Debug, Default)]
pub struct Consoles {
    viewers: BTreeMap<String, Vec<GuestConsole>>,
}

/// Hands `v`'s pending input to `deliver`; whether the viewer is still there.
fn drain(v: &mut GuestConsole, deliver: &mut dyn FnMut(&[u8])) -> bool {
    loop {
        match v.try_recv_input() {
            Ok(Some(bytes)) => deliver(&bytes),
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

impl Consoles {
    /// No viewer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new viewer of `vm`.
    pub fn add(&mut self, vm: String, viewer: GuestConsole) {
        self.viewers.entry(vm).or_default().push(viewer);
    }

    /// A line of `vm`'s console to each of its viewers (`\r\n` added); a viewer that has
    /// gone hands its last input to `deliver` and is forgotten.
    pub fn output(&mut self, vm: &str, line: &str, mut deliver: impl FnMut(&[u8])) {
        if let Some(viewers) = self.viewers.get_mut(vm) {
            let mut bytes = line.as_bytes().to_vec();
            bytes.extend_from_slice(b"\r\n");
            viewers.retain_mut(|v| {
                v.send_output(&bytes).is_ok() || {
                    drain(v, &mut deliver);
                    false
                }
            });
        }
    }

    /// Carries every viewer's input to its VM through `deliver(vm, bytes)`; viewers
    /// that have gone are forgotten after their input.
    pub fn input(&mut self, mut deliver: impl FnMut(&str, &[u8])) {
        self.viewers.retain(|vm, viewers| {
            viewers.retain_mut(|v| drain(v, &mut |b| deliver(vm, b)));
            !viewers.is_empty()
        });
    }

    /// Forgets the viewers of the VMs for which `runs` is false (their WebSockets
    /// close: the VM stopped or left).
    pub fn keep_only(&mut self, runs: impl Fn(&str) -> bool) {
        self.viewers.retain(|vm, _| runs(vm));
    }

    /// How many viewers `vm` has.
    #[cfg(test)]
    fn len(&self, vm: &str) -> usize {
        self.viewers.get(vm).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::console_pair;

    #[test]
    fn input_of_a_viewer_that_left_at_once_still_reaches_the_guest() {
        let mut c = Consoles::new();
        let (viewer, guest) = console_pair(16);
        c.add("vm".into(), guest);
        viewer.try_send_input(b"exit 0\n".to_vec()).unwrap();
        drop(viewer);
        // A console line comes before the tick: the viewer's end is found closed.
        let mut got = Vec::new();
        c.output("vm", "HB 1", |b| got.extend_from_slice(b));
        assert_eq!(got, b"exit 0\n");
        assert_eq!(c.len("vm"), 0);
    }

    #[test]
    fn input_is_carried_on_the_tick_and_gone_viewers_are_forgotten_after_it() {
        let mut c = Consoles::new();
        let (v1, g1) = console_pair(16);
        let (v2, g2) = console_pair(16);
        c.add("a".into(), g1);
        c.add("a".into(), g2);
        v1.try_send_input(b"one\n".to_vec()).unwrap();
        v2.try_send_input(b"two\n".to_vec()).unwrap();
        drop(v2);
        let mut got = Vec::new();
        c.input(|vm, b| got.push((vm.to_string(), b.to_vec())));
        assert_eq!(
            got,
            [
                ("a".into(), b"one\n".to_vec()),
                ("a".into(), b"two\n".to_vec())
            ]
        );
        assert_eq!(c.len("a"), 1);
        // A VM that no longer runs here loses its viewers.
        c.keep_only(|vm| vm != "a");
        assert_eq!(c.len("a"), 0);
        assert!(v1.try_send_input(b"x".to_vec()).is_err());
    }
}
