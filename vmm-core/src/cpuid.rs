//! CPUID in plain types: the leaves a guest is shown, and masks that hide feature bits
//! from it (as VMware's EVC does) so that it can move to a host with fewer features.
//!
//! [`CpuidLeaf`] is one `(function, index)` entry with its four registers; [`CpuidMask`]
//! names bits of one register of one leaf, written `<function>.<index>.<register>:<mask>`
//! (`7.0.ebx:0x20`, function and index in decimal or `0x` hex). A VM's configuration
//! lists the masks it hides ([`crate::VmConfig::hide_cpuid`]); [`crate::Vm::guest_cpuid`]
//! says what a VM's guest sees and `kvm::host_cpuid` what this host could show
//! one, so a migration source and destination can compare the two with
//! [`missing_features`] before any memory moves.
//!
//! ```
//! use vinfra_vmm_core::cpuid::{missing_features, CpuidLeaf, CpuidMask, CpuidRegister};
//!
//! let avx512f: CpuidMask = "7.0.ebx:0x10000".parse().unwrap();
//! assert_eq!(avx512f.register, CpuidRegister::Ebx);
//! assert_eq!(avx512f.to_string(), "7.0.ebx:0x10000");
//! assert!("7.0.ebp:1".parse::<CpuidMask>().is_err());
//!
//! let guest = [CpuidLeaf { function: 7, index: 0, eax: 0, ebx: 0x1_0020, ecx: 0, edx: 0 }];
//! let mut host = guest;
//! avx512f.apply(&mut host);
//! assert_eq!(missing_features(&guest, &host), vec![avx512f]);
//! ```

use std::fmt;
use std::num::ParseIntError;
use std::str::FromStr;

use kvm_bindings::kvm_cpuid_entry2;
use serde::{Deserialize, Serialize};

/// One CPUID leaf (`function`, sub-leaf `index`) and the registers it answers with.
///
/// Leaves without sub-leaves have `index` 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CpuidLeaf {
    /// The leaf: `eax` at `CPUID`.
    pub function: u32,
    /// The sub-leaf: `ecx` at `CPUID` (0 where the leaf has none).
    pub index: u32,
    /// `eax` as answered.
    pub eax: u32,
    /// `ebx` as answered.
    pub ebx: u32,
    /// `ecx` as answered.
    pub ecx: u32,
    /// `edx` as answered.
    pub edx: u32,
}

impl CpuidLeaf {
    /// The value of `register`.
    pub fn register(&self, register: CpuidRegister) -> u32 {
        match register {
            CpuidRegister::Eax => self.eax,
            CpuidRegister::Ebx => self.ebx,
            CpuidRegister::Ecx => self.ecx,
            CpuidRegister::Edx => self.edx,
        }
    }

    fn register_mut(&mut self, register: CpuidRegister) -> &mut u32 {
        match register {
            CpuidRegister::Eax => &mut self.eax,
            CpuidRegister::Ebx => &mut self.ebx,
            CpuidRegister::Ecx => &mut self.ecx,
            CpuidRegister::Edx => &mut self.edx,
        }
    }

    /// The leaf `(function, index)` of `leaves`, if present.
    pub fn find(leaves: &[CpuidLeaf], function: u32, index: u32) -> Option<&CpuidLeaf> {
        leaves
            .iter()
            .find(|l| l.function == function && l.index == index)
    }
}

impl CpuidLeaf {
    /// The leaf of a KVM CPUID entry (crate-private: the public API has no kvm-bindings
    /// types).
    pub(crate) fn from_kvm(e: &kvm_cpuid_entry2) -> Self {
        CpuidLeaf {
            function: e.function,
            index: e.index,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
        }
    }
}

/// One of the four registers a CPUID leaf answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuidRegister {
    /// `eax`.
    Eax,
    /// `ebx`.
    Ebx,
    /// `ecx`.
    Ecx,
    /// `edx`.
    Edx,
}

impl CpuidRegister {
    /// The four registers in order.
    pub const ALL: [CpuidRegister; 4] = [
        CpuidRegister::Eax,
        CpuidRegister::Ebx,
        CpuidRegister::Ecx,
        CpuidRegister::Edx,
    ];

    /// The lowercase name: `eax`, `ebx`, `ecx`, `edx`.
    pub fn name(self) -> &'static str {
        match self {
            CpuidRegister::Eax => "eax",
            CpuidRegister::Ebx => "ebx",
            CpuidRegister::Ecx => "ecx",
            CpuidRegister::Edx => "edx",
        }
    }
}

