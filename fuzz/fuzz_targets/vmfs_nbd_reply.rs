//! Fuzz the NBD client's decoders: the bytes are what a server sends, first to the
//! handshake (greeting, option replies), then as the replies to a read, a write and a
//! flush. Any answer is fine but a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinfra_vmfs::nbd::proto::replay_server;

fuzz_target!(|data: &[u8]| {
    let _ = replay_server(data);
});
