//! A raw disk image file as a backup source, advancing a progress bar as it is read.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use indicatif::ProgressBar;
use vinfra_vcb::DiskSource;

/// A raw image file (a disk image, or a block device). It knows no changed blocks: an
/// incremental reads it all and stores only the grains whose content is new.
pub struct FileSource {
    file: File,
    len: u64,
    progress: ProgressBar,
}

impl FileSource {
    pub fn open(path: &Path, progress: ProgressBar) -> io::Result<FileSource> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(FileSource {
            file,
            len,
            progress,
        })
    }
}

impl DiskSource for FileSource {
    fn capacity(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)?;
        self.progress.inc(buf.len() as u64);
        Ok(())
    }

    fn allocated(&self) -> Vec<(u64, u64)> {
        vec![(0, self.len)]
    }

    fn change_id(&self) -> Option<u64> {
        None
    }

    fn changed_since(&self, _change_id: u64) -> Option<Vec<(u64, u64)>> {
        None
    }
}
