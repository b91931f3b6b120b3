//! criterion benches for the vmm-core crate: virtio-blk request processing, the state
//! codec (encode/decode of a 2-vCPU `VmState`) and the dirty-bitmap merge. None needs KVM.
#![allow(missing_docs)] // criterion_group! generates an undocumented `pub fn`

use criterion::{criterion_group, criterion_main, Criterion};

/// virtio-blk request processing: a batch of requests per notify through the
/// device's registers and queue, against an in-memory disk (no KVM involved).
fn virtio_blk_requests(c: &mut Criterion) {
    use criterion::Throughput;
    use vinfra_vmm_core::devices::virtio::fuzz::RequestLoop;

    let mut group = c.benchmark_group("virtio_blk");
    for (name, write, bytes, batch) in [
        ("read_4k_x32", false, 4096u32, 32u16),
        ("write_4k_x32", true, 4096, 32),
        ("read_64k_x16", false, 64 * 1024, 16),
        ("write_64k_x16", true, 64 * 1024, 16),
    ] {
        let Some(mut reqs) = RequestLoop::new(write, bytes, batch) else {
            continue;
        };
        group.throughput(Throughput::Bytes(u64::from(bytes) * u64::from(batch)));
        group.bench_function(name, |b| b.iter(|| reqs.run_batch()));
    }
    group.finish();
}

/// A deterministic word stream (xorshift64), so the state is not all zeros (a codec
/// could make zeros look cheaper than real register contents).
fn words(seed: u64) -> impl Iterator<Item = u64> {
    let mut x = seed | 1;
    std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    })
}

/// A `VmState` shaped like one our VMM captures from a 2-vCPU guest on this host: ~40
/// CPUID entries and ~30 MSRs per vCPU, a 4 KiB XSAVE area, a full LAPIC page, the three
/// IRQ chips, and a serial and a virtio-blk device blob.
fn realistic_state() -> vinfra_vmm_core::state::VmState {
    use kvm_bindings::{
        kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state,
        kvm_msr_entry, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs,
    };
    use vinfra_vmm_core::state::{
        DeviceBlob, FpuState, IrqChipState, MemoryLayout, MemoryRegionSpec, VcpuState, VmFdState,
        VmState, IRQCHIP_STATE_BYTES,
    };

    // Truncation is the point: the low bits of a pseudo-random word.
    #[allow(clippy::cast_possible_truncation)]
    let vcpu = |id: u64| {
        let mut w = words(0x9e37_79b9_7f4a_7c15 ^ id);
        let mut next32 = move || w.next().unwrap_or(0) as u32;
        let cpuid = (0..40)
            .map(|i| kvm_cpuid_entry2 {
                function: i,
                eax: next32(),
                ebx: next32(),
                ecx: next32(),
                edx: next32(),
                ..Default::default()
            })
            .collect();
        let msrs = (0..30)
            .map(|i| kvm_msr_entry {
                index: 0xc000_0080 + i,
                data: u64::from(next32()) << 32 | u64::from(next32()),
                ..Default::default()
            })
            .collect();
        let mut lapic = kvm_lapic_state::default();
        for (i, b) in lapic.regs.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31) as _;
        }
        VcpuState {
            cpuid,
            msrs,
            regs: kvm_regs {
                rip: 0x10_0000 + id,
                rsp: 0x8000,
                rflags: 2,
                rax: u64::from(next32()),
                ..Default::default()
            },
            sregs: kvm_sregs {
                cr0: 0x8000_0011,
                cr4: 0x20,
                efer: 0x500,
                ..Default::default()
            },
            fpu: FpuState {
                fcw: 0x37f,
                mxcsr: 0x1f80,
                ..Default::default()
            },
            xsave: (0..1024).map(|_| next32()).collect(),
            xcrs: kvm_xcrs::default(),
            debugregs: kvm_debugregs::default(),
            lapic,
            vcpu_events: kvm_vcpu_events::default(),
            mp_state: kvm_mp_state::default(),
            tsc_khz: Some(2_596_140),
        }
    };
    #[allow(clippy::cast_possible_truncation)]
    let chip = |seed: u64| -> Vec<u8> {
        words(seed)
            .take(IRQCHIP_STATE_BYTES)
            .map(|w| w as u8)
            .collect()
    };
    VmState {
        vcpus: vec![vcpu(0), vcpu(1)],
        vm: VmFdState {
            irqchip: IrqChipState {
                pic_master: chip(1),
                pic_slave: chip(2),
                ioapic: chip(3),
            },
            pit2: kvm_pit_state2::default(),
            clock: kvm_clock_data {
                clock: 123_456_789,
                ..Default::default()
            },
        },
        devices: vec![
            DeviceBlob {
                kind: "serial".into(),
                id: "com1".into(),
                data: vec![0x5a; 80],
            },
            DeviceBlob {
                kind: "virtio-blk".into(),
                id: "disk0".into(),
                data: vec![0xa5; 240],
            },
        ],
        memory: MemoryLayout {
            regions: vec![MemoryRegionSpec {
                guest_addr: 0,
                size: 256 << 20,
            }],
        },
    }
}

/// `state::encode` / `state::decode` (postcard, versioned envelope, crc32) of a 2-vCPU
/// state: what a snapshot or a migration's switch-over pays for the non-RAM state.
fn state_codec(c: &mut Criterion) {
    use criterion::Throughput;
    use vinfra_vmm_core::state::{decode, encode};

    let state = realistic_state();
    let Ok(bytes) = encode(&state) else {
        return;
    };
    let mut group = c.benchmark_group("state_codec_2vcpu");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("encode", |b| {
        b.iter(|| encode(std::hint::black_box(&state)))
    });
    group.bench_function("decode", |b| {
        b.iter(|| decode(std::hint::black_box(&bytes)))
    });
    group.finish();
}

/// `dirty::merge` of KVM's and the VMM's bitmaps of one slot (256 MiB and 4 GiB of 4 KiB
/// pages), sparse KVM log, a few VMM pages; then counting the dirty pages.
fn dirty_merge(c: &mut Criterion) {
    use criterion::Throughput;
    use vinfra_vmm_core::dirty::{merge, DirtyBitmap, SlotDirty};

    let mut group = c.benchmark_group("dirty_bitmap");
    for (name, mib) in [("256mib", 256u64), ("4gib", 4096)] {
        let len_words = usize::try_from(mib * 256 / 64).unwrap_or(0);
        // One word in eight with a few bits set (pages a guest dirtied), the VMM's bitmap
        // with a handful of device-written pages.
        let kvm: Vec<u64> = words(7)
            .take(len_words)
            .enumerate()
            .map(|(i, w)| if i % 8 == 0 { w & 0x0101_0101 } else { 0 })
            .collect();
        let mut vmm = vec![0u64; len_words];
        for i in (0..len_words).step_by(997) {
            vmm[i] = 1 << (i % 64);
        }
        // Per page of guest memory covered (not per bitmap byte).
        group.throughput(Throughput::Elements(mib * 256));
        group.bench_function(format!("merge_{name}"), |b| {
            b.iter(|| merge(std::hint::black_box(&kvm), std::hint::black_box(&vmm)))
        });
        let bitmap = DirtyBitmap {
            slots: vec![SlotDirty {
                guest_addr: 0,
                len: mib << 20,
                bits: merge(&kvm, &vmm),
            }],
        };
        group.bench_function(format!("count_{name}"), |b| {
            b.iter(|| std::hint::black_box(&bitmap).count())
        });
    }
    group.finish();
}

criterion_group!(benches, virtio_blk_requests, state_codec, dirty_merge);
criterion_main!(benches);
