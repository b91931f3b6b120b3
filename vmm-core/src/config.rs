//! VM configuration: a serde type that is validated once into [`ValidConfig`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cpuid::CpuidMask;
use crate::devices::block::BlockBackend;
use crate::devices::net::{MacAddr, NetBackend, TAP_NAME_MAX};
use crate::devices::serial::SharedWriter;
use crate::devices::virtio::NetPolicy;
use crate::error::{Error, Result};

/// Smallest guest memory we accept: boot structures live below 1 MiB and the kernel
/// is loaded at 1 MiB.
pub const MIN_MEMORY_MIB: u64 = 2;
/// Largest guest memory we accept.
pub const MAX_MEMORY_MIB: u64 = 256 * 1024;
/// Most vCPUs a VM may have regardless of KVM (APIC ids stay below the broadcast id).
pub const MAX_VCPUS: u32 = 254;
/// Most virtio devices, disks and NICs together (GSIs 5..=23 on the IOAPIC).
pub const VIRTIO_DEVICES_MAX: usize = 19;
/// Longest kernel command line, in bytes, including what the VMM appends.
pub const CMDLINE_MAX_BYTES: usize = 4096;

/// What a VM is made of. Build one with [`VmConfig::new`] and set fields, or
/// deserialize it from JSON (unknown keys are rejected).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VmConfig {
    /// Guest RAM in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Number of vCPUs (1 to the KVM limit).
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// Kernel: an ELF with a PVH note, an ELF vmlinux, or a bzImage.
    pub kernel: PathBuf,
    /// Optional initial ramdisk (Linux boot protocol only).
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line; the VMM appends device and TSC keys.
    #[serde(default)]
    pub cmdline: String,
    /// virtio-blk disks, device i at MMIO slot i.
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// virtio-net NICs, after the disks on the MMIO bus.
    #[serde(default)]
    pub nets: Vec<NetConfig>,
    /// Where the guest's serial console goes.
    #[serde(default)]
    pub serial_output: SerialOutput,
    /// Where the guest's serial input comes from (besides [`crate::Vm::serial_input`],
    /// which always works).
    #[serde(default)]
    pub serial_input: SerialInputSource,
    /// Mark guest RAM mergeable for KSM (`MADV_MERGEABLE`).
    #[serde(default)]
    pub page_sharing: bool,
    /// The KVM device node (tests point it elsewhere to check the error path).
    #[serde(default = "default_kvm_path")]
    pub kvm_path: PathBuf,
    /// CPUID bits hidden from the guest (like VMware EVC masks), so it can later move to
    /// a host without those features. In JSON, strings such as `"7.0.ebx:0x20"`.
    #[serde(default)]
    pub cpuid_hidden: Vec<CpuidMask>,
}

fn default_memory_mib() -> u64 {
    256
}
fn default_vcpus() -> u32 {
    1
}
fn default_kvm_path() -> PathBuf {
    PathBuf::from("/dev/kvm")
}

/// One virtio-blk disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DiskConfig {
    /// Image file.
    pub path: PathBuf,
    /// Refuse guest writes.
    #[serde(default)]
    pub read_only: bool,
    /// Identifier the guest reads with GET_ID (at most 20 bytes); defaults to `disk<i>`.
    #[serde(default)]
    pub id: Option<String>,
    /// Storage supplied by the embedder instead of the file at `path` (which then only
    /// names the disk in errors). Not part of the JSON form.
    #[serde(skip)]
    pub backend: Option<SharedBackend>,
}

/// A [`BlockBackend`] shared with the VM; equal when it is the same object.
#[derive(Clone)]
pub struct SharedBackend(pub Arc<dyn BlockBackend>);

impl fmt::Debug for SharedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBackend")
            .field("len", &self.0.len())
            .finish_non_exhaustive()
    }
}

impl PartialEq for SharedBackend {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedBackend {}

impl DiskConfig {
    /// A read-write disk backed by `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DiskConfig {
            path: path.into(),
            read_only: false,
            id: None,
            backend: None,
        }
    }

    /// A read-write disk on an embedder's backend; `name` names it in errors.
    pub fn backend(name: impl Into<PathBuf>, backend: Arc<dyn BlockBackend>) -> Self {
        DiskConfig {
            path: name.into(),
            read_only: false,
            id: None,
            backend: Some(SharedBackend(backend)),
        }
    }
}