/// Bits of one register of one CPUID leaf: hidden from a guest when it is in
/// [`crate::VmConfig::cpuid_hidden`], or missing on a host in what [`missing_features`]
/// returns.
///
/// Written and parsed as `<function>.<index>.<register>:<mask>`, e.g. `7.0.ebx:0x20`
/// (function, index and mask in decimal or `0x` hex; the register `eax`, `ebx`, `ecx` or
/// `edx`), and serialised in that form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct CpuidMask {
    /// The leaf.
    pub function: u32,
    /// The sub-leaf (0 where the leaf has none).
    pub index: u32,
    /// The register.
    pub register: CpuidRegister,
    /// The bits.
    pub mask: u32,
}

impl CpuidMask {
    /// The bits `mask` of `register` in leaf `(function, index)`.
    pub fn new(function: u32, index: u32, register: CpuidRegister, mask: u32) -> Self {
        CpuidMask {
            function,
            index,
            register,
            mask,
        }
    }

    /// Clears the masked bits in the matching leaf of `leaves` (if there is one).
    pub fn apply(&self, leaves: &mut [CpuidLeaf]) {
        for l in leaves
            .iter_mut()
            .filter(|l| l.function == self.function && l.index == self.index)
        {
            *l.register_mut(self.register) &= !self.mask;
        }
    }
}

impl fmt::Display for CpuidMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Small leaves read best in decimal (`7.0`), extended ones in hex (`0x80000001.0`).
        if self.function < 10 {
            write!(f, "{}", self.function)?;
        } else {
            write!(f, "{:#x}", self.function)?;
        }
        write!(
            f,
            ".{}.{}:{:#x}",
            self.index,
            self.register.name(),
            self.mask
        )
    }
}

/// Why a string is not a [`CpuidMask`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CpuidMaskParseError {
    /// Not of the form `<function>.<index>.<register>:<mask>`.
    #[error("expected <function>.<index>.<register>:<mask>, e.g. 7.0.ebx:0x20")]
    Shape,
    /// The function, index or mask is not a u32 in decimal or `0x` hex.
    #[error("cpuid mask {field} is not a u32 in decimal or 0x hex: {source}")]
    Number {
        /// "function", "index" or "mask".
        field: &'static str,
        /// What the integer parser said.
        #[source]
        source: ParseIntError,
    },
    /// The register is not `eax`, `ebx`, `ecx` or `edx`.
    #[error("cpuid mask register is not eax, ebx, ecx or edx")]
    Register,
}

fn parse_u32(field: &'static str, s: &str) -> Result<u32, CpuidMaskParseError> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|source| CpuidMaskParseError::Number { field, source })
}

impl FromStr for CpuidMask {
    type Err = CpuidMaskParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (leaf, mask) = s.trim().split_once(':').ok_or(CpuidMaskParseError::Shape)?;
        let mut parts = leaf.split('.');
        let (Some(function), Some(index), Some(register), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CpuidMaskParseError::Shape);
        };
        let register = CpuidRegister::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(register))
            .ok_or(CpuidMaskParseError::Register)?;
        Ok(CpuidMask {
            function: parse_u32("function", function)?,
            index: parse_u32("index", index)?,
            register,
            mask: parse_u32("mask", mask)?,
        })
    }
}

impl From<CpuidMask> for String {
    fn from(m: CpuidMask) -> String {
        m.to_string()
    }
}

