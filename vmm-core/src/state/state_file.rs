//! The encoded state blob on disk: written durably and atomically, read with a size cap.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::codec::{decode, encode, MAX_PAYLOAD_BYTES};
use super::error::{Result, StateError};
use super::VmState;

/// Envelope bytes around the payload (header and crc32).
const ENVELOPE_BYTES: u64 = 24;

/// Encodes `state` and writes it to `path` durably: written under a temporary name,
/// synced, renamed into place, directory synced. Returns the bytes written.
pub fn save_state(state: &VmState, path: &Path) -> Result<u64> {
    let bytes = encode(state)?;
    let tmp = temp_path(path);
    let result = write_synced(&tmp, &bytes);
    if result.is_err() {
        // Best effort: the temporary file is garbage now.
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    std::fs::rename(&tmp, path).map_err(StateError::io("rename state file", path))?;
    sync_parent_dir(path)?;
    Ok(bytes.len() as u64)
}

/// Reads and decodes a state file; a file longer than the largest valid blob is refused
/// before it is read.
pub fn load_state(path: &Path) -> Result<VmState> {
    let mut file = File::open(path).map_err(StateError::io("open state file", path))?;
    let len = file
        .metadata()
        .map_err(StateError::io("stat state file", path))?
        .len();
    let max = MAX_PAYLOAD_BYTES + ENVELOPE_BYTES;
    if len > max {
        return Err(StateError::TooLarge {
            what: "state file",
            len,
            max,
        });
    }
    let mut bytes = Vec::new();
    // `take` bounds the read even if the file grows after the stat.
    (&mut file)
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(StateError::io("read state file", path))?;
    decode(&bytes)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(StateError::io("create state file", path))?;
    file.write_all(bytes)
        .map_err(StateError::io("write state file", path))?;
    file.sync_all()
        .map_err(StateError::io("sync state file", path))
}

/// `<name>.tmp` beside `path`.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Makes a rename in `path`'s directory durable.
pub(crate) fn sync_parent_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StateError::io("sync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::super::testing::sample_vm_state;
    use super::*;

    #[test]
    fn save_load_round_trip_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.state");
        let state = sample_vm_state();
        let n = save_state(&state, &path).unwrap();
        assert_eq!(n, std::fs::metadata(&path).unwrap().len());
        assert_eq!(load_state(&path).unwrap(), state);
        assert!(!dir.path().join("vm.state.tmp").exists());
    }

    #[test]
    fn oversized_file_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let f = File::create(&path).unwrap();
        f.set_len(MAX_PAYLOAD_BYTES + ENVELOPE_BYTES + 1).unwrap();
        assert!(matches!(
            load_state(&path),
            Err(StateError::TooLarge {
                what: "state file",
                ..
            })
        ));
    }

    #[test]
    fn damaged_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.state");
        save_state(&sample_vm_state(), &path).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            load_state(&path),
            Err(StateError::Checksum { .. })
        ));
    }
}