/// One virtio-net NIC on a host TAP device.
///
/// ```
/// use vinfra_vmm_core::NetConfig;
///
/// let n: NetConfig = serde_json::from_str(r#"{"tap":"vm1tap","mac":"52:54:00:00:00:01"}"#)?;
/// assert_eq!(n.mac.to_string(), "52:54:00:00:00:01");
/// assert!(!n.policy.forged_transmits);
/// assert!(serde_json::from_str::<NetConfig>(r#"{"tap":"t","mac":"52:54"}"#).is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NetConfig {
    /// The host TAP interface the NIC is attached to (created when missing;
    /// the host's virtual switch puts it on a port group's bridge).
    pub tap: String,
    /// The NIC's MAC address (a unicast one).
    pub mac: MacAddr,
    /// Instance name; defaults to `net<i>`.
    #[serde(default)]
    pub id: Option<String>,
    /// Security policy (reject everything by default).
    #[serde(default)]
    pub policy: NetPolicy,
    /// A backend supplied by the embedder instead of the TAP (which then only
    /// names the NIC in errors). Not part of the JSON form.
    #[serde(skip)]
    pub backend: Option<SharedNetBackend>,
}

impl NetConfig {
    /// A NIC on TAP `tap` with MAC `mac`.
    pub fn tap(tap: impl Into<String>, mac: MacAddr) -> NetConfig {
        NetConfig {
            tap: tap.into(),
            mac,
            id: None,
            policy: NetPolicy::default(),
            backend: None,
        }
    }

    /// A NIC on an embedder's backend; `name` names it in errors.
    pub fn backend(name: impl Into<String>, mac: MacAddr, backend: Arc<dyn NetBackend>) -> Self {
        NetConfig {
            backend: Some(SharedNetBackend(backend)),
            ..NetConfig::tap(name, mac)
        }
    }
}

/// A [`NetBackend`] shared with the VM; equal when it is the same object.
#[derive(Clone)]
pub struct SharedNetBackend(pub Arc<dyn NetBackend>);

impl fmt::Debug for SharedNetBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedNetBackend").finish_non_exhaustive()
    }
}

impl PartialEq for SharedNetBackend {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedNetBackend {}

/// Where the serial console's output goes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum SerialOutput {
    /// The VMM process's standard output.
    Stdio,
    /// Appended to a file.
    File {
        /// The file, created if missing.
        path: PathBuf,
    },
    /// Discarded.
    #[default]
    None,
    /// A writer supplied through the API (not expressible in JSON).
    #[serde(skip)]
    Writer(SharedWriter),
}

/// Where the serial console's input comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum SerialInputSource {
    /// The VMM process's standard input, read by a thread from [`crate::Vm::start`] on.
    Stdio,
    /// A file's bytes (at most 1 MiB), queued when the VM starts.
    File {
        /// The file.
        path: PathBuf,
    },
    /// Only what the API feeds.
    #[default]
    None,
}

