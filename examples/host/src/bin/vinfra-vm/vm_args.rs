//! The flags that describe a VM (shared by `run` and `incoming`), and what they build:
//! the vmm-core configuration, the mounted vmfs volume and the vmfs disks.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use vinfra_host::vmfs_disk::{MountedHost, VmfsDiskBackend, AUTO_SLOTS};
use vinfra_host::vswitch::{Switch, SwitchConfig};
use vinfra_vmfs::MountOptions;
use vinfra_vmm_core::{
    CpuidMask, DiskConfig, MacAddr, NetConfig, SerialInputSource, SerialOutput, VmConfig,
};

#[derive(Args, Debug, Clone)]
pub struct VmArgs {
    /// Kernel: an ELF with a PVH note, an ELF vmlinux, or a bzImage.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk (Linux boot protocol).
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long)]
    pub cmdline: Option<String>,
    /// Guest memory in MiB.
    #[arg(long)]
    pub memory_mib: Option<u64>,
    /// Number of vCPUs.
    #[arg(long)]
    pub vcpus: Option<u32>,
    /// A virtio-blk disk in a file: PATH or PATH,ro (repeatable).
    #[arg(long = "disk", value_name = "PATH[,ro]")]
    pub disks: Vec<String>,
    /// A virtio-net NIC (repeatable): on a host TAP device (created if missing; needs
    /// CAP_NET_ADMIN; bring it up and address it or bridge it yourself),
    /// `TAP[,mac=MAC]`, or on a port group of the host's switch (`--switch`),
    /// `portgroup=NAME[,mac=MAC]`, through a TAP made for it, up on the port group's
    /// bridge, deleted on exit. Without a MAC, one is derived from the TAP's name.
    #[arg(long = "net", value_name = "TAP|portgroup=NAME[,mac=MAC]")]
    pub nets: Vec<String>,
    /// The host's virtual switch (a JSON SwitchConfig: port groups, uplink, peers),
    /// applied idempotently before the VM starts; needed by `--net portgroup=…`.
    #[arg(long)]
    pub switch: Option<PathBuf>,
    /// A JSON VmConfig; the flags above override its fields.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Mark guest memory mergeable (KSM).
    #[arg(long)]
    pub page_sharing: bool,
    /// Hide CPUID feature bits from the guest, e.g. `7.0.ebx:0x20` (repeatable; as EVC
    /// does, so the VM can move to hosts without them). On `incoming`, the bits this host
    /// does not offer: a guest that was shown them is refused.
    #[arg(long = "hide-cpuid", value_name = "LEAF.SUB.REG:MASK")]
    pub hide_cpuid: Vec<CpuidMask>,
    /// A shared vmfs volume (image file) to mount for `--vmfs-disk`.
    #[arg(long, requires = "host_id")]
    pub volume: Option<PathBuf>,
    /// This host's id on the volume (0..64), or `auto`: the first slot in 16..63 that is
    /// free or dead (a VM child of `vinfra-host run`, which holds its own slot).
    #[arg(long, requires = "volume", value_name = "ID|auto")]
    pub host_id: Option<HostId>,
    /// A virtio-blk disk on the volume, e.g. `/vm1/vm1.vmdk`, held with an exclusive lock
    /// (repeatable); live migration hands the lock to the destination.
    #[arg(long = "vmfs-disk", value_name = "PATH", requires = "volume")]
    pub vmfs_disks: Vec<String>,
    /// Override the volume's heartbeat lease in ms (tests use short ones).
    #[arg(long, requires = "volume")]
    pub lease_ms: Option<u32>,
}

/// `--host-id`: a slot, or the first free one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostId {
    Slot(u32),
    Auto,
}

impl std::str::FromStr for HostId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(HostId::Auto),
            n => n
                .parse()
                .map(HostId::Slot)
                .map_err(|_| format!("{s:?} is neither a slot number nor auto")),
        }
    }
}

/// A VM's configuration and the vmfs pieces that must outlive it.
pub struct Built {
    pub config: VmConfig,
    /// The mounted volume (heartbeat running), when there are vmfs disks.
    pub host: Option<MountedHost>,
    pub vmfs_disks: Vec<Arc<VmfsDiskBackend>>,
    /// TAPs made on port groups, deleted when the VM's process is done with them.
    #[allow(dead_code, reason = "held for its Drop, which deletes the TAPs")]
    pub ports: SwitchPorts,
}

/// The TAPs `--net portgroup=…` made; dropping deletes them.
#[derive(Default)]
pub struct SwitchPorts {
    switch: Option<Switch>,
    taps: Vec<String>,
}

impl Drop for SwitchPorts {
    fn drop(&mut self) {
        if let Some(sw) = &self.switch {
            for tap in &self.taps {
                if let Err(e) = sw.delete_port(tap) {
                    tracing::warn!(tap, error = %e, "delete port");
                }
            }
        }
    }
}

/// Whether the vmfs disks are opened (locked) now or left for a migration to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskLocks {
    Take,
    Detached,
}

/// `TAP[,mac=MAC]` into a NIC.
pub fn parse_net(spec: &str) -> Result<NetConfig, String> {
    let mut parts = spec.split(',');
    let tap = parts.next().unwrap_or_default();
    let mut mac = None;
    for opt in parts {
        match opt.split_once('=') {
            Some(("mac", m)) => mac = Some(m.parse::<MacAddr>().map_err(|e| e.to_string())?),
            _ => return Err(format!("net option {opt:?} is not mac=MAC")),
        }
    }
    // FNV-1a of the name: the same TAP gets the same MAC every run.
    let derived = || {
        let h = tap.bytes().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        MacAddr::local(h)
    };
    Ok(NetConfig::tap(tap, mac.unwrap_or_else(derived)))
}