impl TryFrom<String> for CpuidMask {
    type Error = CpuidMaskParseError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// The registers that hold feature flags, which [`missing_features`] compares: leaf 1
/// `ecx`/`edx`; leaf 7 sub-leaf 0 `ebx`/`ecx`/`edx` and sub-leaf 1 `eax`; leaf `0xd`
/// sub-leaf 1 `eax` (XSAVE variants); leaf `0x80000001` `ecx`/`edx`; leaf `0x80000007`
/// `edx`; leaf `0x80000008` `ebx`.
pub const FEATURE_REGISTERS: [(u32, u32, CpuidRegister); 11] = [
    (1, 0, CpuidRegister::Ecx),
    (1, 0, CpuidRegister::Edx),
    (7, 0, CpuidRegister::Ebx),
    (7, 0, CpuidRegister::Ecx),
    (7, 0, CpuidRegister::Edx),
    (7, 1, CpuidRegister::Eax),
    (0xd, 1, CpuidRegister::Eax),
    (0x8000_0001, 0, CpuidRegister::Ecx),
    (0x8000_0001, 0, CpuidRegister::Edx),
    (0x8000_0007, 0, CpuidRegister::Edx),
    (0x8000_0008, 0, CpuidRegister::Ebx),
];

/// The feature bits ([`FEATURE_REGISTERS`]) that `guest` shows and `host` does not
/// offer, one mask per register that lacks some; empty when the host can run the guest.
///
/// A leaf the host does not have counts as all zeros.
pub fn missing_features(guest: &[CpuidLeaf], host: &[CpuidLeaf]) -> Vec<CpuidMask> {
    FEATURE_REGISTERS
        .iter()
        .filter_map(|&(function, index, register)| {
            let shown = CpuidLeaf::find(guest, function, index)?.register(register);
            let offered =
                CpuidLeaf::find(host, function, index).map_or(0, |l| l.register(register));
            let mask = shown & !offered;
            (mask != 0).then_some(CpuidMask::new(function, index, register, mask))
        })
        .collect()
}

/// Leaf 1 `ecx`: running under a hypervisor.
const HYPERVISOR_BIT: u32 = 1 << 31;
/// Leaf 1 `ecx`: XSAVE, and OSXSAVE, which KVM sets at run time when the guest enables
/// XSAVE in CR4.
const XSAVE_BIT: u32 = 1 << 26;
const OSXSAVE_BIT: u32 = 1 << 27;
/// Leaf 7.0 `ecx`: PKU, and OSPKE, which KVM sets when the guest enables PKE in CR4.
const PKU_BIT: u32 = 1 << 3;
const OSPKE_BIT: u32 = 1 << 4;

/// Turns KVM's supported CPUID into what a vCPU with `apic_id` is shown: its APIC id in
/// leaves 1, `0xb` and `0x1f`, the hypervisor bit, then the `hidden` bits cleared.
pub(crate) fn guest_view(entries: &mut [kvm_cpuid_entry2], apic_id: u8, hidden: &[CpuidMask]) {
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x00ff_ffff) | (u32::from(apic_id) << 24);
                e.ecx |= HYPERVISOR_BIT;
            }
            0xb | 0x1f => e.edx = u32::from(apic_id),
            _ => {}
        }
        for m in hidden
            .iter()
            .filter(|m| m.function == e.function && m.index == e.index)
        {
            let r = match m.register {
                CpuidRegister::Eax => &mut e.eax,
                CpuidRegister::Ebx => &mut e.ebx,
                CpuidRegister::Ecx => &mut e.ecx,
                CpuidRegister::Edx => &mut e.edx,
            };
            *r &= !m.mask;
        }
    }
}

/// The first of `hidden` whose bits `leaves` still show, narrowed to those bits.
pub(crate) fn still_shown(leaves: &[CpuidLeaf], hidden: &[CpuidMask]) -> Option<CpuidMask> {
    hidden.iter().find_map(|m| {
        let shown = CpuidLeaf::find(leaves, m.function, m.index)?.register(m.register) & m.mask;
        (shown != 0).then_some(CpuidMask { mask: shown, ..*m })
    })
}

