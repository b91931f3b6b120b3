//! The lab's network when run as root: a bridge `vlabN` in this namespace (so that the
//! user's shell reaches every host's API at `10.77.N.H`) and one namespace `vlabN-hH` per
//! host, joined to the bridge by a veth pair (`eth0`: management, HA and the VMs' VXLAN);
//! a second bridge `vlabNv` joins each host's `vmk1` (`10.78.N.H`), the VMotion network,
//! as VI3 kept VMotion on a VMkernel port of its own. Without root the hosts share
//! loopback (`127.77.N.H` and `127.78.N.H`, every 127/8 address is local on Linux).

use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// How the hosts are reached.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Net {
    /// Namespaces on a bridge.
    Namespaces {
        /// The lab's number (0..=255): its bridge, namespaces and subnet.
        id: u8,
    },
    /// Loopback addresses.
    Loopback {
        /// As above.
        id: u8,
    },
}

/// What one `build` made, to undo on failure.
#[derive(Debug, Default)]
struct Made {
    bridge: bool,
    vmotion_bridge: bool,
    namespaces: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e} (is iproute2 installed?)", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether this process runs as root (namespaces and bridges need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

impl Net {
    fn id(&self) -> u8 {
        match self {
            Net::Namespaces { id } | Net::Loopback { id } => *id,
        }
    }

    /// The bridge's name.
    pub fn bridge(&self) -> String {
        format!("vlab{}", self.id())
    }

    /// The VMotion network's bridge.
    pub fn vmotion_bridge(&self) -> String {
        format!("vlab{}v", self.id())
    }

    /// Host `h`'s VMotion address.
    pub fn vmotion_ip(&self, h: u32) -> String {
        match self {
            Net::Namespaces { id } => format!("10.78.{id}.{h}"),
            Net::Loopback { id } => format!("127.78.{id}.{h}"),
        }
    }

    /// Host `h`'s namespace, if it has one.
    pub fn namespace(&self, h: u32) -> Option<String> {
        match self {
            Net::Namespaces { id } => Some(format!("vlab{id}-h{h}")),
            Net::Loopback { .. } => None,
        }
    }

    /// Host `h`'s address.
    pub fn host_ip(&self, h: u32) -> String {
        match self {
            Net::Namespaces { id } => format!("10.77.{id}.{h}"),
            Net::Loopback { id } => format!("127.77.{id}.{h}"),
        }
    }

    /// An address every host can reach while its network is up, for HA's isolation
    /// probes: the bridge (a TCP connection to its port 9 is refused, i.e. answered).
    pub fn gateway(&self) -> String {
        match self {
            Net::Namespaces { id } => format!("10.77.{id}.254"),
            Net::Loopback { id } => format!("127.77.{id}.254"),
        }
    }

    /// Makes the bridge and the namespaces of `hosts` hosts. On an error, what this call
    /// made is removed again (and only that: a bridge that existed is another lab's).
    pub fn build(&self, hosts: u32) -> Result<(), String> {
        let Net::Namespaces { .. } = self else {
            return Ok(());
        };
        let mut made = Made::default();
        let built = self.try_build(hosts, &mut made);
        if built.is_err() {
            for ns in &made.namespaces {
                let _ = ip(&["netns", "del", ns]);
            }
            if made.bridge {
                let _ = ip(&["link", "del", &self.bridge()]);
            }
            if made.vmotion_bridge {
                let _ = ip(&["link", "del", &self.vmotion_bridge()]);
            }
        }
        built
    }

    /// A lab network on the first free lab number from `from` (a number whose bridge or
    /// ports exist belongs to another lab).
    pub fn build_free(loopback: bool, from: u8, hosts: u32) -> Result<Net, String> {
        let mut last = String::new();
        for id in from..=u8::MAX {
            let net = if loopback {
                Net::Loopback { id }
            } else {
                Net::Namespaces { id }
            };
            if loopback {
                // Free when its first host's API port can be bound.
                if std::net::TcpListener::bind((net.host_ip(1).as_str(), 8700)).is_ok() {
                    return Ok(net);
                }
                continue;
            }
            match net.build(hosts) {
                Ok(()) => return Ok(net),
                Err(e) if e.contains("File exists") => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(format!("no free lab number from {from} (last: {last})"))
    }

    fn try_build(&self, hosts: u32, made: &mut Made) -> Result<(), String> {
        let br = self.bridge();
        ip(&["link", "add", &br, "type", "bridge"])?;
        made.bridge = true;
        ip(&["addr", "add", &format!("{}/24", self.gateway()), "dev", &br])?;
        ip(&["link", "set", &br, "up"])?;
        let vbr = self.vmotion_bridge();
        ip(&["link", "add", &vbr, "type", "bridge"])?;
        made.vmotion_bridge = true;
        ip(&["link", "set", &vbr, "up"])?;
        for h in 1..=hosts {
            let Some(ns) = self.namespace(h) else {
                continue;
            };
            let port = format!("{br}p{h}");
            ip(&["netns", "add", &ns])?;
            made.namespaces.push(ns.clone());
            ip(&[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &port, "master", &br])?;
            ip(&["link", "set", &port, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", self.host_ip(h)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // The VMotion interface.
            let vport = format!("{vbr}p{h}");
            ip(&[
                "link", "add", &vport, "type", "veth", "peer", "name", "vmk1", "netns", &ns,
            ])?;
            ip(&["link", "set", &vport, "master", &vbr])?;
            ip(&["link", "set", &vport, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", self.vmotion_ip(h)),
                "dev",
                "vmk1",
            ])?;
            ip(&["-n", &ns, "link", "set", "vmk1", "up"])?;
        }
        Ok(())
    }

    /// Removes the namespaces (and with them their veth pairs) and the bridge; what is
    /// already gone is skipped.
    pub fn remove(&self, hosts: u32) {
        let Net::Namespaces { .. } = self else {
            return;
        };
        for h in 1..=hosts {
            if let Some(ns) = self.namespace(h) {
                let _ = ip(&["netns", "del", &ns]);
            }
        }
        let _ = ip(&["link", "del", &self.bridge()]);
        let _ = ip(&["link", "del", &self.vmotion_bridge()]);
    }

    /// `program` run in host `h`'s namespace (`ip netns exec` execs it, so the child's
    /// pid is the program's).
    pub fn command(&self, h: u32, program: &std::path::Path) -> Command {
        match self.namespace(h) {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }
}
