//! Opening `/dev/kvm`, checking what it offers (capabilities, vCPUs, the CPUID it can show
//! a guest), and telling hardware KVM from nested KVM.

use std::io;
use std::path::Path;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm, VcpuFd};

use crate::cpuid::{self, CpuidLeaf, CpuidMask};
use crate::error::{Error, Result};

/// The stable KVM API version.
const KVM_API_VERSION: i32 = 12;

/// What kind of KVM the host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostKvm {
    /// KVM on hardware virtualization (VMX or SVM): unmodified Linux boots.
    Hardware,
    /// KVM without hardware virtualization visible to this host (e.g. `kvm_pvm`): guest
    /// ring-0 code is emulated and an unmodified Linux kernel does not boot.
    Nested,
}

impl HostKvm {
    /// Looks at the host: `kvm_pvm` loaded or no `vmx`/`svm` CPU flag means nested.
    pub fn detect() -> HostKvm {
        if Path::new("/sys/module/kvm_pvm").exists() {
            return HostKvm::Nested;
        }
        match std::fs::read_to_string("/proc/cpuinfo") {
            Ok(info) => {
                let has_flag = info
                    .lines()
                    .filter(|l| l.starts_with("flags"))
                    .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
                if has_flag {
                    HostKvm::Hardware
                } else {
                    HostKvm::Nested
                }
            }
            Err(_) => HostKvm::Nested,
        }
    }
}

/// Opens the KVM device at `path` and checks the API version and capabilities we use.
pub fn open(path: &Path) -> Result<Kvm> {
    let kvm = Kvm::new_with_path(c_path(path)?).map_err(|e| {
        let source = io::Error::from_raw_os_error(e.errno());
        if source.kind() == io::ErrorKind::PermissionDenied {
            Error::KvmPermission {
                path: path.to_owned(),
                source,
            }
        } else {
            Error::KvmUnavailable {
                path: path.to_owned(),
                source,
            }
        }
    })?;
    let found = kvm.get_api_version();
    if found < 0 {
        return Err(Error::KvmUnavailable {
            path: path.to_owned(),
            source: io::Error::other("KVM_GET_API_VERSION failed: not a kvm device"),
        });
    }
    if found != KVM_API_VERSION {
        return Err(Error::KvmApiVersion { found });
    }
    let needed = [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
        (Cap::Pit2, "KVM_CAP_PIT2"),
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
        (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
        (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
    ];
    for (cap, name) in needed {
        if !kvm.check_extension(cap) {
            return Err(Error::KvmCapability(name));
        }
    }
    Ok(kvm)
}

/// The most vCPUs one VM may have on this KVM (`KVM_CAP_NR_VCPUS`, the recommended limit).
pub fn max_vcpus(kvm: &Kvm) -> u32 {
    u32::try_from(kvm.get_nr_vcpus()).unwrap_or(1).max(1)
}

/// What this host could show a guest through `/dev/kvm`: see [`supported_cpuid`].
///
/// ```
/// use vinfra_vmm_core::{kvm, CpuidLeaf};
///
/// match kvm::host_cpuid(&["7.0.ebx:0x20".parse()?]) {
///     Ok(leaves) => {
///         // AVX2 (leaf 7, ebx bit 5) is hidden whatever the CPU has.
///         let leaf7 = CpuidLeaf::find(&leaves, 7, 0).expect("leaf 7");
///         assert_eq!(leaf7.ebx & 0x20, 0);
///     }
///     Err(e) => eprintln!("no usable /dev/kvm here: {e}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn host_cpuid(hidden: &[CpuidMask]) -> Result<Vec<CpuidLeaf>> {
    supported_cpuid(&open(Path::new("/dev/kvm"))?, hidden)
}

/// What `kvm` could show a guest whose configuration hides `hidden`: its supported
/// CPUID (`KVM_GET_SUPPORTED_CPUID`) with the changes every vCPU gets at creation (the
/// hypervisor bit; the APIC-id fields as for vCPU 0) and the `hidden` bits cleared, as a
/// scratch vCPU then reports it (`KVM_GET_CPUID2`), plus the bits KVM itself turns on
/// while a guest runs once the guest enables their feature (OSXSAVE, OSPKE). So it
/// compares with any guest's [`crate::Vm::guest_cpuid`] through
/// [`cpuid::missing_features`].
///
/// The scratch vCPU is asked because a vCPU may show more than "supported" says: nested
/// KVM (`kvm_pvm`) passes features of the real CPU through (SSE3, AVX2...) and cannot
/// hide them. A mask that this KVM cannot honour is [`Error::CpuidNotHidden`], as it is
/// for [`crate::Vm::create`].
pub fn supported_cpuid(kvm: &Kvm, hidden: &[CpuidMask]) -> Result<Vec<CpuidLeaf>> {
    let mut entries = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(Error::kvm("get supported cpuid"))?;
    cpuid::guest_view(entries.as_mut_slice(), 0, hidden);
    let vm = kvm.create_vm().map_err(Error::kvm("create vm"))?;
    vm.create_irq_chip().map_err(Error::kvm("create irqchip"))?;
    let vcpu = vm.create_vcpu(0).map_err(Error::kvm("create vcpu"))?;
    let mut leaves = set_cpuid(&vcpu, &entries, hidden)?;
    cpuid::add_runtime_bits(&mut leaves);
    Ok(leaves)
}

/// Gives `vcpu` the CPUID `entries` and returns what it then shows; fails with
/// [`Error::CpuidNotHidden`] when that still has bits of `hidden`.
pub(crate) fn set_cpuid(
    vcpu: &VcpuFd,
    entries: &CpuId,
    hidden: &[CpuidMask],
) -> Result<Vec<CpuidLeaf>> {
    vcpu.set_cpuid2(entries).map_err(Error::kvm("set cpuid"))?;
    let leaves = vcpu_cpuid(vcpu)?;
    match cpuid::still_shown(&leaves, hidden) {
        Some(mask) => Err(Error::CpuidNotHidden { mask }),
        None => Ok(leaves),
    }
}

/// What `vcpu` shows the guest now, in plain leaves.
pub(crate) fn vcpu_cpuid(vcpu: &VcpuFd) -> Result<Vec<CpuidLeaf>> {
    Ok(vcpu
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(Error::kvm("get cpuid"))?
        .as_slice()
        .iter()
        .map(CpuidLeaf::from_kvm)
        .collect())
}

fn c_path(path: &Path) -> Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Error::KvmUnavailable {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path contains a nul byte"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_is_typed() {
        let err = open(Path::new("/nonexistent/kvm")).unwrap_err();
        assert!(matches!(err, Error::KvmUnavailable { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/kvm"));
        let err = open(Path::new("/dev/null")).unwrap_err();
        assert!(err.to_string().contains("not a kvm device"), "{err}");
    }
}
