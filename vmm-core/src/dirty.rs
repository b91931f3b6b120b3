//! Dirty-page logging: which guest pages changed since the last fetch.
//!
//! KVM's dirty log sees guest writes only; the VMM's own writes into guest memory
//! (virtio-blk reads landing in guest buffers, used-ring updates) bypass it. vm-memory
//! records those in the per-region [`AtomicBitmap`](vm_memory::bitmap::AtomicBitmap).
//! A page is dirty if either says so, so a fetch merges both and clears both.

use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion};

use crate::error::{Error, MemoryError, Result};
use crate::memory::{self, PAGE_SIZE};
use crate::vm::Vm;

/// The dirty pages of one memory slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotDirty {
    /// Guest-physical start of the slot.
    pub guest_addr: u64,
    /// Slot size in bytes.
    pub len: u64,
    /// Bit `i` (word `i / 64`, bit `i % 64`) set: page `i` of the slot is dirty.
    pub bits: Vec<u64>,
}

/// Dirty pages of the whole guest, per memory slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirtyBitmap {
    /// One entry per slot, in guest-physical order.
    pub slots: Vec<SlotDirty>,
}

impl DirtyBitmap {
    /// Number of dirty pages.
    pub fn count(&self) -> u64 {
        self.slots
            .iter()
            .flat_map(|s| s.bits.iter())
            .map(|w| u64::from(w.count_ones()))
            .sum()
    }

    /// Whether the page holding `gpa` is dirty.
    pub fn is_dirty(&self, gpa: u64) -> bool {
        self.slots.iter().any(|s| {
            gpa >= s.guest_addr && gpa < s.guest_addr + s.len && {
                let page = (gpa - s.guest_addr) / PAGE_SIZE;
                let word = usize::try_from(page / 64).unwrap_or(usize::MAX);
                s.bits
                    .get(word)
                    .is_some_and(|w| w & (1 << (page % 64)) != 0)
            }
        })
    }

    /// Guest-physical addresses of the dirty pages, ascending.
    pub fn pages(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots.iter().flat_map(|s| {
            s.bits.iter().enumerate().flat_map(move |(wi, w)| {
                (0..64u64)
                    .filter(move |b| w & (1 << b) != 0)
                    .map(move |b| s.guest_addr + (wi as u64 * 64 + b) * PAGE_SIZE)
            })
        })
    }
}

/// The union of two page bitmaps (the longer one's extra words are kept).
pub fn merge(kvm: &[u64], vmm: &[u64]) -> Vec<u64> {
    let n = kvm.len().max(vmm.len());
    (0..n)
        .map(|i| kvm.get(i).copied().unwrap_or(0) | vmm.get(i).copied().unwrap_or(0))
        .collect()
}

impl Vm {
    /// Starts logging guest writes (every slot gets `KVM_MEM_LOG_DIRTY_PAGES`); the
    /// VMM's own bitmap is cleared so the first fetch covers writes from now on.
    pub fn enable_dirty_log(&mut self) -> Result<()> {
        memory::register_slots(self.vm_fd(), self.memory(), true)?;
        for r in self.memory().iter() {
            memory::region_bitmap(r).reset();
        }
        self.set_dirty_log_flag(true);
        tracing::debug!("dirty log enabled");
        Ok(())
    }

    /// Stops logging.
    pub fn disable_dirty_log(&mut self) -> Result<()> {
        memory::register_slots(self.vm_fd(), self.memory(), false)?;
        self.set_dirty_log_flag(false);
        tracing::debug!("dirty log disabled");
        Ok(())
    }

    /// The pages written since the last fetch (or since logging began), then clears
    /// both KVM's log and the VMM's bitmap.
    pub fn fetch_and_clear_dirty(&self) -> Result<DirtyBitmap> {
        if !self.dirty_log_enabled() {
            return Err(Error::InvalidState {
                op: "fetch the dirty log of",
                state: self.power_state(),
            });
        }
        let mut out = DirtyBitmap::default();
        for (slot, r) in self.memory().iter().enumerate() {
            let len = usize::try_from(r.len()).map_err(|_| MemoryError::SlotTooLarge)?;
            let slot_id = u32::try_from(slot).map_err(|_| MemoryError::TooManySlots)?;
            let kvm = self
                .vm_fd()
                .get_dirty_log(slot_id, len)
                .map_err(Error::kvm("get dirty log"))?;
            let vmm = memory::region_bitmap(r).get_and_reset();
            out.slots.push(SlotDirty {
                guest_addr: r.start_addr().raw_value(),
                len: r.len(),
                bits: merge(&kvm, &vmm),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn merge_is_the_union(
            kvm in proptest::collection::vec(any::<u64>(), 0..16),
            vmm in proptest::collection::vec(any::<u64>(), 0..16),
        ) {
            let m = merge(&kvm, &vmm);
            prop_assert_eq!(m.len(), kvm.len().max(vmm.len()));
            for page in 0..(m.len() * 64) {
                let bit = |v: &[u64]| v.get(page / 64).is_some_and(|w| w & (1 << (page % 64)) != 0);
                prop_assert_eq!(bit(&m), bit(&kvm) || bit(&vmm), "page {}", page);
            }
        }
    }

    #[test]
    fn bitmap_queries() {
        let b = DirtyBitmap {
            slots: vec![SlotDirty {
                guest_addr: 0x1000_0000,
                len: 128 * PAGE_SIZE,
                bits: vec![0b101, 1 << 63],
            }],
        };
        assert_eq!(b.count(), 3);
        assert!(b.is_dirty(0x1000_0000 + 5));
        assert!(!b.is_dirty(0x1000_1000));
        assert!(b.is_dirty(0x1000_0000 + 127 * PAGE_SIZE));
        assert!(!b.is_dirty(0x0));
        let p: Vec<u64> = b.pages().collect();
        assert_eq!(
            p,
            vec![0x1000_0000, 0x1000_2000, 0x1000_0000 + 127 * PAGE_SIZE]
        );
    }
}
