//! Opening `/dev/kvm`, checking what it offers, and telling hardware KVM from nested KVM.

use std::io;
use std::path::Path;

use kvm_ioctls::{Cap, Kvm};

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
