//! The host's virtual switch, built on the kernel's own engine: one Linux bridge per
//! port group, and per port group one VXLAN device (VNI = the port group's VLAN ID) on
//! the host's backbone uplink, so a port group spans every host of the cluster.
//!
//! Why not VLANs: the kernels we run on have neither bridge VLAN filtering nor 802.1Q
//! sub-interfaces (see MACHINE-FACTS.md), and a VXLAN segment per port group gives the
//! same isolation (frames of one VNI never reach another's bridge) over any IP network.
//! Broadcasts and unknown unicast go to every peer by head-end replication (one static
//! all-zero FDB entry per peer), so no multicast routing is needed on the backbone;
//! known MACs are learned from the tunnel as usual, and a VM's announcement after a
//! move (vmm-core sends a RARP on resume) re-teaches every bridge at once.
//!
//! What the switch does not do: the VI3 NIC security policies (forged transmits, MAC
//! changes, promiscuous mode) are enforced by vmm-core's virtio-net device, which sees
//! every frame a guest sends and every frame it is given.
//!
//! Names on a host: bridge `vpg<vlan>`, VXLAN `vvx<vlan>` (at most 15 characters, the
//! kernel's limit). Everything is applied and removed idempotently with `ip` and
//! `bridge` (iproute2), optionally inside a network namespace.
//!
//! ```
//! use vinfra_host::vswitch::SwitchConfig;
//!
//! let json = r#"{
//!     "uplink": "eth0", "local_ip": "10.0.0.1", "peers": ["10.0.0.2"],
//!     "port_groups": [ { "name": "prod", "vlan": 100 }, { "name": "dev", "vlan": 200 } ]
//! }"#;
//! let config: SwitchConfig = serde_json::from_str(json).unwrap();
//! let switch = config.validate().unwrap();
//! assert_eq!(switch.bridge("prod").unwrap(), "vpg100");
//! assert!(switch.bridge("test").is_err());
//!
//! let dup = json.replace("200", "100");
//! let bad: SwitchConfig = serde_json::from_str(&dup).unwrap();
//! assert!(bad.validate().unwrap_err().to_string().contains("VLAN 100"));
//! ```

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// UDP port of the VXLAN tunnels (the IANA one).
pub const VXLAN_PORT: u16 = 4789;
/// Bytes VXLAN adds to each frame (outer Ethernet, IPv4, UDP, VXLAN headers): the
/// backbone's MTU must exceed the VMs' by this much, or the port groups' MTU is lowered.
pub const VXLAN_OVERHEAD: u32 = 50;

/// A host's switch, as written in its JSON configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SwitchConfig {
    /// The backbone uplink (the interface that carries the tunnels). Without one, port
    /// groups stay local to the host.
    #[serde(default)]
    pub uplink: Option<String>,
    /// This host's address on the backbone (the tunnels' source).
    #[serde(default)]
    pub local_ip: Option<Ipv4Addr>,
    /// The other hosts' backbone addresses.
    #[serde(default)]
    pub peers: Vec<Ipv4Addr>,
    /// The port groups: name and VLAN ID (used as the VXLAN VNI).
    pub port_groups: Vec<PortGroup>,
    /// Network namespace to build the switch in (tests and labs); the current one when
    /// absent.
    #[serde(default)]
    pub netns: Option<String>,
}

/// A port group: VMs on it share one layer-2 segment across the hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PortGroup {
    /// The name VMs attach by.
    pub name: String,
    /// VLAN ID, 1 to 4094; also the VXLAN network identifier.
    pub vlan: u16,
}

impl PortGroup {
    /// A port group `name` with VLAN ID `vlan`.
    pub fn new(name: impl Into<String>, vlan: u16) -> PortGroup {
        PortGroup {
            name: name.into(),
            vlan,
        }
    }
}

/// Errors of the virtual switch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SwitchError {
    /// The configuration is not valid.
    #[error("switch config: {0}")]
    Config(String),
    /// A port group name that the configuration does not have.
    #[error("no port group {0:?} on this host's switch")]
    UnknownPortGroup(String),
    /// An `ip` or `bridge` command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr (or why it did not run).
        stderr: String,
    },
}