/// Adds the bits KVM turns on while a guest runs once the guest enables their feature
/// (OSXSAVE, OSPKE), where the feature itself is shown: a host that shows XSAVE can run a
/// guest whose CPUID, read while it ran, says OSXSAVE.
pub(crate) fn add_runtime_bits(leaves: &mut [CpuidLeaf]) {
    for l in leaves {
        match (l.function, l.index) {
            (1, 0) if l.ecx & XSAVE_BIT != 0 => l.ecx |= OSXSAVE_BIT,
            (7, 0) if l.ecx & PKU_BIT != 0 => l.ecx |= OSPKE_BIT,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_round_trip_through_their_string_form() {
        for (text, canonical) in [
            ("7.0.ebx:0x20", "7.0.ebx:0x20"),
            ("1.0.ecx:2147483648", "1.0.ecx:0x80000000"),
            ("0x80000001.0.EDX:0X100000", "0x80000001.0.edx:0x100000"),
            ("0xd.1.eax:0x1", "0xd.1.eax:0x1"),
            (" 7.0x0.ecx:0 ", "7.0.ecx:0x0"),
        ] {
            let m: CpuidMask = text.parse().unwrap();
            assert_eq!(m.to_string(), canonical, "{text}");
            assert_eq!(canonical.parse::<CpuidMask>().unwrap(), m);
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{canonical}\""));
            assert_eq!(serde_json::from_str::<CpuidMask>(&json).unwrap(), m);
        }
        let m = CpuidMask::new(0x8000_0001, 0, CpuidRegister::Ecx, 1 << 5);
        assert_eq!(m.to_string().parse::<CpuidMask>().unwrap(), m);
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        use CpuidMaskParseError::*;
        for (text, want) in [
            ("", Shape),
            ("7.0.ebx", Shape),
            ("7.0:0x20", Shape),
            ("7.0.ebx.1:0x20", Shape),
            ("7.0.ebp:0x20", Register),
            ("7.0.:0x20", Register),
        ] {
            assert_eq!(text.parse::<CpuidMask>().unwrap_err(), want, "{text:?}");
        }
        for (text, field) in [
            ("x.0.ebx:1", "function"),
            ("7.-1.ebx:1", "index"),
            ("7.0.ebx:0x1_0000_0000", "mask"),
            ("7.0.ebx:0x100000000", "mask"),
            ("7.0.ebx:", "mask"),
            ("0x.0.ebx:1", "function"),
        ] {
            match text.parse::<CpuidMask>() {
                Err(CpuidMaskParseError::Number { field: f, .. }) => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(serde_json::from_str::<CpuidMask>("\"7.0.ebx\"").is_err());
        assert!(serde_json::from_str::<CpuidMask>("7").is_err());
    }

    fn entry(function: u32, index: u32, ebx: u32, ecx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx,
            ecx,
            ..Default::default()
        }
    }

    #[test]
    fn the_guest_view_sets_the_apic_id_and_hypervisor_bit_then_hides_bits() {
        let mut e = [
            entry(1, 0, 0xff00_0800, XSAVE_BIT | 1),
            entry(7, 0, 0x61, PKU_BIT),
            entry(0xb, 0, 0, 0),
        ];
        let hide: CpuidMask = "1.0.ecx:0x1".parse().unwrap();
        guest_view(&mut e, 3, &[hide, "7.0.ebx:0x20".parse().unwrap()]);
        assert_eq!(e[0].ebx, 0x0300_0800);
        assert_eq!(e[0].ecx, XSAVE_BIT | HYPERVISOR_BIT);
        assert_eq!(e[1].ebx, 0x41);
        assert_eq!(e[2].edx, 3);

        let mut leaves: Vec<CpuidLeaf> = e.iter().map(CpuidLeaf::from_kvm).collect();
        assert_eq!(still_shown(&leaves, &[hide]), None);
        // Of bits 5 and 6, only 5 was hidden: 6 is still shown.
        let two = CpuidMask::new(7, 0, CpuidRegister::Ebx, 0x60);
        assert_eq!(
            still_shown(&leaves, &[hide, two]),
            Some(CpuidMask::new(7, 0, CpuidRegister::Ebx, 0x40))
        );
        add_runtime_bits(&mut leaves);
        assert_eq!(leaves[0].ecx, XSAVE_BIT | OSXSAVE_BIT | HYPERVISOR_BIT);
        assert_eq!(leaves[1].ecx, PKU_BIT | OSPKE_BIT);
    }

    #[test]
    fn missing_features_names_each_register_short_of_bits() {
        let leaf = |function, index, ebx, ecx| CpuidLeaf {
            function,
            index,
            eax: 0,
            ebx,
            ecx,
            edx: 0,
        };
        let guest = [
            leaf(1, 0, 0xffff_ffff, 0b110),
            leaf(7, 0, 0b1010, 0),
            leaf(0x40, 0, 1, 1),
        ];
        let host = [leaf(1, 0, 0, 0b010), leaf(7, 0, 0b1011, 0)];
        assert_eq!(
            missing_features(&guest, &host),
            vec![CpuidMask::new(1, 0, CpuidRegister::Ecx, 0b100)]
        );
        assert_eq!(
            missing_features(&guest, &[]),
            vec![
                CpuidMask::new(1, 0, CpuidRegister::Ecx, 0b110),
                CpuidMask::new(7, 0, CpuidRegister::Ebx, 0b1010)
            ]
        );
        assert!(missing_features(&guest, &guest).is_empty());
    }
}