fn parse_disk(spec: &str) -> Result<DiskConfig, String> {
    let (path, ro) = match spec.rsplit_once(',') {
        Some((p, "ro")) => (p, true),
        Some((p, "rw")) => (p, false),
        Some((_, other)) => return Err(format!("disk option {other:?} is not ro or rw")),
        None => (spec, false),
    };
    let mut d = DiskConfig::new(path);
    d.read_only = ro;
    Ok(d)
}

impl VmArgs {
    pub fn build(&self, locks: DiskLocks) -> Result<Built, String> {
        let a = self.clone();
        let mut cfg = match &a.config {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| format!("read {}: {e}", p.display()))?;
                serde_json::from_str::<VmConfig>(&text)
                    .map_err(|e| format!("parse {}: {e}", p.display()))?
            }
            None => VmConfig::new(a.kernel.clone().ok_or("--kernel or --config is required")?),
        };
        if let Some(k) = a.kernel {
            cfg.kernel = k;
        }
        if let Some(i) = a.initrd {
            cfg.initrd = Some(i);
        }
        if let Some(c) = a.cmdline {
            cfg.cmdline = c;
        }
        if let Some(m) = a.memory_mib {
            cfg.memory_mib = m;
        }
        if let Some(v) = a.vcpus {
            cfg.vcpus = v;
        }
        for d in &a.disks {
            cfg.disks.push(parse_disk(d)?);
        }
        let mut ports = SwitchPorts::default();
        if let Some(p) = &a.switch {
            let text =
                std::fs::read_to_string(p).map_err(|e| format!("read {}: {e}", p.display()))?;
            let sc: SwitchConfig =
                serde_json::from_str(&text).map_err(|e| format!("parse {}: {e}", p.display()))?;
            let sw = sc.validate().map_err(|e| e.to_string())?;
            sw.apply().map_err(|e| e.to_string())?;
            ports.switch = Some(sw);
        }
        for (i, n) in a.nets.iter().enumerate() {
            match n.strip_prefix("portgroup=") {
                Some(rest) => {
                    let (pg, opts) = rest.split_once(',').unwrap_or((rest, ""));
                    let sw = ports
                        .switch
                        .as_ref()
                        .ok_or("--net portgroup=… needs --switch")?;
                    let tap = format!("vp{}n{i}", std::process::id() % 10_000_000);
                    sw.create_port(pg, &tap).map_err(|e| e.to_string())?;
                    ports.taps.push(tap.clone());
                    let spec = if opts.is_empty() {
                        tap
                    } else {
                        format!("{tap},{opts}")
                    };
                    cfg.nets.push(parse_net(&spec)?);
                }
                None => cfg.nets.push(parse_net(n)?),
            }
        }
        cfg.cpuid_hidden.extend(a.hide_cpuid);
        cfg.page_sharing |= a.page_sharing;
        cfg.serial_output = SerialOutput::Stdio;
        // The binary forwards stdin itself (it watches for Ctrl-A).
        cfg.serial_input = SerialInputSource::None;
        let (host, vmfs_disks) = match (&a.volume, a.host_id) {
            (Some(volume), Some(host_id)) => {
                let mut opts = MountOptions::default();
                opts.lease_ms = a.lease_ms;
                opts.pid = std::process::id();
                opts.name = "vinfra-vm".into();
                let host = match host_id {
                    HostId::Slot(id) => MountedHost::mount(volume, id, &opts),
                    HostId::Auto => MountedHost::mount_any(volume, AUTO_SLOTS, &opts),
                }
                .map_err(|e| e.to_string())?;
                tracing::info!(slot = host.host_id(), "mounted the volume");
                let mut disks = Vec::new();
                for path in &a.vmfs_disks {
                    let path = if path.starts_with('/') {
                        path.clone()
                    } else {
                        format!("/{path}")
                    };
                    let backend = match locks {
                        DiskLocks::Take => VmfsDiskBackend::open(host.volume(), &path)
                            .map_err(|e| e.to_string())?,
                        DiskLocks::Detached => VmfsDiskBackend::detached(host.volume(), &path),
                    };
                    let backend = Arc::new(backend);
                    cfg.disks.push(DiskConfig::backend(&path, backend.clone()));
                    disks.push(backend);
                }
                (Some(host), disks)
            }
            _ => (None, Vec::new()),
        };
        Ok(Built {
            config: cfg,
            host,
            vmfs_disks,
            ports,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_specs_parse_and_bad_ones_say_what() {
        let n = parse_net("tap0,mac=52:54:00:00:00:07").unwrap();
        assert_eq!((n.tap.as_str(), n.mac), ("tap0", MacAddr::local(7)));
        // The derived MAC is stable and unicast.
        let a = parse_net("tap1").unwrap();
        assert_eq!(a.mac, parse_net("tap1").unwrap().mac);
        assert!(!a.mac.is_multicast());
        assert!(parse_net("tap0,mac=52:54").unwrap_err().contains("bad MAC"));
        assert!(parse_net("tap0,speed=10").unwrap_err().contains("speed=10"));
    }

    #[test]
    fn host_ids_are_numbers_or_auto() {
        assert_eq!("auto".parse::<HostId>(), Ok(HostId::Auto));
        assert_eq!("7".parse::<HostId>(), Ok(HostId::Slot(7)));
        assert!("any".parse::<HostId>().unwrap_err().contains("auto"));
    }
}
