//! Two hosts share one volume: `cargo run -p vinfra-vmfs --example two_hosts`.
//!
//! Formats an in-memory LUN, mounts it from host 1 and host 2, and shows the on-disk
//! locks at work: host 2 is refused a file host 1 holds, gets it once host 1 closes it
//! (a clean handover), and breaks the lock of a host that died only after a whole lease,
//! replaying its journal; the dead host, waking up, finds it has fenced itself. The clock
//! is a manual one, so the lease passes in no time.

use std::sync::Arc;

use vinfra_vmfs::{Clock, LockMode, ManualClock, MemDevice, MkfsOptions, MountOptions, Volume};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lun = Arc::new(MemDevice::new(32 << 20));
    let mut mkfs = MkfsOptions::default();
    mkfs.lease_ms = 2000;
    mkfs.interval_ms = 200;
    Volume::mkfs(lun.as_ref(), &mkfs)?;
    println!(
        "mkfs: a 32 MiB volume, lease {} ms, heartbeat every {} ms",
        mkfs.lease_ms, mkfs.interval_ms
    );
    let clock = Arc::new(ManualClock::new(0));
    let esx1 = Volume::mount(lun.clone(), 1, &MountOptions::default(), clock.clone())?;
    let esx2 = Volume::mount(lun.clone(), 2, &MountOptions::default(), clock.clone())?;
    println!("mounted by host 1 and host 2");

    esx1.mkdir("/vm1")?;
    let disk = esx1.create("/vm1/vm1-flat.vmdk")?; // exclusive lock, thin file
    disk.write_at(b"boot sector", 0)?;
    println!("host 1 created /vm1/vm1-flat.vmdk and holds it exclusively");

    match esx2.open("/vm1/vm1-flat.vmdk", LockMode::Exclusive) {
        Ok(_) => return Err("host 2 opened a file host 1 holds".into()),
        Err(e) => println!("host 2 is refused: {e}"),
    }

    drop(disk); // closing releases the lock
    let f = esx2.open("/vm1/vm1-flat.vmdk", LockMode::Exclusive)?;
    let mut buf = [0u8; 11];
    f.read_at(&mut buf, 0)?;
    println!(
        "host 1 closed it; host 2 opened it and reads {:?}",
        String::from_utf8_lossy(&buf)
    );
    drop(f);

    // Host 1 takes the file again, then dies: its handle is never released and its
    // heartbeat stops. Host 2 keeps ticking and may break the lock after a whole lease.
    let disk = esx1.open("/vm1/vm1-flat.vmdk", LockMode::Exclusive)?;
    disk.write_at(b"last words", 0)?;
    std::mem::forget(disk);
    let t0 = clock.now_ms();
    let f = esx2.open_wait("/vm1/vm1-flat.vmdk", LockMode::Exclusive, 10_000)?;
    f.read_at(&mut buf[..10], 0)?;
    println!(
        "host 1 died; host 2 took its lock after {} ms and reads {:?}",
        clock.now_ms() - t0,
        String::from_utf8_lossy(&buf[..10])
    );

    match esx1.tick() {
        Ok(_) => return Err("host 1 still renews its heartbeat after losing its lock".into()),
        Err(e) => println!("host 1 wakes up: {e}"),
    }
    drop(f);
    esx2.unmount()?;
    println!("host 2 unmounted");
    Ok(())
}
