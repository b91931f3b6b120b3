#![no_main]
//! virtio-net on hostile queues: the fuzz bytes become both queues' descriptor tables,
//! available rings and buffers, and the frames the backend delivers. The harness lives
//! in the crate (`devices::virtio::net_fuzz`) and asserts that every page the device
//! writes is marked dirty and that its counters add up.
use libfuzzer_sys::fuzz_target;
use vinfra_vmm_core::devices::virtio::net_fuzz::fuzz_net_frames;

fuzz_target!(|data: &[u8]| {
    let _ = fuzz_net_frames(data);
});
