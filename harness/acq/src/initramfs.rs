//! The guest image: an uncompressed cpio (newc) archive, built for a boot from the recipe
//! in `qemu/initramfs.list` plus the modules and files a run adds (once a process for the
//! same files: [`write_or_link`]).
//!
//! The recipe uses the kernel's `gen_init_cpio` syntax (a subset: `dir`, `file`, `nod`,
//! `slink`), with `@NAME@` placeholders the harness fills in (`@REPO@`, `@TOOLROOT@`,
//! `@GUEST_BIN@`). Building it here instead of with external tools keeps the boot path free
//! of host dependencies and takes milliseconds.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use anyhow::{bail, Context, Result};

use crate::file_id::FileId;

/// One entry of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory.
    Dir { path: String, mode: u32 },
    /// A regular file whose content is read from `source` on the host.
    File {
        path: String,
        source: PathBuf,
        mode: u32,
    },
    /// A device node.
    Node {
        path: String,
        mode: u32,
        char_dev: bool,
        major: u32,
        minor: u32,
    },
    /// A symbolic link.
    Symlink {
        path: String,
        target: String,
        mode: u32,
    },
}

/// Parses a recipe, replacing `@NAME@` placeholders from `vars`.
pub fn parse_recipe(text: &str, vars: &HashMap<&str, String>, origin: &str) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = substitute(line, vars).with_context(|| format!("{origin}:{}", i + 1))?;
        let f: Vec<&str> = line.split_whitespace().collect();
        let at = |n: usize| -> Result<&str> {
            f.get(n)
                .copied()
                .with_context(|| format!("{origin}:{}: `{}` needs more fields", i + 1, f[0]))
        };
        let mode = |n: usize| -> Result<u32> {
            u32::from_str_radix(at(n)?, 8)
                .with_context(|| format!("{origin}:{}: bad octal mode", i + 1))
        };
        let num = |n: usize| -> Result<u32> {
            at(n)?
                .parse()
                .with_context(|| format!("{origin}:{}: bad number", i + 1))
        };
        entries.push(match f[0] {
            "dir" => Entry::Dir {
                path: at(1)?.into(),
                mode: mode(2)?,
            },
            "file" => Entry::File {
                path: at(1)?.into(),
                source: at(2)?.into(),
                mode: mode(3)?,
            },
            "nod" => Entry::Node {
                path: at(1)?.into(),
                mode: mode(2)?,
                char_dev: match at(5)? {
                    "c" => true,
                    "b" => false,
                    other => bail!("{origin}:{}: node type `{other}` is not c or b", i + 1),
                },
                major: num(6)?,
                minor: num(7)?,
            },
            "slink" => Entry::Symlink {
                path: at(1)?.into(),
                target: at(2)?.into(),
                mode: mode(3)?,
            },
            other => bail!("{origin}:{}: unknown entry type `{other}`", i + 1),
        });
    }
    Ok(entries)
}

