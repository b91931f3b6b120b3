//! Reads of a damaged volume: a structure that fails its checks is a typed
//! `Error::Corrupt` that names where it lives (the inode, the block), and what is intact
//! still reads.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use vinfra_vmfs::format::{Inode, SECTOR};
use vinfra_vmfs::{
    BlockDevice, Error, LockMode, ManualClock, MemDevice, MkfsOptions, MountOptions, Volume,
};

fn mount(dev: &Arc<MemDevice>, host: u32) -> Volume {
    Volume::mount(
        dev.clone(),
        host,
        &MountOptions::default(),
        Arc::new(ManualClock::new(0)),
    )
    .unwrap()
}

#[test]
fn damaged_inodes_and_indirect_blocks_are_named_and_the_rest_reads() {
    let dev = Arc::new(MemDevice::new(32 << 20));
    let mut o = MkfsOptions::default();
    o.max_inodes = 256;
    Volume::mkfs(dev.as_ref(), &o).unwrap();
    let v = mount(&dev, 1);
    // 100 KiB at 4 KiB blocks: 12 direct blocks, the rest under an indirect block.
    let a = v.create("/a").unwrap();
    a.write_at(&[1u8; 100 << 10], 0).unwrap();
    a.close().unwrap();
    let b = v.create("/b").unwrap();
    b.write_at(b"intact", 0).unwrap();
    b.close().unwrap();
    let c = v.create("/c").unwrap();
    c.write_at(b"doomed", 0).unwrap();
    c.close().unwrap();
    let (ia, ic) = (v.stat("/a").unwrap().ino, v.stat("/c").unwrap().ino);
    v.unmount().unwrap();

    let g = Volume::superblock(dev.as_ref()).unwrap().geo;
    let mut sector = vec![0u8; SECTOR];
    dev.read_at(&mut sector, g.inode_at(ia)).unwrap();
    let blk = Inode::decode(&sector, ia).unwrap().indirect[0];
    assert_ne!(blk, 0);
    // Flip a pointer byte of the indirect block and a byte of /c's inode.
    let off = blk as u64 * g.block_size as u64 + 100;
    let mut x = [0u8; 1];
    dev.read_at(&mut x, off).unwrap();
    dev.write_at(&[x[0] ^ 0xff], off).unwrap();
    dev.read_at(&mut x, g.inode_at(ic) + 20).unwrap();
    dev.write_at(&[x[0] ^ 0xff], g.inode_at(ic) + 20).unwrap();

    let v = mount(&dev, 2);
    let a = v.open("/a", LockMode::SharedRead).unwrap();
    let mut head = vec![0u8; 12 << 12];
    a.read_at(&mut head, 0).unwrap();
    assert!(head.iter().all(|&x| x == 1), "the direct blocks are intact");
    let e = a.read_at(&mut [0u8; 4096], 60 << 10).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    let words = e.to_string();
    assert!(
        words.contains(&format!("indirect block {blk} of inode {ia}")),
        "{words}"
    );
    let e = v.stat("/c").unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains(&format!("inode {ic}")), "{e}");
    let b = v.open("/b", LockMode::SharedRead).unwrap();
    let mut back = [0u8; 6];
    b.read_at(&mut back, 0).unwrap();
    assert_eq!(&back, b"intact");
}
