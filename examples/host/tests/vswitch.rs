//! Tier 2: the virtual switch across two hosts. Each host is a network namespace on a
//! backbone bridge (testkit's NetLab); each has a switch with port groups `prod`
//! (VLAN 100) and `dev` (VLAN 200), carried between the hosts as VXLAN segments. A VM
//! on host 1 / prod is pinged by a VM on host 2 / prod and not reached from host 2 / dev.
//! Needs KVM, root, iproute2 and the net guest.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use vinfra_host::vswitch::{PortGroup, SwitchConfig, SwitchError};
use vinfra_testkit::{guest, isolated, kvm_or_skip, Console, NetLab};
use vinfra_vmm_core::{MacAddr, NetConfig, SerialOutput, SharedWriter, Vm, VmConfig};

const T: Duration = Duration::from_secs(90);
const WAIT: Duration = Duration::from_secs(20);

fn switch(lab: &NetLab, h: u32, peer: u32) -> SwitchConfig {
    let mut c = SwitchConfig::local(vec![
        PortGroup::new("prod", 100),
        PortGroup::new("dev", 200),
    ]);
    c.uplink = Some("eth0".into());
    c.local_ip = Some(lab.host_ip(h).parse::<Ipv4Addr>().unwrap());
    c.peers = vec![lab.host_ip(peer).parse().unwrap()];
    c.netns = Some(lab.host_ns(h));
    c
}

/// A net-guest VM whose TAP (made in this process's namespace) moves to `ns` and onto
/// port group `pg` of `sw`.
fn vm_on(
    kernel: &PathBuf,
    con: &Console,
    sw: &vinfra_host::vswitch::Switch,
    (ns, pg): (&str, &str),
    tap: &str,
    mac: u32,
    cmdline: &str,
) -> Vm {
    let cfg = VmConfig::new(kernel)
        .memory_mib(16)
        .serial_output(SerialOutput::Writer(SharedWriter::new(con.writer())))
        .cmdline(cmdline)
        .net(NetConfig::tap(tap, MacAddr::local(mac)));
    let mut vm = Vm::create(cfg).unwrap();
    let ok = Command::new("ip")
        .args(["link", "set", tap, "netns", ns])
        .stdin(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "move {tap} to {ns}");
    sw.attach(pg, tap).unwrap();
    vm.start().unwrap();
    vm
}

#[test]
fn switch_config_errors_name_what() {
    let e = SwitchConfig::local(vec![PortGroup::new("a", 0)])
        .validate()
        .unwrap_err();
    assert!(e.to_string().contains("VLAN 0"), "{e}");
    let e = SwitchConfig::local(vec![PortGroup::new("a", 5), PortGroup::new("a", 6)])
        .validate()
        .unwrap_err();
    assert!(e.to_string().contains("\"a\" is named twice"), "{e}");
    let mut c = SwitchConfig::local(vec![PortGroup::new("a", 5)]);
    c.uplink = Some("eth0".into());
    assert!(matches!(c.validate(), Err(SwitchError::Config(_))));
    let sw = SwitchConfig::local(vec![PortGroup::new("a", 5)])
        .validate()
        .unwrap();
    assert!(matches!(
        sw.bridge("b"),
        Err(SwitchError::UnknownPortGroup(_))
    ));
}

#[test]
fn vms_on_two_hosts_talk_over_vxlan_on_the_same_port_group_only() {
    if !kvm_or_skip() {
        return;
    }
    let Some(kernel) = guest("net") else { return };
    isolated(
        "vms_on_two_hosts_talk_over_vxlan_on_the_same_port_group_only",
        T,
        || {
            let Some(lab) = NetLab::new(2) else { return };
            let sw1 = switch(&lab, 1, 2).validate().unwrap();
            let sw2 = switch(&lab, 2, 1).validate().unwrap();
            for sw in [&sw1, &sw2] {
                sw.apply().unwrap();
                sw.apply().unwrap(); // idempotent
            }
            let id = std::process::id() % 100_000;
            let (ta, tb, tc) = (format!("vxa{id}"), format!("vxb{id}"), format!("vxc{id}"));

            let con_a = Console::default();
            let mut a = vm_on(
                &kernel,
                &con_a,
                &sw1,
                (&lab.host_ns(1), "prod"),
                &ta,
                0x51,
                "net.ip=192.168.50.1",
            );
            con_a.wait_for("NET-READY", WAIT);

            let con_b = Console::default();
            let mut b = vm_on(
                &kernel,
                &con_b,
                &sw2,
                (&lab.host_ns(2), "prod"),
                &tb,
                0x52,
                "net.ip=192.168.50.2 net.ping=192.168.50.1:3",
            );
            con_b.wait_for("NET-PING sent=3 received=3", WAIT);
            b.stop().unwrap();
            drop(b);

            let con_c = Console::default();
            let mut c = vm_on(
                &kernel,
                &con_c,
                &sw2,
                (&lab.host_ns(2), "dev"),
                &tc,
                0x53,
                "net.ip=192.168.50.3 net.ping=192.168.50.1:3",
            );
            con_c.wait_for("NET-PING no ARP answer from 192.168.50.1", WAIT);
            assert!(!con_a.text().contains("192.168.50.3"), "{}", con_a.text());
            c.stop().unwrap();
            a.stop().unwrap();
            for sw in [&sw1, &sw2] {
                sw.remove().unwrap();
                sw.remove().unwrap(); // idempotent
            }
        },
    );
}
