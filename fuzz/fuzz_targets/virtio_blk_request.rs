#![no_main]
//! virtio-blk request processing on hostile queues: the fuzz bytes become the
//! descriptor table, the available ring and the request buffers of a device
//! driven through its virtio-mmio registers. The harness lives in the crate
//! (`devices::virtio::fuzz`) and asserts that the device writes only the used
//! ring and device-writable buffers, and marks every page it writes dirty.
use libfuzzer_sys::fuzz_target;
use vinfra_vmm_core::devices::virtio::fuzz::fuzz_process_request;

fuzz_target!(|data: &[u8]| {
    let _ = fuzz_process_request(data);
});