impl VmConfig {
    /// A config with defaults (256 MiB, one vCPU, no disk, console discarded) for `kernel`.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmConfig {
            memory_mib: default_memory_mib(),
            vcpus: default_vcpus(),
            kernel: kernel.into(),
            initrd: None,
            cmdline: String::new(),
            disks: Vec::new(),
            nets: Vec::new(),
            serial_output: SerialOutput::None,
            serial_input: SerialInputSource::None,
            page_sharing: false,
            kvm_path: default_kvm_path(),
            cpuid_hidden: Vec::new(),
        }
    }

    /// Sets the memory size in MiB.
    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Sets the number of vCPUs.
    pub fn vcpus(mut self, n: u32) -> Self {
        self.vcpus = n;
        self
    }

    /// Sets the kernel command line.
    pub fn cmdline(mut self, cmdline: impl Into<String>) -> Self {
        self.cmdline = cmdline.into();
        self
    }

    /// Sets the initrd.
    pub fn initrd(mut self, path: impl Into<PathBuf>) -> Self {
        self.initrd = Some(path.into());
        self
    }

    /// Adds a disk.
    pub fn disk(mut self, disk: DiskConfig) -> Self {
        self.disks.push(disk);
        self
    }

    /// Adds a NIC.
    pub fn net(mut self, net: NetConfig) -> Self {
        self.nets.push(net);
        self
    }

    /// Sends the console to `out`.
    pub fn serial_output(mut self, out: SerialOutput) -> Self {
        self.serial_output = out;
        self
    }

    /// Feeds the console from `input`.
    pub fn serial_input(mut self, input: SerialInputSource) -> Self {
        self.serial_input = input;
        self
    }

    /// Turns page sharing (KSM) on or off.
    pub fn page_sharing(mut self, on: bool) -> Self {
        self.page_sharing = on;
        self
    }

    /// Uses another KVM device node.
    pub fn kvm_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.kvm_path = path.into();
        self
    }

    /// Hides the bits of `mask` from the guest's CPUID (see [`crate::cpuid`]).
    ///
    /// ```
    /// use vinfra_vmm_core::{CpuidMask, VmConfig};
    ///
    /// let config = VmConfig::new("guest.elf").hide_cpuid("7.0.ebx:0x10000".parse()?);
    /// let json = serde_json::to_string(&config)?;
    /// assert!(json.contains(r#""cpuid_hidden":["7.0.ebx:0x10000"]"#));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn hide_cpuid(mut self, mask: CpuidMask) -> Self {
        self.cpuid_hidden.push(mask);
        self
    }

    /// Checks everything that does not need KVM: sizes, counts and files.
    pub fn validate(&self) -> Result<ValidConfig> {
        if self.vcpus == 0 {
            return Err(Error::NoVcpus);
        }
        if self.vcpus > MAX_VCPUS {
            return Err(Error::TooManyVcpus {
                requested: self.vcpus,
                max: MAX_VCPUS,
            });
        }
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(Error::MemoryTooSmall {
                mib: self.memory_mib,
                reason: format!("the minimum is {MIN_MEMORY_MIB} MiB"),
            });
        }
        if self.memory_mib > MAX_MEMORY_MIB {
            return Err(Error::MemoryTooLarge {
                mib: self.memory_mib,
                max_mib: MAX_MEMORY_MIB,
            });
        }
        let kernel_len = file_len("kernel", &self.kernel)?;
        if kernel_len == 0 {
            return Err(Error::KernelEmpty {
                path: self.kernel.clone(),
            });
        }
        let memory_bytes = self.memory_mib << 20;
        // The kernel goes at 1 MiB; its file size is a lower bound of what it occupies.
        let initrd_len = match &self.initrd {
            Some(p) => file_len("initrd", p)?,
            None => 0,
        };
        let need = (1 << 20) + kernel_len + initrd_len;
        if need > memory_bytes {
            return Err(Error::MemoryTooSmall {
                mib: self.memory_mib,
                reason: format!(
                    "the kernel and initrd need at least {} MiB",
                    need.div_ceil(1 << 20)
                ),
            });
        }
        if let SerialInputSource::File { path } = &self.serial_input {
            file_len("serial input", path)?;
        }
        for d in &self.disks {
            if d.backend.is_none() {
                file_len("disk", &d.path)?;
            }
            if let Some(id) = &d.id {
                if id.len() > 20 {
                    return Err(Error::Disk {
                        path: d.path.clone(),
                        reason: format!("id {id:?} is longer than 20 bytes"),
                    });
                }
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for (i, n) in self.nets.iter().enumerate() {
            let bad = |reason: String| Error::Net {
                name: n.tap.clone(),
                reason,
            };
            if n.backend.is_none()
                && (n.tap.is_empty() || n.tap.len() > TAP_NAME_MAX || n.tap.contains(['/', ' ']))
            {
                return Err(bad(format!(
                    "TAP name must be 1 to {TAP_NAME_MAX} characters without '/' or spaces"
                )));
            }
            if n.mac.is_multicast() {
                return Err(bad(format!("MAC {} is a multicast address", n.mac)));
            }
            let id = n.id.clone().unwrap_or_else(|| format!("net{i}"));
            if !ids.insert(id.clone()) {
                return Err(bad(format!("NIC id {id:?} is used twice")));
            }
        }
        if self.disks.len() + self.nets.len() > VIRTIO_DEVICES_MAX {
            return Err(Error::TooManyDevices(self.disks.len() + self.nets.len()));
        }
        if self.cmdline.len() > CMDLINE_MAX_BYTES / 2 {
            return Err(Error::Cmdline(format!(
                "{} bytes is longer than the {} allowed",
                self.cmdline.len(),
                CMDLINE_MAX_BYTES / 2
            )));
        }
        Ok(ValidConfig {
            memory_bytes,
            vcpus: self.vcpus,
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            cmdline: self.cmdline.clone(),
            disks: self.disks.clone(),
            nets: self.nets.clone(),
            serial_output: self.serial_output.clone(),
            serial_input: self.serial_input.clone(),
            page_sharing: self.page_sharing,
            kvm_path: self.kvm_path.clone(),
            cpuid_hidden: self.cpuid_hidden.clone(),
        })
    }
}

fn file_len(what: &'static str, path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|source| Error::File {
        what,
        path: path.to_owned(),
        source,
    })?;
    Ok(meta.len())
}