impl SwitchConfig {
    /// Port groups only, no uplink (a single host).
    pub fn local(port_groups: Vec<PortGroup>) -> SwitchConfig {
        SwitchConfig {
            uplink: None,
            local_ip: None,
            peers: Vec::new(),
            port_groups,
            netns: None,
        }
    }

    /// Checks names, VLAN IDs and the uplink, once ("parse, don't validate").
    pub fn validate(&self) -> Result<Switch, SwitchError> {
        let bad = |s: String| Err(SwitchError::Config(s));
        let mut names = BTreeSet::new();
        let mut vlans = BTreeSet::new();
        for pg in &self.port_groups {
            if pg.name.is_empty() || pg.name.len() > 64 {
                return bad(format!(
                    "port group name {:?} must be 1 to 64 bytes",
                    pg.name
                ));
            }
            if !(1..=4094).contains(&pg.vlan) {
                return bad(format!(
                    "port group {:?}: VLAN {} is not in 1..=4094",
                    pg.name, pg.vlan
                ));
            }
            if !names.insert(pg.name.as_str()) {
                return bad(format!("port group {:?} is named twice", pg.name));
            }
            if !vlans.insert(pg.vlan) {
                return bad(format!("VLAN {} is used by two port groups", pg.vlan));
            }
        }
        match (&self.uplink, self.local_ip) {
            (Some(u), Some(ip)) => {
                if u.is_empty() || u.len() > 15 || u.contains(['/', ' ']) {
                    return bad(format!("uplink {u:?} is not an interface name"));
                }
                if self.peers.contains(&ip) {
                    return bad(format!("local_ip {ip} is also listed as a peer"));
                }
            }
            (None, None) if self.peers.is_empty() => {}
            _ => return bad("uplink, local_ip and peers go together (all or none of them)".into()),
        }
        Ok(Switch {
            config: self.clone(),
        })
    }
}

/// A validated switch: applies itself to the kernel, attaches TAPs, removes itself.
#[derive(Debug, Clone)]
pub struct Switch {
    config: SwitchConfig,
}

impl Switch {
    /// The configuration.
    pub fn config(&self) -> &SwitchConfig {
        &self.config
    }

