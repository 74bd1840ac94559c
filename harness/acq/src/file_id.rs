//! Which file a path names, and which version of it: what a cache of work done on a file's
//! bytes is keyed by. A test binary or a scenario run starts dozens of guests from the same
//! kernel and the same guest image (tens of MB each), and each start wrote the image and
//! hashed both (crate::initramfs, crate::snapshot): seconds of CPU a run, most of the
//! harness's own, where the CPUs are what limits make test.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A file's device and inode, its size and its modification time. A file written again,
/// in place or replaced, gets a new one, but for a write of the same size within the file
/// system's timestamp granularity (a jiffy, a few ms), which nothing of this harness does
/// to a file it keys a cache by (the image's writer replaces the file: a new inode, or a
/// freed one reused with a later time). Not the change time: a hard link changes it, and
/// the guest images are hard links of one file (crate::initramfs::write_or_link).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl FileId {
    /// The id of the file `path` names now (symbolic links followed).
    pub fn of(path: &Path) -> io::Result<FileId> {
        let m = std::fs::metadata(path)?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_written_again_or_replaced_is_another_and_a_hard_link_the_same() {
        let t = std::env::temp_dir().join(format!("acq-file-id-{}", std::process::id()));
        // What a failed run with the same process id left.
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir_all(&t).unwrap();
        let (a, b) = (t.join("a"), t.join("b"));
        std::fs::write(&a, b"one").unwrap();
        let first = FileId::of(&a).unwrap();
        assert_eq!(first, FileId::of(&a).unwrap());
        std::fs::hard_link(&a, &b).unwrap();
        assert_eq!(first, FileId::of(&a).unwrap(), "linked");
        assert_eq!(first, FileId::of(&b).unwrap(), "the link");
        std::fs::write(&a, b"three").unwrap();
        let rewritten = FileId::of(&a).unwrap();
        assert_ne!(first, rewritten, "written in place");
        std::fs::remove_file(&a).unwrap();
        std::fs::write(&a, b"four!").unwrap();
        assert_ne!(rewritten, FileId::of(&a).unwrap(), "replaced");
        assert_ne!(
            FileId::of(&b).unwrap(),
            FileId::of(&a).unwrap(),
            "replaced, beside its old link"
        );
        std::fs::remove_dir_all(&t).unwrap();
    }
}