/// A configuration that passed [`VmConfig::validate`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ValidConfig {
    /// Guest RAM in bytes (a multiple of 1 MiB).
    pub memory_bytes: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// User part of the command line.
    pub cmdline: String,
    /// Disks.
    pub disks: Vec<DiskConfig>,
    /// NICs.
    pub nets: Vec<NetConfig>,
    /// Console sink.
    pub serial_output: SerialOutput,
    /// Console source.
    pub serial_input: SerialInputSource,
    /// KSM on guest RAM.
    pub page_sharing: bool,
    /// KVM device node.
    pub kvm_path: PathBuf,
    /// CPUID bits hidden from the guest.
    pub cpuid_hidden: Vec<CpuidMask>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_nics_are_errors_naming_the_tap() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("k");
        std::fs::write(&kernel, [1u8; 16]).unwrap();
        let mac = MacAddr::local(1);
        let cases = [
            (NetConfig::tap("a-name-far-too-long", mac), "TAP name"),
            (NetConfig::tap("tap0", MacAddr::BROADCAST), "multicast"),
        ];
        for (nic, what) in cases {
            let e = VmConfig::new(&kernel)
                .net(nic.clone())
                .validate()
                .unwrap_err();
            assert!(matches!(e, Error::Net { .. }), "{e}");
            assert!(
                e.to_string().contains(&nic.tap) && e.to_string().contains(what),
                "{e}"
            );
        }
        let twice = VmConfig::new(&kernel)
            .net(NetConfig::tap("t1", mac))
            .net(NetConfig {
                id: Some("net0".into()),
                ..NetConfig::tap("t2", MacAddr::local(2))
            });
        assert!(twice
            .validate()
            .unwrap_err()
            .to_string()
            .contains("used twice"));
        let many = (0..20).fold(VmConfig::new(&kernel), |c, i| {
            c.net(NetConfig::tap(format!("t{i}"), MacAddr::local(i)))
        });
        assert!(matches!(many.validate(), Err(Error::TooManyDevices(20))));
    }

    #[test]
    fn a_backend_disk_needs_no_file_and_stays_out_of_json() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("k");
        std::fs::write(&kernel, [1u8; 16]).unwrap();
        let backend: Arc<dyn BlockBackend> = Arc::new(crate::devices::block::MemBackend::new(4096));
        let c = VmConfig::new(&kernel).disk(DiskConfig::backend("/vm1.vmdk", backend.clone()));
        let v = c.validate().unwrap();
        assert!(Arc::ptr_eq(
            &v.disks[0].backend.as_ref().unwrap().0,
            &backend
        ));
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("backend"), "{json}");
        // The same name as a file disk is checked on the host's filesystem.
        let missing = VmConfig::new(&kernel).disk(DiskConfig::new("/vm1.vmdk"));
        assert!(matches!(
            missing.validate(),
            Err(Error::File { what: "disk", .. })
        ));
    }

    #[test]
    fn json_rejects_unknown_keys() {
        let bad = r#"{"kernel":"k","memory_mib":4,"bogus":1}"#;
        assert!(serde_json::from_str::<VmConfig>(bad).is_err());
        let good = r#"{"kernel":"k","memory_mib":4,"disks":[{"path":"d","read_only":true}],
                      "serial_output":{"file":{"path":"out"}}}"#;
        let c: VmConfig = serde_json::from_str(good).unwrap();
        assert_eq!(c.vcpus, 1);
        assert!(c.disks[0].read_only);
    }

    #[test]
    fn validate_rejects_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("k");
        std::fs::write(&k, [1u8; 4096]).unwrap();
        assert!(matches!(
            VmConfig::new(&k).vcpus(0).validate(),
            Err(Error::NoVcpus)
        ));
        assert!(matches!(
            VmConfig::new(&k).memory_mib(1).validate(),
            Err(Error::MemoryTooSmall { .. })
        ));
        assert!(matches!(
            VmConfig::new(dir.path().join("nope")).validate(),
            Err(Error::File { what: "kernel", .. })
        ));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, []).unwrap();
        assert!(matches!(
            VmConfig::new(&empty).validate(),
            Err(Error::KernelEmpty { .. })
        ));
        let big = dir.path().join("big");
        std::fs::write(&big, vec![0u8; 3 << 20]).unwrap();
        assert!(matches!(
            VmConfig::new(&big).memory_mib(2).validate(),
            Err(Error::MemoryTooSmall { .. })
        ));
        assert!(VmConfig::new(&k).memory_mib(2).validate().is_ok());
    }
}
