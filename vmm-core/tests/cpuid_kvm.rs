//! Tier 2: the CPUID a guest is shown, masks that hide bits from it, and what the host
//! could show (each VM in a child process).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{config, tiny_guest};
use vinfra_testkit::{isolated, kvm_or_skip, Console};
use vinfra_vmm_core::cpuid::missing_features;
use vinfra_vmm_core::{kvm, CpuidLeaf, CpuidMask, CpuidRegister, Error, Vm, VmConfig};

const CHILD: Duration = Duration::from_secs(60);

fn tiny_config(dir: &tempfile::TempDir, con: &Console) -> VmConfig {
    let k: PathBuf = dir.path().join("tiny.elf");
    std::fs::write(&k, tiny_guest(b"", 0)).unwrap();
    config(k, con).memory_mib(4)
}

fn leaf(leaves: &[CpuidLeaf], function: u32, index: u32) -> CpuidLeaf {
    *CpuidLeaf::find(leaves, function, index)
        .unwrap_or_else(|| panic!("no cpuid leaf {function:#x}.{index}"))
}

/// Hiding a bit that the guest would otherwise see clears exactly that bit, in what the
/// guest sees and in what the host says it could show with the same masks; a bit this
/// KVM cannot hide (nested `kvm_pvm` passes the real CPU's SSE3, AVX2... through) is a
/// typed error at create, never a guest that silently still sees it.
#[test]
fn a_hidden_bit_disappears_from_the_guest_cpuid() {
    if !kvm_or_skip() {
        return;
    }
    isolated(
        "a_hidden_bit_disappears_from_the_guest_cpuid",
        CHILD,
        || {
            let dir = tempfile::tempdir().unwrap();
            let con = Console::default();
            let plain = Vm::create(tiny_config(&dir, &con))
                .unwrap()
                .guest_cpuid()
                .unwrap();
            let ecx = leaf(&plain, 1, 0).ecx;
            assert_ne!(ecx & (1 << 31), 0, "the hypervisor bit is shown");
            // Sort the bits the guest sees in leaf 1 ecx by whether this KVM can hide them.
            let mut hideable = Vec::new();
            let mut forced = Vec::new();
            for bit in (0..32).map(|b| 1u32 << b).filter(|b| ecx & b != 0) {
                let mask = CpuidMask::new(1, 0, CpuidRegister::Ecx, bit);
                match kvm::host_cpuid(&[mask]) {
                    Ok(host) => {
                        assert_eq!(leaf(&host, 1, 0).ecx & bit, 0, "{mask}");
                        hideable.push(mask);
                    }
                    Err(Error::CpuidNotHidden { mask: m }) => {
                        assert_eq!(m, mask);
                        forced.push(mask);
                    }
                    Err(e) => panic!("{mask}: {e}"),
                }
            }
            println!(
                "leaf 1 ecx {ecx:#x}: hideable {hideable:?}, forced on by this kvm {forced:?}"
            );
            // The hypervisor bit is ours to set, so it can always be hidden.
            let hypervisor: CpuidMask = "1.0.ecx:0x80000000".parse().unwrap();
            assert!(hideable.contains(&hypervisor));
            // A feature bit if there is a hideable one, else the hypervisor bit alone.
            let mask = *hideable
                .iter()
                .find(|m| **m != hypervisor)
                .unwrap_or(&hypervisor);
            let vm = Vm::create(
                tiny_config(&dir, &con)
                    .hide_cpuid(mask)
                    .hide_cpuid(hypervisor),
            )
            .unwrap();
            let masked = vm.guest_cpuid().unwrap();
            assert_eq!(leaf(&masked, 1, 0).ecx, ecx & !mask.mask & !hypervisor.mask);
            assert_eq!(plain.len(), masked.len());
            for (p, m) in plain.iter().zip(&masked) {
                if (p.function, p.index) != (1, 0) {
                    assert_eq!(p, m);
                }
            }
            let host = vm.supported_cpuid().unwrap();
            assert_eq!(host, kvm::host_cpuid(&[mask, hypervisor]).unwrap());
            assert!(missing_features(&masked, &host).is_empty());
            // A guest that was shown the bits cannot go where they are hidden.
            assert_eq!(
                missing_features(&plain, &host),
                vec![CpuidMask::new(
                    1,
                    0,
                    CpuidRegister::Ecx,
                    mask.mask | hypervisor.mask
                )]
            );
            if let Some(&f) = forced.first() {
                let e = Vm::create(tiny_config(&dir, &con).hide_cpuid(f)).unwrap_err();
                assert!(
                    matches!(e, Error::CpuidNotHidden { mask } if mask == f),
                    "{e}"
                );
            }
        },
    );
}

/// What the host could show covers what a guest is shown, on the feature registers of
/// leaves 1, 7.0 and 0x80000001 (and every other register `missing_features` checks),
/// for a guest that has run too.
#[test]
fn the_host_cpuid_covers_the_guest_cpuid() {
    if !kvm_or_skip() {
        return;
    }
    isolated("the_host_cpuid_covers_the_guest_cpuid", CHILD, || {
        let dir = tempfile::tempdir().unwrap();
        let con = Console::default();
        let mut vm = Vm::create(tiny_config(&dir, &con).vcpus(2)).unwrap();
        vm.start().unwrap();
        vm.wait_timeout(Duration::from_secs(20)).unwrap();
        let guest = vm.guest_cpuid().unwrap();
        let host = kvm::host_cpuid(&[]).unwrap();
        for (function, index, registers) in [
            (1, 0, &[CpuidRegister::Ecx, CpuidRegister::Edx][..]),
            (
                7,
                0,
                &[CpuidRegister::Ebx, CpuidRegister::Ecx, CpuidRegister::Edx][..],
            ),
            (
                0x8000_0001,
                0,
                &[CpuidRegister::Ecx, CpuidRegister::Edx][..],
            ),
        ] {
            let (g, h) = (leaf(&guest, function, index), leaf(&host, function, index));
            for &r in registers {
                assert_eq!(
                    g.register(r) & !h.register(r),
                    0,
                    "{function:#x}.{index}.{}: guest {:#x} host {:#x}",
                    r.name(),
                    g.register(r),
                    h.register(r)
                );
            }
        }
        assert_eq!(missing_features(&guest, &host), vec![]);
        assert_eq!(vm.supported_cpuid().unwrap(), host);
    });
}
