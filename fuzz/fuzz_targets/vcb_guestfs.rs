//! Fuzz the guest filesystem readers behind file-level restore: the input is a whole disk
//! image (a partition table or a filesystem at offset 0: ext4, FAT, NTFS). Opening,
//! listing, walking and reading files must return errors, never panic or hang.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vinfra_vcb::files::{EntryKind, FindQuery, GuestFs};
use vinfra_vcb::MemDisk;

/// libfuzzer-sys aborts on every panic; `GuestFs` turns a panic inside a filesystem crate
/// (a registry dependency) into an error on purpose, so only panics in our own code stay
/// fatal.
fn abort_unless_in_a_dependency() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let theirs = info
                .location()
                .is_some_and(|l| l.file().contains("/registry/src/"));
            if !theirs {
                eprintln!("{info}");
                std::process::abort();
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    abort_unless_in_a_dependency();
    let mut disk = MemDisk::new(data.len().next_multiple_of(512).max(512));
    disk.write_at(data, 0);
    let Ok(mut fs) = GuestFs::open_source(Arc::new(disk.snapshot()), "fuzz", None) else {
        return;
    };
    let Ok(found) = fs.find("/", &FindQuery::new().kind(EntryKind::File)) else {
        return;
    };
    for e in found.iter().take(16) {
        let _ = fs.read_file(&e.path, &mut std::io::sink());
    }
});