fn substitute(line: &str, vars: &HashMap<&str, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('@') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after.find('@').context("unterminated @placeholder@")?;
        let name = &after[..end];
        let value = vars
            .get(name)
            .with_context(|| format!("unknown placeholder @{name}@"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// An archive this process wrote: what went into it (the entries, and each source file's
/// id when it was read), its id, and the paths it was written or linked at, any of which
/// may be gone (a guest's run directory is removed when the guest ends cleanly). Most
/// guests of a test binary or a scenario run boot from the same archive (tens of MB): it
/// is written once and hard-linked into each run directory (crate::file_id).
struct Written {
    inputs: Vec<(Entry, Option<FileId>)>,
    id: FileId,
    paths: Vec<PathBuf>,
}
static WRITTEN: Mutex<Vec<Written>> = Mutex::new(Vec::new());

/// Archives kept in [`WRITTEN`]: a run boots guests of a few kinds (extra modules and files
/// go into the archive only for guests that boot without a snapshot).
const WRITTEN_MAX: usize = 8;

/// Writes the archive of `entries` to `out` (as [`write_cpio`]), or hard-links the one this
/// process wrote from the same entries, when none of its source files changed since and
/// one of its paths still holds it unchanged. A link that fails (another file system)
/// falls back to writing; so does a source file whose id cannot be read (nothing kept).
pub fn write_or_link(entries: &[Entry], out: &Path) -> Result<()> {
    // Each entry with its source file's id (None for entries without one).
    let source_ids = || -> Option<Vec<(Entry, Option<FileId>)>> {
        entries
            .iter()
            .map(|e| match e {
                Entry::File { source, .. } => {
                    FileId::of(source).ok().map(|id| (e.clone(), Some(id)))
                }
                _ => Some((e.clone(), None)),
            })
            .collect()
    };
    let Some(inputs) = source_ids() else {
        return write_cpio(entries, out);
    };
    // Held while writing: guests started at once (a run's first jobs) wait for the first
    // one's archive instead of each writing its own.
    let mut written = WRITTEN.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(w) = written.iter_mut().find(|w| w.inputs == inputs) {
        w.paths.retain(|p| FileId::of(p).ok() == Some(w.id));
        if w.paths.iter().any(|p| p == out) {
            return Ok(());
        }
        if let Some(from) = w.paths.first() {
            let _ = fs::remove_file(out);
            if fs::hard_link(from, out).is_ok() && FileId::of(out).ok() == Some(w.id) {
                w.paths.push(out.to_path_buf());
                return Ok(());
            }
        }
    }
    write_cpio(entries, out)?;
    // `out` is a new file now: no longer any archive's path.
    for w in written.iter_mut() {
        w.paths.retain(|p| p != out);
    }
    written.retain(|w| w.inputs != inputs && !w.paths.is_empty());
    // Kept only if no source changed while it was read, and the archive can be found again.
    let unchanged = source_ids().as_ref() == Some(&inputs);
    if let (true, Ok(id)) = (unchanged, FileId::of(out)) {
        if written.len() >= WRITTEN_MAX {
            written.remove(0);
        }
        written.push(Written {
            inputs,
            id,
            paths: vec![out.to_path_buf()],
        });
    }
    Ok(())
}

/// Writes `entries` as a newc cpio archive to `out`.
pub fn write_cpio(entries: &[Entry], out: &Path) -> Result<()> {
    // A new file, never the old one written over: `out` may be a hard link of an archive
    // other guests boot from (write_or_link).
    match fs::remove_file(out) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing the old {}", out.display()))
        }
        _ => {}
    }
    let mut buf = Vec::new();
    for (ino, e) in (1u32..).zip(entries) {
        let (path, mode, data, rdev) = match e {
            Entry::Dir { path, mode } => (path, 0o040000 | mode, Vec::new(), (0, 0)),
            Entry::File { path, source, mode } => (
                path,
                0o100000 | mode,
                fs::read(source).with_context(|| {
                    format!("initramfs: reading {} for {path}", source.display())
                })?,
                (0, 0),
            ),
            Entry::Node {
                path,
                mode,
                char_dev,
                major,
                minor,
            } => (
                path,
                if *char_dev { 0o020000 } else { 0o060000 } | mode,
                Vec::new(),
                (*major, *minor),
            ),
            Entry::Symlink { path, target, mode } => {
                (path, 0o120000 | mode, target.as_bytes().to_vec(), (0, 0))
            }
        };
        push_entry(
            &mut buf,
            ino,
            mode,
            path.trim_start_matches('/'),
            &data,
            rdev,
        );
    }
    push_entry(&mut buf, 0, 0, "TRAILER!!!", &[], (0, 0));
    let mut f = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    f.write_all(&buf)?;
    Ok(())
}

fn push_entry(buf: &mut Vec<u8>, ino: u32, mode: u32, name: &str, data: &[u8], rdev: (u32, u32)) {
    let nlink = if mode & 0o040000 != 0 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime: fixed, so the same inputs give the same archive
        data.len() as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    buf.extend_from_slice(b"070701");
    for v in fields {
        buf.extend_from_slice(format!("{v:08x}").as_bytes());
    }
    buf.extend_from_slice(name.as_bytes());
    buf.push(0);
    pad4(buf);
    buf.extend_from_slice(data);
    pad4(buf);
}

fn pad4(buf: &mut Vec<u8>) {
    buf.resize(buf.len().next_multiple_of(4), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> HashMap<&'static str, String> {
        HashMap::from([("REPO", "/r".to_string())])
    }

    #[test]
    fn recipe_parses_with_placeholders() {
        let e = parse_recipe(
            "# c\ndir /dev 0755 0 0\nfile /init @REPO@/qemu/init.sh 0755 0 0\nnod /dev/console 0600 0 0 c 5 1\nslink /bin/sh busybox 0777 0 0\n",
            &vars(),
            "t",
        )
        .unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(
            e[1],
            Entry::File {
                path: "/init".into(),
                source: "/r/qemu/init.sh".into(),
                mode: 0o755
            }
        );
        assert!(matches!(
            e[2],
            Entry::Node {
                char_dev: true,
                major: 5,
                minor: 1,
                ..
            }
        ));
    }

    #[test]
    fn recipe_errors_name_the_line() {
        let err = parse_recipe("dir /a 0755\nbogus /x\n", &vars(), "list").unwrap_err();
        assert!(
            format!("{err:#}").contains("list:2: unknown entry type `bogus`"),
            "{err:#}"
        );
        let err = parse_recipe("file /x @NOPE@/y 0644 0 0\n", &vars(), "list").unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown placeholder @NOPE@"),
            "{err:#}"
        );
    }

    #[test]
    fn cpio_is_newc_and_aligned() {
        let dir = std::env::temp_dir().join(format!("acq-cpio-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let src = dir.join("f");
        fs::write(&src, b"hello").unwrap();
        let out = dir.join("out.cpio");
        write_cpio(
            &[
                Entry::Dir {
                    path: "/d".into(),
                    mode: 0o755,
                },
                Entry::File {
                    path: "/d/f".into(),
                    source: src,
                    mode: 0o644,
                },
            ],
            &out,
        )
        .unwrap();
        let data = fs::read(&out).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(data.len() % 4, 0);
        assert!(data.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&data);
        assert!(text.contains("d/f\0"));
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!"));
        // Second header starts 4-aligned: 110-byte header + "d\0" padded to 112.
        assert_eq!(&data[112..118], b"070701");
    }

    #[test]
    fn one_archive_a_process_for_the_same_files_and_a_new_one_when_a_file_changes() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("acq-cpio-link-{}", std::process::id()));
        // What a failed run with the same process id left.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let src = dir.join("tool");
        fs::write(&src, b"version one").unwrap();
        let entries = [Entry::File {
            path: "/bin/tool".into(),
            source: src.clone(),
            mode: 0o755,
        }];
        let guest = |name: &str| dir.join(format!("{name}.cpio"));
        let ino = |name: &str| fs::metadata(guest(name)).unwrap().ino();
        let text =
            |name: &str| String::from_utf8_lossy(&fs::read(guest(name)).unwrap()).into_owned();
        write_or_link(&entries, &guest("a")).unwrap();
        write_or_link(&entries, &guest("b")).unwrap();
        assert_eq!(
            ino("a"),
            ino("b"),
            "the second guest's image is the first's, linked"
        );
        // The first guest's run directory is removed when it ends: a later link serves.
        fs::remove_file(guest("a")).unwrap();
        write_or_link(&entries, &guest("c")).unwrap();
        assert_eq!(ino("b"), ino("c"));
        // A run directory used again gets its archive written anew, never the shared file
        // written over.
        fs::write(&src, b"version two, longer").unwrap();
        write_or_link(&entries, &guest("b")).unwrap();
        assert_ne!(ino("b"), ino("c"));
        assert!(text("c").contains("version one"), "{}", text("c"));
        assert!(text("b").contains("version two, longer"), "{}", text("b"));
        write_or_link(&entries, &guest("d")).unwrap();
        assert_eq!(ino("b"), ino("d"));
        // Every path of the archive gone: written again.
        fs::remove_file(guest("b")).unwrap();
        fs::remove_file(guest("d")).unwrap();
        write_or_link(&entries, &guest("d")).unwrap();
        assert!(text("d").contains("version two, longer"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