    fn port_group(&self, name: &str) -> Result<&PortGroup, SwitchError> {
        self.config
            .port_groups
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| SwitchError::UnknownPortGroup(name.to_owned()))
    }

    /// The bridge of port group `name`.
    pub fn bridge(&self, name: &str) -> Result<String, SwitchError> {
        Ok(bridge_name(self.port_group(name)?.vlan))
    }

    /// Creates whatever is missing: each port group's bridge and, with an uplink, its
    /// VXLAN device and the flooding entries for the peers. Running it again changes
    /// nothing.
    pub fn apply(&self) -> Result<(), SwitchError> {
        for pg in &self.config.port_groups {
            let br = bridge_name(pg.vlan);
            if !self.exists(&br) {
                self.ip(&["link", "add", &br, "type", "bridge"])?;
                // A bridge without an address of its own takes its lowest port's,
                // which changes as VMs come and go (a migration deletes the source's
                // TAP): whoever talks to an IP on the bridge would then see its MAC
                // change under it. A fixed one does not.
                self.ip(&["link", "set", &br, "address", &self.bridge_mac(pg.vlan)])?;
            }
            self.ip(&["link", "set", &br, "up"])?;
            let (Some(uplink), Some(local)) = (&self.config.uplink, self.config.local_ip) else {
                continue;
            };
            let vx = vxlan_name(pg.vlan);
            if !self.exists(&vx) {
                let id = pg.vlan.to_string();
                let local = local.to_string();
                let port = VXLAN_PORT.to_string();
                self.ip(&[
                    "link", "add", &vx, "type", "vxlan", "id", &id, "local", &local, "dev", uplink,
                    "dstport", &port,
                ])?;
            }
            self.ip(&["link", "set", &vx, "master", &br])?;
            self.ip(&["link", "set", &vx, "up"])?;
            for peer in &self.config.peers {
                let peer = peer.to_string();
                // `append` adds one more destination for broadcast and unknown
                // unicast; `replace` semantics per destination keep it idempotent.
                let have = self.output(&["bridge", "fdb", "show", "dev", &vx])?;
                if !have.contains(&format!("00:00:00:00:00:00 dst {peer} ")) {
                    self.bridge_cmd(&[
                        "fdb",
                        "append",
                        "00:00:00:00:00:00",
                        "dev",
                        &vx,
                        "dst",
                        &peer,
                    ])?;
                }
            }
        }
        tracing::info!(
            port_groups = self.config.port_groups.len(),
            "virtual switch applied"
        );
        Ok(())
    }

    /// Removes every bridge and VXLAN device of the configuration that exists (TAPs on
    /// them are detached, not deleted). Running it again changes nothing.
    pub fn remove(&self) -> Result<(), SwitchError> {
        for pg in &self.config.port_groups {
            for name in [vxlan_name(pg.vlan), bridge_name(pg.vlan)] {
                if self.exists(&name) {
                    self.ip(&["link", "del", &name])?;
                }
            }
        }
        Ok(())
    }

    /// Puts TAP `tap` (which must exist in the switch's namespace) on port group `pg`'s
    /// bridge and brings it up.
    pub fn attach(&self, pg: &str, tap: &str) -> Result<(), SwitchError> {
        let br = self.bridge(pg)?;
        self.ip(&["link", "set", tap, "master", &br])?;
        self.ip(&["link", "set", tap, "up"])
    }

    /// Creates a persistent TAP `tap` on port group `pg` (for a VMM that attaches to
    /// it by name and may run without CAP_NET_ADMIN); idempotent.
    pub fn create_port(&self, pg: &str, tap: &str) -> Result<(), SwitchError> {
        self.bridge(pg)?;
        if !self.exists(tap) {
            self.ip(&["tuntap", "add", "dev", tap, "mode", "tap"])?;
        }
        self.attach(pg, tap)
    }

    /// Deletes a TAP made by [`Switch::create_port`]; idempotent.
    pub fn delete_port(&self, tap: &str) -> Result<(), SwitchError> {
        if self.exists(tap) {
            self.ip(&["link", "del", tap])?;
        }
        Ok(())
    }

    /// A locally administered MAC for a port group's bridge, stable for this switch
    /// (derived from its namespace, backbone address and the VLAN ID).
    fn bridge_mac(&self, vlan: u16) -> String {
        let seed = format!("{:?}/{:?}/{vlan}", self.config.netns, self.config.local_ip);
        let h = seed.bytes().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        let b = h.to_be_bytes();
        format!("02:76:70:{:02x}:{:02x}:{:02x}", b[1], b[2], b[3])
    }

    fn exists(&self, link: &str) -> bool {
        self.output(&["ip", "link", "show", "dev", link]).is_ok()
    }

    fn ip(&self, args: &[&str]) -> Result<(), SwitchError> {
        let mut full = vec!["ip"];
        full.extend_from_slice(args);
        self.output(&full).map(drop)
    }

    fn bridge_cmd(&self, args: &[&str]) -> Result<(), SwitchError> {
        let mut full = vec!["bridge"];
        full.extend_from_slice(args);
        self.output(&full).map(drop)
    }

    /// Runs `argv` (inside the namespace, if any) and returns its stdout.
    fn output(&self, argv: &[&str]) -> Result<String, SwitchError> {
        let mut cmd = match &self.config.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).args(argv);
                c
            }
            None => {
                let mut c = Command::new(argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        let command = argv.join(" ");
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| SwitchError::Command {
                command: command.clone(),
                stderr: e.to_string(),
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(SwitchError::Command {
                command,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }
}

/// The bridge of VLAN `vlan`.
pub fn bridge_name(vlan: u16) -> String {
    format!("vpg{vlan}")
}

/// The VXLAN device of VLAN `vlan`.
pub fn vxlan_name(vlan: u16) -> String {
    format!("vvx{vlan}")
}
