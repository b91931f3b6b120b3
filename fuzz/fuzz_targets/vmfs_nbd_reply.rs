//! Fuzz the NBD client's decoders: the bytes are what a server sends, first to the
//! handshake (greeting, option replies), then as the replies to a read, a write and a
//! flush. Any answer is fine but a panic or a hang.
#![no_main]

use std::io::{Cursor, Read, Write};

use libfuzzer_sys::fuzz_target;
use vinfra_vmfs::nbd::proto::{exchange, handshake, CMD_FLUSH, CMD_READ, CMD_WRITE};

/// The server's bytes to read; what the client writes is dropped.
struct Server(Cursor<Vec<u8>>);

impl Read for Server {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(b)
    }
}

impl Write for Server {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut s = Server(Cursor::new(data.to_vec()));
    let _ = handshake(&mut s, "lun", 0);
    let mut buf = [0u8; 700];
    let _ = exchange(&mut s, CMD_READ, 1, 0, &[], &mut buf, 0);
    let _ = exchange(&mut s, CMD_WRITE, 2, 4096, &[7u8; 100], &mut [], 0);
    let _ = exchange(&mut s, CMD_FLUSH, 3, 0, &[], &mut [], 0);
});
