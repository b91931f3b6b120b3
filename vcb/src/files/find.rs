//! Search criteria for [`GuestFs::find`](super::GuestFs::find).

use super::{EntryKind, FileEntry};
use crate::error::{Error, Result};

/// What to look for: every criterion given must hold.
///
/// ```
/// use vinfra_vcb::files::FindQuery;
/// let q = FindQuery::new().name("*.CONF").unwrap().min_size(1).modified_after(1_700_000_000);
/// assert!(FindQuery::new().name("[").is_err()); // a bad glob is an error, not a panic
/// # let _ = q;
/// ```
#[derive(Debug, Clone, Default)]
pub struct FindQuery {
    name: Option<glob::Pattern>,
    full_path: bool,
    min_size: Option<u64>,
    max_size: Option<u64>,
    after_s: Option<i64>,
    before_s: Option<i64>,
    kind: Option<EntryKind>,
}

impl FindQuery {
    /// Matches everything.
    pub fn new() -> FindQuery {
        FindQuery::default()
    }

    /// A glob (`*`, `?`, `[a-z]`) on the file name, without case (FAT and NTFS guests
    /// ignore it, and so do their users); a pattern with a `/` is matched against the
    /// whole path instead.
    pub fn name(mut self, glob: &str) -> Result<FindQuery> {
        let p = glob::Pattern::new(glob)
            .map_err(|e| Error::Invalid(format!("name pattern {glob:?}: {e}")))?;
        self.full_path = glob.contains('/');
        self.name = Some(p);
        Ok(self)
    }

    /// At least `bytes` long.
    pub fn min_size(mut self, bytes: u64) -> FindQuery {
        self.min_size = Some(bytes);
        self
    }

    /// At most `bytes` long.
    pub fn max_size(mut self, bytes: u64) -> FindQuery {
        self.max_size = Some(bytes);
        self
    }

    /// Modified at or after `unix_s`.
    pub fn modified_after(mut self, unix_s: i64) -> FindQuery {
        self.after_s = Some(unix_s);
        self
    }

    /// Modified before `unix_s`.
    pub fn modified_before(mut self, unix_s: i64) -> FindQuery {
        self.before_s = Some(unix_s);
        self
    }

    /// Only entries of this kind.
    pub fn kind(mut self, kind: EntryKind) -> FindQuery {
        self.kind = Some(kind);
        self
    }

    /// Whether `e` meets every criterion.
    pub fn matches(&self, e: &FileEntry) -> bool {
        let opts = glob::MatchOptions {
            case_sensitive: false,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        let subject = if self.full_path {
            &e.path[..]
        } else {
            e.name()
        };
        self.name
            .as_ref()
            .is_none_or(|p| p.matches_with(subject, opts))
            && self.min_size.is_none_or(|m| e.size >= m)
            && self.max_size.is_none_or(|m| e.size <= m)
            && self.after_s.is_none_or(|t| e.modified_s >= t)
            && self.before_s.is_none_or(|t| e.modified_s < t)
            && self.kind.is_none_or(|k| e.kind == k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, size: u64, t: i64) -> FileEntry {
        FileEntry {
            path: path.into(),
            kind: EntryKind::File,
            size,
            modified_s: t,
            mode: None,
        }
    }

    #[test]
    fn every_criterion_must_hold() {
        let q = FindQuery::new()
            .name("*.txt")
            .unwrap()
            .min_size(10)
            .max_size(20);
        assert!(q.matches(&f("/a/B.TXT", 10, 0)));
        assert!(!q.matches(&f("/a/b.txt", 21, 0)));
        assert!(!q.matches(&f("/a/b.txt", 9, 0)));
        assert!(!q.matches(&f("/a/b.txz", 15, 0)));
        let t = FindQuery::new().modified_after(100).modified_before(200);
        assert!(t.matches(&f("/x", 0, 100)));
        assert!(!t.matches(&f("/x", 0, 200)));
        let p = FindQuery::new().name("/etc/*").unwrap();
        assert!(p.matches(&f("/etc/hosts", 0, 0)));
        assert!(!p.matches(&f("/etc/a/hosts", 0, 0)));
        assert!(FindQuery::new().matches(&f("/anything", 1, 1)));
    }
}
