//! Finding the workspace and the guest kit that `scripts/guest-kit.sh` builds.

use std::path::{Path, PathBuf};

use crate::prereq::skip;

/// The workspace root: the nearest directory at or above the package under test that
/// holds `scripts/guest-kit.sh`, or failing that a `Cargo.toml` with a `[workspace]`
/// table.
///
/// The search starts at `CARGO_MANIFEST_DIR` as cargo sets it for the running test (so
/// packages at any depth, `vmfs/` or `examples/host/`, find the same root), or at this
/// package's own directory when the test runs outside cargo.
///
/// # Panics
///
/// When neither marker is found above the start.
pub fn workspace_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let is_root = |dir: &Path| dir.join("scripts/guest-kit.sh").is_file();
    let is_workspace = |dir: &Path| {
        std::fs::read_to_string(dir.join("Cargo.toml"))
            .is_ok_and(|toml| toml.lines().any(|l| l.trim() == "[workspace]"))
    };
    start
        .ancestors()
        .find(|dir| is_root(dir))
        .or_else(|| start.ancestors().find(|dir| is_workspace(dir)))
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("no workspace root above {}", start.display()))
}

/// The directory of the test guests: `VINFRA_GUEST_DIR` when set, else
/// `<workspace root>/target/guest-kit/guests`.
pub fn guest_dir() -> PathBuf {
    std::env::var_os("VINFRA_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/guest-kit/guests"))
}

/// The path of the test guest `<name>.elf` (`ready`, `workload`, `disk`, `evil`), or
/// `None` after a [`skip`] (a panic under CI) when the kit is not built.
#[track_caller]
pub fn guest(name: &str) -> Option<PathBuf> {
    let path = guest_dir().join(format!("{name}.elf"));
    if path.exists() {
        Some(path)
    } else {
        skip(format_args!(
            "{} is missing: run scripts/guest-kit.sh --guests-only",
            path.display()
        ));
        None
    }
}

/// The Linux guest kit: a Debian kernel and a busybox initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxKit {
    /// The kernel (`bzImage`).
    pub kernel: PathBuf,
    /// The initramfs (`initramfs.cpio.gz`).
    pub initrd: PathBuf,
}

/// The Linux guest kit in the `linux` directory beside [`guest_dir`] (where
/// `scripts/guest-kit.sh` puts it), or `None` after a [`skip`] (a panic under CI) when
/// it is not there.
#[track_caller]
pub fn linux_kit() -> Option<LinuxKit> {
    let guests = guest_dir();
    let dir = guests
        .parent()
        .map_or_else(|| guests.join("linux"), |kit| kit.join("linux"));
    let kit = LinuxKit {
        kernel: dir.join("bzImage"),
        initrd: dir.join("initramfs.cpio.gz"),
    };
    if kit.kernel.exists() && kit.initrd.exists() {
        Some(kit)
    } else {
        skip(format_args!(
            "{} missing: run scripts/guest-kit.sh",
            dir.display()
        ));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_holds_the_guest_kit_script_and_the_workspace_manifest() {
        let root = workspace_root();
        assert!(
            root.join("scripts/guest-kit.sh").is_file(),
            "{}",
            root.display()
        );
        assert!(root.join("Cargo.toml").is_file());
        assert!(Path::new(env!("CARGO_MANIFEST_DIR")).starts_with(&root));
    }
}
